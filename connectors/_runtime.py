"""The connector runtime: route events to mappings, map them, journal them, deliver them, summarise.

One Runtime is built from a RuntimeConfig (``Runtime.from_config(path)`` or ``Runtime(config)``) and holds no
process-wide state: its redactor, auth sessions and random source are its own. ``run``/``run_async`` deliver a
stream of events; ``plan`` is the dry run; ``replay``/``replay_async`` re-send dead letters.

Per event, for every matching mapping entry and every target the mapping produces, a delivery key is
derived from (mapping name, target, canonical source JSON). A delivery already ``delivered`` or ``dead`` in
the journal is skipped; otherwise it is recorded ``pending`` (with its request and idempotency key) before
it is sent, a batch of events in one transaction. A run starts by re-sending what an interrupted run left
``pending``, exactly as recorded. With ``workers=1`` a forked worker process (``_pipeline``) reads, routes,
maps, validates and encodes the events, and this process journals and sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
from shipmap.engine import PayloadValidationError, Problem, ShipmapError, SourceDocument
from shipmap.engine._expressions import is_truthy
from shipmap.engine._kinds import json_problems

from ._auth import ShipmapAuth
from ._breaker import MemoryStore
from ._config import (
    Connection,
    PlannedRoute,
    PlannedTarget,
    RuntimeConfig,
    compile_expression,
    join_url,
    load_config,
    plan_routes,
)
from ._delivery import Deliverer, OutboundRequest, Outcome, encode_payload
from ._errors import ConfigError
from ._journal import (
    Journal,
    JournalEntry,
    PendingRow,
    RejectedInput,
    State,
    canonical_json,
    delivery_key,
    digest_of,
    open_readonly,
)
from ._journal_pg import is_database_url
from ._pipeline import ForkedProducer, fork_available
from ._redact import MASK, Redactor, get_logger, is_sensitive_name

T = TypeVar("T")
MAPPING_STAGE = ""  # the target name of a dead letter raised before any target existed (the mapping failed)
_REASON_CHARS = 2000
_CHUNK = 256
_BATCH = 16  # events settled (journaled in one transaction) at a time
_FLUSH_MARKS = 16  # delivered marks committed together, at the latest ...
_FLUSH_SECONDS = 0.05  # ... this long after the oldest of them
_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


# --- results ------------------------------------------------------------------------------------------------


class LatencyHistogram:
    """Latencies in log-spaced buckets (2% wide): percentiles within 2%, memory flat however many samples."""

    _RATIO = math.log(1.02)

    def __init__(self) -> None:
        self._buckets: dict[int, int] = {}
        self.count = 0

    def add(self, seconds: float) -> None:
        index = math.floor(math.log(max(seconds, 1e-6)) / self._RATIO)
        self._buckets[index] = self._buckets.get(index, 0) + 1
        self.count += 1

    def percentile(self, p: float) -> float | None:
        """The p-th percentile in seconds (upper bound of its bucket), or None without samples."""
        if not self.count:
            return None
        rank = max(1, math.ceil(p / 100 * self.count))
        seen = 0
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen >= rank:
                return math.exp((index + 1) * self._RATIO)
        return None  # pragma: no cover - rank <= count

    def buckets(self) -> Iterator[tuple[float, int]]:
        """(upper bound in seconds, count) of every non-empty bucket, in no particular order."""
        for index, count in list(self._buckets.items()):  # a copy: another thread may be adding samples
            yield math.exp((index + 1) * self._RATIO), count


@dataclass
class TargetSummary:
    """What happened to one target of one mapping during a run."""

    mapping: str
    target: str
    delivered: int = 0
    retried: int = 0  # deliveries that needed more than one attempt
    dead: int = 0
    skipped: int = 0  # already delivered (or already dead-lettered) in an earlier run
    skipped_dead: int = 0  # of ``skipped``: dead letters waiting for ``shipmap replay``
    attempts: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram, repr=False)

    @property
    def label(self) -> str:
        return f"{self.mapping}.{self.target}" if self.target else f"{self.mapping} (mapping)"

    def percentiles(self) -> dict[str, float | None]:
        return {f"p{p}": self.latency.percentile(p) for p in (50, 95, 99)}


@dataclass
class RunSummary:
    """The outcome of a run or replay. ``ok`` is false when anything was dead-lettered or rejected."""

    targets: dict[str, TargetSummary] = field(default_factory=dict)
    unrouted: int = 0  # events no mapping entry matched
    rejected: int = 0  # input records that were not JSON
    recovered: int = 0  # pending deliveries of an interrupted run, re-sent first
    parked: int = 0  # left pending: their connection's breaker stayed open past outage_wait
    outages: dict[str, str] = field(default_factory=dict)  # connection -> why its breaker opened
    events: int = 0
    elapsed: float = 0.0
    dead_keys: list[str] = field(default_factory=list, repr=False)

    def target(self, mapping: str, target: str) -> TargetSummary:
        label = f"{mapping}\x1f{target}"
        found = self.targets.get(label)
        if found is None:
            found = self.targets[label] = TargetSummary(mapping, target)
        return found

    def get(self, label: str) -> TargetSummary:
        """The summary of ``mapping.target`` (KeyError when nothing happened to it)."""
        mapping, _, target = label.rpartition(".")
        return self.targets[f"{mapping}\x1f{target}"]

    @property
    def delivered(self) -> int:
        return sum(t.delivered for t in self.targets.values())

    @property
    def dead(self) -> int:
        return sum(t.dead for t in self.targets.values())

    @property
    def skipped(self) -> int:
        return sum(t.skipped for t in self.targets.values())

    @property
    def retried(self) -> int:
        return sum(t.retried for t in self.targets.values())

    @property
    def ok(self) -> bool:
        return self.dead == 0 and self.rejected == 0 and self.parked == 0


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot passed to the progress callback after each event or delivery settles."""

    events: int
    delivered: int
    dead: int
    skipped: int
    unrouted: int
    rejected: int
    in_flight: int
    elapsed: float
    total: int | None = None


Action = Literal["send", "skip", "dead", "unrouted", "rejected"]


@dataclass(frozen=True, slots=True)
class PlanEntry:
    """What a run would do with one delivery (or one event that yields none). Headers are redacted."""

    action: Action
    origin: str | None
    mapping: str | None = None
    target: str | None = None
    key: str | None = None
    method: str | None = None
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None
    reason: str | None = None


# --- the work units -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Job:
    key: str
    mapping: str
    target: str
    source_digest: str
    origin: str | None
    idempotency_key: str | None
    request: OutboundRequest
    text: str  # the payload's JSON, encoded once: the request body and the journal's copy


@dataclass(frozen=True, slots=True)
class _Dead:
    key: str
    mapping: str
    target: str
    source_digest: str
    origin: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class _Skip:
    key: str
    mapping: str
    target: str
    state: str


@dataclass(frozen=True, slots=True)
class _Resolve:
    key: str
    reason: str


@dataclass(frozen=True, slots=True)
class _Unrouted:
    source_digest: str
    origin: str | None


@dataclass(frozen=True, slots=True)
class _Route:
    """The steps that follow are one mapping entry's: all of them are skipped if its mapping stage is dead."""

    stage_key: str
    mapping: str


@dataclass(frozen=True, slots=True)
class _SourceMarker:
    """A second source document within one event (a route with its own ``body``): store it too."""

    digest: str
    canonical: str


_Step = _Job | _Dead | _Skip | _Resolve | _Unrouted | _SourceMarker | _Route


@dataclass(frozen=True, slots=True)
class _Event:
    """One routed source document: the journal needs its canonical text before any of its rows."""

    record: SourceDocument
    digest: str
    canonical: str
    steps: tuple[_Step, ...]


_Item = _Event | SourceDocument  # what a producer hands the run: an expanded event, or a rejected record


# --- the runtime --------------------------------------------------------------------------------------------


class Runtime:
    """Route, map, journal and deliver events. Build once; run as often as you like (not concurrently)."""

    def __init__(
        self,
        config: RuntimeConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        seed: int | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.config = config
        self.redactor = redactor if redactor is not None else Redactor()
        for secret in config.secrets:
            self.redactor.add(secret)
        for connection in config.connections:
            for secret in connection.auth.secrets():
                self.redactor.add(secret)
            for name, value in connection.headers.items():
                if is_sensitive_name(name):
                    self.redactor.add(value)
        self.routes: tuple[PlannedRoute, ...] = plan_routes(config)
        events = config.events
        self._topic = compile_expression(events.topic, config, ("events", "topic")) if events.topic else None
        self._body = compile_expression(events.body, config, ("events", "body")) if events.body else None
        self.connections: dict[str, Connection] = {c.name: c for c in config.connections}
        # Auth objects live as long as the runtime, so a Fenix token serves every run until it expires.
        self.auths: dict[str, ShipmapAuth] = {
            c.name: c.auth.build(c.base_url, self.redactor) for c in config.connections
        }
        self._transport = transport
        # Breaker and rate-limit state outlives a run, like the auth sessions (a store could share it).
        self.breaker_store = MemoryStore()
        self._rng = random.Random(seed)
        self._log = get_logger("runtime", self.redactor)
        self._running = threading.Lock()
        # The summary of the run in progress (or the last one): ``shipmap serve`` reads it for /metrics.
        self.live: RunSummary | None = None

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
    ) -> Runtime:
        """A runtime from a config file; ``concurrency`` and ``journal`` override the file's settings."""
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
        return cls(config, transport=transport, seed=seed)

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
    ) -> RunSummary:
        """Deliver ``events``: first what an interrupted run left pending, then each event in order.

        ``workers=0`` (the default) does everything in this thread. ``workers=1`` forks a worker process that
        iterates ``events`` itself (a sync iterable: it must not depend on this process's other threads) and
        routes, maps, validates and encodes each event, while this thread journals and sends: the work of
        two cores. Same requests, same order, same journal; async iterables and platforms without
        ``os.fork`` always run in this thread."""
        if workers < 0:
            raise ConfigError("workers must be 0 or more")
        with self._exclusive(), self._open_journal() as journal:
            execution = _Execution(self, journal, progress, total)
            if workers and not isinstance(events, AsyncIterable) and fork_available():
                forked = ForkedProducer(
                    lambda: self._produce_packed(events), close_in_child=journal.lock_fds()
                )
                forked.start()  # before recovery and the first login: the worker's start overlaps them
                try:
                    return await execution.execute(_unpack_batches(forked.batches()), decide=True)
                finally:
                    forked.close()
            return await execution.execute(self._produce(events), decide=True)

    def replay(
        self, keys: Sequence[str] | None = None, *, progress: Callable[[Progress], None] | None = None
    ) -> RunSummary:
        return _run_sync(self.replay_async(keys, progress=progress))

    async def replay_async(
        self,
        keys: Sequence[str] | None = None,
        *,
        progress: Callable[[Progress], None] | None = None,
        refresh: Callable[[Any], Awaitable[Any]] | None = None,
    ) -> RunSummary:
        """Send dead letters again (all, or those whose key starts with one of ``keys``), re-mapping each
        from its stored source document with the mapping as it is now; same delivery and idempotency keys.
        ``refresh`` may replace each stored document first (``shipmap replay --refetch``: enrichment again)."""
        with self._exclusive(), self._open_journal() as journal:
            execution = _Execution(self, journal, progress, None)
            return await execution.execute(self._produce_replay(journal, keys, refresh), decide=False)

    def plan(self, events: Iterable[Any]) -> Iterator[PlanEntry]:
        """The dry run: what each event would cause, with the exact requests (headers redacted). Sends
        nothing, logs in nowhere, writes nothing; reads the journal, if there is one, to show skips."""
        journal = open_readonly(self.config.journal.location)
        try:
            for index, item in enumerate(events):
                record = _as_record(item, index)
                expanded = self._expand_event(record, journal)
                if isinstance(expanded, SourceDocument):
                    yield PlanEntry("rejected", record.origin, reason=expanded.error)
                    continue
                for step in expanded.steps:
                    entry = self._plan_entry(step, record.origin)
                    if entry is not None:
                        yield entry
        finally:
            if journal is not None:
                journal.close()

    def dead_letters(self, keys: Sequence[str] | None = None) -> list[JournalEntry]:
        """The dead letters in the journal (read-only; empty if there is no journal yet)."""
        journal = open_readonly(self.config.journal.location)
        if journal is None:
            return []
        with journal:
            return journal.dead_letters(keys)

    def rejected_inputs(self) -> list[RejectedInput]:
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

    async def _produce(self, events: Iterable[Any] | AsyncIterable[Any]) -> AsyncGenerator[list[_Item], None]:
        """Batches of expanded events. The journal is not read here: the run decides what to skip when it
        settles each batch, against the journal as it is then (``_Execution._settle``)."""
        index = 0
        async for chunk in _aiter_batches(events, _BATCH):
            batch: list[_Item] = []
            for item in chunk:
                record = _as_record(item, index)
                index += 1
                batch.append(self._expand_event(record, None))
            yield batch

    def _produce_packed(self, events: Iterable[Any]) -> Iterator[list[tuple[Any, ...]]]:
        """``_produce`` in the worker process: batches (small at first, so sending starts at once) of events
        packed as tuples, which cross the pipe and unpickle faster than the step objects."""
        batch: list[tuple[Any, ...]] = []
        size = 2
        for index, item in enumerate(events):
            record = _as_record(item, index)
            batch.append(_pack(self._expand_event(record, None)))
            if len(batch) >= size:
                yield batch
                batch = []
                size = min(size * 2, _BATCH)
        if batch:
            yield batch

    async def _produce_replay(
        self, journal: Journal, keys: Sequence[str] | None, refresh: Callable[[Any], Awaitable[Any]] | None
    ) -> AsyncGenerator[list[_Item], None]:
        for entry in journal.dead_letters(keys):
            source = journal.source(entry.source_hash)
            if refresh is not None:
                source = await refresh(source)
            yield [self._expand_replay(entry, journal, source)]

    def _routes_for(self, event: Any) -> list[PlannedRoute]:
        chosen: list[PlannedRoute] = []
        topic: Any = None
        if self._topic is not None and any(r.topics for r in self.routes):
            topic = self._topic.search(event)
        for route in self.routes:
            if route.topics and (topic is None or str(topic) not in route.topics):
                continue
            if route.match is not None and not is_truthy(route.match.search(event)):
                continue
            chosen.append(route)
            if self.config.events.routing == "first":
                break
        return chosen

    def _source_of(self, route: PlannedRoute, event: Any) -> Any:
        if route.body is not None:
            return route.body.search(event)
        if self._body is not None:
            return self._body.search(event)
        return event

    def _expand_event(self, record: SourceDocument, journal: Journal | None) -> _Item:
        """The per-event boundary: the event expanded into its steps, or, when it cannot even be read as
        strict JSON or routed, the event rejected with its reason. Whatever one event does (a value no
        encoder takes, an expression or a template that raises anything at all) stays that event's."""
        if not record.ok:
            return record
        try:
            return self._expand(record, journal)
        except _Unreadable as error:
            return dataclasses.replace(record, document=None, error=str(error), excerpt=_excerpt_of(record))
        except RecursionError:
            reason = "the event is nested too deeply to route or store"
            return dataclasses.replace(record, document=None, error=reason, excerpt=None)
        except Exception as error:  # routing itself failed on this event: it is rejected alone
            reason = self._reason(f"the event cannot be routed: {type(error).__name__}: {error}")
            return dataclasses.replace(record, document=None, error=reason, excerpt=_excerpt_of(record))

    def _expand(self, record: SourceDocument, journal: Journal | None) -> _Event:
        """Every step one event causes. Pure but for journal reads, so the dry run shares it."""
        event = record.document
        routes = self._routes_for(event)
        if not routes:
            canonical, digest = _canonical(event)
            return _Event(record, digest, canonical, (_Unrouted(digest, record.origin),))
        steps: list[_Step] = []
        first_digest, first_canonical = "", ""
        for route in routes:
            source = self._source_of(route, event)
            canonical, digest = _canonical(source)
            if not first_digest:
                first_digest, first_canonical = digest, canonical
            elif digest != first_digest:
                # Routes with different bodies: each source is stored through its own event.
                steps.append(_SourceMarker(digest, canonical))
            steps.extend(self._map_isolated(route, source, digest, record.origin, journal))
        return _Event(record, first_digest, first_canonical, tuple(steps))

    def _map_isolated(
        self, route: PlannedRoute, source: Any, digest: str, origin: str | None, journal: Journal | None
    ) -> list[_Step]:
        """``_map``'s steps; if anything unforeseen raises on the way, this entry's mapping stage is the
        event's dead letter, with the error's type and message (redacted) as the reason."""
        try:
            return list(self._map(route, source, digest, origin, journal))
        except Exception as error:
            stage_key = delivery_key(route.name, MAPPING_STAGE, digest)
            reason = self._reason(f"internal error while mapping: {type(error).__name__}: {error}")
            return [
                _Route(stage_key, route.name),
                _Dead(stage_key, route.name, MAPPING_STAGE, digest, origin, reason),
            ]

    def _map(
        self,
        route: PlannedRoute,
        source: Any,
        digest: str,
        origin: str | None,
        journal: Journal | None,
        *,
        replay: str | None = None,
    ) -> Iterator[_Step]:
        """The steps of one source document through one mapping.

        ``replay=None``: a normal run; deliveries already delivered or dead are skipped. ``replay=""``: a
        mapping-stage dead letter is replayed; every target is (re)sent unless delivered. ``replay=T``: the
        dead letter of target T is replayed; only T is considered.
        """
        name = route.name
        stage_key = delivery_key(name, MAPPING_STAGE, digest)
        failure_key = delivery_key(name, replay, digest) if replay else stage_key
        failure_target = replay or MAPPING_STAGE
        yield _Route(stage_key, name)
        if replay is None and journal is not None and journal.state(stage_key) == "dead":
            yield _Skip(stage_key, name, MAPPING_STAGE, "dead")
            return
        if source is None:
            reason = "the event has no source document at the configured body path"
            yield _Dead(failure_key, name, failure_target, digest, origin, reason)
            return
        try:
            outputs = route.mapping.outputs(source, validate=False)
        except ShipmapError as error:
            yield _Dead(failure_key, name, failure_target, digest, origin, self._reason(error.render()))
            return
        if replay == MAPPING_STAGE:
            yield _Resolve(stage_key, "replayed: the mapping now succeeds")
        if replay and not any(output.target == replay for output in outputs):
            yield _Resolve(failure_key, "replayed: the mapping no longer produces this target")
            return
        for output in outputs:
            target_name, payload = output.target, output.payload
            if replay and target_name != replay:
                continue
            planned = route.targets[target_name]
            if not planned.enabled:
                continue
            # A fan-out element (shipment[42]) is keyed by its label and its own data, not the whole event's:
            # an event that repeats an element unchanged does not send it again, wherever it sits.
            own = digest if output.element is None else digest_of(canonical_json(output.source))
            key = delivery_key(name, output.label, own)
            entry = journal.get(key) if journal is not None else None
            state = entry.state if entry is not None else None
            if state == "delivered" or (state == "dead" and replay is None):
                yield _Skip(key, name, target_name, state)
                continue
            recorded = entry.idempotency_key if entry is not None else None
            yield self._job(planned, route, payload, key, digest, origin, recorded)

    def _job(
        self,
        planned: PlannedTarget,
        route: PlannedRoute,
        payload: dict[str, Any],
        key: str,
        digest: str,
        origin: str | None,
        recorded: str | None,
    ) -> _Job | _Dead:
        """The request of one delivery (``recorded``: the idempotency key its journal row already holds)."""
        name = route.name
        idempotency_key = self._apply_idempotency(planned, payload, key, name, digest, recorded or None)
        try:
            text = encode_payload(payload)  # once: the body, and the journal's copy of it
        except (ValueError, TypeError, UnicodeEncodeError, RecursionError):
            text = ""  # not strict JSON: json_problems below says where
        problems = json_problems(payload) if not text else planned.kind.problems(payload)
        if problems:
            error = PayloadValidationError(
                planned.name,
                planned.kind.name,
                [Problem(field=_field(parts), message=message) for parts, message in problems],
            )
            return _Dead(key, name, planned.name, digest, origin, self._reason(error.render()))
        try:
            path = planned.kind.route.render(payload, path=planned.path)
        except KeyError as error:
            reason = (
                f"the payload has no value for the path placeholder {{{error.args[0]}}} of {planned.path}"
            )
            return _Dead(key, name, planned.name, digest, origin, reason)
        connection = planned.connection
        headers = dict(_JSON_HEADERS)
        if connection.idempotency_header and idempotency_key:
            headers[connection.idempotency_header] = idempotency_key
        request = OutboundRequest(
            connection=connection.name,
            method=planned.method,
            url=join_url(connection.base_url, path),
            payload=payload,
            headers=headers,
            label=f"{name}.{planned.name} {key[:12]}",
            key=key,
            content=text.encode("utf-8"),
        )
        return _Job(key, name, planned.name, digest, origin, idempotency_key, request, text)

    def _apply_idempotency(
        self,
        planned: PlannedTarget,
        payload: dict[str, Any],
        key: str,
        mapping: str,
        digest: str,
        recorded: str | None,
    ) -> str:
        """The delivery's idempotency key; for DG payloads also written into external_id (both places)."""
        settings = self.config.delivery.idempotency
        is_dg = planned.kind.api == "dg"
        inputs = payload.get("inputs") if is_dg else None
        given = payload.get("external_id") if is_dg else None
        if not given and isinstance(inputs, dict):
            given = inputs.get("external_id")
        if recorded:
            value = recorded  # what an earlier attempt sent: a retry must not change it
        elif settings.prefer_mapping and isinstance(given, str) and given:
            value = given
        else:
            value = settings.external_id.format(
                key=key, mapping=mapping, target=planned.name, source_hash=digest
            )
        if is_dg:
            payload["external_id"] = value
            if isinstance(inputs, dict):
                inputs["external_id"] = value
        return value

    def _expand_replay(self, entry: JournalEntry, journal: Journal, source: Any) -> _Event:
        record = SourceDocument(entry.origin or f"journal:{entry.key[:12]}", document=source)
        canonical = canonical_json(source)
        routes = [r for r in self.routes if r.name == entry.mapping]
        if not routes:
            reason = f"replay: mapping '{entry.mapping}' is not in the config any more"
            step: _Step = _Dead(
                entry.key, entry.mapping, entry.target, entry.source_hash, entry.origin, reason
            )
            return _Event(record, entry.source_hash, canonical, (step,))
        try:
            steps = list(
                self._map(routes[0], source, entry.source_hash, entry.origin, journal, replay=entry.target)
            )
        except Exception as error:  # the replayed event fails again, unforeseen: it stays a dead letter
            reason = self._reason(f"internal error while mapping: {type(error).__name__}: {error}")
            steps = [_Dead(entry.key, entry.mapping, entry.target, entry.source_hash, entry.origin, reason)]
        return _Event(record, entry.source_hash, canonical, tuple(steps))

    def _plan_entry(self, step: _Step, origin: str | None) -> PlanEntry | None:
        if isinstance(step, _Job):
            request = step.request
            headers = self.headers_for(request.connection)
            headers.update(self.redactor.redact_headers(request.headers))
            body = self.redactor.redact_json(request.payload)
            return PlanEntry(
                "send",
                origin,
                step.mapping,
                step.target,
                step.key,
                request.method,
                request.url,
                headers,
                body,
            )
        if isinstance(step, _Dead):
            return PlanEntry("dead", origin, step.mapping, step.target, step.key, reason=step.reason)
        if isinstance(step, _Skip):
            why = (
                "already delivered" if step.state == "delivered" else "dead-lettered earlier (shipmap replay)"
            )
            return PlanEntry("skip", origin, step.mapping, step.target, step.key, reason=why)
        if isinstance(step, _Unrouted):
            return PlanEntry("unrouted", origin, reason="no mappings entry matches this event")
        return None  # journal bookkeeping only

    def _reason(self, text: str) -> str:
        return _printable(self.redactor.excerpt(text, _REASON_CHARS))


class _Execution:
    """One run: the journal writes, the worker pool and the counters.

    Events are settled in batches: one transaction journals a batch's sources, dead letters and ``pending``
    rows (write-ahead: before any of its requests goes out), then its jobs are queued for the senders.
    Delivered marks are committed in batches too (every ``_FLUSH_MARKS`` or ``_FLUSH_SECONDS``); until its
    mark is committed a key stays in ``scheduled``, so a repeat of its event in the input is still skipped.
    A crash before the commit leaves the row ``pending``: the next run re-sends it (at-least-once).
    """

    def __init__(
        self,
        runtime: Runtime,
        journal: Journal,
        progress: Callable[[Progress], None] | None,
        total: int | None,
    ) -> None:
        self.runtime = runtime
        self.journal = journal
        self.progress = progress
        self.total = total
        self.summary = runtime.live = RunSummary()
        self.started = time.perf_counter()
        # Keys queued, being sent, or delivered but not yet committed so: a repeat is a duplicate.
        self.scheduled: set[str] = set()
        self.sending = 0
        self.log = runtime._log
        self._marks: list[tuple[str, int, int]] = []  # (key, status, attempts) delivered, not committed
        self._marks_since = 0.0
        self._renewed = time.monotonic()  # when this worker's leases were last renewed (shared journals)
        self._lost: set[str] = set()  # keys whose lease another worker took over (shared journals)
        self._routes = {route.name: route for route in runtime.routes}
        # Records rejected by earlier runs (a line cut off while it was being written): resolved once they read.
        self._rejected_origins = journal.rejected_origins()

    async def execute(self, producer: AsyncGenerator[list[_Item], None], *, decide: bool) -> RunSummary:
        """Re-send what an interrupted run left pending, then settle and send each batch ``producer`` gives.
        ``decide``: check each delivery against the journal (a run); a replay's producer already did."""
        runtime = self.runtime
        concurrency = runtime.config.delivery.concurrency
        queue: asyncio.Queue[_Job | None] = asyncio.Queue(maxsize=concurrency * 4)
        deliverer = Deliverer(
            runtime.connections,
            runtime.auths,
            runtime.config.delivery,
            runtime.redactor,
            transport=runtime._transport,
            rng=runtime._rng,
            on_retry=self._on_retry,
            store=runtime.breaker_store,
        )
        try:
            async with contextlib.aclosing(producer), deliverer, asyncio.TaskGroup() as group:
                workers = [group.create_task(self._worker(deliverer, queue)) for _ in range(concurrency)]
                flusher = group.create_task(self._flush_periodically())
                keeper = group.create_task(self._keep_leases(queue)) if self.journal.shared else None
                for job in self._recover():
                    await queue.put(job)
                async for batch in producer:
                    self.summary.events += len(batch)
                    for job in self._settle(batch, decide=decide):
                        await queue.put(job)
                    self._report()
                if self.journal.shared:
                    await self._wait_for_others(queue)
                for _ in range(concurrency):
                    await queue.put(None)
                await asyncio.gather(*workers)
                flusher.cancel()
                if keeper is not None:
                    keeper.cancel()
        except BaseExceptionGroup as group_error:
            # The TaskGroup wraps whatever stopped the run (an unreadable input, a journal error): callers
            # and the CLI's exit codes want the error itself. What was pending stays pending for the next run.
            if len(group_error.exceptions) == 1:
                raise group_error.exceptions[0] from None
            raise
        finally:
            # Best effort when the run is stopping on an error: what is not marked is re-sent next time.
            with contextlib.suppress(Exception):
                self._flush_marks()
        self.summary.elapsed = time.perf_counter() - self.started
        self._report()
        return self.summary

    def _lease_lapsed(self) -> bool:
        """On a shared journal: this worker has not renewed its leases for half a lease (it was stopped, or
        starved), so another worker may have taken its deliveries over; ask before sending."""
        journal = self.journal
        return journal.shared and time.monotonic() - self._renewed > journal.lease_seconds / 2

    async def _keep_leases(self, queue: asyncio.Queue[_Job | None]) -> None:
        """A shared journal: renew this worker's leases, and take over deliveries whose lease expired."""
        while True:
            await asyncio.sleep(self.journal.lease_seconds / 3)
            held = self.journal.renew_leases()
            # Queued here but held by another worker now (this one was stalled past its lease): not ours.
            self._lost.update(key for key in self.scheduled if key not in held)
            self._renewed = time.monotonic()
            for job in self._recover():
                await queue.put(job)

    async def _wait_for_others(self, queue: asyncio.Queue[_Job | None]) -> None:
        """A shared journal: the input is done, but other workers may hold deliveries; one that dies leaves
        them to expire, and this worker takes them over. Returns when none are held elsewhere, or when that
        number has not moved for three leases (the workers holding them are alive and will finish them)."""
        lease = self.journal.lease_seconds
        last, since = -1, time.monotonic()
        while True:
            for job in self._recover():
                await queue.put(job)
            waiting = self.journal.pending_elsewhere()
            if waiting == 0:
                return
            if waiting != last:
                last, since = waiting, time.monotonic()
            elif time.monotonic() - since > 3 * lease:
                self.log.warning(
                    "%d deliveries are still held by other live workers; they finish them", waiting
                )
                return
            await asyncio.sleep(min(1.0, lease / 4))

    def _recover(self) -> Iterator[_Job]:
        for entry in self.journal.claim_pending():
            connection = self.runtime.connections.get(entry.connection or "")
            if connection is None or entry.method is None or entry.url is None:
                self._dead(
                    _Dead(
                        entry.key,
                        entry.mapping,
                        entry.target,
                        entry.source_hash,
                        entry.origin,
                        "recovery: its connection is not in the config any more",
                    )
                )
                continue
            headers = dict(_JSON_HEADERS)
            if connection.idempotency_header and entry.idempotency_key:
                headers[connection.idempotency_header] = entry.idempotency_key
            text = encode_payload(entry.payload)  # the very text that was journaled and sent
            request = OutboundRequest(
                connection.name,
                entry.method,
                entry.url,
                entry.payload,
                headers,
                label=f"{entry.mapping}.{entry.target} {entry.key[:12]}",
                key=entry.key,
                content=text.encode("utf-8"),
            )
            self.summary.recovered += 1
            self.scheduled.add(entry.key)
            self.log.info("re-sending %s left pending by an interrupted run", request.label)
            yield _Job(entry.key, entry.mapping, entry.target, entry.source_hash, entry.origin,
                       entry.idempotency_key, request, text)  # fmt: skip

    def _settle(self, batch: list[_Item], *, decide: bool) -> list[_Job]:
        """Journal a batch in one transaction; return the jobs to send, each already ``pending``.

        With ``decide``, each delivery is checked against the journal as it is now (and against what this
        run has scheduled): already delivered or dead is a skip, a mapping stage dead earlier skips that
        entry's whole event, and a row that recorded an idempotency key keeps it."""
        journal = self.journal
        jobs: list[_Job] = []
        pending: list[PendingRow] = []
        with journal.transaction():
            self._flush_marks()  # the same commit; and the lookup below sees them delivered
            states: dict[str, tuple[State, str | None]] = {}
            if decide:
                keys = [
                    step.stage_key if isinstance(step, _Route) else step.key
                    for item in batch
                    if isinstance(item, _Event)
                    for step in item.steps
                    if isinstance(step, _Route | _Job | _Dead)
                ]
                states = journal.lookup(keys)
            journal.put_sources(
                [(item.digest, item.canonical) for item in batch if isinstance(item, _Event)]
                + [
                    (step.digest, step.canonical)
                    for item in batch
                    if isinstance(item, _Event)
                    for step in item.steps
                    if isinstance(step, _SourceMarker)
                ]
            )
            if self._rejected_origins:
                self._resolve_rejections(batch)
            for item in batch:
                if isinstance(item, SourceDocument):
                    self.summary.rejected += 1
                    journal.record_rejected(item.origin, item.error or "unreadable", item.excerpt)
                    self.log.warning("%s: rejected input record: %s", item.origin, item.error)
                    continue
                skipping = False  # the current entry's mapping stage is a dead letter from an earlier run
                for step in item.steps:
                    if isinstance(step, _Route):
                        skipping = decide and states.get(step.stage_key, ("", None))[0] == "dead"
                        if skipping:
                            self._skip(_Skip(step.stage_key, step.mapping, MAPPING_STAGE, "dead"))
                        continue
                    if isinstance(step, _SourceMarker):
                        continue
                    if isinstance(step, _Unrouted):
                        self.summary.unrouted += 1
                        journal.record_unrouted(step.source_digest, step.origin)
                        self.log.warning("%s: unrouted: no mappings entry matches this event", step.origin)
                        continue
                    if skipping:
                        continue
                    if decide and isinstance(step, _Job | _Dead):
                        state, recorded = states.get(step.key, (None, None))
                        if state == "delivered" or state == "dead":
                            step = _Skip(step.key, step.mapping, step.target, state)
                        elif isinstance(step, _Job) and recorded and recorded != step.idempotency_key:
                            step = self._rebuild(step, recorded)
                    if isinstance(step, _Skip) or (isinstance(step, _Job) and step.key in self.scheduled):
                        self._skip(step)
                    elif isinstance(step, _Dead):
                        self._dead(step)
                        states[step.key] = ("dead", None)
                    elif isinstance(step, _Resolve):
                        journal.mark_resolved(step.key, step.reason)
                    else:
                        self.scheduled.add(step.key)
                        request = step.request
                        pending.append((step.key, step.source_digest, step.mapping, step.target,
                                        request.connection, step.idempotency_key, request.method,
                                        request.url, step.text, step.origin))  # fmt: skip
                        jobs.append(step)
            held = journal.mark_pending_many(pending)
        if len(held) < len(jobs):  # a shared journal: another worker holds these, or delivered them
            for job in jobs:
                if job.key not in held:
                    self.scheduled.discard(job.key)
                    self._skip(job)
            jobs = [job for job in jobs if job.key in held]
        return jobs

    def _resolve_rejections(self, batch: list[_Item]) -> None:
        resolved = set()
        for item in batch:
            if isinstance(item, _Event) and item.record.origin is not None:
                origin = (
                    item.record.origin.rsplit("[", 1)[0]
                    if item.record.origin.endswith("]")
                    else item.record.origin
                )
                if origin in self._rejected_origins:
                    resolved.add(origin)
        if resolved:
            self.journal.resolve_rejections(resolved)
            self._rejected_origins -= resolved
            for origin in sorted(resolved):
                self.log.info("%s: rejected by an earlier run, now reads: rejection resolved", origin)

    def _rebuild(self, job: _Job, recorded: str) -> _Job | _Dead:
        """The job again, under the idempotency key its journal row recorded (a retry must not change it)."""
        route = self._routes[job.mapping]
        payload = json.loads(job.text)
        return self.runtime._job(
            route.targets[job.target], route, payload, job.key, job.source_digest, job.origin, recorded
        )

    def _skip(self, step: _Skip | _Job) -> None:
        stats = self.summary.target(step.mapping, step.target)
        stats.skipped += 1
        if isinstance(step, _Skip) and step.state == "dead":
            stats.skipped_dead += 1

    def _dead(self, step: _Dead, outcome: Outcome | None = None) -> None:
        recorded = self.journal.mark_dead(
            step.key,
            source_digest=step.source_digest,
            mapping=step.mapping,
            target=step.target,
            reason=step.reason,
            status=outcome.status if outcome else None,
            response_excerpt=outcome.response_excerpt if outcome else None,
            attempts=outcome.attempts if outcome else 0,
            origin=step.origin,
        )
        if not recorded:  # a shared journal: this worker's lease was taken over; the other worker decides
            self.log.warning("%s.%s %s: lease lost while sending; its outcome is left to the worker that "
                             "took it over", step.mapping, step.target, step.key[:12])  # fmt: skip
            return
        stats = self.summary.target(step.mapping, step.target)
        stats.dead += 1
        self.summary.dead_keys.append(step.key)
        where = f"{step.origin}: " if step.origin else ""
        self.log.warning("%sdead letter %s.%s %s: %s", where, step.mapping, step.target or "(mapping)",
                         step.key[:12], step.reason, extra=_event_fields(step.key, step.mapping, step.target,
                         outcome.attempts if outcome else 0))  # fmt: skip

    def _flush_marks(self) -> None:
        """Commit the delivered marks waiting, in one transaction; then their keys leave ``scheduled``."""
        marks, self._marks = self._marks, []
        if not marks:
            return
        marked = self.journal.mark_delivered_many(marks)
        if marked < len(marks):
            self.log.warning("%d answer(s) came after this worker's lease was taken over; the journal keeps "
                             "what the worker that took them over records", len(marks) - marked)  # fmt: skip
        for key, _, _ in marks:
            self.scheduled.discard(key)

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(_FLUSH_SECONDS)
            if self._marks and time.monotonic() - self._marks_since >= _FLUSH_SECONDS:
                self._flush_marks()

    async def _worker(self, deliverer: Deliverer, queue: asyncio.Queue[_Job | None]) -> None:
        log_info = self.log.isEnabledFor(logging.INFO)
        while True:
            job = await queue.get()
            if job is None:
                return
            if job.key in self._lost or (self._lease_lapsed() and not self.journal.holds(job.key)):
                self.log.warning("%s: lease lost (this worker was stalled); another worker sends it",
                                 job.request.label)  # fmt: skip
                self.scheduled.discard(job.key)
                continue
            self.sending += 1
            try:
                outcome = await deliverer.send(job.request)
            except Exception as error:  # one broken request must not stop the run; it is dead-lettered
                reason = self.runtime._reason(
                    f"internal error while sending: {type(error).__name__}: {error}"
                )
                outcome = Outcome(False, None, 1, 0.0, reason)
            finally:
                self.sending -= 1
            stats = self.summary.target(job.mapping, job.target)
            stats.attempts += outcome.attempts
            if outcome.attempts > 1:
                stats.retried += 1
            if outcome.parked:
                # The connection is down past outage_wait: the row stays pending for the next run.
                self.summary.parked += 1
                if job.request.connection not in self.summary.outages:
                    self.summary.outages[job.request.connection] = outcome.reason or "circuit breaker open"
                    self.log.warning("%s", outcome.reason)
                self.scheduled.discard(job.key)
            elif outcome.delivered:
                assert outcome.status is not None
                if not self._marks:
                    self._marks_since = time.monotonic()
                self._marks.append((job.key, outcome.status, outcome.attempts))
                if len(self._marks) >= _FLUSH_MARKS:
                    self._flush_marks()
                stats.delivered += 1
                stats.latency.add(outcome.latency)
                if log_info:
                    self.log.info("delivered %s: HTTP %d in %.0f ms, %d attempt%s", job.request.label,
                                  outcome.status, outcome.latency * 1000, outcome.attempts,
                                  "" if outcome.attempts == 1 else "s",
                                  extra=_event_fields(job.key, job.mapping, job.target,
                                                      outcome.attempts))  # fmt: skip
            else:
                reason = outcome.reason or "not delivered"
                self._dead(
                    _Dead(job.key, job.mapping, job.target, job.source_digest, job.origin, reason), outcome
                )
                self.scheduled.discard(job.key)
            self._report()

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
                in_flight=self.sending,
                elapsed=time.perf_counter() - self.started,
                total=self.total,
            )
        )


# --- helpers ------------------------------------------------------------------------------------------------


def _as_record(item: Any, index: int) -> SourceDocument:
    return item if isinstance(item, SourceDocument) else SourceDocument(f"event[{index}]", document=item)


class _Unreadable(ValueError):
    """An event (or the part a route sends) that is not strict JSON: it cannot be stored nor sent."""


def _canonical(document: Any) -> tuple[str, str]:
    """The canonical text and digest of a source document; _Unreadable if it is not strict JSON."""
    try:
        canonical = canonical_json(document)
        return canonical, digest_of(canonical)
    except (ValueError, TypeError, UnicodeEncodeError) as error:
        problems = json_problems(document)
        where, message = problems[0] if problems else ((), str(error))
        at = f" at {_field(where)}" if where else ""
        raise _Unreadable(f"not strict JSON{at}: {message}") from None


def _printable(text: str) -> str:
    """``text`` safe to store and print: a lone surrogate (from a bad input) becomes its escape."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _excerpt_of(record: SourceDocument) -> str | None:
    try:
        text = json.dumps(record.document, ensure_ascii=True, default=repr)
    except (ValueError, TypeError, RecursionError):
        return None
    return text if len(text) <= 200 else text[:199] + "…"


def _field(parts: tuple[Any, ...]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(payload)"


async def _aiter_batches(events: Iterable[T] | AsyncIterable[T], size: int) -> AsyncIterator[list[T]]:
    """Lists of at most ``size`` items of a sync or async iterable. Sync ones are pulled in chunks on a worker
    thread, so a slow stdin or a large file never blocks the event loop while deliveries are in flight; an
    async one's items come one at a time, as they arrive."""
    if isinstance(events, AsyncIterable):
        async for item in events:
            yield [item]
        return
    if isinstance(events, list | tuple):
        for start in range(0, len(events), size):
            yield list(events[start : start + size])
        return
    iterator = iter(events)

    def take() -> list[T]:
        chunk: list[T] = []
        for item in iterator:
            chunk.append(item)
            if len(chunk) >= _CHUNK:
                break
        return chunk

    while True:
        chunk = await asyncio.to_thread(take)
        if not chunk:
            return
        for start in range(0, len(chunk), size):
            yield chunk[start : start + size]


def _pack(item: _Item) -> tuple[Any, ...]:
    """An expanded event (or a rejected record) as plain tuples, for the pipe from the worker process. The
    payload travels once, as its encoded text; the parent never needs the dict."""
    if isinstance(item, SourceDocument):
        return ("r", item.origin, item.error, item.excerpt)
    steps: list[Any] = []
    for step in item.steps:
        if isinstance(step, _Job):
            request = step.request
            steps.append(("j", step.key, step.mapping, step.target, step.source_digest, step.origin,
                          step.idempotency_key, request.connection, request.method, request.url,
                          request.headers, request.label, step.text))  # fmt: skip
        elif isinstance(step, _Route):
            steps.append(("o", step.stage_key, step.mapping))
        else:
            steps.append(step)
    return ("e", item.record.origin, item.digest, item.canonical, steps)


def _unpack(packed: tuple[Any, ...]) -> _Item:
    if packed[0] == "r":
        return SourceDocument(packed[1], error=packed[2], excerpt=packed[3])
    _, origin, digest, canonical, packed_steps = packed
    steps: list[_Step] = []
    for step in packed_steps:
        if type(step) is not tuple:
            steps.append(step)
        elif step[0] == "j":
            _, key, mapping, target, source, where, idem, connection, method, url, headers, label, text = step
            request = OutboundRequest(connection, method, url, None, headers, label, text.encode("utf-8"))
            steps.append(_Job(key, mapping, target, source, where, idem, request, text))
        else:
            steps.append(_Route(step[1], step[2]))
    return _Event(SourceDocument(origin), digest, canonical, tuple(steps))


async def _unpack_batches(
    batches: AsyncGenerator[list[tuple[Any, ...]], None],
) -> AsyncGenerator[list[_Item], None]:
    async with contextlib.aclosing(batches):
        async for batch in batches:
            yield [_unpack(packed) for packed in batch]


def _run_sync(coroutine: Any) -> RunSummary:
    """Run a coroutine to completion from sync code, even when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
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


def _event_fields(key: str, mapping: str, target: str | None, attempt: int) -> dict[str, object]:
    """The fields ``--log-format json`` adds to a record about one delivery (``extra=`` of the log call)."""
    return {"key": key, "target": f"{mapping}.{target}" if target else mapping, "attempt": attempt}


__all__ = [
    "MASK",
    "LatencyHistogram",
    "PlanEntry",
    "Progress",
    "RunSummary",
    "Runtime",
    "TargetSummary",
]
