"""The journal writer: a thread that runs an SQLite journal's writes, so their disk I/O leaves the event loop.

Python's sqlite3 releases the GIL inside SQLite, so the B-tree work, the WAL writes and the checkpoints of a
run's journal run on another core while the event loop keeps sending. Units of work (a settled batch's
transaction, a flush of delivered marks, a dead letter) run one at a time, in the order they were handed
over, on the journal's one connection; the event loop uses that connection only while the writer is idle
(``drain``). The loop awaits what must be committed before it goes on (a batch's ``pending`` rows, before any
of its requests goes out) and hands over the rest without waiting (delivered marks, which may lag).

Checkpoints: SQLite's auto-checkpoint would run inside whichever commit crosses its WAL size, including the
one a settled batch awaits. The writer turns it off and checkpoints (``PASSIVE``) after a unit that nobody
awaits once the WAL has grown by the same ``CHECKPOINT_PAGES`` frames, so the WAL, and the window that an OS
crash can lose under ``synchronous=NORMAL``, stay as SQLite's default would keep them.

The first error of a unit is kept: it is raised wherever the loop next looks (``raise_error``, ``drain``),
and every later unit fails with it at once, untried. The run stops there with the journal's message.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from ._journal import Journal

CHECKPOINT_PAGES = 1000  # SQLite's default wal_autocheckpoint: the WAL frames between two checkpoints
_T = TypeVar("_T")
_log = logging.getLogger("shipmap.journal")


class JournalWriter:
    """One thread that runs the journal's writes for a run, in order; ``close()`` when the run ends."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="shipmap-journal")
        self._units: deque[concurrent.futures.Future[Any]] = deque()  # handed over, oldest first
        self._error: BaseException | None = None
        self._error_lock = threading.Lock()
        self._commits = 0  # units since the last checkpoint
        self._frames_per_commit = 0.0  # learnt from each checkpoint's WAL size; 0: not yet known
        journal.checkpoint_by_hand()

    def submit(self, body: Callable[[], _T], *, checkpoint: bool = True) -> concurrent.futures.Future[_T]:
        """Run ``body()`` on the writer thread after every unit handed over before it. ``checkpoint``: the
        unit may be followed by a checkpoint (not for a unit the loop awaits)."""
        future = self._pool.submit(self._run, body, checkpoint)
        self._units.append(future)
        return future

    async def call(self, body: Callable[[], _T]) -> _T:
        """``body()`` on the writer thread, awaited (the loop goes on meanwhile)."""
        return await asyncio.wrap_future(self.submit(body, checkpoint=False))

    def idle(self) -> bool:
        self._forget_done()
        return not self._units

    async def drain(self) -> None:
        """Wait until every unit handed over is done; raise the first error of any of them."""
        while self._units:
            await asyncio.wait([asyncio.wrap_future(self._units[-1])])
            self._forget_done()
        self.raise_error()

    def raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Finish the units handed over, then stop the thread (its errors are the caller's to look at)."""
        self._pool.shutdown(wait=True)

    def _forget_done(self) -> None:
        while self._units and self._units[0].done():
            self._units.popleft()

    def _run(self, body: Callable[[], _T], checkpoint: bool) -> _T:
        if self._error is not None:  # the journal failed: nothing more is written
            raise self._error
        try:
            result = body()
            self._commits += 1
            if checkpoint and self._checkpoint_due():
                self._checkpoint()
        except BaseException as error:
            with self._error_lock:
                if self._error is None:
                    self._error = error
            raise
        return result

    def _checkpoint_due(self) -> bool:
        if not self._frames_per_commit:  # learn the WAL's growth per unit from a first, early checkpoint
            return self._commits >= 16
        return self._commits * self._frames_per_commit >= CHECKPOINT_PAGES

    def _checkpoint(self) -> None:
        frames = self.journal.checkpoint()
        if frames > 0:
            self._frames_per_commit = frames / self._commits
        self._commits = 0


__all__ = ["CHECKPOINT_PAGES", "JournalWriter"]
