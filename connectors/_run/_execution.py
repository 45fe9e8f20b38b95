"""One run's execution: the driver of the stages intake -> store -> map -> deliver, over one journal.

A run wires the stages together and owns none of their work:

- **intake** (``_intake._producers``): the input's events, in order, as batches; with ``workers=1`` a forked
  worker process (``_intake._pipeline``) reads and maps them, and this process stores and sends them;
- **map** (``_map._mapper``): each event into its steps: for every matching mapping entry and every target
  the mapping produces, a delivery key derived from (mapping name, target, canonical source JSON), the
  request, and its idempotency key (``_map._idempotency``);
- **store** (``_store._outbox``, ``_store._leases``): the only journal writer. A delivery already
  ``delivered`` or ``dead`` is skipped; otherwise it is recorded ``pending`` (with its request and idempotency
  key) before it is sent, a batch of events in one transaction. A run starts by re-sending what an
  interrupted run left ``pending``, exactly as recorded;
- **deliver** (``_deliver._workers``, over ``_delivery``): the senders, which report each outcome back to
  the store.

An :class:`Execution` is its ``Runtime``'s: it reads the runtime's connections and auth sessions, borrows
what the runtime lends each run (its transport, random source and log, given to the constructor), and takes
what a reload and the last run left from the runtime's :class:`Carryover` (moved connections, shared breakers
to close, the breaker store). It owns its summary and its breaker store (a shared one on a PostgreSQL journal)
while it runs, and hands them back through the carryover as it ends (``hand_back``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING

import httpx

from .._deliver._breaker import SharedStore
from .._deliver._delivery import Deliverer
from .._deliver._held import HeldBack
from .._deliver._request import OutboundRequest
from .._deliver._workers import DeliveryWorkers
from .._map._steps import Item, Job
from .._redact import RedactingLogger
from .._store._breaker_pg import PostgresStateStore
from .._store._claims import release_leases
from .._store._journal import Journal
from .._store._leases import LeaseKeeper
from .._store._moves import follow_base_urls, move_pending, stranded
from .._store._outbox import Outbox
from .._store._retention import prune_periodically
from .._summary import Progress, RunSummary
from ._carryover import Carryover

if TYPE_CHECKING:
    from .._runtime import Runtime


class Execution:
    """One run: the stages wired together over one journal, the worker pool and the progress reports.

    It recovers what an interrupted run left pending, then hands each batch from intake to the store
    (``Outbox.settle``: journaled ``pending`` before any request goes out) and its jobs to the delivery
    workers, and waits for them (and for what they held back while a connection was down: ``HeldBack``); on
    a shared journal it keeps this worker's leases meanwhile.

    ``deliverer`` is the run's while it sends (None before and after), for the runtime to tell it to stop
    waiting for open breakers (``Runtime.park_waiting``, ``Runtime.stop_waiting_for``). ``summary`` and
    ``breaker_store`` are the run's, which the runtime reads while it runs (``Runtime.live``,
    ``Runtime.breaker_store``), and which ``hand_back`` leaves in the carryover.
    """

    def __init__(
        self,
        runtime: Runtime,
        journal: Journal,
        progress: Callable[[Progress], None] | None,
        total: int | None,
        *,
        carryover: Carryover,
        transport: httpx.AsyncBaseTransport | None,
        rng: random.Random,
        log: RedactingLogger,
        park_when_down: bool = False,
        replay: bool = False,
    ) -> None:
        self.runtime = runtime
        self.journal = journal
        self.progress = progress
        self.total = total
        self.carryover = carryover
        self.transport = transport
        self.rng = rng
        self.log = log
        self.deliverer: Deliverer | None = None
        # A run that parks what waits for a breaker knows what is parked once its recovery has looked.
        self.summary = RunSummary(replay=replay, parked_known=not park_when_down)
        # The last run's until this one opens its shared store (``_shared_state``).
        self.breaker_store = carryover.breaker_store
        self.started = time.perf_counter()
        self._follow_moved_connections()  # before recovery reads the pending rows
        self.outbox = Outbox(
            journal, runtime.mapper, runtime.connections, self.summary, log, waits=carryover.resume
        )
        self.leases = LeaseKeeper(self.outbox)
        self.workers = DeliveryWorkers(self.outbox, self.leases, runtime.mapper.reason, self._report)
        self.park_when_down = park_when_down

    def hand_back(self) -> None:
        """The run has ended, however it ended: its summary and breaker store stay with the runtime."""
        self.carryover.keep(self.summary, self.breaker_store)

    def _follow_moved_connections(self) -> None:
        """Point the pending deliveries of connections moved to another ``base_url`` there. An SQLite journal
        has one user: it compares each base URL with the last run's, so a restart after an edit moves them
        too. The workers of a PostgreSQL journal may run with two configs during a rollout: there only a
        reload's moves apply, once, by the process that reloaded, and what is left for another base is named
        (once per connection and base), with the command that moves it."""
        runtime, journal, log = self.runtime, self.journal, self.log
        reloaded = self.carryover.take_moves()
        base_urls = {name: c.base_url for name, c in runtime.connections.items()}
        if journal.shared:
            moved = [(name, move_pending(journal, name, old, new)) for name, old, new in reloaded]
        else:
            moved = follow_base_urls(journal, base_urls)
        for name, count in moved:
            if not count:
                continue
            log.warning("connections.%s: base_url changed: %d pending deliver%s journaled for the old one go to"
                        " the new one", name, count, "y" if count == 1 else "ies")  # fmt: skip
        for left in stranded(journal, base_urls):
            if not self.carryover.first_naming(left.connection, base_urls[left.connection]):
                continue
            log.warning("connections.%s: %s journaled for another base_url (such as %s) go there, not to this one;"
                        " if the endpoint moved, `shipmap journal move-pending JOURNAL %s --from OLD_BASE_URL --to"
                        " BASE_URL` sends them here", left.connection, left.describe(), left.example_url,
                        left.connection)  # fmt: skip

    async def execute(
        self, producer: AsyncGenerator[list[Item], None], *, decide: bool, wait_for_others: bool = True
    ) -> RunSummary:
        """Re-send what an interrupted run left pending, then settle and send each batch ``producer`` gives.
        ``decide``: check each delivery against the journal (a run); a replay's producer already did."""
        runtime, outbox = self.runtime, self.outbox
        concurrency = runtime.config.delivery.concurrency
        queue: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=concurrency * 4)
        shared = await self._shared_state()
        # Half the senders at most wait for one connection that is down: the others go on with the other
        # connections. Its other deliveries are parked (serve's sweeps send them) or held back (a run's).
        waiting_cap = max(1, concurrency // 2)
        deliverer = Deliverer(
            runtime.connections,
            runtime.auths,
            runtime.config.delivery,
            runtime.redactor,
            transport=self.transport,
            rng=self.rng,
            on_retry=self._on_retry,
            store=self.breaker_store,
            runtime_name=runtime.name,
            waiting_cap=waiting_cap,
            resume=self.carryover.waits_to_resume(),
            held=self.carryover.holds_to_carry(runtime.connections),
        )
        self.deliverer = deliverer
        try:
            if self.park_when_down:  # as many as may wait for a breaker are read; the rest are counted
                outbox.park_down(await self._down(deliverer), probes=waiting_cap)
            async with contextlib.aclosing(producer), deliverer, asyncio.TaskGroup() as group:
                held_back = (
                    None if self.park_when_down else HeldBack(outbox, deliverer, queue, group.create_task)
                )
                self.workers.held_back = held_back
                workers = [group.create_task(self.workers.work(deliverer, queue)) for _ in range(concurrency)]
                flusher = group.create_task(outbox.flush_periodically())
                keep = runtime.config.journal.keep
                # A run (not a replay) forgets what is older than journal.keep as it goes.
                pruner = None
                if decide and keep is not None:
                    forgotten = self.summary.forgotten
                    pruner = group.create_task(
                        prune_periodically(
                            self.journal,
                            keep,
                            log=self.log,
                            forgotten=lambda pruned: pruned.add_to(forgotten),
                        )
                    )
                keeper = group.create_task(self.leases.keep(queue)) if self.journal.shared else None
                # A replay's run leaves the deliveries still waiting out a backoff to the next run: its result
                # is not held up by them (``Carryover.resume``).
                for job in outbox.recover():
                    await queue.put(job)
                async for batch in producer:
                    self.summary.events += len(batch)
                    for job in outbox.settle(batch, decide=decide):
                        await queue.put(job)
                    self._report()
                if self.journal.shared and wait_for_others:
                    patience = runtime.config.journal.wait_for_others
                    self.summary.held = await self.leases.wait_for_others(queue, patience)
                # What waited for a connection that was down goes once it is up, or stays pending past
                # outage_wait.
                if held_back is not None:
                    await held_back.settle()
                for _ in range(concurrency):
                    await queue.put(None)
                await asyncio.gather(*workers)
                self.workers.settle_raised()  # the input ended before a streak of them stopped the run
                if held_back is not None:
                    outbox.flush_marks()  # a delivered row's mark first: what is still pending is owed
                    self._count_left_pending(held_back)
                flusher.cancel()
                if pruner is not None:
                    pruner.cancel()
                if keeper is not None:
                    keeper.cancel()
        except BaseExceptionGroup as group_error:
            # The TaskGroup wraps whatever stopped the run (an unreadable input, a journal error): callers
            # and the CLI's exit codes want the error itself. What was pending stays pending for the next run.
            # The journal writer's one error can reach several tasks (each raises the same object).
            errors = list({id(error): error for error in group_error.exceptions}.values())
            if len(errors) == 1:
                raise errors[0] from errors[0].__cause__  # the error's own cause, not the group
            raise
        finally:
            # Here, not after: a run cancelled (serve's drain deadline) is summed in the service's summary too.
            self.summary.elapsed = time.perf_counter() - self.started
            # A Retry-After outlives the run: the next one's limiters take it (``Carryover.holds``).
            self.carryover.keep_holds(deliverer.holds(), deliverer.connections)
            self.deliverer = None
            # Best effort when the run is stopping on an error: what is not marked is re-sent next time.
            with contextlib.suppress(Exception):
                outbox.flush_marks()
            # What it parked or left: the next run (this service's, another worker's) need not wait a lease.
            if self.journal.shared:
                with contextlib.suppress(Exception):
                    release_leases(self.journal)
            if shared is not None:
                await shared.aclose()
        self._report()
        return self.summary

    def _count_left_pending(self, held_back: HeldBack) -> None:
        """The summary's deliveries left pending: those held back while a connection's breaker stayed open
        past ``outage_wait``, counted in the journal once nothing of the run is in flight."""
        for name, (count, reason) in held_back.count_left().items():
            self.summary.park(name, reason, count)  # the watcher logged the outage when it gave up

    async def _shared_state(self) -> PostgresStateStore | None:
        """On a PostgreSQL journal, the breakers and max_rate slots every worker on it shares (this run's
        ``breaker_store`` from now on; ``shipmap serve`` reads them through ``Runtime.breaker_store``)."""
        url = self.runtime.config.journal.url
        if not self.journal.shared or url is None:
            return None
        runtime = self.runtime
        endpoints = {name: connection.base_url for name, connection in runtime.connections.items()}
        store = await PostgresStateStore.connect(
            url,
            endpoints,
            lease=self.journal.lease_seconds,
            reconnect_deadline=runtime.config.journal.reconnect_deadline,
            redactor=runtime.redactor,
            runtime_name=runtime.name,
        )
        self.breaker_store = store
        closing = self.carryover.take_close_shared()
        for name in sorted(closing & endpoints.keys()):
            await store.close_breaker(name)
        return store

    async def _down(self, deliverer: Deliverer) -> dict[str, str]:
        """The connections whose circuit breaker is open as the run starts, each with how it is down. A shared
        store's records are read first: a new run's copies say closed until then."""
        store, down = self.breaker_store, {}
        for name, breaker in deliverer.breakers.items():
            if isinstance(store, SharedStore):
                await store.refresh(name)
            if breaker.is_open:
                down[name] = self.runtime.redactor.redact(breaker.outage().detail)
        return down

    def _on_retry(self, request: OutboundRequest, attempt: int, reason: str, delay: float) -> None:
        self._report()

    def _report(self) -> None:
        if self.progress is None:
            return
        summary = self.summary
        self.progress(
            Progress(
                events=summary.events,
                delivered=summary.delivered,
                dead=summary.dead,
                skipped=summary.skipped,
                unrouted=summary.unrouted,
                rejected=summary.rejected,
                in_flight=self.workers.sending,
                elapsed=time.perf_counter() - self.started,
                total=self.total,
            )
        )
