"""What a caller allows one mapping run: how many fan-out payloads it may make, and a stop it may be ended by.

The template budget (``_budget.py``) bounds one template; nothing else bounds how long mapping one document
takes: a fan-out over a sample's 100,000 elements makes 100,000 payloads, and a ``when`` that scans the whole
document for each element is quadratic. A tool that shows a few payloads, or answers within a deadline, sets
an allowance around its run (``with allowed(payloads=200, stop=event)``); every fan-out checks it before each element. Past
``payloads`` the fan-out ends there and records a :class:`Cut`; once ``stop`` is set the run raises
:class:`Stopped` at the next element, at the next computed field of an object or element of an ``each:``
array (:data:`current`, so one huge payload is stopped too), or at :func:`checkpoint`, between targets.
Without an allowance nothing is checked: ``shipmap run`` maps every element.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

_CURRENT: ContextVar[Allowance | None] = ContextVar("shipmap_allowance", default=None)


class Stopped(BaseException):
    """The run's stop was set. A BaseException, as asyncio's CancelledError is: no handler that words a failed
    field, or dead-letters a bad event, takes it for one."""


@dataclass(frozen=True)
class Cut:
    """A fan-out that ended because the allowance's payloads ran out: its first ``mapped`` elements were
    mapped, the other ``not_mapped`` were not (whether they would make payloads or errors is not known)."""

    target: str
    mapped: int
    not_mapped: int


@dataclass
class Allowance:
    """``payloads``: fan-out payloads the run may still make (None: any number); ``stop``: ends the run."""

    payloads: int | None = None
    stop: threading.Event | None = None
    cuts: list[Cut] = field(default_factory=list)

    def admits(self, target: str, index: int, total: int) -> bool:
        """Whether element ``index`` of ``total`` is mapped; False (and a Cut recorded) once the payloads
        ran out. Raises Stopped once the stop is set."""
        if self.stop is not None and self.stop.is_set():
            raise Stopped
        if self.payloads is not None and self.payloads <= 0:
            self.cuts.append(Cut(target, index, total - index))
            return False
        return True

    def stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def made(self) -> None:
        if self.payloads is not None:
            self.payloads -= 1


@contextmanager
def allowed(payloads: int | None = None, stop: threading.Event | None = None) -> Iterator[Allowance]:
    """Run the block's mapping (in this thread, or this task) within a fresh allowance; without ``stop``, the
    enclosing allowance's stop still ends it."""
    if stop is None:
        enclosing = _CURRENT.get()
        stop = enclosing.stop if enclosing is not None else None
    allowance = Allowance(payloads, stop)
    token = _CURRENT.set(allowance)
    try:
        yield allowance
    finally:
        _CURRENT.reset(token)


# The running allowance, or None: the ContextVar's own getter, for a loop that looks it up once an object and
# checks ``stopped()`` per field, so a run without an allowance pays one C call an object and no more.
current = _CURRENT.get


def checkpoint() -> None:
    """Raise Stopped if the running allowance's stop is set: for loops over targets, documents or cases."""
    allowance = _CURRENT.get()
    if allowance is not None and allowance.stop is not None and allowance.stop.is_set():
        raise Stopped
