"""A file's bounds that span two keys of one section (``_key_pairs``: a refresh_margin below its token_ttl, a
backoff base, a breaker's cooldown and ``serve.resweep`` at most their caps, ``serve.keep_bodies`` at most
``dedup_window``), checked on the document before its records are built, so that the error is located: at
whichever of the two keys the file wrote later, the one that made them disagree, naming both, with the other's
value (durations, never secrets). A lower key the file leaves out adapts to the other and is not checked. The
records check the same pairs when they are built (in code, unlocated); a file's document passed here first, so
it never meets those. (A key that its scheme ignores, the other rule across two keys, is the schema's to
refuse: JSON Schema can say it, and an editor then flags it.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from shipmap.engine import Location

from .._config_key import duration_text
from .._deliver._breaker import BreakerSettings
from .._errors import ConfigError
from .._key_pairs import BACKOFF, COOLDOWN, REFRESH, SERVE_PAIRS, Pair
from ._model import AuthSettings, PathKey, RetryPolicy, dotted, parse_duration
from ._serve_model import ServeSettings


def check_pairs(document: Mapping[str, Any], locations: Mapping[PathKey, Location]) -> None:
    """Every pair of keys whose values must be ordered, in a validated ``document`` (a config file's, or the
    sections a config built in code gives as a file does): ConfigError (exit 2) at the first out of order,
    located in ``locations`` where the file wrote it."""
    for name, connection in _section(document, "connections").items():
        where: PathKey = ("connections", name)
        auth = _section(connection, "auth")
        if auth.get("scheme") == "fenix_session":
            _check(auth, AuthSettings, (*where, "auth"), REFRESH, locations)
        _check(_section(connection, "breaker"), BreakerSettings, (*where, "breaker"), COOLDOWN, locations)
    delivery = _section(document, "delivery")
    _check(_section(delivery, "retry"), RetryPolicy, ("delivery", "retry"), BACKOFF, locations)
    _check(_section(delivery, "breaker"), BreakerSettings, ("delivery", "breaker"), COOLDOWN, locations)
    for pair in SERVE_PAIRS:
        _check(_section(document, "serve"), ServeSettings, ("serve",), pair, locations)


def _section(document: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """``document``'s section ``key``, or an empty one where it is left out (or null)."""
    section = document.get(key)
    return section if isinstance(section, Mapping) else {}


def _check(
    section: Mapping[str, Any],
    cls: type[Any],
    path: PathKey,
    pair: Pair,
    locations: Mapping[PathKey, Location],
) -> None:
    if pair.lower not in section:  # left out: it adapts to the other
        return
    low = parse_duration(section[pair.lower])
    upper_given = pair.upper in section
    high = parse_duration(section[pair.upper]) if upper_given else _default(cls, pair.upper)
    if pair.holds(low, high):
        return
    low_at, high_at = locations.get((*path, pair.lower)), locations.get((*path, pair.upper))
    if high_at is not None and (
        low_at is None or (high_at.line, high_at.column) > (low_at.line, low_at.column)
    ):
        message = f"must be {pair.inverse} {pair.lower} ({duration_text(low)}): {pair.why}"
        raise ConfigError(f"{dotted((*path, pair.upper))}: {message}", location=high_at)
    default = "" if upper_given else ", its default"
    message = f"must be {pair.relation} {pair.upper} ({duration_text(high)}{default}): {pair.why}"
    raise ConfigError(f"{dotted((*path, pair.lower))}: {message}", location=low_at)


def _default(cls: type[Any], key: str) -> float:
    """What ``cls``'s ``key``, the upper key of a pair, runs with left out: a duration, in seconds (its default;
    for a key that is None when left out, such as token_ttl, the value that stands for it)."""
    for field in dataclasses.fields(cls):
        default = field.metadata.get("schema_default") if field.default is None else field.default
        if field.name == key and isinstance(default, int | float):
            return float(default)
    raise TypeError(f"{cls.__name__}.{key} has no duration for its default")  # a pair defined wrong


__all__ = ["check_pairs"]
