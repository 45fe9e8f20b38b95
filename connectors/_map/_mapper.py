"""The map stage: one inbound event into the deliveries it owes.

:class:`EventMapper` routes an event to the mapping entries that match it, runs each mapping
(``shipmap.engine``: pure, no I/O), validates and encodes every payload, derives each delivery's key and
idempotency key, and returns the event's steps (``_steps``). It writes nothing: the store settles the steps
(``_store._outbox``), and the delivery workers send the jobs. One boundary per event: whatever goes wrong
inside it (a value no encoder takes, an expression or a template that raises anything at all) becomes that
event's rejection or dead letter, with its reason, redacted.

It reads the journal only where a caller hands it one (:class:`Recorded`): the dry run, to show skips, and
replay, to keep a recorded idempotency key. A run decides skips when the store settles each batch.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from shipmap.engine import PayloadValidationError, Problem, ShipmapError, SourceDocument
from shipmap.engine._function_errors import describe
from shipmap.engine._jmespath_direct import is_truthy
from shipmap.engine._kinds import json_problems

from .._config import (
    EventSettings,
    PlannedRoute,
    PlannedTarget,
    RuntimeConfig,
    compile_expression,
    join_url,
    plan_routes,
)
from .._deliver._request import OutboundRequest, encode_payload
from .._redact import Redactor
from .._store._entries import JournalEntry
from .._store._journal import CLOSED, State, canonical_json, delivery_key, digest_of
from ._idempotency import derive_idempotency_key
from ._steps import (
    MAPPING_STAGE,
    Dead,
    Event,
    Item,
    Job,
    Resolve,
    RouteStart,
    Skip,
    SourceMarker,
    Step,
    Unrouted,
    request_headers,
)

_REASON_CHARS = 2000
_TOPIC_CHARS = 100  # an unrouted event's topic, as a warning shows it


class Recorded(Protocol):
    """What the map stage may read from the store: a delivery's recorded state and row."""

    def state(self, key: str) -> State | None: ...

    def get(self, key: str) -> JournalEntry | None: ...


class EventMapper:
    """Routes, maps, validates and encodes events for one config. Holds no state between events."""

    def __init__(self, config: RuntimeConfig, redactor: Redactor) -> None:
        self.config = config
        self.redactor = redactor
        self.routes: tuple[PlannedRoute, ...] = plan_routes(config)
        self._by_name = {route.name: route for route in self.routes}
        events = config.events
        self._topic = compile_expression(events.topic, config, ("events", "topic")) if events.topic else None
        self._body = compile_expression(events.body, config, ("events", "body")) if events.body else None
        self._first_only = events.routing == "first"
        self._idempotency = config.delivery.idempotency

    def identity(self) -> tuple[EventSettings, tuple[tuple[object, ...], ...]]:
        """What its routing and mapping depend on, to compare with a mapper built from the config file read
        again: the events settings, and each mappings entry as written with its mapping's text and file."""
        return (
            self.config.events,
            tuple(
                (entry, route.mapping.text, route.mapping.file)
                for entry, route in zip(self.config.mappings, self.routes, strict=True)
            ),
        )

    def prepare(self) -> None:
        """Compile now what the first events would make each target compile (its checked generated code):
        for a process about to map many events, such as ``shipmap run``'s worker."""
        for route in self.routes:
            for planned in route.targets.values():
                if planned.enabled:
                    route.mapping.target(planned.name).prepare()

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
            if self._first_only:
                break
        return chosen

    def _topic_of(self, event: Any) -> str | None:
        """The event's topic (``events.topic``) to show in a message: redacted, at most ``_TOPIC_CHARS``."""
        if self._topic is None:
            return None
        try:
            topic = self._topic.search(event)
        except Exception:  # routing did not need it (no entry names topics): there is just none to show
            return None
        return None if topic is None else self.redactor.excerpt(str(topic), _TOPIC_CHARS)

    def _body_path(self, route: PlannedRoute) -> str:
        """The config key and expression that pick ``route``'s source document, for a reason that names it."""
        if route.body is not None:
            return f"mappings[{route.index}].body `{route.body.expression}`"
        return f"events.body `{self._body.expression}`" if self._body is not None else "the event"

    def _source_of(self, route: PlannedRoute, event: Any) -> Any:
        if route.body is not None:
            return route.body.search(event)
        if self._body is not None:
            return self._body.search(event)
        return event

    def expand_event(self, record: SourceDocument, journal: Recorded | None) -> Item:
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
            reason = self.reason(f"the event cannot be routed: {type(error).__name__}: {error}")
            return dataclasses.replace(record, document=None, error=reason, excerpt=_excerpt_of(record))

    def _expand(self, record: SourceDocument, journal: Recorded | None) -> Event:
        """Every step one event causes. Pure but for journal reads (the dry run and replay show skips)."""
        event = record.document
        routes = self._routes_for(event)
        if not routes:
            canonical, digest = _canonical(event, plain=record.strict)
            return Event(record, digest, canonical, (Unrouted(digest, record.origin, self._topic_of(event)),))
        steps: list[Step] = []
        first_digest, first_canonical = "", ""
        for route in routes:
            source = self._source_of(route, event)
            # The strict reader's document is plain JSON; what a body expression makes may not be.
            canonical, digest = _canonical(source, plain=record.strict and source is event)
            if not first_digest:
                first_digest, first_canonical = digest, canonical
            elif digest != first_digest:
                # Routes with different bodies: each source is stored through its own event.
                steps.append(SourceMarker(digest, canonical))
            steps.extend(self._map_isolated(route, source, digest, record.origin, journal))
        return Event(record, first_digest, first_canonical, tuple(steps))

    def _map_isolated(
        self, route: PlannedRoute, source: Any, digest: str, origin: str | None, journal: Recorded | None
    ) -> list[Step]:
        """``_map``'s steps; if anything unforeseen raises on the way, this entry's mapping stage is the
        event's dead letter, with the error's type and message (redacted) as the reason."""
        try:
            return list(self._map(route, source, digest, origin, journal))
        except Exception as error:
            stage_key = delivery_key(route.name, MAPPING_STAGE, digest)
            reason = self.reason(f"internal error while mapping: {type(error).__name__}: {error}")
            return [
                RouteStart(stage_key, route.name),
                Dead(stage_key, route.name, MAPPING_STAGE, digest, origin, reason),
            ]

    def _map(
        self,
        route: PlannedRoute,
        source: Any,
        digest: str,
        origin: str | None,
        journal: Recorded | None,
        *,
        replay: str | None = None,
        replayed_key: str | None = None,
    ) -> Iterator[Step]:
        """The steps of one source document through one mapping.

        ``replay=None``: a normal run; deliveries already delivered or dead are skipped. ``replay=""``: a
        mapping-stage dead letter is replayed; every target is (re)sent unless delivered. ``replay=T``: the
        dead letter of target T is replayed; only T is considered, and when that dead letter
        (``replayed_key``) is one element of a fan-out, the element's siblings that are dead letters too stay
        so: each is replayed when asked for.
        """
        name = route.name
        stage_key = delivery_key(name, MAPPING_STAGE, digest)
        failure_key = delivery_key(name, replay, digest) if replay else stage_key
        failure_target = replay or MAPPING_STAGE
        yield RouteStart(stage_key, name)
        stage = journal.state(stage_key) if replay is None and journal is not None else None
        if stage == "dead" or stage in CLOSED:
            yield Skip(stage_key, name, MAPPING_STAGE, stage)
            return
        if source is None:
            reason = f"the event has no source document: {self._body_path(route)} finds nothing in it (null or absent)"
            yield Dead(failure_key, name, failure_target, digest, origin, reason)
            return
        try:
            outputs = route.mapping.outputs(source, validate=False)
        except ShipmapError as error:
            if error.source_path is not None and not isinstance(source, Mapping):
                # `source: id = null` alone hides why: the document (a body of `[]`) has no fields at all.
                found = f"the source document ({self._body_path(route)}) is {describe(source)}, not an object"
                error.found = (*error.found, found)
            yield Dead(failure_key, name, failure_target, digest, origin, self.reason(error.render()))
            return
        if replay == MAPPING_STAGE:
            yield Resolve(stage_key, "replayed: the mapping now succeeds")
        if replay and not any(output.target == replay for output in outputs):
            yield Resolve(failure_key, "replayed: the mapping no longer produces this target")
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
            if state in CLOSED or (state == "dead" and replay is None):
                yield Skip(key, name, target_name, state)
                continue
            if (
                state == "dead"
                and output.element is not None
                and replayed_key not in (None, failure_key, key)
            ):
                yield Skip(key, name, target_name, state)  # a sibling dead letter: not the one asked for
                continue
            recorded = entry.idempotency_key if entry is not None else None
            yield self.job(planned, route, payload, key, digest, origin, recorded, valid=output.valid)

    def job(
        self,
        planned: PlannedTarget,
        route: PlannedRoute,
        payload: dict[str, Any],
        key: str,
        digest: str,
        origin: str | None,
        recorded: str | None,
        *,
        valid: bool = False,
    ) -> Job | Dead:
        """The request of one delivery (``recorded``: the idempotency key its journal row already holds;
        ``valid``: the payload is known valid under its kind, as the checked generated code made it)."""
        name = route.name
        idempotency_key, rewritten = derive_idempotency_key(
            self._idempotency, planned, payload, key, name, digest, recorded or None
        )
        checked = valid and not rewritten  # the checked code vouched for it: valid, strict JSON
        try:
            text = encode_payload(payload, plain=checked)  # once: the body, and the journal's copy of it
        except (ValueError, TypeError, UnicodeEncodeError, RecursionError):
            text = ""  # not strict JSON: json_problems below says where
        if not text:
            problems = json_problems(payload)
        elif checked:
            problems = []
        else:
            problems = planned.kind.problems(payload)
        if problems:
            error = PayloadValidationError(
                planned.name,
                planned.kind.name,
                [Problem(field=_field(parts), message=message) for parts, message in problems],
            )
            return Dead(key, name, planned.name, digest, origin, self.reason(error.render()))
        try:
            path = planned.kind.route.render(payload, path=planned.path)
        except KeyError as error:
            reason = (
                f"the payload has no value for the path placeholder {{{error.args[0]}}} of {planned.path}"
            )
            return Dead(key, name, planned.name, digest, origin, reason)
        connection = planned.connection
        request = OutboundRequest(
            connection=connection.name,
            method=planned.method,
            url=join_url(connection.base_url, path),
            payload=payload,
            headers=request_headers(connection, idempotency_key),
            label=f"{name}.{planned.name} {key[:12]}",
            key=key,
            content=text.encode("utf-8"),
        )
        return Job(key, name, planned.name, digest, origin, idempotency_key, request, text)

    def expand_replay(self, entry: JournalEntry, journal: Recorded, source: Any) -> Event:
        record = SourceDocument(entry.origin or f"journal:{entry.key[:12]}", document=source)
        canonical = canonical_json(source)
        routes = [r for r in self.routes if r.name == entry.mapping]
        if not routes:
            reason = f"replay: mapping '{entry.mapping}' is not in the config any more"
            step: Step = Dead(entry.key, entry.mapping, entry.target, entry.source_hash, entry.origin, reason)
            return Event(record, entry.source_hash, canonical, (step,))
        try:
            steps = list(
                self._map(
                    routes[0],
                    source,
                    entry.source_hash,
                    entry.origin,
                    journal,
                    replay=entry.target,
                    replayed_key=entry.key,
                )
            )
        except Exception as error:  # the replayed event fails again, unforeseen: it stays a dead letter
            reason = self.reason(f"internal error while mapping: {type(error).__name__}: {error}")
            steps = [Dead(entry.key, entry.mapping, entry.target, entry.source_hash, entry.origin, reason)]
        return Event(record, entry.source_hash, canonical, tuple(steps))

    def rebuild(self, job: Job, recorded: str) -> Job | Dead:
        """The job again, under the idempotency key its journal row recorded (a retry must not change it)."""
        route = self._by_name[job.mapping]
        payload = json.loads(job.text)
        return self.job(
            route.targets[job.target], route, payload, job.key, job.source_digest, job.origin, recorded
        )

    def reason(self, text: str) -> str:
        """A dead letter's or a rejection's reason: redacted, cut to size, printable."""
        return _printable(self.redactor.excerpt(text, _REASON_CHARS))


class _Unreadable(ValueError):
    """An event (or the part a route sends) that is not strict JSON: it cannot be stored nor sent."""


def _canonical(document: Any, *, plain: bool) -> tuple[str, str]:
    """The canonical text and digest of a source document; _Unreadable if it is not strict JSON."""
    try:
        canonical = canonical_json(document, plain=plain)
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
