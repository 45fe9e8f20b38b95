"""Where the studio maps: one evaluation (or cases run, or case save) at a time, in a thread of the studio's
own, stopped when its request gives up.

A worker thread cannot be killed, so the mapping is stopped cooperatively: it runs within an engine
:class:`~shipmap.engine.Allowance` whose stop is set when the request's deadline passes, and the engine
checks it before each fan-out element, each computed field of one payload, and between targets and cases.
One evaluation at a time: each one takes a CPU core, and the page asks again on every edit. A request that
comes while one runs waits its turn, within its own deadline (the page's next evaluation is the one the user wants, so it is queued, not
refused); past ``MAX_WAITING`` waiting, the studio answers 503 at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from shipmap.engine import Stopped, allowed

from ._errors import TimedOut

log = logging.getLogger("shipmap.studio")

MAX_WAITING = 4  # requests queued behind the running one; each holds its body (up to 8 MiB) while it waits
T = TypeVar("T")


@dataclass
class Ticket:
    """Where a request's mapping work is: what its 503 says when the deadline passes."""

    waiting: bool = False


class MappingWork:
    """The studio's mapping thread and its queue. Made per studio; ``close`` when it stops."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._slot: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting = 0
        self._running: threading.Event | None = None  # the running work's stop

    async def run(self, ticket: Ticket, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in the mapping thread, within an allowance whose stop is set if this call is
        cancelled (the request's deadline); waits for the thread while another call's work runs."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a studio started again serves on a new loop
            self._loop, self._slot = loop, asyncio.Semaphore(1)
        assert self._slot is not None
        slot = self._slot
        if self._waiting >= MAX_WAITING:
            raise TimedOut(
                f"the studio is busy: one evaluation runs and {MAX_WAITING} more wait; try again", 503
            )
        self._waiting += 1
        ticket.waiting = True
        try:
            await slot.acquire()
        finally:
            self._waiting -= 1
        ticket.waiting = False
        stop = threading.Event()
        try:
            future = self._pool().submit(_within, stop, function, *args)
        except BaseException:
            slot.release()
            raise
        self._running = stop
        # The slot is free when the thread is, not when the request gives up: one mapping runs at a time.
        future.add_done_callback(lambda _: _call_soon(loop, slot.release))
        try:
            return await asyncio.wrap_future(future)
        finally:
            stop.set()  # cancelled at the deadline: the mapping stops at its next element or target

    def close(self) -> None:
        if self._running is not None:
            self._running.set()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = None

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shipmap-studio-map")
        return self._executor


def _within(stop: threading.Event, function: Callable[..., T], *args: Any) -> T:
    try:
        with allowed(stop=stop):
            return function(*args)
    except Stopped:  # its request has been answered 503 already, or the studio is stopping
        log.info("studio: a mapping was stopped before it finished")
        raise TimedOut("the studio stopped this mapping before it finished", 503) from None


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], Any]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop has closed: the studio stopped
        loop.call_soon_threadsafe(callback)


__all__ = ["MAX_WAITING", "MappingWork", "Ticket"]
