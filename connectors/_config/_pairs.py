"""Bounds that span two keys of one section: a value that must stay below another (a fenix_session's
``refresh_margin`` below its ``token_ttl``, ``serve.resweep`` at most ``resweep_cap``, ``serve.keep_bodies`` at
most ``dedup_window``). The schema bounds each key alone; these are checked by ``check_across_sections``, for a
config loaded from a file and one built in code alike.

A rule holds when its lower key is given (in a file: written; in code: not its default): a default lower
value adapts to the other (the auth refreshes at most half a short token's life early, the backoff, cooldown
and resweep are capped, bodies are kept for the whole dedup window). The error is located at whichever of the
two keys the file wrote later, the one that made them disagree, and names both, with the other's value: these
are durations, never secrets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._errors import ConfigError
from ._model import PathKey, RuntimeConfig, dotted, duration_text, given, parse_duration
from ._serve_model import ServeSettings


@dataclass(frozen=True, slots=True)
class Pair:
    lower: str  # the key that must stay below ``upper``
    upper: str
    strict: bool  # below, or at most
    why: str  # what goes wrong otherwise, for the message


REFRESH = Pair(
    "refresh_margin",
    "token_ttl",
    strict=True,
    why="the token would be renewed before every request, or never used",
)
BACKOFF = Pair("backoff_base", "backoff_cap", strict=False, why="the cap would lower every backoff to itself")
COOLDOWN = Pair(
    "cooldown", "cooldown_cap", strict=False, why="the first wait between probes would be longer than the cap"
)
RESWEEP = Pair(
    "resweep",
    "resweep_cap",
    strict=False,
    why="the first wait for parked work would be longer than the longest",
)
KEEP_BODIES = Pair(
    "keep_bodies",
    "dedup_window",
    strict=False,
    why="the inbox forgets a webhook, its id and its body, that long after it arrived",
)
_SERVE_PAIRS = (RESWEEP, KEEP_BODIES)


def check_pairs(config: RuntimeConfig) -> None:
    """Every pair of keys whose values must be ordered: ConfigError (exit 2) at the first out of order."""
    for connection in config.connections:
        where: PathKey = ("connections", connection.name)
        if connection.auth.scheme == "fenix_session":
            _check(config, connection.auth, (*where, "auth"), REFRESH)
        if connection.breaker is not None:
            _check(config, connection.breaker, (*where, "breaker"), COOLDOWN)
    _check(config, config.delivery.retry, ("delivery", "retry"), BACKOFF)
    _check(config, config.delivery.breaker, ("delivery", "breaker"), COOLDOWN)
    if config.serve:  # the section as the file gives it (durations as written), validated already
        for pair in _SERVE_PAIRS:
            _check(config, _serve_record(config.serve), ("serve",), pair)


def check_serve_pairs(settings: ServeSettings) -> None:
    """The pairs of ``ServeSettings`` given to ``Service`` as they are: ConfigError without a location."""
    for pair in _SERVE_PAIRS:
        _check(None, settings, ("serve",), pair)


def _serve_record(section: Mapping[str, Any]) -> ServeSettings:
    """The ``serve`` section's durations as settings: what it gives, as plain seconds; the defaults else."""
    keys = {key for pair in _SERVE_PAIRS for key in (pair.lower, pair.upper)}
    written: dict[str, Any] = {key: parse_duration(section[key]) for key in keys if key in section}
    return dataclasses.replace(ServeSettings(inbox="", sources={}), **written)


def _check(config: RuntimeConfig | None, record: Any, path: PathKey, pair: Pair) -> None:
    if not given(config, record, path, pair.lower):  # left out: it adapts to the other
        return
    low, high = getattr(record, pair.lower), getattr(record, pair.upper)
    if low < high if pair.strict else low <= high:
        return
    locations = config.locations if config is not None else {}
    low_at, high_at = locations.get((*path, pair.lower)), locations.get((*path, pair.upper))
    relation = "less than" if pair.strict else "at most"
    if high_at is not None and (
        low_at is None or (high_at.line, high_at.column) > (low_at.line, low_at.column)
    ):
        inverse = "more than" if pair.strict else "at least"
        message = f"must be {inverse} {pair.lower} ({duration_text(low)}): {pair.why}"
        raise ConfigError(f"{dotted((*path, pair.upper))}: {message}", location=high_at)
    default = "" if given(config, record, path, pair.upper) else ", its default"
    message = f"must be {relation} {pair.upper} ({duration_text(high)}{default}): {pair.why}"
    where = low_at or (config.where(path) if config is not None else None)
    raise ConfigError(f"{dotted((*path, pair.lower))}: {message}", location=where)


__all__ = ["check_pairs", "check_serve_pairs"]
