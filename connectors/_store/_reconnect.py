"""How shipmap opens a lost PostgreSQL connection again: the one policy of the journal, the delivery side of a
PostgreSQL inbox (and its lease renewer), the hourly purge's look-up of rejections, and the shared breaker
stores (``journal.reconnect_deadline``). The breaker stores' connections are asyncio's: they reconnect in the
background on ``pauses``, the same backoff and deadline, while their worker runs on its own copy.

Not waited for, by design: intake's connection (a webhook it cannot commit is answered 503 at once, and its
sender retries), the gauges' reader (a reading is due within its deadline; a failed reader is opened anew by
the next), the stop report's reads (they say what they cannot read), a journal opened by a command, and the
first open at a service's start (a wrong URL or password fails at once).

A database that restarts (a minor upgrade, a failover) ends every session and refuses new ones for a few
seconds. An attempt every pause, the pause doubling from ``BACKOFF_FIRST_S`` to ``BACKOFF_CAP_S``, until the
deadline after the loss: a database back within it is found again; one still away past it stops the caller
with the error it met (exit 7 for the journal's). A stop of the service (``stop``, set) ends the wait at once
(``ReconnectStopped``): what the caller was doing stays undone, pending for the next start."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

RECONNECT_DEADLINE_S = 120.0  # journal.reconnect_deadline's default
BACKOFF_FIRST_S, BACKOFF_CAP_S = 0.1, 5.0

_T = TypeVar("_T")


class ReconnectStopped(asyncio.CancelledError):
    """The wait for the database was ended by the service's stop: the delivery thread ends as at the drain's
    cancel (a cancellation, not an error: what it was doing stays pending, and the service exits 0)."""


def pauses(lost_at: float, deadline_s: float) -> Iterator[float]:
    """The pause before each attempt to open again a connection lost at ``lost_at`` (``time.monotonic()``),
    while the deadline has not passed; the last pause ends at the deadline."""
    pause = BACKOFF_FIRST_S
    while (left := lost_at + deadline_s - time.monotonic()) > 0:
        yield min(pause, left)
        pause = min(pause * 2, BACKOFF_CAP_S)


def reopen_within(
    deadline_s: float,
    reopen: Callable[[], _T],
    failed: tuple[type[Exception], ...],
    *,
    what: str,
    log: logging.Logger,
    stop: threading.Event | None = None,
) -> _T:
    """``reopen()`` tried at once, then after each of ``pauses`` until it answers or ``deadline_s`` has passed
    (its last failure raised then): blocking, for the thread whose connection it is. ``what`` names the
    connection in the log (never its password); ``failed``: the errors of an attempt that did not connect.
    ``stop``: once set, the wait ends (``ReconnectStopped``) instead of holding the stop up to the deadline."""
    lost_at = time.monotonic()
    try:
        return reopen()
    except failed as error:
        last = error
    log.warning(
        "%s: the database does not take a new session yet (%s); trying for up to %g s",
        what,
        getattr(last, "message", last),  # a ShipmapError's words, without its "error: " head
        deadline_s,
    )
    stopping = stop if stop is not None else threading.Event()  # never set: the whole deadline
    for pause in pauses(lost_at, deadline_s):
        if stopping.wait(pause):
            log.warning("%s: the service is stopping: no longer waiting for the database", what)
            raise ReconnectStopped(what)
        try:
            connection = reopen()
        except failed as error:
            last = error
            continue
        log.warning("%s: connection opened again after %.1f s", what, time.monotonic() - lost_at)
        return connection
    raise last


def open_within(
    deadline_s: float | None,
    connect: Callable[[], _T],
    failed: tuple[type[Exception], ...],
    *,
    what: str,
    log: logging.Logger,
    stop: threading.Event | None = None,
) -> _T:
    """A connection's open by its owner's policy: ``connect()`` once when it has no ``deadline_s`` (a
    command's, intake's: it fails at once), else ``reopen_within`` that deadline."""
    if deadline_s is None:
        return connect()
    return reopen_within(deadline_s, connect, failed, what=what, log=log, stop=stop)
