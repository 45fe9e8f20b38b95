"""The inbox's figures behind ``/readyz``, ``/metrics`` and the activity line, read off intake's event loop.

A reading (writable, depth, oldest pending) runs on a thread and a connection of its own: a slow or locked
inbox holds neither intake's loop, which answers every request, nor intake's connection, which commits the
webhooks. A caller waits for it at most ``INBOX_READ_DEADLINE_S``; past that it gets the last reading, marked
stale, and why (``inbox did not answer within 2s``). At most one reading is in flight: a probe or a scrape
that comes while one runs waits for that one (each within its own deadline), so a stalled database costs one
blocked thread, however often it is asked. On PostgreSQL the reader's statements end on the server a second
after the deadline (its ``statement_timeout``), which frees that thread, and one whose answer never comes (a
partition, a stopped server) has its connection cut 5 s later (``_pg_watchdog``): the next reading opens a new
one. An SQLite reader waits at most its busy timeout (5 s) for ``writable``'s write lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .._store._journal_pg import is_database_url
from ._inbox import Inbox, InboxError, InboxStore
from ._inbox_floor import ClaimFloor
from ._inbox_pg import PostgresInbox

# A probe's answer must come before its own timeout (a load balancer's health check waits 5 s; Kubernetes'
# readiness probe 1 s unless timeoutSeconds says more), and a scrape's with its other series.
INBOX_READ_DEADLINE_S = 2.0
# The reader's connection in pg_stat_activity: not "shipmap serve", which the processes count each other by.
GAUGES_APPLICATION_NAME = "shipmap serve gauges"


@dataclass(frozen=True)
class InboxReading:
    """What the inbox said at one reading."""

    writable: bool  # it takes writes (an SQLite write lock can be had; a PostgreSQL server is no standby)
    depth: int  # webhooks waiting, up to DEPTH_CAP
    oldest: float | None  # when the oldest waiting webhook was received (epoch seconds)


@dataclass(frozen=True)
class Gauges:
    """The answer to one ``read()``: the reading, fresh or the last one (None before any answered)."""

    reading: InboxReading | None
    problem: str | None = None  # why the reading is not fresh: the inbox did not answer in time, or failed

    @property
    def stale(self) -> bool:
        return self.problem is not None


class InboxGauges:
    """Reads the inbox's figures on a thread of its own (see the module's docstring). ``open_reader`` opens the
    connection the readings use; it is called on that thread, which alone uses the connection."""

    def __init__(
        self, open_reader: Callable[[], InboxStore], *, deadline: float = INBOX_READ_DEADLINE_S
    ) -> None:
        self.deadline = deadline
        self.last: InboxReading | None = None  # the last reading that answered
        self.latest = Gauges(None)  # the answer to the last read(), for the metrics it renders
        self._open = open_reader
        self._reader: InboxStore | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shipmap-inbox-gauges")
        self._reading: asyncio.Future[InboxReading] | None = None

    async def read(self) -> Gauges:
        """The inbox's figures, read now, or the last ones and why not, within ``deadline`` seconds."""
        reading = self._reading
        if reading is None:
            reading = self._reading = asyncio.wrap_future(self._worker.submit(self._read))
            reading.add_done_callback(self._done)
        try:
            async with asyncio.timeout(self.deadline):
                fresh = await asyncio.shield(reading)  # a caller's deadline ends its wait, not the reading
        except (TimeoutError, _Late):
            self.latest = Gauges(self.last, f"inbox did not answer within {self.deadline:g}s")
        except InboxError as error:
            self.latest = Gauges(self.last, f"inbox cannot be read: {error.message}")
        else:
            self.latest = Gauges(fresh)
        return self.latest

    def _done(self, reading: asyncio.Future[InboxReading]) -> None:
        self._reading = None  # the next read() starts another
        if not reading.cancelled() and reading.exception() is None:
            self.last = reading.result()

    def _read(self) -> InboxReading:
        """On the reader's thread."""
        started = time.monotonic()
        try:
            if self._reader is None:
                self._reader = self._open()
            reader = self._reader
            return InboxReading(reader.writable(), reader.depth(), reader.oldest_pending())
        except sqlite3.Error as error:  # PostgresInbox words its own errors; Inbox leaves sqlite's
            raise InboxError(f"{type(error).__name__}: {error}") from None
        except InboxError:
            # Past the deadline, the statement timeout that freed this thread is not news: it did not answer.
            if time.monotonic() - started >= self.deadline:
                raise _Late from None
            raise

    def close(self) -> None:
        """Close the reader on its thread, after a reading in flight; nothing waits for it (a stalled one ends
        with its statement timeout)."""
        self._worker.submit(self._close_reader)
        self._worker.shutdown(wait=False)

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class _Late(Exception):
    """A reading that failed once its deadline had passed (the reader's statement timeout ended it)."""


def open_gauge_reader(
    location: str | Path,
    *,
    synchronous: Literal["normal", "full"] = "normal",
    lease: float = 30.0,
    floor: ClaimFloor | None = None,
) -> InboxStore:
    """A connection for the gauges to the inbox a service has opened: a PostgreSQL one whose statements end a
    second after the deadline (it never waits for a database restart, ``reconnect_deadline``: a reading is due
    within ``INBOX_READ_DEADLINE_S``, answers stale meanwhile, and a failed reader is opened anew by the next), reading the claims' ``floor`` the service's inboxes share, or an SQLite one that
    may ask for the write lock (``writable``) without the service's run lock."""
    if is_database_url(location):
        return PostgresInbox(
            str(location),
            lease=lease,
            create=False,
            application_name=GAUGES_APPLICATION_NAME,
            statement_timeout_ms=int((INBOX_READ_DEADLINE_S + 1.0) * 1000),
            floor=floor,
        )
    return Inbox(location, synchronous=synchronous, lock=False)
