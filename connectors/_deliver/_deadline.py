"""A delivery's overall deadline (``timeout.total``), for the requests of one task, on one timer.

``asyncio.timeout`` arms a timer for every request and cancels it when the answer comes: ~6 us of CPU a
request, a twentieth of the direct path's. A deadline is seconds and an answer milliseconds, so each task
sending deliveries keeps one ``TaskDeadline`` whose timer stays armed from request to request: when it fires
during a request past its deadline, it cancels the task; during a later request, it is armed again for that
one's deadline; with no request under way, it stops. What the request sees is asyncio.timeout's: the
TimeoutError raised from the CancelledError it caused, and a cancellation from elsewhere passed through.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any


class TaskDeadline:
    """``with deadline.limit(seconds):`` around one request of ``task`` at a time (None: no deadline)."""

    __slots__ = ("_active", "_cancelling", "_due", "_expired", "_handle", "_loop", "_task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self._task = task
        self._loop = task.get_loop()
        self._due: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._active = False
        self._expired = False
        self._cancelling = 0

    def limit(self, seconds: float | None) -> TaskDeadline:
        if self._active:
            raise RuntimeError("a TaskDeadline limits one request at a time")
        self._active = True
        self._cancelling = self._task.cancelling()
        if seconds is None:
            self._due = None
            return self
        due = self._due = self._loop.time() + seconds
        handle = self._handle
        if handle is None or handle.when() > due:
            self._arm(due)
        return self

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._active = False
        if self._expired:
            self._expired = False
            if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        due = self._due
        if not self._active or due is None or self._expired:
            return  # no request under way: the next one arms it again
        if self._loop.time() >= due:
            self._expired = True
            self._task.cancel()
        else:
            self._arm(due)
