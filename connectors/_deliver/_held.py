"""Deliveries a run holds back while their connection is down, so the other connections' go on.

A delivery waiting for an open circuit breaker holds its sender. ``shipmap run`` lets half of its senders (at
least one) wait for one connection's open breaker (``Deliverer``'s ``waiting_cap``); that connection's other
deliveries are *held back*: the sender leaves them ``pending`` in the journal and takes the next job, so the
deliveries of the connections that are up go at full speed meanwhile. A held-back delivery holds no memory:
its row in the journal is the record, as for a delivery an interrupted run left pending.

For each connection with deliveries held back a watcher waits for its breaker (the senders waiting in
``admit()`` probe it; the watcher never does):

- **it closes** (a probe was answered): the watcher reads the connection's pending rows that nothing in this
  run has queued, a page at a time, in the order they were journaled, and queues them; what it queues and
  finds the breaker open again is held back again, and looked at again when it closes;
- **``outage_wait`` passes** with it still open (counted from when the run found it open, as the waiting
  deliveries count it): the watcher stops, and what is held back stays ``pending`` for the next run, as the
  waiting deliveries that give up do. The run's summary counts them from the journal once the run ends.

Nothing is sent twice: a row read for sending is ``scheduled`` at once (a repeat of its event in the input is
then skipped), and one queued, in flight or delivered-but-unmarked is ``scheduled`` already, so a look skips
it. Nothing is lost: a held-back delivery is a pending row, which this run sends, or the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from .._map._steps import Job
from .._store._outbox import Outbox
from ._delivery import Deliverer
from ._request import Outcome

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


class HeldBack:
    """The deliveries one run holds back, by connection, and the watchers that send them again."""

    def __init__(self, outbox: Outbox, deliverer: Deliverer, queue: asyncio.Queue[Job | None], spawn: Spawn):
        self.outbox = outbox
        self.deliverer = deliverer
        self.queue = queue
        self._spawn = spawn
        self.log = outbox.log
        self._held: set[str] = set()  # connections with deliveries held back since their watcher's last look
        self._holding: set[str] = set()  # connections that held deliveries back in this run
        self._watchers: dict[str, asyncio.Task[None]] = {}
        # Connections whose watcher gave up, with the outage_wait deadline it gave up at: the same outage
        # needs no new watcher (one more delivery held back after it is left pending, as it would have been).
        self._gave_up: dict[str, float] = {}
        self._reasons: dict[str, str] = {}  # the latest outage of each connection, for the summary

    def hold(self, job: Job, outcome: Outcome) -> None:
        """``job`` found its connection's breaker open (past the senders that may wait for it, or past
        ``outage_wait``): it stays pending, and goes once the breaker closes, within ``outage_wait``."""
        name = job.request.connection
        self.outbox.release(job.key)  # the journal's pending row is the record from now on
        self._held.add(name)
        self._holding.add(name)
        if outcome.reason:
            self._reasons[name] = outcome.reason
        if name in self._watchers:
            return
        if self._gave_up.get(name) == self.deliverer.give_up_at(name):
            return  # the same outage its watcher gave up on
        self._gave_up.pop(name, None)
        self._watchers[name] = self._spawn(self._watch(name))

    async def settle(self) -> None:
        """Wait until nothing is held back that this run would still send: the queue is empty, no sender
        holds a job, and each watcher has sent what its connection held back or given up. Bounded: a
        watcher waits ``outage_wait`` at most for each outage."""
        while True:
            await self.queue.join()
            watchers = list(self._watchers.values())
            if not watchers:
                return
            await asyncio.wait(watchers)

    def count_left(self) -> dict[str, tuple[int, str]]:
        """Once the run's senders have ended and their marks are committed: for each connection that held
        deliveries back, how many stay pending for the next run, and why."""
        left = {}
        for name in sorted(self._holding):
            count = self.outbox.count_pending(name)
            if count:
                reason = self._reasons.get(name) or self.deliverer.breakers[name].outage().detail
                left[name] = (count, reason)
        return left

    async def _watch(self, name: str) -> None:
        breaker = self.deliverer.breakers[name]
        try:
            while name in self._held:
                give_up_at = self.deliverer.give_up_at(name)
                if not await breaker.wait_closed(give_up_at):
                    self._gave_up[name] = give_up_at
                    if breaker.is_open:  # else its waiting was stopped: a later look sends them
                        self._reasons[name] = self.deliverer.redactor.redact(breaker.outage().detail)
                        self.log.warning("connection %s %s", name, self._reasons[name])
                    return
                self._held.discard(name)  # what is held back from now on waits for the next look
                self.log.info("connection %s: circuit breaker closed; sending the deliveries held back while"
                              " it was open", name)  # fmt: skip
                after: tuple[float, str] | None = None
                while True:
                    jobs, after = self.outbox.held_back(name, after)
                    for job in jobs:
                        await self.queue.put(job)
                    if after is None:
                        break
                    if breaker.is_open:  # down again: the rest stays held back, for the next look
                        self._held.add(name)
                        break
        finally:
            self._watchers.pop(name, None)
