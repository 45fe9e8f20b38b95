"""The HTTP side of ``shipmap serve``: ``POST /hooks/{source}``, ``/healthz``, ``/readyz``, ``/metrics``.

A webhook is answered 2xx only after ``Inbox.accept`` has committed it. The checks run cheapest first, and
each refusal has its status and a reason the sender can read:

    404 unknown source · 429 rate limit · 413 body too large · 401 unsigned or forged
    415 not JSON content · 400 body is not JSON · 503 the inbox cannot commit, not within the deadline
    (sources.S.intake_deadline, else serve.intake_deadline), or too many wait for it
    (serve.intake_max_waiting) · 200 accepted or duplicate

The commits are grouped: the webhooks whose requests were read in the same turn of the event loop are
committed in one transaction (:class:`~._group_commit.GroupCommit`), and each is answered only after that
commit returned, or at its deadline. The durability of each acknowledgement is unchanged (its row is committed
before its 200); what changes is the cost: one commit, one WAL append (one fsync with ``synchronous: full``)
for a burst's worth of webhooks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from shipmap.engine._sources import loads_strict
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .._config import duration_text
from .._config._serve_model import DEFAULT_BODY_TIMEOUT, DEFAULT_INTAKE_DEADLINE, DEFAULT_INTAKE_MAX_WAITING
from .._redact import get_logger
from ._group_commit import GroupCommit, IntakeFull
from ._inbox import (
    InboxCancelled,
    InboxDisconnected,
    InboxError,
    InboxStore,
    InboxTimeout,
    depth_capped,
)
from ._inbox_gauges import InboxGauges
from ._metrics import ServiceMetrics
from ._settings import RateLimit, SourceSettings
from ._verify import Rejection, verify

_JSON_TYPES = ("application/json", "text/json")
_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_INBOX_RETRY_AFTER = 5  # seconds, in a 503 of the inbox's: a lock or an outage is seldom gone sooner


class TokenBucket:
    """``per_second`` requests on average, ``burst`` at once; ``take`` says how long to wait when empty.

    Several serve processes on one PostgreSQL inbox share the limit: ``share(n)`` gives this process 1/n of
    the rate and of the burst (at least one request), so the n together keep to it when a balancer spreads
    the requests evenly."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.rate = limit.per_second
        self.capacity = float(limit.burst)
        self.tokens = self.capacity
        self.clock = clock
        self.updated = clock()

    def share(self, processes: int) -> None:
        self._refill()  # the time so far at the old rate
        self.rate = self.limit.per_second / processes
        self.capacity = max(1.0, self.limit.burst / processes)
        self.tokens = min(self.tokens, self.capacity)

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def take(self) -> float:
        self._refill()
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class Refusals:
    """The webhooks refused in one period of the service's activity line, for the log. The first of each
    source and reason is logged with its message (what the sender should fix); the others are counted, and the
    activity line says how many: a sender that keeps being refused (past its ``rate_limit``, during a drain,
    with a broken body) costs a line a minute, not a line a request, which a log collector's rate limit
    (journald: 10,000 lines in 30 s) would drop along with the warnings. Forged requests (401) are counted
    only. Bounded: one count per source and reason."""

    def __init__(self) -> None:
        self._counts = Counter[tuple[str, int, str]]()

    def note(self, source: str, rejection: Rejection) -> bool:
        """Count a refusal; whether to log it: the first of its source and reason this period, not a 401."""
        key = (source, rejection.status, rejection.reason)
        self._counts[key] += 1
        return self._counts[key] == 1 and rejection.status != 401

    def take(self) -> str | None:
        """The period's refusals in words, most first (``2000 refused: 1995 shop 429 rate_limited, ...``),
        or None; the next period starts (its first refusals are logged again)."""
        counts, self._counts = self._counts, Counter()
        if not counts:
            return None
        parts = [f"{n} {source} {status} {reason}" for (source, status, reason), n in counts.most_common()]
        return f"{sum(counts.values())} refused: {', '.join(parts)}"


class CutOffRequests(logging.Filter):
    """For uvicorn's logger while a service runs: drops the traceback uvicorn logs for each request it cancels
    when the drain's graceful shutdown times out (``Exception in ASGI application``, a CancelledError), such as
    a sender still sending its body. That is a stop, not a bug, and its one line says how many: ``Cancel 300
    running task(s), timeout graceful shutdown exceeded``; 40 lines each drowned the drain's own report and
    ran into a log collector's rate limit (journald: 10,000 lines in 30 s)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, asyncio.CancelledError)


@dataclass
class ServiceState:
    """What the endpoints share: the settings, the inbox, the metrics and the probes of the delivery side."""

    sources: Mapping[str, SourceSettings]
    inbox: InboxStore
    metrics: ServiceMetrics
    on_accept: Callable[[], None]  # wakes the delivery loop
    readiness: Callable[[], dict[str, Any]]  # breakers and delivery state for /readyz
    gauges: InboxGauges = field(kw_only=True)  # the inbox's figures, read off the loop
    intake_worker: Executor | None = field(default=None, kw_only=True)  # where commits run (GroupCommit)
    accepting: bool = True
    committer: GroupCommit | None = None  # built with the state
    buckets: dict[str, TokenBucket] = field(init=False)  # the sources with a rate_limit
    processes: int = 1  # the serve processes on the inbox: each allows 1/processes of a rate_limit
    body_timeout: float = DEFAULT_BODY_TIMEOUT  # seconds a sender has to send a body (serve.body_timeout)
    intake_deadline: float = DEFAULT_INTAKE_DEADLINE  # serve.intake_deadline; a source's own outranks it
    intake_max_waiting: int = DEFAULT_INTAKE_MAX_WAITING  # webhooks waiting for their commit at once at most
    refusals: Refusals = field(default_factory=Refusals)  # for the activity line

    def __post_init__(self) -> None:
        self.committer = GroupCommit(
            self.inbox, self.intake_worker, deadline=self.intake_deadline, max_waiting=self.intake_max_waiting
        )
        self.buckets = {}
        self.replace_sources(self.sources)

    def limit_intake(self, deadline: float, max_waiting: int) -> None:
        """``serve.intake_deadline`` and ``serve.intake_max_waiting`` for the next requests (a reload): those
        waiting keep their deadline; past a lowered cap, newcomers are refused until enough are answered."""
        self.intake_deadline = deadline
        assert self.committer is not None
        self.committer.deadline, self.committer.max_waiting = deadline, max_waiting

    def share_rate_limits(self, processes: int) -> None:
        self.processes = processes
        for bucket in self.buckets.values():
            bucket.share(processes)

    def replace_sources(self, sources: Mapping[str, SourceSettings]) -> None:
        """The sources the next request finds (a reload). A bucket whose limit is unchanged keeps its tokens,
        so a reload is no way around a rate limit."""
        buckets: dict[str, TokenBucket] = {}
        for name, source in sources.items():
            if source.rate_limit is None:
                continue
            bucket = self.buckets.get(name)
            if bucket is None or bucket.limit != source.rate_limit:
                bucket = TokenBucket(source.rate_limit)
                if self.processes > 1:
                    bucket.share(self.processes)
            buckets[name] = bucket
        self.sources, self.buckets = sources, buckets


def build_app(state: ServiceState, redactor: Any, *, runtime_name: str | None = None) -> Starlette:
    log = get_logger("serve", redactor, runtime_name=runtime_name)

    def refuse(source: str, rejection: Rejection) -> Response:
        state.metrics.reject(source, rejection.reason)
        headers = {}
        if rejection.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(rejection.retry_after + 0.499)))
        if rejection.close:  # else the server waits for the rest of a body that may never come
            headers["Connection"] = "close"
        if state.refusals.note(source, rejection):  # the first of its kind this period; the rest are counted
            cause = f" ({rejection.cause})" if rejection.cause else ""
            log.info("POST /hooks/%s: %d %s%s", source, rejection.status, rejection.message, cause)
        return JSONResponse(
            {"error": rejection.reason, "message": rejection.message}, rejection.status, headers=headers
        )

    # Each source's counters, looked up once (``labels()`` takes a lock and hashes the labels each call): the
    # configured sources' from the start (their series show 0 before any request), one a reload adds at its
    # first request.
    counters: dict[str, tuple[Any, Any]] = {}

    def counters_of(name: str) -> tuple[Any, Any]:
        found = counters.get(name)
        if found is None:
            found = counters[name] = (
                state.metrics.received.labels(name),
                state.metrics.ack_seconds.labels(name),
            )
        return found

    for name in state.sources:
        counters_of(name)

    async def hook(request: Request) -> Response:
        started = time.perf_counter()
        name = request.path_params["source"]
        source = state.sources.get(name)
        if source is None:
            return JSONResponse(
                {"error": "unknown_source", "message": f"no source named '{name}' is configured"}, 404
            )
        received, acknowledged = counters_of(name)
        received.inc()
        try:
            response = await _handle(request, source, state.buckets.get(name), state)
        except Rejection as rejection:
            response = refuse(name, rejection)
        acknowledged.observe(time.perf_counter() - started)
        return response

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        gauges = await state.gauges.read()
        reading = gauges.reading
        writable = reading is not None and reading.writable and not gauges.stale
        details = state.readiness()
        # Intake takes webhooks: delivery still starting takes them from the inbox once it runs.
        delivery = details.get("delivering", False) or details.get("delivery_starting", False)
        ready = writable and state.accepting and delivery
        body: dict[str, Any] = {
            "ready": ready,
            "inbox_writable": writable,
            "accepting": state.accepting,
            "serve_processes": state.processes,
            # The last figures the inbox gave (None before it first answered); stale: not this time.
            "queue_depth": reading.depth if reading is not None else None,
            "queue_depth_capped": depth_capped(reading.depth) if reading is not None else False,
            "queue_stale": gauges.stale,
            **details,
        }
        if not ready:
            body["reason"] = gauges.problem or (
                "the inbox does not take writes"
                if not writable
                else "draining: the service is shutting down"
                if not state.accepting
                else "delivery has ended"
            )
        return JSONResponse(body, 200 if ready else 503)

    async def metrics(request: Request) -> Response:
        await state.gauges.read()  # the queue's series read from it (``gauges.latest``), within its deadline
        return Response(state.metrics.render(), media_type=_METRICS_TYPE)

    routes = [
        Route("/hooks/{source}", hook, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    return Starlette(routes=routes)


def _intake_deadline(source: SourceSettings, state: ServiceState) -> tuple[float, str]:
    """How long ``source``'s webhook waits for the inbox, and the key that says so (for its 503)."""
    if source.intake_deadline is not None:
        return source.intake_deadline, f"sources.{source.name}.intake_deadline"
    return state.intake_deadline, "serve.intake_deadline"


async def _handle(
    request: Request, source: SourceSettings, bucket: TokenBucket | None, state: ServiceState
) -> Response:
    if not state.accepting:
        raise Rejection(503, "draining", "the service is shutting down; retry later", retry_after=5)
    if bucket is not None:
        wait = bucket.take()
        if wait > 0:
            raise Rejection(
                429,
                "rate_limited",
                f"more than {bucket.limit.per_second:g} requests per second from this source",
                wait,
            )
    body = await _read_capped(request, source.max_body, state.body_timeout)
    verified = verify(source, request.headers, body, time.time())
    if verified.ping:
        return JSONResponse({"status": "ping"})
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in _JSON_TYPES:
        raise Rejection(415, "unsupported_media_type", "the body must be application/json")
    # Read as run reads its inputs (strict JSON): a body the runtime would reject is refused here, where its
    # sender hears of it, not acknowledged and then rejected.
    try:
        loads_strict(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise Rejection(400, "not_json", "the body is not UTF-8 text") from None
    except RecursionError:  # arrays or objects nested past the parser's depth (uvicorn would answer 500)
        raise Rejection(
            400, "not_json", "the body is not JSON: arrays or objects nested too deeply"
        ) from None
    except ValueError as error:
        raise Rejection(400, "not_json", f"the body is not JSON: {error}") from None
    assert state.committer is not None
    deadline, deadline_key = _intake_deadline(source, state)
    try:
        accepted = await state.committer.accept(
            (source.name, verified.webhook_id, verified.topic, verified.headers, body), deadline
        )
    except IntakeFull as full:
        raise Rejection(
            503,
            "inbox_busy",
            f"{full} (serve.intake_max_waiting); retry later",
            _INBOX_RETRY_AFTER,
        ) from None
    except InboxTimeout as error:
        raise Rejection(
            503,
            "inbox_timeout",
            f"the webhook could not be stored within {duration_text(deadline)} ({deadline_key}); retry later",
            _INBOX_RETRY_AFTER,
            cause=error.message,
        ) from None
    except InboxCancelled as error:
        raise Rejection(
            503,
            "inbox_cancelled",
            "the inbox's database cancelled the statement storing the webhook; retry later",
            _INBOX_RETRY_AFTER,
            cause=error.message,
        ) from None
    except InboxDisconnected as error:
        raise Rejection(
            503,
            "inbox_unavailable",
            "the inbox's database closed the connection while storing the webhook; retry later",
            _INBOX_RETRY_AFTER,
            cause=error.message,
        ) from None
    except InboxError as error:
        raise Rejection(
            503,
            "inbox_unavailable",
            "the webhook could not be stored; retry later",
            _INBOX_RETRY_AFTER,
            cause=error.message,
        ) from None
    if accepted.duplicate:
        state.metrics.duplicates.labels(source.name).inc()
        return _answer(b'{"status":"duplicate","id":%d}' % accepted.id)
    state.metrics.accepted.labels(source.name).inc()
    state.on_accept()
    return _answer(b'{"status":"accepted","id":%d}' % accepted.id)


def _answer(body: bytes) -> Response:
    """The 200 of a stored webhook, written directly (no JSON encoder per request)."""
    return Response(body, media_type="application/json")


async def _read_capped(request: Request, limit: int, seconds: float) -> bytes:
    """The body, refused past ``limit`` bytes or ``seconds`` (its sender stalled: the answer closes the
    connection, whose framing is lost)."""
    too_large = Rejection(413, "too_large", f"the body is larger than {limit} bytes", close=True)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
    except ClientDisconnect:
        raise Rejection(400, "disconnected", "the client went away before the body was read") from None
    except TimeoutError:
        raise Rejection(
            408,
            "body_timeout",
            f"the body did not arrive within {seconds:g} s (serve.body_timeout)",
            close=True,
        ) from None
    return b"".join(chunks)
