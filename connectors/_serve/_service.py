"""``shipmap serve``: the webhook intake and the delivery loop, in one process and one event loop.

    POST /hooks/{source} ─► verify ─► Inbox.accept (committed) ─► 200        (this thread's event loop)
                                         │
    InboxFeed.events() ◄─────────────────┘ (woken at once; enrichment GETs here)   (the delivery thread:
          │                                                                       _delivery_loop)
    Runtime.run_async(...)  route ─► map ─► journal (pending) ─► deliver ─► delivered | dead

SIGTERM (or SIGINT, or ``stop()``): intake answers 503 and stops listening, the feed hands over what the
inbox still holds and ends, and the runtime finishes its deliveries, all within ``serve.drain_timeout``. What
is still in flight at the deadline is cancelled and stays ``pending`` in the journal; accepted webhooks not
yet handed over stay in the inbox. The next start re-sends the first and hands over the second: nothing
acknowledged is lost. A second SIGTERM or SIGINT during the drain (or ``stop(now=True)``) brings the deadline
forward to now, as a second Ctrl-C stops uvicorn: the same cancellation, the same report, the same exit.

Readiness (``/readyz``) means "send me webhooks": the inbox is writable, intake is open and delivery has
not ended (it runs, or is still starting: what intake commits meanwhile waits in the inbox, as it does
during an outage). An open circuit breaker does not make the service unready either: intake still commits
every webhook and delivery catches up when the destination is back, while a load balancer that pulled the
instance would turn a vendor's outage into refused webhooks. ``/readyz`` says which (``delivering``,
``delivery_starting``, each breaker and ``degraded``), so a probe that wants to alert on it can. The inbox's
figures behind it and ``/metrics`` are read off the loop, within ``INBOX_READ_DEADLINE_S`` (``_inbox_gauges``):
an inbox that does not answer in time makes the service unready, with that reason, and stalls nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import uvicorn
from shipmap.engine import ShipmapError

from .._config import check_serve_settings
from .._errors import ConnectorError
from .._local_server import bind, url_host  # one way to bind a listening socket and name it in a URL
from .._plural import counted
from .._redact import get_logger
from .._runtime import RunSummary, Runtime, register_secrets
from ._app import CutOffRequests, ServiceState, build_app
from ._delivery_loop import DeliveryLoop
from ._inbox import InboxError, SharedIntake, depth_text
from ._inbox_floor import ClaimFloor
from ._inbox_gauges import Gauges, InboxGauges, open_gauge_reader
from ._inbox_pg import open_inbox
from ._inbox_retention import Retention, purge_inbox
from ._metrics import ServiceMetrics
from ._readiness import breaker_records, phases, readiness
from ._reload import Reloaded, log_reload, read_again, sections
from ._replays import ReplayRequests, service_requests
from ._settings import Enrichment, ServeSettings, serve_settings
from ._totals import as_at_stop, exported_targets, owed_at_stop, why

RATE_SHARE_EVERY_S = 5.0  # how soon the processes on a shared inbox see one come or go
ACTIVITY_EVERY_S = 60.0  # a line of what the service did, this often (when it did anything)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service drains first, then stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class Service:
    """One ``shipmap serve``. ``await service.serve()`` runs until ``stop()`` (from any thread) or
    SIGTERM/SIGINT."""

    def __init__(
        self,
        runtime: Runtime,
        settings: ServeSettings | None = None,
        *,
        source_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``settings``: the config's ``serve`` and ``sources`` when None; given, they are held to the rules a
        file is (ConfigError, naming the key and the rule)."""
        self.runtime = runtime
        if settings is not None:  # built in code, or changed since serve_settings: held to the file's rules
            check_serve_settings(settings)
        self.settings = settings or serve_settings(runtime.config)
        # A source's secret written in code, or in the file as it is, never passed through the ${...} references
        # the redactor learns a config's secrets from: it learns them here, as a connection's credentials.
        for source in self.settings.sources.values():
            for secret in source.secrets:
                runtime.redactor.add(secret.decode("utf-8", "replace"))
        self._source_transport = source_transport
        self._log = get_logger("serve", runtime.redactor, runtime_name=runtime.name)
        self._stop = asyncio.Event()
        self._stop_now = asyncio.Event()  # the drain is cut short
        # The loop serve() runs on, while it runs: stop() from another thread hands its work to it.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_lock = threading.Lock()
        self._stopped_by = "stop(now=True)"  # what cut it, for the log
        self.summary: RunSummary | None = None
        self.url: str | None = None  # where this host reaches it, once it listens
        self.listening: str | None = None  # what it listens on, as an operator reads it (see _addresses)
        self._state: ServiceState | None = None  # while serving
        self._started_with = sections(runtime.config.file)  # what a reload compares the file with
        self._mapper = runtime.mapper  # the mappings of the last reload that changed them (the next runs')
        self._exported = exported_targets(self._mapper.routes)  # every target configured since start
        self._delivery: DeliveryLoop | None = None  # while serving
        self._reloading: asyncio.Lock | None = None
        self._reloads: set[asyncio.Task[None]] = set()

    def stop(self, *, now: bool = False) -> None:
        """Drain and stop: intake closes, and delivery finishes what was accepted within
        ``serve.drain_timeout``. ``now``: cut the drain short, as its deadline does (deliveries in flight are
        cancelled and stay ``pending`` in the journal, webhooks not handed over stay in the inbox).

        Safe from any thread (a program that runs ``serve()`` on a thread of its own stops it from another),
        and before ``serve()`` has started or after it has ended: it returns at once, and the service stops
        on its own loop (``serve()`` returns once the drain is done)."""
        with self._loop_lock:
            loop = self._loop
            if loop is not None and not _running(loop):
                # asyncio's events are not thread-safe: set from another thread, the loop would not wake.
                with contextlib.suppress(RuntimeError):  # closed meanwhile: serve() has ended
                    loop.call_soon_threadsafe(self._stop_here, now)
                    return
            self._stop_here(now)

    def _stop_here(self, now: bool) -> None:
        """``stop()`` on the service's loop (or with no loop running it)."""
        self._stop.set()
        if now:
            self._stop_now.set()

    def _signalled(self, signum: signal.Signals) -> None:
        """SIGTERM or SIGINT: the first drains, the next stops now (an operator who presses Ctrl-C again, or a
        supervisor that signals again, wants the process gone, not another 20 s of drain)."""
        again = self._stop.is_set()
        if again:
            self._stopped_by = f"a second {signum.name}"
        self.stop(now=again)

    async def reload(self) -> Reloaded:
        """Read the config file again (its env file and ``${file:...}`` secrets too), with the mapping files it
        names, and apply:

        - its ``sources`` to intake: secrets, signatures, rate limits, body caps, kept headers, intake deadlines,
          sources added or removed; and ``serve.intake_deadline`` and ``serve.intake_max_waiting``. The next
          request finds them; one in progress ends under the old ones;
        - its ``mappings``, ``events``, ``connections`` and ``delivery`` (and the mapping files' contents) to
          delivery: the run in progress ends once the events handed to it are journaled (they go as mapped, to
          the URLs they were journaled with), and the events after them, and replays, are mapped and sent with
          the new ones. A connection that did not change keeps its auth session; one that did, or a new one,
          logs in afresh. The connections enrichment fetches over apply to its GETs that start once delivery
          took them (``Enricher``): those in flight end on the old client. A source's ``enrich`` (what is
          fetched, from where, for which topics, how many at once) applies to the webhooks whose fetches start
          after, and to replays: those in flight end with the section they started with. A connection new to
          enrichment is set up as at start, one this reload adds too (as the file has it: delivery takes it at
          the end of its run in progress); one no ``enrich`` fetches over any more is let go.

        Nothing else is applied: the other sections it finds changed (``journal``, the rest of ``serve``) are
        named in ``not_applied`` (a restart applies them; SIGTERM drains).

        ``${VAR}`` references are read from this process's environment (``os.environ``), as ``shipmap serve``
        loads its config. Raises ConfigError or MappingError, located in its file, when the config or a mapping
        is wrong, a connection the service runs with is gone from the file, or reading it all outlives
        ``RELOAD_DEADLINE_S``: the running sources, mappings, connections and delivery settings then stay as
        they were."""
        if self._reloading is None:
            self._reloading = asyncio.Lock()
        async with self._reloading:  # two SIGHUPs in a row: the second reads the file after the first
            reading = await read_again(
                self.runtime,
                self.settings,
                self._mapper,
                self._started_with,
            )
            register_secrets(reading.config, self.runtime.redactor)
            enriched = _enrichments(self.settings) != _enrichments(reading.settings)
            self.settings = reading.settings
            if enriched and self._delivery is not None:
                self._delivery.use_enrichments(_enrichments(reading.settings), reading.config.connections)
            if self._state is not None:
                self._state.replace_sources(reading.settings.sources)
                self._state.limit_intake(
                    reading.settings.intake_deadline, reading.settings.intake_max_waiting
                )
            if reading.mapper is not None:
                self._mapper = reading.mapper
                self._exported = exported_targets(reading.mapper.routes, kept=self._exported)
                if self._delivery is not None:
                    self._delivery.use_mapper(reading.mapper)
                else:
                    self.runtime.use_mapper(reading.mapper)
            return reading.reloaded

    async def _reload_logged(self) -> None:
        await log_reload(self.reload, self.runtime.config.file, self._log)

    def _hangup(self) -> None:
        task = asyncio.ensure_future(self._reload_logged())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def serve(
        self, sock: socket.socket | None = None, *, on_ready: Callable[[str], None] | None = None
    ) -> RunSummary | None:
        """Serve until stopped; return the summary of what the service did (``summary`` too). An error that
        stops it once it serves (a run's, other than SendingStopped, which stalls delivery instead) is raised
        after the same drain and stop report, and ``summary`` then holds what it did until the error."""
        with self._loop_lock:
            self._loop = asyncio.get_running_loop()
        try:
            return await self._serve(sock, on_ready)
        finally:
            with self._loop_lock:
                self._loop = None

    async def _serve(
        self, sock: socket.socket | None, on_ready: Callable[[str], None] | None
    ) -> RunSummary | None:
        settings = self.settings
        if sock is None:
            try:
                sock = bind(settings.host, settings.port)
            except OSError as error:  # the port is taken (a service still running), the address not ours
                raise ConnectorError(f"cannot listen on {settings.host}:{settings.port}: {error.strerror or error}"
                                     " (serve.host and serve.port, or --host and --port)") from None  # fmt: skip
        host, port = sock.getsockname()[:2]
        self.url, self.listening = _addresses(host, port)
        shared = self.runtime.config.journal
        synchronous, lease = shared.synchronous, shared.lease
        # An SQLite journal is this process's: replays come here. A PostgreSQL one is shared by every serve
        # and run: `shipmap replay` runs beside them as one more worker; an SQLite inbox beside it is still
        # this process's, so requeues for `replay --rejected` come here (service_requests).
        requests = service_requests(shared.path if shared.url is None else None, settings.inbox)
        with contextlib.ExitStack() as held:
            # Intake's connection: an SQLite inbox is locked to this process, a PostgreSQL one is shared.
            # One claims' floor for this process's inboxes on a PostgreSQL database: the gauges' reader and
            # delivery's claims read the same number once (``_inbox_floor``).
            floor = ClaimFloor()
            inbox = open_inbox(settings.inbox, synchronous=synchronous, lease=lease, intake=True, floor=floor)
            held.callback(inbox.close)
            # Intake's commits wait on a thread of their own, not on the loop (GroupCommit): over the network
            # each one; on SQLite one that finds the write lock held elsewhere.
            intake_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shipmap-intake")
            held.callback(intake_worker.shutdown)
            gauges = InboxGauges(
                lambda: open_gauge_reader(settings.inbox, synchronous=synchronous, lease=lease, floor=floor)
            )
            held.callback(gauges.close)
            uvicorn_log, cut_off = logging.getLogger("uvicorn.error"), CutOffRequests()
            uvicorn_log.addFilter(cut_off)
            held.callback(uvicorn_log.removeFilter, cut_off)
            retention = Retention.of(settings)
            # Before intake's first commit, which bounds intake's connection by its webhooks' deadlines
            # (GroupCommit): the purge at start has the server's 30 s.
            purge_inbox(inbox, retention, journal=shared.location, log=self._log)
            replays = (
                held.enter_context(ReplayRequests(requests, serving=True)) if requests is not None else None
            )
            enrichments = _enrichments(settings)
            delivery = DeliveryLoop(
                self.runtime,
                settings.inbox,
                synchronous,
                enrichments,
                transport=self._source_transport,
                replays=replays.path if replays is not None else None,
                resweep=(settings.first_resweep, settings.resweep_cap),
                retention=retention,
                floor=floor,
            )
            metrics = ServiceMetrics(
                summary=delivery.summary,
                queue=lambda: _queue_figures(gauges.latest),
                queue_stale=lambda: gauges.latest.stale,
                breakers=self.breakers,
                in_flight=delivery.in_flight,
                enrichment=delivery.enrichment,
                stalled=lambda: delivery.stalled is not None,
                processes=lambda: state.processes,
                parked=delivery.parked_deliveries,
                replays=delivery.replays,
                targets=lambda: self._exported,
                intake_waiting=lambda: state.committer.waiting if state.committer is not None else 0,
            )
            state = ServiceState(
                sources=settings.sources,
                inbox=inbox,
                metrics=metrics,
                on_accept=delivery.wake,
                readiness=lambda: readiness(self.runtime, delivery),
                body_timeout=settings.body_timeout,
                intake_deadline=settings.intake_deadline,
                intake_max_waiting=settings.intake_max_waiting,
                gauges=gauges,
                intake_worker=intake_worker,
            )
            server = _Server(
                uvicorn.Config(
                    build_app(state, self.runtime.redactor, runtime_name=self.runtime.name),
                    log_config=None,
                    access_log=False,
                    lifespan="off",
                    proxy_headers=False,
                    server_header=False,
                    timeout_graceful_shutdown=max(1, int(settings.drain_timeout / 2)),
                    timeout_keep_alive=30,
                )
            )
            delivery.start()
            self._delivery = delivery
            try:
                return await self._run(server, sock, delivery, state, on_ready)
            finally:
                self._delivery = None
                delivery.cancel()  # a no-op once it has ended
                delivery.join(10)

    async def _run(
        self,
        server: _Server,
        sock: socket.socket,
        delivery: DeliveryLoop,
        state: ServiceState,
        on_ready: Callable[[str], None] | None,
    ) -> RunSummary | None:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        handlers: list[tuple[signal.Signals, Callable[[], None]]] = [
            (signal.SIGTERM, functools.partial(self._signalled, signal.SIGTERM)),
            (signal.SIGINT, functools.partial(self._signalled, signal.SIGINT)),
        ]
        if hasattr(signal, "SIGHUP"):  # POSIX only
            handlers.append((signal.SIGHUP, self._hangup))
        for signum, handler in handlers:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, handler)
                installed.append(signum)
        self._state = state
        delivered = asyncio.wrap_future(delivery.result)
        sharing = (  # whether or not a source has a rate_limit now: a reload may add one
            asyncio.create_task(
                self._share_rate_limits(state.inbox, state, delivery), name="shipmap-serve-rate-shares"
            )
            if isinstance(state.inbox, SharedIntake)
            else None
        )
        activity = asyncio.create_task(self._log_activity(delivery, state), name="shipmap-serve-activity")
        http = asyncio.create_task(server.serve(sockets=[sock]), name="shipmap-serve-http")
        stop = asyncio.create_task(self._stop.wait())
        try:
            while not server.started and not http.done() and not delivered.done():
                await asyncio.sleep(0.005)
            if server.started:
                self._log.info("serving on %s", self.listening)
                if on_ready is not None:
                    on_ready(self.url or "")
            ended: set[asyncio.Future[Any]] = {stop, delivered, http}
            await asyncio.wait(ended, return_when=asyncio.FIRST_COMPLETED)
            return await self._drain(server, http, delivery, delivered, state)
        finally:
            stop.cancel()
            activity.cancel()
            self._state = None
            if sharing is not None:
                sharing.cancel()
            for signum in installed:
                loop.remove_signal_handler(signum)
            sock.close()

    async def _log_activity(self, delivery: DeliveryLoop, state: ServiceState) -> None:
        """Every ``ACTIVITY_EVERY_S`` in which anything happened, a line of what: the record of a service left
        running (a line per delivery waits for ``-v``; /metrics has the same counts as series)."""
        last = (delivery.accepted, 0, 0)
        while True:
            await asyncio.sleep(ACTIVITY_EVERY_S)
            summary = delivery.summary()
            now = (delivery.accepted, summary.delivered, summary.dead)
            refused = state.refusals.take()
            if now == last and refused is None:
                continue
            gauges = await state.gauges.read()
            if gauges.stale or gauges.reading is None:
                waiting = f"queue unknown: {gauges.problem}"
            else:
                waiting = f"{depth_text(gauges.reading.depth)} waiting in the inbox"
            self._log.info(
                "in the last %g s: %s accepted, %d delivered, %s; %s%s",
                ACTIVITY_EVERY_S,
                counted(now[0] - last[0], "webhook"),
                now[1] - last[1],
                counted(now[2] - last[2], "dead letter"),
                waiting,
                f"; {refused}" if refused is not None else "",
            )
            last = now

    async def _share_rate_limits(
        self, inbox: SharedIntake, state: ServiceState, delivery: DeliveryLoop
    ) -> None:
        """Several processes on one PostgreSQL inbox: each source's rate_limit is the service's, so each
        process takes 1/N of it, N counted now and every ``RATE_SHARE_EVERY_S``. Enrichment's max_rate needs no
        share: the processes claim its slots in the journal (``Enricher``), and 1/N applies only to a process
        that could not open them. A failed count keeps the last one (intake answers 503 meanwhile anyway)."""
        counted = 1
        while True:
            try:  # one short query on intake's connection, where its commits run
                processes = await asyncio.get_running_loop().run_in_executor(
                    state.intake_worker, inbox.services
                )
            except InboxError:
                processes = counted
            if processes != counted:
                self._log.info(
                    "rate limits: %s",
                    f"{processes} serve processes take webhooks into this inbox; this one allows 1/{processes}"
                    " of each source's rate_limit; their enrichment GETs keep to each max_rate together, by"
                    " the slots they claim in the journal"
                    if processes > 1
                    else "this is the only serve process on this inbox now; it allows each source's whole"
                    " rate_limit and enrichment max_rate",
                )
                counted = processes
                state.share_rate_limits(processes)
                delivery.share_enrich_rates(processes)
            await asyncio.sleep(RATE_SHARE_EVERY_S)

    async def _drain(
        self,
        server: _Server,
        http: asyncio.Task[None],
        delivery: DeliveryLoop,
        delivered: asyncio.Future[RunSummary | None],
        state: ServiceState,
    ) -> RunSummary | None:
        deadline = time.monotonic() + self.settings.drain_timeout
        if (stopping := _delivery_error(delivered)) is not None:
            # Delivery has ended: nothing more can be delivered, so no drain is promised. What is owed is
            # counted once, in the stop report's "owed at stop" line; the error is worded as its last line.
            error = stopping.message if isinstance(stopping, ShipmapError) else why(stopping)
            self._log.error(
                "stopping on an error: intake closed; nothing more will be delivered (%s); what was accepted"
                " and not delivered stays in the inbox and the journal for the next start",
                error,
            )
        else:
            self._log.info(
                "draining: intake closed; delivering what was accepted (deadline %.0f s; a second SIGTERM or"
                " Ctrl-C stops now)",
                self.settings.drain_timeout,
            )
        state.accepting = False
        server.should_exit = True
        delivery.stop()
        cut: asyncio.Future[Any] = asyncio.ensure_future(self._stop_now.wait())
        try:
            # asyncio.wait, not wait_for, throughout: it cancels nothing it waits for, and on Python 3.11
            # wait_for loses a cancellation of the service that comes in the instant what it waits for ends.
            await asyncio.wait(
                {http, cut},
                timeout=max(0.1, deadline - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not http.done():
                server.force_exit = True
            if not cut.done():
                await asyncio.wait(
                    {delivered, cut},
                    timeout=max(0.1, deadline - time.monotonic()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
        finally:
            cut.cancel()
        if self._stop_now.is_set() and not (http.done() and delivered.done()):
            self._log.warning(
                "%s cut the drain short: deliveries still in flight stay pending and are re-sent on restart",
                self._stopped_by,
            )
        elif not delivered.done():
            self._log.warning(
                "drain deadline reached: deliveries still in flight stay pending and are re-sent on restart"
            )
        if not delivered.done():
            delivery.cancel()
            await asyncio.wait({delivered}, timeout=5.0)
        # What ended the service, raised once the stop is reported: a run's error other than SendingStopped.
        failure = _delivery_error(delivered)
        if failure is None and delivered.done() and not delivered.cancelled():
            self.summary = delivered.result()
        if not http.done():
            http.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await http
        elif failure is None and not http.cancelled() and http.exception() is not None:
            failure = http.exception()
        # An error, or a delivery still ending: what its runs did is in the service's totals all the same.
        summary = self.summary = self.summary if self.summary is not None else delivery.summary_at_end()
        self._log.info("stopped: %s handed to delivery", counted(delivery.handed, "event"))
        if (refused := state.refusals.take()) is not None:  # since the last activity line: the drain's 503s
            self._log.info("since the last activity line: %s", refused)
        journal = self.runtime.config.journal.location
        if state.intake_worker is not None:  # where intake's connection is used: a cut drain's commit may be
            owed = await asyncio.get_running_loop().run_in_executor(
                state.intake_worker, owed_at_stop, journal, state.inbox
            )
        else:
            owed = owed_at_stop(journal, state.inbox)
        if owed is not None:
            self._log.warning("%s", owed)
        as_at_stop(summary, self.runtime, breaker_records(self.runtime, self._delivery), self._log)
        if failure is not None:
            raise failure
        return summary

    def breakers(self) -> dict[str, str]:
        """Each connection's circuit breaker state (closed, half_open, open), delivery's and enrichment's."""
        return phases(breaker_records(self.runtime, self._delivery))


def _enrichments(settings: ServeSettings) -> dict[str, Enrichment]:
    return {name: source.enrich for name, source in settings.sources.items() if source.enrich is not None}


def _delivery_error(delivered: asyncio.Future[RunSummary | None]) -> BaseException | None:
    """The error that ended delivery, when that is what stops the service (None: a stop was asked, or it
    has not ended)."""
    if not delivered.done() or delivered.cancelled():
        return None
    return delivered.exception()


def _queue_figures(gauges: Gauges) -> tuple[int, float | None] | None:
    """The queue's depth and oldest webhook for /metrics, at the inbox's last reading (None before any)."""
    reading = gauges.reading
    return (reading.depth, reading.oldest) if reading is not None else None


def _running(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` is the one running in this thread."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _addresses(host: str, port: int) -> tuple[str, str]:
    """The URL that reaches a socket bound to ``host``:``port`` from this host, and what the socket listens on as
    an operator reads it: that URL, or, for a wildcard address (whose URL names loopback), the address and
    ``every interface``, so that nobody takes a service open to the network for a local one."""
    url = f"http://{url_host(host)}:{port}"
    try:
        wildcard = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        wildcard = False
    if not wildcard:
        return url, url
    return url, f"{f'[{host}]' if ':' in host else host}:{port}, every interface"
