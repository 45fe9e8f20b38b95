"""The webhooks between the inbox and the runtime: one lane per source, so that a slow source API holds up
its own source's webhooks and no other.

A lane holds rows of one source in inbox order. A row that its source enriches (and whose documents are not
saved yet) is fetched as soon as it enters its lane, on a task of its own; any other row is ready at once.
The feed hands over the oldest ready row among the lanes' heads. So a webhook never overtakes an earlier one
of its own source, however long their fetches take (a store API that answers one order in 5 s and the next
in 50 ms still sees them delivered in the order they came); across sources, whatever is ready goes first.

Bounded: the lane of an enriching source holds at most ``enrich.concurrency`` rows, so at most that many of
its webhooks are fetched at once and held with their documents; the other lanes share one page of rows. A
lane that is full *detaches*: its source's later rows stay in the inbox, the feed leaves them out of its
reads of the others (which go on past them), and reads them apart, from ``Lane.cursor``, as the lane makes
room. Once such a read comes back short (the lane has caught up with the inbox), the lane joins the others'
reads again.

``shipmap run`` and ``shipmap replay --refetch`` enrich through the same lanes (:func:`through_lanes`), over
an input they read in order: there an item whose lane is full waits unread, with the items after it, since a
file cannot be read past and come back to as an inbox can.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

E = TypeVar("E", bound=BaseException)
T = TypeVar("T")  # what a lane hands over: an event
_CANCEL_WAIT = 2.0  # seconds a closing feed waits for its cancelled fetches (the drain waits 5 s for it)
# One page of rows: the most the feed reads from the inbox at once, and the most that the lanes that fetch
# nothing hold, together (``through_lanes`` too).
PAGE = 64


class Queued(Protocol):
    """What a lane holds a row by: its place in the input (an inbox row's id, a line's index)."""

    @property
    def id(self) -> int: ...


R = TypeVar("R", bound=Queued)


@dataclass(eq=False, slots=True)
class Slot(Generic[R, T]):
    """One row in its lane: ready (``event``), or its documents being fetched (``fetch``)."""

    row: R
    event: T | None = None
    fetch: asyncio.Task[T] | None = None

    @property
    def ready(self) -> bool:
        return self.event is not None or (self.fetch is not None and self.fetch.done())

    def result(self) -> T:
        """The event to hand over; the fetch's error when it failed (``SourceUnavailable``: park the row)."""
        if self.event is not None:
            return self.event
        assert self.fetch is not None
        return self.fetch.result()


@dataclass(eq=False, slots=True)
class Lane(Generic[R, T]):
    cap: int | None  # rows held at most (the source's enrich.concurrency); None: the lanes share a page
    slots: deque[Slot[R, T]] = field(default_factory=deque)
    detached: bool = False  # full: its rows are read apart, after ``cursor``
    cursor: int = 0  # the last row of this source read from the inbox


class Lanes(Generic[R, T]):
    """The lanes by source. ``cap_of(source)``: the most rows a source's lane holds, or None for a source
    that fetches nothing (those lanes share ``shared`` rows between them)."""

    def __init__(self, cap_of: Callable[[str], int | None], shared: int) -> None:
        self._cap_of = cap_of
        self._lanes: dict[str, Lane[R, T]] = {}
        self._shared = shared
        self._in_shared = 0  # rows held by the lanes without a cap
        self.held: set[int] = set()  # the ids of the rows in the lanes

    def __len__(self) -> int:
        return len(self.held)

    def lane(self, source: str) -> Lane[R, T]:
        lane = self._lanes.get(source)
        if lane is None:
            lane = self._lanes[source] = Lane(self._cap_of(source))
        return lane

    def recap(self) -> None:
        """Each lane held to ``cap_of`` as it says now (a reload changed a source's ``enrich``). A lane that
        held fetches keeps a cap (its fetches in flight end there, and ``take_failed`` finds them); one that
        shared the page and gains a cap stops counting towards the page (its rows in it are handed over as
        they are)."""
        for source, lane in self._lanes.items():
            cap = self._cap_of(source)
            if cap is None or cap == lane.cap:
                continue
            if lane.cap is None:
                self._in_shared -= len(lane.slots)
            lane.cap = cap

    def shared_room(self) -> int:
        return self._shared - self._in_shared

    def room(self, lane: Lane[R, T]) -> int:
        return self.shared_room() if lane.cap is None else lane.cap - len(lane.slots)

    def detached(self) -> Iterator[tuple[str, Lane[R, T]]]:
        return ((source, lane) for source, lane in self._lanes.items() if lane.detached)

    def detached_sources(self) -> frozenset[str]:
        return frozenset(source for source, _ in self.detached())

    def add(self, lane: Lane[R, T], slot: Slot[R, T]) -> None:
        lane.slots.append(slot)
        self.held.add(slot.row.id)
        if lane.cap is None:
            self._in_shared += 1

    def rewind(self) -> None:
        """The next reads start from the inbox's first pending row (those held are skipped)."""
        for lane in self._lanes.values():
            lane.cursor = 0

    def pop_ready(self) -> Slot[R, T] | None:
        """The oldest row at the head of a lane that is ready, out of its lane; None when no head is."""
        best: Lane[R, T] | None = None
        for lane in self._lanes.values():
            if (
                lane.slots
                and lane.slots[0].ready
                and (best is None or lane.slots[0].row.id < best.slots[0].row.id)
            ):
                best = lane
        if best is None:
            return None
        slot = best.slots.popleft()
        self._forget(best, slot)
        return slot

    def take_failed(self, kind: type[E]) -> list[tuple[R, E]]:
        """The rows whose fetch ended with a ``kind`` error, out of their lanes wherever they stand, with the
        error (a row parked for its source API's outage waits in the inbox, not at the head of its lane)."""
        taken: list[tuple[R, E]] = []
        for lane in self._lanes.values():
            if lane.cap is None:
                continue  # nothing fetched there
            for slot in [s for s in lane.slots if s.fetch is not None and s.fetch.done()]:
                assert slot.fetch is not None
                error = None if slot.fetch.cancelled() else slot.fetch.exception()
                if isinstance(error, kind):
                    lane.slots.remove(slot)
                    self._forget(lane, slot)
                    taken.append((slot.row, error))
        return taken

    def _forget(self, lane: Lane[R, T], slot: Slot[R, T]) -> None:
        self.held.discard(slot.row.id)
        if lane.cap is None:
            self._in_shared -= 1

    async def aclose(self) -> None:
        """Cancel the fetches in flight and let every row go: what was not handed over stays in the inbox."""
        tasks = [slot.fetch for lane in self._lanes.values() for slot in lane.slots if slot.fetch is not None]
        self._lanes.clear()
        self.held.clear()
        self._in_shared = 0
        for task in tasks:
            task.cancel()
        if tasks:
            with contextlib.suppress(asyncio.CancelledError):  # the service stopping: what ended has ended
                await asyncio.wait(tasks, timeout=_CANCEL_WAIT)
        for task in tasks:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: a fetch that failed as it was let go is not an error to log


@dataclass(frozen=True, slots=True)
class Position:
    """An item's place in an input read in order."""

    id: int


Fetch = Callable[[], Coroutine[Any, Any, T]]


async def through_lanes(
    items: Iterable[T],
    plan: Callable[[T], tuple[str, Fetch[T] | None]],
    cap_of: Callable[[str], int | None],
) -> AsyncGenerator[T, None]:
    """``items``, each completed as ``plan`` says: its lane (its source) and what fetches it (run on a task of
    its own once its lane has room; None: ready as it is). An item never overtakes an earlier one of its lane;
    across lanes, whatever is ready goes first. ``cap_of`` as for :class:`Lanes`. A fetch returns the item to
    hand over, never raises for the item's sake (an event that cannot be enriched is a rejected record). The
    fetches still under way when the consumer stops are cancelled."""
    lanes: Lanes[Position, T] = Lanes(cap_of, shared=PAGE)
    changed = asyncio.Event()
    unread = iter(items)
    index = 0
    next_up: tuple[T, str, Fetch[T] | None] | None = None  # read, and waiting for room in its lane
    ended = False
    try:
        while True:
            while not ended:  # read on as far as the lanes have room
                if next_up is None:
                    item = next(unread, _END)
                    if isinstance(item, _End):
                        ended = True
                        break
                    next_up = (item, *plan(item))
                item, source, fetch = next_up
                lane = lanes.lane(source)
                if lanes.room(lane) <= 0:
                    break  # its lane is full: it waits, and so do the items after it
                slot: Slot[Position, T] = Slot(Position(index), event=item if fetch is None else None)
                if fetch is not None:
                    slot.fetch = asyncio.create_task(fetch(), name=f"shipmap-enrich-{source}-{index}")
                    slot.fetch.add_done_callback(lambda _: changed.set())
                lanes.add(lane, slot)
                index += 1
                next_up = None
            changed.clear()
            ready = lanes.pop_ready()
            if ready is not None:
                yield ready.result()
            elif ended and not lanes:
                return
            else:
                await changed.wait()  # a fetch at a lane's head ends (every wait has its GETs' deadline)
    finally:
        await lanes.aclose()


class _End:
    """The end of the items (an item may be None)."""


_END = _End()
