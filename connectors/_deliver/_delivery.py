"""Delivery: one pooled ``httpx.AsyncClient`` per connection, its circuit breaker and rate limit, and the
retry policy.

Each attempt waits for the connection's breaker (``_breaker``) and its ``max_rate``, then runs under an
overall deadline (``timeout.total``) besides httpx's connect and read timeouts; a response body is streamed,
and at most ``BODY_CAP`` bytes of it are read.

Outage failures (network errors, timeouts, 429, 5xx, a login that failed that way) count towards opening the
breaker; one refusal of the credentials opens it at once (a 401 that survives a fresh login or a fresh read
of the credentials, a refused login). While it is open the delivery waits and its attempts do not count;
past ``outage_wait`` the outcome is *parked*: the delivery stays ``pending``, never dead. While the breaker
is closed, outage failures are retried with exponential backoff and jitter, and a strictly parsed
``Retry-After`` is honoured up to a cap (``retry_after_cap``): on a 429 or a 503 it holds every request of the
connection until then, not only the retry of the one that got it (``RateLimiter.hold``); every other non-2xx
status is final. What is not delivered comes back as an Outcome with a redacted,
truncated response excerpt.

A delivery waiting for its breaker holds its sender. With ``waiting_cap``, at most that many wait for one
connection's open breaker; that connection's other deliveries are parked at once, so the senders go on with
the other connections (``shipmap serve`` looks at parked work again by itself; a run holds them back and
sends them when the breaker closes: ``_held``).

A reload of ``shipmap serve`` that moves a connection (another endpoint or credentials:
``CircuitBreaker.stop_waiting``) parks its deliveries that wait, at its open breaker, in a retry's backoff or
behind a Retry-After's hold, and those whose request fails after the move: the next run sends them to the new
endpoint, and none retries the old one. A request in flight at the move ends as it ends (delivered, or
parked).

The end of one of ``shipmap serve``'s runs (a look at parked work, a replay, a reload) is held up by no
backoff or Retry-After: a delivery waiting out one is *interrupted*, left pending with the attempts that
counted (the journal adds them to its row), and the next run goes on where it stopped: it waits out the
rest of the wait (``resume``: this process's memory, which outlives the run, and the row's ``not_before``,
which outlives the process, read by ``Outbox.recover``) and counts the row's attempts
towards ``max_attempts`` (``OutboundRequest.tried``). A run's stop (``SIGTERM``'s drain) ends no wait; its
deadline cancels the send, and a send cancelled in such a wait, in max_rate's, or with its request in flight
(counted: it may have landed), leaves the same Outcome for its worker (``Deliverer.take_cut``), so the
journal keeps its attempts the same way. So does one cancelled at its open breaker, or in a shared breaker's
database write after an attempt (that attempt counted unless it was the probe or the breaker is known open).
A parked delivery keeps the attempts it counted before its breaker opened the same way (``Outcome.counted``):
the next run counts them towards ``max_attempts`` once the breaker closes (not after a move: they start over).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

import httpx

from .. import _plural
from .._config import Connection, DeliverySettings
from .._errors import AuthError
from .._redact import Redactor, get_logger
from ._auth import ShipmapAuth, read_capped
from ._breaker import (
    HOLDING_STATUSES,
    Admission,
    CircuitBreaker,
    MemoryStore,
    Outage,
    OutageWaits,
    StateStore,
)
from ._deadline import TaskDeadline
from ._rate_limiter import RateLimiter
from ._request import OutboundRequest, Outcome, refusing_cookies
from ._retry_timing import backoff_delay, parse_retry_after
from ._transport import AiohttpTransport, Sender

Sleep = Callable[[float], Awaitable[None]]
BODY_CAP = 64 * 1024  # bytes of a response body read at most: enough for any excerpt, never 300 MB


class Deliverer:
    """Sends OutboundRequests with retries. Use as ``async with Deliverer(...) as deliverer``. ``sleep`` is
    the rate limiters'; a retry's backoff waits on its breaker, so that a reload's move ends it."""

    def __init__(
        self,
        connections: Mapping[str, Connection],
        auths: Mapping[str, ShipmapAuth],
        settings: DeliverySettings,
        redactor: Redactor,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
        on_retry: Callable[[OutboundRequest, int, str, float], None] | None = None,
        store: StateStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        runtime_name: str | None = None,
        waiting_cap: int | None = None,
        resume: dict[str, tuple[float, str]] | None = None,
        held: Mapping[str, float] | None = None,
    ) -> None:
        """``resume``: the deliveries an earlier run interrupted, by key: when their wait ends (monotonic)
        and the failure they retry, or "" (a Retry-After held them). Each is taken out as it is sent.
        ``held``: by connection, the seconds left of a Retry-After its server asked an earlier run for, which
        hold its requests here too (``holds`` gives them back at the run's end)."""
        self.connections = connections
        self.auths = auths
        self.settings = settings
        self.redactor = redactor
        self._transport = transport
        self._rng = rng or random.Random()
        self._on_retry = on_retry
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._senders: dict[str, Sender] = {}
        self._log = get_logger("delivery", redactor, runtime_name=runtime_name)
        store = store if store is not None else MemoryStore()
        self.breakers = {
            name: CircuitBreaker(
                name,
                c.breaker or settings.breaker,
                store=store,
                clock=clock,
                runtime_name=runtime_name,
                redactor=redactor,
            )
            for name, c in connections.items()
        }
        # One per connection, with or without max_rate: a 429's Retry-After holds all of its requests.
        self.limiters = {
            name: RateLimiter(name, c.max_rate, store=store, clock=clock, sleep=sleep)
            for name, c in connections.items()
        }
        for name, seconds in (held or {}).items():
            if name in self.limiters:
                self.limiters[name].hold(seconds)
                self._log.info("connection %s: no request starts for %.1f s more: the Retry-After its server"
                               " asked an earlier run for", name, seconds)  # fmt: skip
        self._outage_waits = OutageWaits(clock)  # when this run stops waiting for each open breaker
        self._waiting_cap = waiting_cap
        self._waiting: dict[str, int] = {}  # deliveries in ``admit``, by connection
        self._resume = resume if resume is not None else {}
        # The sends a stop cancelled in a wait, by task, until their worker takes them (``take_cut``).
        self._cut: dict[asyncio.Task[Any], Outcome] = {}
        # timeout.total: one timer per sending task
        self._deadlines: dict[asyncio.Task[Any], TaskDeadline] = {}

    async def __aenter__(self) -> Deliverer:
        limit = self.settings.concurrency
        for name, connection in self.connections.items():
            timeout = (connection.timeout or self.settings.timeout).httpx()  # the deadline is in send()
            limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
            # httpx's client over aiohttp's pool and parser, which cost half the CPU (see _transport.py).
            transport = self._transport or AiohttpTransport(limits=limits)
            client = httpx.AsyncClient(
                auth=self.auths[name],
                headers=dict(connection.headers),
                cookies=refusing_cookies(),
                timeout=timeout,
                limits=limits,
                transport=transport,
                follow_redirects=False,
            )
            self._clients[name] = client
            self._senders[name] = Sender(client, self.auths[name], transport)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        clients, self._clients = self._clients, {}
        self._senders = {}
        self._cut.clear()  # a send cancelled in a wait outside a worker: nobody takes its Outcome
        deadlines, self._deadlines = self._deadlines, {}
        for deadline in deadlines.values():
            deadline.close()
        for client in clients.values():
            await client.aclose()

    async def send(self, request: OutboundRequest) -> Outcome:
        name = request.connection
        sender = self._senders[name]
        breaker = self.breakers[name]
        limiter = self.limiters[name]
        connection = self.connections[name]
        deadline = (connection.timeout or self.settings.timeout).total
        policy = self.settings.retry
        limit = self.settings.response_excerpt_chars
        auth = self.auths[name]
        retry_unauthorized, refused_reason = auth.retry_unauthorized, auth.refused_reason
        body = request.body()
        task_deadline = self._deadline()
        started = time.perf_counter()
        attempt = 0  # this run's
        tried = request.tried
        reason = ""  # the last attempt's failure
        # Attempts that count towards max_attempts (earlier runs' too): not those into an open breaker.
        counted = tried
        resumed = self._resume.pop(request.key, None) if self._resume and request.key else None
        if resumed is not None:  # an earlier run ended while this delivery waited: the rest of the wait
            until, reason = resumed
            cut = await self._wait(breaker, until - time.monotonic(), request, until, reason, 0, 0, started)
            if cut is not None:
                return cut
        while True:
            if breaker.at_rest:  # nothing to wait for (one attribute read, not a coroutine per attempt)
                admitted = breaker.admission()
                if self._outage_waits.since:
                    self._outage_waits.found_closed(name)
            else:
                waiting = self._waiting.get(name, 0)
                try:
                    if self._waiting_cap is not None and waiting >= self._waiting_cap and breaker.is_open:
                        raise breaker.outage()
                    self._waiting[name] = waiting + 1
                    try:
                        admitted = await breaker.admit(self.give_up_at(name))
                    finally:
                        self._waiting[name] -= 1
                except Outage as stop:
                    # Its attempts before the outage count once the breaker closes (not at a moved endpoint).
                    kept = 0 if breaker.moved else counted - tried
                    return self._parked(stop, attempt, started, kept, reason)
                except asyncio.CancelledError:  # a stop while it waits for the open breaker: keep them too
                    if counted > tried:
                        at = "waiting for its connection's open circuit breaker"
                        self._cut_at_stop(request, attempt, counted - tried, started, at, reason)
                    raise
                if not breaker.is_open:
                    self._outage_waits.found_closed(name)
            if not limiter.idle:
                # A Retry-After's hold ends at a move or the run's end, as a backoff does (not a probe's: it
                # must end, or the breaker stays half-open for nobody).
                held = limiter.held_for()
                if held > 0 and not admitted.is_probe:
                    cut = await self._wait(
                        breaker, held, request, 0.0, reason, attempt, counted - tried, started, limiter
                    )
                    if cut is not None:
                        return cut
                try:
                    await limiter.acquire()
                except asyncio.CancelledError:  # a stop in max_rate's wait: the attempts before it are kept
                    if attempt:
                        turn = "waiting for its turn under max_rate"
                        self._cut_at_stop(request, attempt, counted - tried, started, turn, reason)
                    raise
            # No retry goes to the endpoint a reload moved the connection from (a probe admitted before the
            # move goes: parked, it would leave the old endpoint's breaker half-open for nobody).
            if (attempt or tried) and not admitted.is_probe and breaker.moved:
                return self._parked(breaker.outage(reason), attempt, started)
            attempt += 1
            retry_after: float | None = None
            status: int | None = None
            excerpt: str | None = None
            outage = refused = False
            try:
                with task_deadline.limit(deadline):
                    answer = await sender.send(
                        request.method, request.url, body, request.headers, success_as_status=True
                    )
                    if isinstance(answer, int):  # a whole 2xx answer: nothing else of it is read
                        status, response = answer, None
                    else:
                        response = answer
                        try:
                            status = response.status_code
                            if not 200 <= status < 300 and limit:
                                raw = await read_capped(response, BODY_CAP)
                                excerpt = self.redactor.excerpt(raw.decode("utf-8", "replace"), limit)
                        finally:
                            if type(response.stream) is not httpx.ByteStream:  # else whole: nothing to close
                                await response.aclose()
            except AuthError as error:
                status, retryable = error.status, error.retryable
                reason = self.redactor.redact(error.message)
                outage = retryable
                refused = not retryable and error.status in (401, 403)
            except TimeoutError:
                retryable = outage = True
                reason = f"Timeout: no answer within the {deadline:g} s deadline (timeout.total)"
            except httpx.HTTPError as error:
                # Connect/read/write errors, timeouts, protocol errors: the request may have landed or not.
                retryable = outage = isinstance(error, httpx.TransportError)
                reason = f"{type(error).__name__}: {self.redactor.redact(str(error)) or 'no detail'}"
            except BaseException as error:
                if isinstance(error, asyncio.CancelledError):  # a stop (serve's drain deadline) in flight
                    # It may have landed: it counts (a probe's would not), and the next start sends it again.
                    counts = counted - tried + (not admitted.is_probe)
                    self._cut_at_stop(request, attempt, counts, started,
                                      "with a request in flight, which may have landed",
                                      "a request in flight at the stop (it may have landed)")  # fmt: skip
                if admitted.is_probe:  # a probe must always end, or the callers waiting on it wait in vain
                    await breaker.failure("the probe was interrupted", admitted)
                raise
            else:
                if 200 <= status < 300:
                    if not breaker.at_rest:
                        try:
                            await breaker.success(admitted)
                        except asyncio.CancelledError:
                            self._cut_recording(request, breaker, admitted, attempt, counted - tried, started,
                                                f"HTTP {status}, answered as the stop came", True)  # fmt: skip
                            raise
                    return Outcome(True, status, attempt, time.perf_counter() - started)
                assert response is not None  # only a 2xx answer comes as its status alone
                outage = status == 429 or status >= 500
                # It survived the auth flow's fresh login, or its fresh read of the credentials.
                refused = status == 401 and retry_unauthorized
                retryable = outage or refused
                reason = refused_reason if refused else f"HTTP {status} {response.reason_phrase}".rstrip()
                if outage:
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    if retry_after is not None and status in HOLDING_STATUSES:
                        # It speaks for the connection: its other senders wait too, not collect more 429s.
                        await limiter.hold_everywhere(min(retry_after, policy.retry_after_cap))
            try:
                if outage or refused:
                    await breaker.failure(reason, admitted, refused=refused)
                else:  # the destination answered: it is up, whatever it thought of this request
                    await breaker.success(admitted)
            except asyncio.CancelledError:  # a stop in a shared breaker's write (a database round trip)
                counts = not refused  # a refusal counts for nothing: it waits for the breaker
                self._cut_recording(
                    request, breaker, admitted, attempt, counted - tried, started, reason, counts
                )
                raise
            if refused or (outage and breaker.is_open):
                # The destination is down, or refuses every request: wait for the breaker, do not count.
                # (Logged like a retry: the request may have landed, so what follows may be a duplicate.)
                # A breaker whose waiting is stopped (a move, the run's end) parks it instead: its line says so.
                if not breaker.stopped:
                    self._log.info(
                        "%s: attempt %d failed (%s); waiting for the circuit breaker of %s",
                        request.label,
                        tried + attempt,
                        reason,
                        name,
                    )
                self._outage_waits.found_open(name)
                continue
            counted += 1
            if retryable and breaker.moved:  # not given up on, nor retried here: the next run sends it there
                return self._parked(breaker.outage(reason), attempt, started)
            if not retryable or counted >= policy.max_attempts:
                if retryable:
                    reason = f"gave up after {_plural.counted(tried + attempt, 'attempt')}; last: {reason}"
                return Outcome(False, status, attempt, time.perf_counter() - started, reason, excerpt)
            delay = backoff_delay(policy, counted, self._rng, retry_after)
            self._log.info(
                "%s: attempt %d failed (%s); retrying in %.2fs",
                request.label,
                tried + attempt,
                reason,
                delay,
                extra={"key": request.key, "target": request.label.split(" ")[0], "attempt": tried + attempt},
            )
            if self._on_retry is not None:
                self._on_retry(request, attempt, reason, delay)
            until = time.monotonic() + delay
            # Cut short by a reload that moves the connection, or by the run's end.
            cut = await self._wait(breaker, delay, request, until, reason, attempt, counted - tried, started)
            if cut is not None:
                return cut

    async def _wait(
        self,
        breaker: CircuitBreaker,
        seconds: float,
        request: OutboundRequest,
        until: float,
        failed: str,
        attempts: int,
        counted: int,
        started: float,
        hold: RateLimiter | None = None,
    ) -> Outcome | None:
        """A wait before an attempt (``breaker.pause``) that ends at ``until``, or, of a Retry-After's ``hold``,
        when the hold ends as it is cut (a later Retry-After may have extended it): None once it is over; the
        delivery's Outcome when a move or the run's end cut it short (``_interrupted``). A stop that cancels
        the send meanwhile (serve's drain deadline) leaves the same Outcome for ``take_cut``, so its attempts
        are kept as a run's end keeps them; the cancellation goes on."""
        try:
            cut = await breaker.pause(seconds)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                if hold is not None:
                    until = time.monotonic() + hold.held_for()
                self._cut[task] = self._interrupted(
                    request, breaker, until, failed, attempts, counted, started, at="the stop"
                )
            raise
        if not cut:
            return None
        if hold is not None:
            until = time.monotonic() + hold.held_for()
        return self._interrupted(request, breaker, until, failed, attempts, counted, started)

    def _cut_at_stop(
        self, request: OutboundRequest, attempts: int, counted: int, started: float, at: str, failed: str
    ) -> None:
        """A stop cancelled the send ``at`` a point that is no wait of its own (a request in flight, sent and
        its answer not read; max_rate's turn): its Outcome for ``take_cut``, as of a cut wait. Left pending
        with its ``counted`` attempts (a request in flight among them: it may have landed) and ``failed`` as
        its row's reason; the next start sends it again at once, under the same idempotency key."""
        task = asyncio.current_task()
        if task is None:
            return
        reason = (
            f"left pending at the stop {at}; the next start sends it again under the same idempotency key"
        )
        self._cut[task] = Outcome(False, None, attempts, time.perf_counter() - started, reason,
                                  interrupted=True, counted=counted,
                                  failed=self.redactor.redact(failed))  # fmt: skip

    def _cut_recording(
        self,
        request: OutboundRequest,
        breaker: CircuitBreaker,
        admitted: Admission,
        attempts: int,
        counted: int,
        started: float,
        failed: str,
        counts: bool,
    ) -> None:
        """A stop cancelled the send in its breaker's write after attempt ``attempts`` was answered (with a
        shared store, a database round trip): ``_cut_at_stop``, with the ``counted`` attempts before it and
        this one if it ``counts`` (not a refusal), is not a probe and did not find the breaker open (this
        process's copy: whether its own failure opened it is the write's to say, and an attempt into an open
        breaker counts for nothing). The next start sends it again at once."""
        counted += counts and not admitted.is_probe and not breaker.is_open
        at = "recording an attempt's answer in its connection's circuit breaker"
        self._cut_at_stop(request, attempts, counted, started, at, failed)

    def take_cut(self) -> Outcome | None:
        """The Outcome of the send the calling task made when a stop cancelled it in a wait before an attempt
        (a backoff, a Retry-After's hold, max_rate's turn or its open breaker after an attempt), with its
        request in flight, or in its breaker's write after one; None when it was cancelled otherwise."""
        task = asyncio.current_task()
        return self._cut.pop(task, None) if task is not None and self._cut else None

    def _interrupted(
        self,
        request: OutboundRequest,
        breaker: CircuitBreaker,
        until: float,
        failed: str,
        attempts: int,
        counted: int,
        started: float,
        *,
        at: str = "the end of the run",
    ) -> Outcome:
        """A wait before an attempt (a backoff after ``failed``, a Retry-After's hold: ``failed`` "" when
        nothing of this delivery failed yet) cut short. By a move: parked, and the next run sends it to the new
        endpoint. By the run's end while the breaker is open: parked, as the run's end parks whatever waits for
        it (counted in the summary's outage, and the next look at parked work sends it). By the run's end while
        it is closed: left pending with the ``counted`` attempts of this run (the journal keeps them), and the
        next run waits out the rest of the wait, until ``until``, then goes on. ``at``: what cut it, for the
        log (a stop's deadline: ``_wait``)."""
        if breaker.moved:
            if failed or request.tried:
                return self._parked(breaker.outage(failed), attempts, started)  # attempts start over there
            held = f"{max(0.0, until - time.monotonic()):.0f} s of it left"
            return self._parked(Outage(breaker.name, held, 0.0, moved="held"), attempts, started)
        if breaker.is_open:  # down: past the wait it would find the breaker open, and the run's end parks it
            return self._parked(breaker.outage(failed), attempts, started, counted, failed)
        if request.key:
            self._resume[request.key] = (until, failed)
        left = max(0.0, until - time.monotonic())
        waiting = f"to retry ({failed})" if failed else "for a Retry-After of the connection"
        reason = f"left pending at {at}, waiting {waiting}; the next run sends it in {left:.1f} s"
        latency = time.perf_counter() - started
        return Outcome(False, None, attempts, latency, self.redactor.redact(reason), interrupted=True,
                       counted=counted, not_before=time.time() + left,
                       failed=self.redactor.redact(failed))  # fmt: skip

    def _parked(
        self, stop: Outage, attempts: int, started: float, counted: int = 0, failed: str = ""
    ) -> Outcome:
        """A delivery left pending: its connection is down past ``outage_wait`` (or at the run's end), or a
        reload moved it. ``counted``: its attempts of this run that count towards max_attempts, made before the
        breaker opened (the journal adds them to its row, as an interrupted one's: the next run goes on with its
        budget once the breaker closes), with ``failed``, the last one's failure."""
        # Without the connection's name: the summary's line and the log's name it already.
        reason = self.redactor.redact(stop.detail)
        return Outcome(False, None, attempts, time.perf_counter() - started, reason, parked=True,
                       counted=counted, failed=self.redactor.redact(failed) if counted else "")  # fmt: skip

    def _deadline(self) -> TaskDeadline:
        """The calling task's deadline timer (``asyncio.timeout`` arms one per request), forgotten with it."""
        task = asyncio.current_task()
        assert task is not None, "Deliverer.send runs in a task"
        found = self._deadlines.get(task)
        if found is None:
            found = self._deadlines[task] = TaskDeadline(task)
            task.add_done_callback(self._forget_deadline)
        return found

    def _forget_deadline(self, task: asyncio.Task[Any]) -> None:
        deadline = self._deadlines.pop(task, None)
        if deadline is not None:
            deadline.close()

    def stop_waiting(self, names: Iterable[str]) -> None:
        """Deliveries waiting for the open breakers of ``names`` stop waiting and stay pending (see
        ``CircuitBreaker.stop_waiting``)."""
        for name in names:
            breaker = self.breakers.get(name)
            if breaker is not None:
                breaker.stop_waiting()

    async def look_at_breakers(self) -> None:
        """Read again each breaker record whose shared copy is stale (see ``CircuitBreaker.look``)."""
        for breaker in list(self.breakers.values()):
            await breaker.look()

    def park_waiting(self) -> None:
        """The deliveries waiting for an open breaker, and those that find one open from now on, are parked
        (left pending), and those waiting out a backoff or a Retry-After are interrupted (see
        ``Runtime.park_waiting``)."""
        for breaker in self.breakers.values():
            breaker.stop_waiting("run ends")

    def holds(self) -> dict[str, float]:
        """By connection, the seconds left of the Retry-After that holds its requests (none: not listed):
        what the next run's limiters take (``held``), read as this run ends, not per send."""
        return {name: left for name, limiter in self.limiters.items() if (left := limiter.held_for()) > 0}

    def give_up_at(self, name: str) -> float:
        """When a delivery on ``name`` stops waiting for its open breaker: ``outage_wait`` after this run
        first found it open (so a later run probes again at once). Asked before ``admit`` whatever this
        process's copy says: a shared breaker's copy may be older than the run (a new run's reads closed until
        its first refresh), and a delivery that waited on it with no deadline would wait for the next probe,
        a whole cooldown, not ``outage_wait``. ``send`` forgets the time once it finds the breaker closed."""
        return self._outage_waits.give_up_at(self.breakers[name])
