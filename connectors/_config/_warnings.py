"""Config warnings: what a config may say but its author would want to know (a credential written into the
file, retries that give up before the breaker holds a delivery, a timeout that can never fire). Each is said
at its place, as an error is (``file:line:col: message``), but the config loads: a config that loaded before
still does.

They are logged on ``shipmap.connectors.config`` (:func:`warn`); ``shipmap validate`` gathers them instead
(:func:`collecting`) and reports them as its warnings, in its text and JSON reports.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from shipmap.engine import Location

from .._config_key import duration_text
from .._plural import counted
from ._model import DEFAULT_PHASES, PathKey, RuntimeConfig, Timeouts, dotted

_log = logging.getLogger("shipmap.connectors.config")


@dataclass(frozen=True, slots=True)
class ConfigWarning:
    message: str  # names keys and values that are no secrets (counts, durations), never a credential
    location: Location | None  # None: a config built in code

    def __str__(self) -> str:
        return f"{self.location or 'config'}: {self.message}"


def warn(message: str, location: Location | None) -> None:
    warning = ConfigWarning(message, location)
    _log.warning("%s", warning, extra={"config_warning": warning})


@contextmanager
def collecting() -> Iterator[list[ConfigWarning]]:
    """The config warnings said meanwhile, gathered into the list yielded instead of logged."""
    found: list[ConfigWarning] = []

    def gather(record: logging.LogRecord) -> bool:
        warning = getattr(record, "config_warning", None)
        if warning is None:
            return True
        found.append(warning)
        return False

    _log.addFilter(gather)
    try:
        yield found
    finally:
        _log.removeFilter(gather)


def warn_retries_before_breaker(config: RuntimeConfig) -> None:
    """Warn where ``delivery.retry.max_attempts`` is below a connection's ``breaker.failures``. Attempts count
    per delivery, failures in a row per connection; an attempt that fails into an open breaker is not counted
    (the delivery waits, pending). With max_attempts >= failures, a delivery alone on a connection that is
    down opens the breaker with its own failures before it gives up; below, it is dead-lettered first (a
    vendor's 1-second restart did it). Busier connections open it sooner, with many deliveries failing at
    once, but the first delivery of a quiet spell is alone. Located at whichever of the two keys the file
    wrote later."""
    attempts = config.delivery.retry.max_attempts
    on_shared: list[str] = []
    for connection in config.connections:
        if connection.breaker is None:
            on_shared.append(connection.name)
        elif connection.breaker.failures > attempts:
            path: PathKey = ("connections", connection.name, "breaker", "failures")
            _warn_below(config, connection.breaker.failures, path, [connection.name])
    if on_shared and config.delivery.breaker.failures > attempts:
        _warn_below(config, config.delivery.breaker.failures, ("delivery", "breaker", "failures"), on_shared)


def _warn_below(config: RuntimeConfig, failures: int, failures_path: PathKey, connections: list[str]) -> None:
    attempts_path: PathKey = ("delivery", "retry", "max_attempts")
    attempts = config.delivery.retry.max_attempts
    named = ("connection " if len(connections) == 1 else "connections ") + ", ".join(connections)
    warn(
        f"{dotted(attempts_path)} ({attempts}{_default(config, attempts_path)}) is below"
        f" {dotted(failures_path)} ({failures}{_default(config, failures_path)}): in an"
        f" outage, a delivery alone on {named} is dead-lettered after {counted(attempts, 'attempt')}, before"
        f" the breaker opens (at {failures} failures in a row) to hold it pending; make max_attempts at least"
        " failures",
        _written_later(config, attempts_path, failures_path),
    )


def warn_phases_past_total(config: RuntimeConfig) -> None:
    """Warn where a timeout's ``connect``, ``read``, ``write`` or ``pool``, given, is longer than its
    ``total``. Every phase runs inside the attempt's deadline, ``total`` (the pool wait, a login and the body's
    read included), so such a timeout never fires: ``read: 2m`` with the default total of 1m ends reads at
    1m, which was said only when an attempt timed out. Left out (None, in code as in a file), a phase is not
    the author's choice; given, even equal to its default, it is (a single duration gives ``total`` twice
    it). Not an error: the attempts end as they always did. Located at whichever of the two keys the file
    wrote later."""
    sections: list[tuple[PathKey, Timeouts]] = [(("delivery", "timeout"), config.delivery.timeout)]
    for connection in config.connections:
        if connection.timeout is not None:
            sections.append((("connections", connection.name, "timeout"), connection.timeout))
    for path, timeouts in sections:
        total_path: PathKey = (*path, "total")
        for phase in DEFAULT_PHASES:
            seconds: float | None = getattr(timeouts, phase)
            if seconds is None or seconds <= timeouts.total:  # left out, or within total
                continue
            phase_path: PathKey = (*path, phase)
            warn(
                f"{dotted(phase_path)} ({duration_text(seconds)}) is longer than {dotted(total_path)}"
                f" ({duration_text(timeouts.total)}{_default(config, total_path)}): total ends every attempt"
                f" first, so this timeout never fires; make {phase} at most total",
                _written_later(config, phase_path, total_path),
            )


def _written_later(config: RuntimeConfig, *paths: PathKey) -> Location | None:
    """Where the file wrote the last of ``paths``, the key that made them disagree (built in code: None)."""
    written = [at for at in (config.locations.get(path) for path in paths) if at is not None]
    return max(written, key=lambda at: (at.line, at.column)) if written else None


def _default(config: RuntimeConfig, path: PathKey) -> str:
    """``, its default`` after the value of a key a file left out (a config built in code: nothing)."""
    return ", its default" if config.locations and path not in config.locations else ""


__all__ = ["ConfigWarning", "collecting", "warn", "warn_phases_past_total", "warn_retries_before_breaker"]
