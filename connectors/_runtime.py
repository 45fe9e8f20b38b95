"""The connector runtime: the driver of the stages intake -> store -> map -> deliver, and their summary.

One Runtime is built from a RuntimeConfig (``Runtime.from_config(path)`` or ``Runtime(config)``) and holds no
process-wide state: its redactor, auth sessions and random source are its own. ``run``/``run_async`` deliver a
stream of events; ``plan`` is the dry run; ``replay``/``replay_async`` re-send dead letters.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import threading
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import Any

import httpx
from shipmap.engine import SourceDocument

from ._config import Connection, PlannedRoute, RuntimeConfig, check_objects, load_config
from ._deliver._auth import FenixSessionAuth, ShipmapAuth
from ._deliver._breaker import MemoryStore, SharedStore, StateStore
from ._deliver._delivery import Deliverer, OutboundRequest
from ._deliver._held import HeldBack
from ._deliver._workers import DeliveryWorkers
from ._errors import ConfigError
from ._intake._pipeline import ForkedProducer, fork_available
from ._intake._producers import Refresh, as_record, produce, produce_packed, produce_replay, unpack_batches
from ._map._mapper import EventMapper
from ._map._plan import PlanEntry, plan_entry
from ._map._steps import Item, Job
from ._redact import MASK, Redactor, get_logger, is_sensitive_name
from ._store._breaker_pg import PostgresStateStore
from ._store._claims import release_leases
from ._store._entries import JournalEntry, RejectedInput
from ._store._journal import Journal, open_readonly
from ._store._journal_pg import is_database_url
from ._store._leases import LeaseKeeper
from ._store._moves import follow_base_urls, move_pending, stranded
from ._store._outbox import Outbox
from ._store._retention import prune_periodically
from ._summary import LatencyHistogram, Progress, RunSummary, TargetKey, TargetSummary


class Runtime:
    """Route, map, journal and deliver events. Build once; run as often as you like (not concurrently)."""

    def __init__(
        self,
        config: RuntimeConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        seed: int | None = None,
        redactor: Redactor | None = None,
        name: str | None = None,
    ) -> None:
        """``name`` tells this runtime's log records from another's in the same process: each carries it as
        its ``shipmap_runtime`` attribute (none without a name)."""
        check_objects(config)  # a config built in code meets the file's rules (a loaded one already does)
        self.config = config
        self.name = name
        self.redactor = redactor if redactor is not None else Redactor()
        register_secrets(config, self.redactor)
        self.mapper = EventMapper(config, self.redactor)
        self.routes: tuple[PlannedRoute, ...] = self.mapper.routes
        self.connections: dict[str, Connection] = {c.name: c for c in config.connections}
        # Auth objects live as long as the runtime, so a Fenix token serves every run until it expires.
        self.auths: dict[str, ShipmapAuth] = {
            c.name: config.build_auth(c, self.redactor, runtime_name=name) for c in config.connections
        }
        self._transport = transport
        # Breaker and rate-limit state outlives a run, like the auth sessions (a store could share it).
        self.breaker_store: StateStore = MemoryStore()
        self._rng = random.Random(seed)
        self._log = get_logger("runtime", self.redactor, runtime_name=name)
        self._running = threading.Lock()
        # The summary of the run in progress (or the last one): ``shipmap serve`` reads it for /metrics.
        self.live: RunSummary | None = None
        # Connections a reload moved to another base_url, in order: the next run points their pending
        # deliveries there too. (name, old base_url, new base_url)
        self._moves: list[tuple[str, str, str]] = []
        # (connection, base_url) whose pending deliveries for another base a run named: once is enough.
        self._stranded_named: set[tuple[str, str]] = set()
        # Connections whose credentials or headers a reload changed: the next run closes their shared breakers.
        self._close_shared: set[str] = set()
        self._concurrency_override: int | None = None  # the command line's, which a reload keeps
        self._deliverer: Deliverer | None = None  # the run in progress's

    @classmethod
    def from_config(
        cls,
        path: str | os.PathLike[str],
        *,
        environ: Mapping[str, str] | None = None,
        concurrency: int | None = None,
        journal: str | os.PathLike[str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        seed: int | None = None,
        name: str | None = None,
    ) -> Runtime:
        """A runtime from a config file; ``concurrency`` and ``journal`` override the file's settings, and
        ``name`` marks its log records (as ``Runtime(config, name=...)`` does)."""
        config = load_config(path, environ=environ)
        if concurrency is not None:
            if concurrency < 1:
                raise ConfigError("concurrency must be at least 1")
            config = dataclasses.replace(
                config, delivery=dataclasses.replace(config.delivery, concurrency=concurrency)
            )
        if journal is not None:
            where = (
                {"url": journal, "path": None}
                if is_database_url(journal)
                else {"url": None, "path": Path(journal).resolve()}
            )
            config = dataclasses.replace(config, journal=dataclasses.replace(config.journal, **where))
        runtime = cls(config, transport=transport, seed=seed, name=name)
        runtime._concurrency_override = concurrency
        return runtime

    def use_mapper(self, mapper: EventMapper) -> None:
        """Map the next runs' events with ``mapper`` and send them over its config's connections, with its
        delivery settings (a service's reload). A connection whose base_url and auth settings did not change
        keeps its auth object, so a Fenix session goes on; one whose auth changed only in when to log in again
        (refresh_margin, given or left out) keeps it too, with the new margin; any other change to them, or an
        added connection, gets a new one. A changed endpoint or credentials close its breaker: what it saw was
        about the old ones (a PostgreSQL journal's shared breaker is per
        base_url, and new credentials close it when the next run opens the shared state). A connection moved to
        another ``base_url`` takes its pending deliveries along: the next run points them there before it
        sends them. Secrets are registered with the redactor before anything can log them. Between runs only:
        ConfigError while one is in progress (what it maps, journals and sends stays the old mapper's)."""
        with self._exclusive():
            config = mapper.config
            register_secrets(config, self.redactor)
            auths: dict[str, ShipmapAuth] = {}
            for connection in config.connections:
                name, earlier = connection.name, self.connections.get(connection.name)
                auths[name] = self._auth_for(config, connection, earlier)
                if earlier is None or earlier == connection:
                    continue
                if earlier.base_url != connection.base_url:
                    self._moves.append((name, earlier.base_url, connection.base_url))
                # What its breaker saw was about the old endpoint or credentials. A shared breaker is kept per
                # base_url (another one starts closed); on the same one, the next run closes it.
                if _new_endpoint(earlier, connection):
                    if isinstance(self.breaker_store, MemoryStore):
                        self.breaker_store.close_breaker(name)
                    if earlier.base_url == connection.base_url:
                        self._close_shared.add(name)
            self.mapper, self.routes, self.config = mapper, mapper.routes, config
            # New dicts, not updated in place: a service's other thread may be reading the old ones.
            self.connections = {c.name: c for c in config.connections}
            self.auths = auths

    def _auth_for(
        self, config: RuntimeConfig, connection: Connection, earlier: Connection | None
    ) -> ShipmapAuth:
        """The auth object ``connection`` goes on with after a reload: the one it has while what it was built
        from (base_url, auth settings) is the same, retimed when only its refresh_margin changed; else a new
        one, which logs in afresh."""
        if earlier is not None and earlier.base_url == connection.base_url:
            auth = self.auths[earlier.name]
            if earlier.auth == connection.auth:
                return auth
            if earlier.auth.differs_in_margin_alone(connection.auth):
                if isinstance(auth, FenixSessionAuth):  # the only auth with a session to renew
                    auth.use_refresh_margin(connection.auth.session_margin())
                return auth
        return config.build_auth(connection, self.redactor, runtime_name=self.name)

    def park_waiting(self) -> None:
        """The deliveries of the run in progress that wait for an open breaker, and those that find one open
        from now on, are parked (left pending): ``shipmap serve`` ends its run to look at parked work, and
        its next run, which starts at once, sends them. Without it the run would wait for them, up to
        ``outage_wait``, before it ended, and nothing would be handed to delivery meanwhile."""
        deliverer = self._deliverer
        if deliverer is not None:
            deliverer.park_waiting()

    def stop_waiting_for(self, config: RuntimeConfig) -> None:
        """A reload is about to move connections to ``config``'s endpoints or credentials: the run in progress
        stops waiting for their open breakers, and the deliveries that waited stay pending, so the run ends
        and the next sends them with the new settings, not after ``outage_wait``. Called in the run's thread."""
        deliverer = self._deliverer
        if deliverer is None:
            return
        deliverer.stop_waiting(
            c.name
            for c in config.connections
            if (earlier := self.connections.get(c.name)) is not None and _new_endpoint(earlier, c)
        )

    # --- public entry points ------------------------------------------------------------------------------

    def run(
        self,
        events: Iterable[Any],
        *,
        progress: Callable[[Progress], None] | None = None,
        total: int | None = None,
        workers: int = 0,
    ) -> RunSummary:
        """Deliver ``events`` (documents, or SourceDocuments from ``read_inputs``) and wait for the summary.
        ``workers=1``: read, map, validate and encode in a forked worker process (see ``run_async``)."""
        return _run_sync(self.run_async(events, progress=progress, total=total, workers=workers))

    async def run_async(
        self,
        events: Iterable[Any] | AsyncIterable[Any],
        *,
        progress: Callable[[Progress], None] | None = None,
        total: int | None = None,
        workers: int = 0,
        wait_for_others: bool = True,
        park_when_down: bool = False,
    ) -> RunSummary:
        """Deliver ``events``: first what an interrupted run left pending, then each event in order.

        ``wait_for_others``: on a shared journal, when ``events`` end, wait for the deliveries other workers
        hold (taking over those whose worker died), so a batch of workers ends with its input delivered; if
        live workers still hold some when that wait ends (``journal.wait_for_others``, or nothing moved for
        three leases), the summary's ``held`` says who. A service whose peers keep running (``shipmap
        serve``) passes False: they take over what it leaves.

        At most half of the senders wait for one connection's open breaker; its other deliveries are held
        back (pending) so the other connections' deliveries go on, and sent as soon as the breaker closes,
        within ``outage_wait`` (past it they stay pending: the summary's ``parked``). ``park_when_down``:
        they are parked at once instead, and the run does not send them (``shipmap serve``, which looks at
        parked work again by itself, passes True).

        ``workers=0`` (the default) does everything in this thread. ``workers=1`` forks a worker process that
        iterates ``events`` itself (a sync iterable: it must not depend on this process's other threads) and
        routes, maps, validates and encodes each event, while this thread journals and sends: the work of
        two cores. Same requests, same order, same journal; async iterables and platforms without
        ``os.fork`` always run in this thread."""
        if workers < 0:
            raise ConfigError("workers must be 0 or more")
        with self._exclusive(), self._open_journal() as journal:
            execution = _Execution(self, journal, progress, total, park_when_down=park_when_down)
            if workers and not isinstance(events, AsyncIterable) and fork_available():
                forked = ForkedProducer(
                    lambda: produce_packed(self.mapper, events), close_in_child=journal.lock_fds()
                )
                forked.start()  # before recovery and the first login: the worker's start overlaps them
                try:
                    return await execution.execute(
                        unpack_batches(forked.batches()), decide=True, wait_for_others=wait_for_others
                    )
                finally:
                    forked.close()
            return await execution.execute(
                produce(self.mapper, events), decide=True, wait_for_others=wait_for_others
            )

    def replay(
        self, keys: Sequence[str] | None = None, *, progress: Callable[[Progress], None] | None = None
    ) -> RunSummary:
        return _run_sync(self.replay_async(keys, progress=progress))

    async def replay_async(
        self,
        keys: Sequence[str] | None = None,
        *,
        progress: Callable[[Progress], None] | None = None,
        refresh: Refresh | None = None,
    ) -> RunSummary:
        """Send dead letters again (all, or those whose key starts with one of ``keys``), re-mapping each
        from its stored source document with the mapping as it is now; same delivery and idempotency keys.
        ``refresh`` may replace the stored documents first: it takes the (dead letter, document) pairs and
        gives them back (``shipmap replay --refetch``: enrichment again, several at once)."""
        with self._exclusive(), self._open_journal() as journal:
            execution = _Execution(self, journal, progress, None)
            return await execution.execute(produce_replay(self.mapper, journal, keys, refresh), decide=False)

    def plan(self, events: Iterable[Any]) -> Iterator[PlanEntry]:
        """The dry run: what each event would cause, with the exact requests (headers redacted). Sends
        nothing, logs in nowhere, writes nothing; reads the journal, if there is one, to show skips."""
        journal = open_readonly(self.config.journal.location)
        try:
            for index, item in enumerate(events):
                record = as_record(item, index)
                expanded = self.mapper.expand_event(record, journal)
                if isinstance(expanded, SourceDocument):
                    yield PlanEntry("rejected", record.origin, reason=expanded.error)
                    continue
                for step in expanded.steps:
                    entry = plan_entry(step, record.origin, self.headers_for, self.redactor)
                    if entry is not None:
                        yield entry
        finally:
            if journal is not None:
                journal.close()

    def dead_letters(self, keys: Sequence[str] | None = None) -> list[JournalEntry]:
        """The dead letters in the journal (read-only; empty if there is no journal yet), all in one list:
        ``dead_letter_pages`` reads a journal that may hold millions."""
        journal = open_readonly(self.config.journal.location)
        if journal is None:
            return []
        with journal:
            return journal.dead_letters(keys)

    def dead_letter_count(self) -> int:
        """How many dead letters the journal holds now, counted, not read (0 when there is no journal yet)."""
        journal = open_readonly(self.config.journal.location)
        if journal is None:
            return 0
        with journal:
            return journal.dead_letter_count()

    def dead_letter_pages(
        self, keys: Sequence[str] | None = None, *, size: int = 1000
    ) -> Iterator[list[JournalEntry]]:
        """The dead letters (all, or those whose key starts with one of ``keys``) a page of at most ``size``
        at a time, in the order they were last written, so memory holds one page however many there are.
        The journal stays open, read-only, until the iteration ends (or the iterator is closed)."""
        if size < 1:  # said at the call, not at the first page
            raise ConfigError("size must be at least 1")
        return self._dead_letter_pages(keys, size)

    def _dead_letter_pages(self, keys: Sequence[str] | None, size: int) -> Iterator[list[JournalEntry]]:
        journal = open_readonly(self.config.journal.location)
        if journal is None:
            return
        with journal:
            yield from journal.dead_letter_pages(keys, limit=size)

    def rejected_inputs(self) -> list[RejectedInput]:
        """The input records that were not JSON (read-only; empty if there is no journal yet), each with its
        ``origin`` (``file:line``), ``reason`` and an ``excerpt`` of its text."""
        journal = open_readonly(self.config.journal.location)
        if journal is None:
            return []
        with journal:
            return journal.rejected()

    def headers_for(self, connection: str) -> dict[str, str]:
        """The headers every request on ``connection`` carries, redacted (auth shown masked, unread)."""
        found = self.connections[connection]
        headers = dict(found.headers)
        headers.update(self.auths[connection].preview_headers())
        return self.redactor.redact_headers(headers)

    # --- internals ------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        if not self._running.acquire(blocking=False):
            raise ConfigError("this Runtime is already running; use one Runtime per concurrent run")
        try:
            yield
        finally:
            self._running.release()

    def _open_journal(self) -> Journal:
        settings = self.config.journal
        if settings.location is None:
            return Journal(":memory:", synchronous=settings.synchronous)
        return Journal(
            settings.location, synchronous=settings.synchronous, exclusive=True, lease=settings.lease
        )


class _Execution:
    """One run: the stages wired together over one journal, the worker pool and the progress reports.

    It recovers what an interrupted run left pending, then hands each batch from intake to the store
    (``Outbox.settle``: journaled ``pending`` before any request goes out) and its jobs to the delivery
    workers, and waits for them (and for what they held back while a connection was down: ``HeldBack``); on
    a shared journal it keeps this worker's leases meanwhile.
    """

    def __init__(
        self,
        runtime: Runtime,
        journal: Journal,
        progress: Callable[[Progress], None] | None,
        total: int | None,
        *,
        park_when_down: bool = False,
    ) -> None:
        self.runtime = runtime
        self.journal = journal
        self.progress = progress
        self.total = total
        self.summary = runtime.live = RunSummary()
        self.started = time.perf_counter()
        self._follow_moved_connections()  # before recovery reads the pending rows
        self.outbox = Outbox(journal, runtime.mapper, runtime.connections, self.summary, runtime._log)
        self.leases = LeaseKeeper(self.outbox)
        self.workers = DeliveryWorkers(self.outbox, self.leases, runtime.mapper.reason, self._report)
        self.park_when_down = park_when_down

    def _follow_moved_connections(self) -> None:
        """Point the pending deliveries of connections moved to another ``base_url`` there. An SQLite journal
        has one user: it compares each base URL with the last run's, so a restart after an edit moves them
        too. The workers of a PostgreSQL journal may run with two configs during a rollout: there only a
        reload's moves apply, once, by the process that reloaded, and what is left for another base is named
        (once per connection and base), with the command that moves it."""
        runtime, journal = self.runtime, self.journal
        reloaded, runtime._moves = runtime._moves, []
        base_urls = {name: c.base_url for name, c in runtime.connections.items()}
        if journal.shared:
            moved = [(name, move_pending(journal, name, old, new)) for name, old, new in reloaded]
        else:
            moved = follow_base_urls(journal, base_urls)
        for name, count in moved:
            if not count:
                continue
            runtime._log.warning("connections.%s: base_url changed: %d pending deliver%s journaled for the old"
                                 " one go to the new one", name, count, "y" if count == 1 else "ies")  # fmt: skip
        for left in stranded(journal, base_urls):
            if (left.connection, base_urls[left.connection]) in runtime._stranded_named:
                continue
            runtime._stranded_named.add((left.connection, base_urls[left.connection]))
            runtime._log.warning("connections.%s: %s journaled for another base_url (such as %s) go there, not to"
                                 " this one; if the endpoint moved, `shipmap journal move-pending JOURNAL %s --from"
                                 " OLD_BASE_URL --to BASE_URL` sends them here", left.connection, left.describe(),
                                 left.example_url, left.connection)  # fmt: skip

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
            transport=runtime._transport,
            rng=runtime._rng,
            on_retry=self._on_retry,
            store=runtime.breaker_store,
            runtime_name=runtime.name,
            waiting_cap=waiting_cap,
        )
        runtime._deliverer = deliverer
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
                            log=runtime._log,
                            forgotten=lambda pruned: pruned.add_to(forgotten),
                        )
                    )
                keeper = group.create_task(self.leases.keep(queue)) if self.journal.shared else None
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
            runtime._deliverer = None
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
            self.summary.parked += count
            self.summary.outages.setdefault(name, reason)

    async def _shared_state(self) -> PostgresStateStore | None:
        """On a PostgreSQL journal, the breakers and max_rate slots every worker on it shares (for this run;
        ``shipmap serve`` reads them through ``runtime.breaker_store``)."""
        url = self.runtime.config.journal.url
        if not self.journal.shared or url is None:
            return None
        runtime = self.runtime
        endpoints = {name: connection.base_url for name, connection in runtime.connections.items()}
        store = await PostgresStateStore.connect(
            url,
            endpoints,
            lease=self.journal.lease_seconds,
            redactor=runtime.redactor,
            runtime_name=runtime.name,
        )
        runtime.breaker_store = store
        closing, runtime._close_shared = runtime._close_shared, set()
        for name in sorted(closing & endpoints.keys()):
            await store.close_breaker(name)
        return store

    async def _down(self, deliverer: Deliverer) -> dict[str, str]:
        """The connections whose circuit breaker is open as the run starts, each with how it is down. A shared
        store's records are read first: a new run's copies say closed until then."""
        store, down = self.runtime.breaker_store, {}
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


def _new_endpoint(earlier: Connection, now: Connection) -> bool:
    """Whether what a breaker saw of ``earlier`` says nothing about ``now``: another URL or credentials (not
    another refresh_margin: when a session logs in again says nothing about the endpoint)."""
    same_auth = earlier.auth == now.auth or earlier.auth.differs_in_margin_alone(now.auth)
    return not same_auth or (earlier.base_url, earlier.headers) != (now.base_url, now.headers)


def register_secrets(config: RuntimeConfig, redactor: Redactor) -> None:
    """Every secret ``config`` holds, for ``redactor`` to hide: those its file read through references, each
    connection's credentials, and the values of its headers whose names say they are secret."""
    for secret in config.secrets:
        redactor.add(secret)
    for connection in config.connections:
        for secret in connection.auth.secrets():
            redactor.add(secret)
        for name, value in connection.headers.items():
            if is_sensitive_name(name):
                redactor.add(value)


def _run_sync(coroutine: Any) -> RunSummary:
    """Run a coroutine to completion from sync code, even when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # the usual case; run below, not in this block, where errors would chain to it
        loop_running = False
    else:
        loop_running = True
    if not loop_running:
        result: RunSummary = asyncio.run(coroutine)
        return result
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(coroutine)
        except BaseException as error:  # re-raised in the caller's thread
            box["error"] = error

    thread = threading.Thread(target=target, name="shipmap-runtime")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    summary: RunSummary = box["result"]
    return summary


__all__ = [
    "MASK",
    "LatencyHistogram",
    "PlanEntry",
    "Progress",
    "RunSummary",
    "Runtime",
    "TargetKey",
    "TargetSummary",
]
