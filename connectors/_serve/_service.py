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
acknowledged is lost.

Readiness (``/readyz``) means "send me webhooks": the inbox is writable, intake is open and the delivery
thread runs. An open circuit breaker does not make the service unready: intake still commits every webhook
and delivery catches up when the destination is back, while a load balancer that pulled the instance would
turn a vendor's outage into refused webhooks. ``/readyz`` reports each breaker (and ``degraded``), so a
probe that wants to alert on it can.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import signal
import socket
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml
from shipmap.engine import ShipmapError

from .._config import RuntimeConfig, load_config
from .._errors import ConfigError, ConnectorError
from .._local_server import bind, url_host  # one way to bind a listening socket and name it in a URL
from .._map._mapper import EventMapper
from .._plural import counted
from .._redact import get_logger
from .._runtime import RunSummary, Runtime, register_secrets
from ._app import CutOffRequests, ServiceState, build_app
from ._delivery_loop import DeliveryLoop
from ._inbox import DEDUP_WINDOW, InboxError, InboxStore, SharedIntake
from ._inbox_pg import open_inbox
from ._metrics import ServiceMetrics
from ._replays import ReplayRequests, replays_path
from ._settings import ServeSettings, SourceSettings, serve_settings
from ._totals import as_at_stop, owed_at_stop

RATE_SHARE_EVERY_S = 5.0  # how soon the processes on a shared inbox see one come or go
RELOAD_DEADLINE_S = 30.0  # reading the config file, its env file and secret files again
ACTIVITY_EVERY_S = 60.0  # a line of what the service did, this often (when it did anything)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service drains first, then stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class Service:
    """One ``shipmap serve``. ``await service.serve()`` runs until ``stop()`` or SIGTERM/SIGINT."""

    def __init__(
        self,
        runtime: Runtime,
        settings: ServeSettings | None = None,
        *,
        source_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.runtime = runtime
        self.settings = settings or serve_settings(runtime.config)
        self._source_transport = source_transport
        self._log = get_logger("serve", runtime.redactor, runtime_name=runtime.name)
        self._stop = asyncio.Event()
        self.summary: RunSummary | None = None
        self.url: str | None = None  # where this host reaches it, once it listens
        self.listening: str | None = None  # what it listens on, as an operator reads it (see _addresses)
        self._state: ServiceState | None = None  # while serving
        self._started_with = _sections(runtime.config.file)  # what a reload compares the file with
        # Enrichment's clients are built at start, over these connections: a reload keeps them as they are.
        self._enrichment_connections = frozenset(
            source.enrich.connection for source in self.settings.sources.values() if source.enrich is not None
        )
        self._mapper = runtime.mapper  # the mappings of the last reload that changed them (the next runs')
        self._delivery: DeliveryLoop | None = None  # while serving
        self._reloading: asyncio.Lock | None = None
        self._reloads: set[asyncio.Task[None]] = set()

    def stop(self) -> None:
        self._stop.set()

    async def reload(self) -> Reloaded:
        """Read the config file again (its env file and ``${file:...}`` secrets too), with the mapping files it
        names, and apply:

        - its ``sources`` to intake: secrets, signatures, rate limits, body caps, kept headers, sources added or
          removed. The next request finds them; one in progress ends under the old ones;
        - its ``mappings``, ``events``, ``connections`` and ``delivery`` (and the mapping files' contents) to
          delivery: the run in progress ends once the events handed to it are journaled (they go as mapped, to
          the URLs they were journaled with), and the events after them, and replays, are mapped and sent with
          the new ones. A connection that did not change keeps its auth session; one that did, or a new one,
          logs in afresh.

        Nothing else is applied: the other sections it finds changed (``journal``, ``serve``, and the
        connections enrichment fetches over, whose clients are built at start) are named in ``not_applied``
        (a restart applies them; SIGTERM drains).

        ``${VAR}`` references are read from this process's environment (``os.environ``), as ``shipmap serve``
        loads its config. Raises ConfigError or MappingError, located in its file, when the config or a mapping
        is wrong, a connection the service runs with is gone from the file, a source's ``enrich`` (the delivery
        side's, set at start) changed, or reading it all outlives ``RELOAD_DEADLINE_S``: the running sources,
        mappings, connections and delivery settings then stay as they were."""
        if self._reloading is None:
            self._reloading = asyncio.Lock()
        async with self._reloading:  # two SIGHUPs in a row: the second reads the file after the first
            file = self.runtime.config.file
            if file is None:
                raise ConfigError(
                    "this service was not started from a config file: there is nothing to reload"
                )
            try:  # a file on a mount that hangs must not hold every later reload
                async with asyncio.timeout(RELOAD_DEADLINE_S):
                    config, sections, mapper = await asyncio.to_thread(
                        _read_again, file, self.runtime, self._enrichment_connections
                    )
            except TimeoutError:
                raise ConfigError(
                    f"reading the config file, its secrets and its mappings took more than"
                    f" {RELOAD_DEADLINE_S:g} s"
                ) from None
            sources = serve_settings(config).sources
            before = self.settings.sources
            for name in sorted(before.keys() & sources.keys()):
                if _enrich_text(before[name]) != _enrich_text(sources[name]):
                    raise config.error(
                        f"sources.{name}.enrich changed: enrichment runs on the delivery side, set at start;"
                        " restart the service to change it",
                        ("sources", name, "enrich"),
                    )
            for name in sorted(sources.keys() - before.keys()):
                if sources[name].enrich is not None:
                    raise config.error(
                        f"sources.{name} is new and has an enrich section: enrichment runs on the delivery"
                        " side, set at start; restart the service to add it",
                        ("sources", name, "enrich"),
                    )
            register_secrets(config, self.runtime.redactor)
            changed = tuple(_source_changes(before, sources))
            remapped = (
                *_mapping_changes(self._mapper, mapper),
                *_delivery_changes(self._mapper.config, mapper.config),
            )
            self.settings = dataclasses.replace(self.settings, sources=sources)
            if self._state is not None:
                self._state.replace_sources(sources)
            if remapped:
                self._mapper = mapper
                if self._delivery is not None:
                    self._delivery.use_mapper(mapper)
                else:
                    self.runtime.use_mapper(mapper)
            return Reloaded(
                changed + remapped,
                tuple(_not_applied(self._started_with, sections, self._enrichment_connections)),
            )

    async def _reload_logged(self) -> None:
        """SIGHUP: reload, and say in the log what came of it (never a value)."""
        try:
            reloaded = await self.reload()
        except ShipmapError as error:
            self._log.error("reload refused; the running configuration stays: %s", error)
            return
        except Exception as error:  # a bug: the service goes on as it was, and says so without a traceback
            self._log.error(
                "reload failed; the running configuration stays: %s: %s", type(error).__name__, error
            )
            return
        self._log.info(
            "reloaded %s: %s",
            self.runtime.config.file,
            "; ".join(reloaded.changed) if reloaded.changed else "no change it applies",
        )
        if reloaded.not_applied:
            self._log.warning(
                "%s changed in %s but a reload does not apply it: restart to apply (SIGTERM drains)",
                ", ".join(reloaded.not_applied),
                self.runtime.config.file,
            )

    def _hangup(self) -> None:
        task = asyncio.ensure_future(self._reload_logged())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def serve(
        self, sock: socket.socket | None = None, *, on_ready: Callable[[str], None] | None = None
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
        # and run: `shipmap replay` runs beside them as one more worker, and no local request file is held.
        journal = shared.path if shared.url is None else None
        with contextlib.ExitStack() as held:
            # Intake's connection: an SQLite inbox is locked to this process, a PostgreSQL one is shared.
            inbox = open_inbox(settings.inbox, synchronous=synchronous, lease=lease, intake=True)
            held.callback(inbox.close)
            uvicorn_log, cut_off = logging.getLogger("uvicorn.error"), CutOffRequests()
            uvicorn_log.addFilter(cut_off)
            held.callback(uvicorn_log.removeFilter, cut_off)
            inbox.purge(time.time() - DEDUP_WINDOW)
            replays = (
                held.enter_context(ReplayRequests(replays_path(journal), serving=True))
                if journal is not None
                else None
            )
            enrichments = {n: s.enrich for n, s in settings.sources.items() if s.enrich is not None}
            delivery = DeliveryLoop(
                self.runtime,
                settings.inbox,
                synchronous,
                enrichments,
                transport=self._source_transport,
                replays=replays.path if replays is not None else None,
                resweep=(settings.resweep, settings.resweep_cap),
            )
            metrics = ServiceMetrics(
                summary=delivery.summary,
                queue=lambda: (inbox.depth(), inbox.oldest_pending()),
                breakers=self.breakers,
                in_flight=delivery.in_flight,
                stalled=lambda: delivery.stalled is not None,
                processes=lambda: state.processes,
            )
            state = ServiceState(
                sources=settings.sources,
                inbox=inbox,
                metrics=metrics,
                on_accept=delivery.wake,
                readiness=lambda: self._readiness(delivery, inbox),
                body_timeout=settings.body_timeout,
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
            (signal.SIGTERM, self.stop),
            (signal.SIGINT, self.stop),
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
            asyncio.create_task(self._share_rate_limits(state.inbox, state), name="shipmap-serve-rate-shares")
            if isinstance(state.inbox, SharedIntake)
            else None
        )
        activity = asyncio.create_task(
            self._log_activity(delivery, state.inbox), name="shipmap-serve-activity"
        )
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

    async def _log_activity(self, delivery: DeliveryLoop, inbox: InboxStore) -> None:
        """Every ``ACTIVITY_EVERY_S`` in which anything happened, a line of what: the record of a service left
        running (a line per delivery waits for ``-v``; /metrics has the same counts as series)."""
        last = (delivery.accepted, 0, 0)
        while True:
            await asyncio.sleep(ACTIVITY_EVERY_S)
            summary = delivery.summary()
            now = (delivery.accepted, summary.delivered, summary.dead)
            if now == last:
                continue
            try:
                waiting = f"{inbox.depth()} waiting in the inbox"
            except Exception as error:  # the inbox's own errors are intake's to report; this is one line
                waiting = f"the inbox cannot be read now ({type(error).__name__})"
            self._log.info(
                "in the last %g s: %s accepted, %d delivered, %s; %s",
                ACTIVITY_EVERY_S,
                counted(now[0] - last[0], "webhook"),
                now[1] - last[1],
                counted(now[2] - last[2], "dead letter"),
                waiting,
            )
            last = now

    async def _share_rate_limits(self, inbox: SharedIntake, state: ServiceState) -> None:
        """Several processes on one PostgreSQL inbox: each source's rate_limit is the service's, so each
        process takes 1/N of it, N counted now and every ``RATE_SHARE_EVERY_S``. A failed count keeps the
        last one (intake answers 503 meanwhile anyway)."""
        counted = 1
        while True:
            try:
                processes = inbox.services()  # one short query on intake's connection, as an accept is
            except InboxError:
                processes = counted
            if processes != counted:
                self._log.info(
                    "rate limits: %s",
                    f"{processes} serve processes take webhooks into this inbox; this one allows 1/{processes}"
                    " of each source's rate_limit"
                    if processes > 1
                    else "this is the only serve process on this inbox now; it allows each source's whole"
                    " rate_limit",
                )
                counted = processes
                state.share_rate_limits(processes)
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
        self._log.info(
            "draining: intake closed; delivering what was accepted (deadline %.0f s)",
            self.settings.drain_timeout,
        )
        state.accepting = False
        server.should_exit = True
        delivery.stop()
        # asyncio.timeout, not wait_for, throughout: on Python 3.11 wait_for loses a cancellation of the service
        # that comes in the instant what it waits for ends.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                await asyncio.shield(http)
        if not http.done():
            server.force_exit = True
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                self.summary = await asyncio.shield(delivered)
        except TimeoutError:
            self._log.warning(
                "drain deadline reached: deliveries still in flight stay pending and are re-sent on restart"
            )
            delivery.cancel()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    self.summary = await delivered
        if not http.done():
            http.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await http
        elif http.exception() is not None:
            raise http.exception()  # type: ignore[misc]
        self._log.info("stopped: %s handed to delivery", counted(delivery.handed, "event"))
        if (owed := owed_at_stop(self.runtime.config.journal.location, state.inbox)) is not None:
            self._log.warning("%s", owed)
        if self.summary is not None:
            as_at_stop(self.summary, self.runtime, self._log)
        return self.summary

    def breakers(self) -> dict[str, str]:
        """Each connection's circuit breaker state (closed, half_open, open). Delivery and enrichment keep
        their breakers in the runtime's breaker store, by connection name: one record per connection."""
        store = self.runtime.breaker_store
        return {name: str(store.breaker(name).phase) for name in self.runtime.connections}

    def _readiness(self, delivery: DeliveryLoop, inbox: InboxStore) -> dict[str, Any]:
        store = self.runtime.breaker_store
        now = time.monotonic()  # the breakers' clock
        outages = {}
        for name in self.runtime.connections:
            record = store.breaker(name)
            if record.phase != "closed":
                outages[name] = {
                    "state": record.phase,
                    "reason": record.reason,
                    "open_for_seconds": round(max(0.0, now - record.opened_at), 1),
                    "next_probe_in_seconds": round(max(0.0, record.retry_at - now), 1),
                    "probes": record.probes,
                }
        stall = delivery.stalled
        stalled = None
        if stall is not None:
            stalled = {
                "reason": stall.reason,
                "for_seconds": round(max(0.0, now - stall.since), 1),
                "next_run_in_seconds": round(max(0.0, stall.retry_at - now), 1),
            }
        return {
            "delivering": delivery.running,
            "queue_depth": inbox.depth(),
            "breakers": self.breakers(),
            # A destination or source API is down, or sends keep raising: intake still accepts.
            "degraded": bool(outages) or stalled is not None,
            "outages": outages,
            "delivery_stalled": stalled,
            "parked_deliveries": delivery.summary().parked,
            "parked_webhooks": delivery.parked_webhooks(),
        }


@dataclass(frozen=True)
class Reloaded:
    """What a reload did: ``changed``, one line per source (``shop: secrets, rate_limit``; never a value), per
    mappings entry (``mappings[0] shopify-order: changed``), per connection (``connections.fenix: base_url``),
    ``events`` and ``delivery: retry``; ``not_applied``, the other parts of the config found changed, which
    wait for a restart."""

    changed: tuple[str, ...]
    not_applied: tuple[str, ...]


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


def _sections(file: str | None) -> dict[str, Any]:
    """The config file's top-level sections as written (before ``${...}`` is filled), to compare."""
    if file is None:
        return {}
    try:
        value = yaml.safe_load(Path(file).read_text(encoding="utf-8-sig"))
    except (OSError, ValueError, yaml.YAMLError):  # load_config says what is wrong with it
        return {}
    return value if isinstance(value, dict) else {}


def _read_again(
    file: str, runtime: Runtime, kept: frozenset[str]
) -> tuple[RuntimeConfig, dict[str, Any], EventMapper]:
    """The config file read again, its sections as written, and a mapper of its ``mappings`` and ``events``
    over its ``connections`` and ``delivery`` (its mapping files loaded and compiled). The connections named
    in ``kept`` stay as they run (enrichment's)."""
    config = load_config(file)
    running = {connection.name: connection for connection in runtime.config.connections}
    gone = sorted(running.keys() - {connection.name for connection in config.connections})
    if gone:
        raise config.error(
            f"connection '{gone[0]}' is gone from the file: a reload does not remove connections (deliveries"
            " pending in the journal may need it); restart the service to remove it",
            ("connections",),
        )
    delivery = config.delivery
    if runtime._concurrency_override is not None:  # --concurrency outranks the file, as at start
        delivery = dataclasses.replace(delivery, concurrency=runtime._concurrency_override)
    remapped = dataclasses.replace(
        runtime.config,
        connections=tuple(running[c.name] if c.name in kept else c for c in config.connections),
        mappings=config.mappings,
        events=config.events,
        delivery=delivery,
        base_dir=config.base_dir,
        locations=config.locations,
    )
    mapper = EventMapper(remapped, runtime.redactor)
    mapper.prepare()
    return config, _sections(file), mapper


def _enrich_text(source: SourceSettings) -> object:
    enrich = source.enrich
    if enrich is None:
        return None
    return (enrich.connection, enrich.topics, {name: path.text for name, path in enrich.fetch.items()})


def _source_changes(
    before: Mapping[str, SourceSettings], after: Mapping[str, SourceSettings]
) -> Iterator[str]:
    for name in sorted(before.keys() | after.keys()):
        if name not in after:
            yield f"{name}: removed"
        elif name not in before:
            yield f"{name}: added"
        else:
            keys = [
                key.name
                for key in dataclasses.fields(SourceSettings)
                if key.name != "enrich" and getattr(before[name], key.name) != getattr(after[name], key.name)
            ]
            if keys:
                yield f"{name}: {', '.join(keys)}"


def _mapping_changes(before: EventMapper, after: EventMapper) -> Iterator[str]:
    """One line per mappings entry added, removed or changed (as written, or its mapping file's text), and
    ``events`` when its settings changed."""
    (events_before, entries_before), (events_after, entries_after) = before.identity(), after.identity()
    if events_before != events_after:
        yield "events"
    for index in range(max(len(entries_before), len(entries_after))):
        if index >= len(entries_after):
            yield f"mappings[{index}] {before.routes[index].mapping.name}: removed"
        elif index >= len(entries_before):
            yield f"mappings[{index}] {after.routes[index].mapping.name}: added"
        elif entries_before[index] != entries_after[index]:
            yield f"mappings[{index}] {after.routes[index].mapping.name}: changed"


def _delivery_changes(before: RuntimeConfig, after: RuntimeConfig) -> Iterator[str]:
    """One line per connection added or changed, with the settings that changed (``connections.fenix:
    base_url, auth``; never a value), and ``delivery`` with its own."""
    connections = {c.name: c for c in before.connections}
    for connection in after.connections:
        earlier = connections.get(connection.name)
        if earlier is None:
            yield f"connections.{connection.name}: added"
        elif earlier != connection:
            yield f"connections.{connection.name}: {', '.join(_fields_changed(earlier, connection))}"
    if before.delivery != after.delivery:
        yield f"delivery: {', '.join(_fields_changed(before.delivery, after.delivery))}"


def _fields_changed(before: Any, after: Any) -> list[str]:
    return [
        field.name
        for field in dataclasses.fields(before)
        if field.compare and getattr(before, field.name) != getattr(after, field.name)
    ]


_APPLIED = frozenset({"sources", "mappings", "events", "connections", "delivery"})


def _not_applied(started: Mapping[str, Any], now: Mapping[str, Any], kept: frozenset[str]) -> Iterator[str]:
    """The sections a reload does not apply that differ from the file the service started with, and the
    connections in ``kept`` (enrichment's) that do. (Credentials written as references need no reload: each
    connection reads them again itself, at a login or a 401.)"""
    for key in sorted((started.keys() | now.keys()) - _APPLIED):
        if started.get(key) != now.get(key):
            yield key
    connections = (_mapping_or_empty(started.get("connections")), _mapping_or_empty(now.get("connections")))
    for name in sorted(kept):
        if connections[0].get(name) != connections[1].get(name):
            yield f"connections.{name} (enrichment's: set at start)"


def _mapping_or_empty(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
