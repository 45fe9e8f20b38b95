"""The work units of a run: the steps one event expands into, as the map stage hands them to the store.

An inbound event becomes an :class:`Event`: its canonical source text and the steps it causes, in order. A
:class:`Job` is a delivery owed (its request encoded once), a :class:`Dead` a dead letter with its reason, a
:class:`Skip` a delivery an earlier run settled; :class:`RouteStart` opens one mapping entry's steps, so the
store can skip them all when that entry's mapping stage is already dead. The forked producer sends them
through a pipe as plain tuples (:func:`pack`, :func:`unpack`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shipmap.engine import SourceDocument

from .._config import Connection
from .._deliver._request import OutboundRequest

MAPPING_STAGE = ""  # the target name of a dead letter raised before any target existed (the mapping failed)
_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


@dataclass(frozen=True, slots=True)
class Job:
    key: str
    mapping: str
    target: str
    source_digest: str
    origin: str | None
    idempotency_key: str | None
    request: OutboundRequest
    text: str  # the payload's JSON, encoded once: the request body and the journal's copy


@dataclass(frozen=True, slots=True)
class Dead:
    key: str
    mapping: str
    target: str
    source_digest: str
    origin: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Skip:
    key: str
    mapping: str
    target: str
    state: str


@dataclass(frozen=True, slots=True)
class Resolve:
    key: str
    reason: str


@dataclass(frozen=True, slots=True)
class Unrouted:
    source_digest: str
    origin: str | None
    topic: str | None = None  # events.topic of the event, as sent: redacted and cut short

    @property
    def reason(self) -> str:
        """Why it was not routed, with its topic quoted as a Python string (control characters escaped: the
        topic is the sender's text, and it goes into one log line)."""
        if self.topic is None:
            return "no mappings entry matches this event"
        return f"no mappings entry matches this event (topic {self.topic!r})"


@dataclass(frozen=True, slots=True)
class RouteStart:
    """The steps that follow are one mapping entry's: all of them are skipped if its mapping stage is dead."""

    stage_key: str
    mapping: str


@dataclass(frozen=True, slots=True)
class SourceMarker:
    """A second source document within one event (a route with its own ``body``): store it too."""

    digest: str
    canonical: str


Step = Job | Dead | Skip | Resolve | Unrouted | SourceMarker | RouteStart


@dataclass(frozen=True, slots=True)
class Event:
    """One routed source document: the journal needs its canonical text before any of its rows."""

    record: SourceDocument
    digest: str
    canonical: str
    steps: tuple[Step, ...]


Item = Event | SourceDocument  # what a producer hands the run: an expanded event, or a rejected record


def pack(item: Item) -> tuple[Any, ...]:
    """An expanded event (or a rejected record) as plain tuples, for the pipe from the worker process. The
    payload travels once, as its encoded text; the parent never needs the dict."""
    if isinstance(item, SourceDocument):
        return ("r", item.origin, item.error, item.excerpt)
    steps: list[Any] = []
    for step in item.steps:
        if isinstance(step, Job):
            request = step.request
            steps.append(("j", step.key, step.mapping, step.target, step.source_digest, step.origin,
                          step.idempotency_key, request.connection, request.method, request.url,
                          request.headers, request.label, step.text))  # fmt: skip
        elif isinstance(step, RouteStart):
            steps.append(("o", step.stage_key, step.mapping))
        else:
            steps.append(step)
    return ("e", item.record.origin, item.digest, item.canonical, steps)


def unpack(packed: tuple[Any, ...]) -> Item:
    if packed[0] == "r":
        return SourceDocument(packed[1], error=packed[2], excerpt=packed[3])
    _, origin, digest, canonical, packed_steps = packed
    steps: list[Step] = []
    for step in packed_steps:
        if type(step) is not tuple:
            steps.append(step)
        elif step[0] == "j":
            _, key, mapping, target, source, where, idem, connection, method, url, headers, label, text = step
            request = OutboundRequest(
                connection, method, url, None, headers, label, text.encode("utf-8"), key
            )
            steps.append(Job(key, mapping, target, source, where, idem, request, text))
        else:
            steps.append(RouteStart(step[1], step[2]))
    return Event(SourceDocument(origin), digest, canonical, tuple(steps))


def event_fields(key: str, mapping: str, target: str | None, attempt: int) -> dict[str, object]:
    """The fields ``--log-format json`` adds to a record about one delivery (``extra=`` of the log call)."""
    return {"key": key, "target": f"{mapping}.{target}" if target else mapping, "attempt": attempt}


def request_headers(connection: Connection, idempotency_key: str | None) -> dict[str, str]:
    """The headers of a delivery's request, besides auth: JSON, and the idempotency key where the connection
    names a header for it. The same for a new delivery and for one recovered from its journal row."""
    headers = dict(_JSON_HEADERS)
    if connection.idempotency_header and idempotency_key:
        headers[connection.idempotency_header] = idempotency_key
    return headers
