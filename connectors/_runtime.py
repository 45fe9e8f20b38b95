"""The connector runtime: the public ``Runtime`` facade, which drives the stages intake -> store -> map -> deliver.

One Runtime is built from a RuntimeConfig (``Runtime.from_config(path)`` or ``Runtime(config)``) and holds no
process-wide state: its redactor, auth sessions and random source are its own. ``run``/``run_async`` deliver a
stream of events; ``plan`` is the dry run; ``replay``/``replay_async`` re-send dead letters.

What outlives a run is kept here: the config, the auth sessions (a Fenix token serves every run until it
expires), and what one run leaves for the next (a ``Carryover``: ``_run._carryover``), the breaker store and
the last run's summary among it. Each run is an ``Execution`` (``_run._execution``), which wires the stages
together over one journal and owns none of their work; the runtime lends it its transport, random source and
log, and hands it the carryover, through which the execution hands back its summary and breaker store.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import threading
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
from shipmap.engine import SourceDocument

from ._config import Connection, PlannedRoute, RuntimeConfig, check_objects, load_config
from ._deliver._auth import FenixSessionAuth, ShipmapAuth
from ._deliver._breaker import MemoryStore, StateStore
from ._deliver._delivery import Deliverer
from ._errors import ConfigError
from ._intake._pipeline import ForkedProducer, fork_available
from ._intake._producers import Refresh, as_record, produce, produce_packed, produce_replay, unpack_batches
from ._map._mapper import EventMapper
from ._map._plan import PlanEntry, plan_entry
from ._redact import MASK, Redactor, get_logger, is_sensitive_name
from ._run._carryover import Carryover
from ._run._execution import Execution
from ._store._entries import JournalEntry, RejectedInput
from ._store._journal import Journal, open_readonly
from ._store._journal_pg import is_database_url
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
        self.auths: dict[str, ShipmapAuth] = {c.name: self.new_auth(c) for c in config.connections}
        self._transport = transport
        self._rng = random.Random(seed)
        self._log = get_logger("runtime", self.redactor, runtime_name=name)
        self._running = threading.Lock()
        self._carryover = Carryover()
        self._concurrency_override: int | None = None
        self._execution: Execution | None = None  # the run in progress

    @property
    def live(self) -> RunSummary | None:
        """The summary of the run in progress, or of the last one (None before the first): ``shipmap serve``
        reads it for /metrics. Another thread may read it while a run goes on."""
        execution = self._execution
        return execution.summary if execution is not None else self._carryover.summary

    @property
    def breaker_store(self) -> StateStore:
        """The breaker and rate-limit state of the run in progress, or the one the next run starts from. It
        outlives a run, like the auth sessions; on a PostgreSQL journal each run opens a shared store, and
        this is the last one's between runs (its records as last read)."""
        execution = self._execution
        return execution.breaker_store if execution is not None else self._carryover.breaker_store

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

    @property
    def concurrency_override(self) -> int | None:
        """The ``concurrency`` given to ``from_config``, which outranks the file's ``delivery.concurrency``
        (a service's reload keeps it); None when none was given."""
        return self._concurrency_override

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
                auths[name] = self._auth_for(connection, earlier)
                if earlier is None or earlier == connection:
                    continue
                if earlier.base_url != connection.base_url:
                    self._carryover.moves.append((name, earlier.base_url, connection.base_url))
                # What its breaker saw was about the old endpoint or credentials. A shared breaker is kept per
                # base_url (another one starts closed); on the same one, the next run closes it.
                if new_endpoint(earlier, connection):
                    if isinstance(self.breaker_store, MemoryStore):
                        self.breaker_store.close_breaker(name)
                    if earlier.base_url == connection.base_url:
                        self._carryover.close_shared.add(name)
            self.mapper, self.routes, self.config = mapper, mapper.routes, config
            # New dicts, not updated in place: a service's other thread may be reading the old ones.
            self.connections = {c.name: c for c in config.connections}
            self.auths = auths

    def _auth_for(self, connection: Connection, earlier: Connection | None) -> ShipmapAuth:
        """The auth object ``connection`` goes on with after a reload: the one it has while what it was built
        from (base_url, auth settings) is the same, retimed when only its refresh_margin changed; else a new
        one, which logs in afresh."""
        if earlier is not None and earlier.base_url == connection.base_url:
            auth = self.auths[earlier.name]
            if earlier.auth == connection.auth:
                return auth
            if earlier.auth.differs_in_margin_alone(connection.auth):
                if isinstance(auth, FenixSessionAuth):  # the only auth with a session to renew
                    auth.use_refresh_margin(connection.auth.refresh_margin)
                return auth
        return self.new_auth(connection)

    def new_auth(self, connection: Connection) -> ShipmapAuth:
        """A new auth object of ``connection`` (it logs in afresh): at start, for a connection a reload added or
        changed, and for enrichment over one a reload added before delivery takes it (``Enricher.use``)."""
        return connection.auth.build(connection.base_url, self.redactor, runtime_name=self.name)

    def park_waiting(self) -> None:
        """The deliveries of the run in progress that wait for an open breaker, and those that find one open
        from now on, are parked (left pending): ``shipmap serve`` ends its run to look at parked work, and
        its next run, which starts at once, sends them. Without it the run would wait for them, up to
        ``outage_wait``, before it ended, and nothing would be handed to delivery meanwhile. Those waiting out
        a retry's backoff or a Retry-After are left pending too, their attempts in the journal: the next run
        sends them when the wait would have ended (``Deliverer``), not up to ``backoff_cap`` later."""
        deliverer = self._deliverer()
        if deliverer is not None:
            deliverer.park_waiting()

    async def look_at_breakers(self) -> None:
        """On a PostgreSQL journal, read again the shared record of each breaker of the run in progress whose
        copy is stale, so that ``breaker_store`` says what the other workers did to them meanwhile
        (``shipmap serve`` calls it while it waits for webhooks: its /readyz and /metrics read that store, and
        an idle process's copy would otherwise stay as its last delivery left it). Nothing without a run in
        progress, or with this process's own store. Called in the run's thread."""
        deliverer = self._deliverer()
        if deliverer is not None:
            await deliverer.look_at_breakers()

    def stop_waiting_for(self, config: RuntimeConfig) -> None:
        """A reload is about to move connections to ``config``'s endpoints or credentials: the run in progress
        stops waiting for their open breakers, and the deliveries that waited stay pending, so the run ends
        and the next sends them with the new settings, not after ``outage_wait``. Called in the run's thread."""
        deliverer = self._deliverer()
        if deliverer is None:
            return
        deliverer.stop_waiting(
            c.name
            for c in config.connections
            if (earlier := self.connections.get(c.name)) is not None and new_endpoint(earlier, c)
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
        stop: threading.Event | None = None,
        wait_to_open: bool = False,
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

        ``stop``: once set, a wait for the journal's database (``journal.reconnect_deadline``) ends at once,
        the run cancelled (``ReconnectStopped``): what it had not journaled stays pending (``shipmap serve``'s
        stop). ``wait_to_open``: opening the journal waits for its database within that deadline too, as a
        reopen does (a service whose journal opened before: an outage); else it fails at once (a wrong
        password or host at start).

        ``workers=0`` (the default) does everything in this thread. ``workers=1`` forks a worker process that
        iterates ``events`` itself (a sync iterable: it must not depend on this process's other threads) and
        routes, maps, validates and encodes each event, while this thread journals and sends: the work of
        two cores. Same requests, same order, same journal; async iterables and platforms without
        ``os.fork`` always run in this thread."""
        if workers < 0:
            raise ConfigError("workers must be 0 or more")
        with (
            self._exclusive(),
            self._open_journal(stop, wait_to_open=wait_to_open) as journal,
            self._execution_over(journal, progress, total, park_when_down=park_when_down) as execution,
        ):
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
        stop: threading.Event | None = None,
        wait_to_open: bool = False,
    ) -> RunSummary:
        """Send dead letters again (all, or those whose key starts with one of ``keys``), re-mapping each
        from its stored source document with the mapping as it is now; same delivery and idempotency keys.
        ``refresh`` may replace the stored documents first: it takes the (dead letter, document) pairs and
        gives them back (``shipmap replay --refetch``: enrichment again, several at once). ``stop``,
        ``wait_to_open``: as ``run_async``'s."""
        with (
            self._exclusive(),
            self._open_journal(stop, wait_to_open=wait_to_open) as journal,
            self._execution_over(journal, progress, None, replay=True) as execution,
        ):
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

    @contextlib.contextmanager
    def _execution_over(
        self,
        journal: Journal,
        progress: Callable[[Progress], None] | None,
        total: int | None,
        *,
        park_when_down: bool = False,
        replay: bool = False,
    ) -> Iterator[Execution]:
        """The run in progress, for as long as the block lasts (inside ``_exclusive``): it borrows this
        runtime's transport, random source and log, takes what earlier runs and reloads left it in the
        carryover, and hands back its summary and breaker store there as the block ends."""
        execution = Execution(
            self,
            journal,
            progress,
            total,
            carryover=self._carryover,
            transport=self._transport,
            rng=self._rng,
            log=self._log,
            park_when_down=park_when_down,
            replay=replay,
        )
        self._execution = execution
        try:
            yield execution
        finally:
            # Handed back before the execution is let go: a reader on another thread sees this run's summary
            # throughout, never the one before.
            execution.hand_back()
            self._execution = None

    def _deliverer(self) -> Deliverer | None:
        """The deliverer of the run in progress, while it sends."""
        execution = self._execution
        return execution.deliverer if execution is not None else None

    def _open_journal(self, stop: threading.Event | None = None, *, wait_to_open: bool = False) -> Journal:
        settings = self.config.journal
        if settings.location is None:
            return Journal(":memory:", synchronous=settings.synchronous)
        return Journal(
            settings.location,
            synchronous=settings.synchronous,
            exclusive=True,
            lease=settings.lease,
            reconnect_deadline=settings.reconnect_deadline,
            stop=stop,
            wait_to_open=wait_to_open,
        )


def new_endpoint(earlier: Connection, now: Connection) -> bool:
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
