"""Enrichment: the GETs a source declares, which turn a skinny webhook into the documents a mapping needs.

BigCommerce's ``store/order/created`` carries only ``{"data": {"id": 100}}``; its source declares
``order: /v2/orders/{payload.data.id}``, ``products: ...`` and the event the mapping sees gains an ``order``,
a ``products`` and a ``shipments`` key beside its ``payload`` (named documents). The GETs go through a
configured connection (base_url, auth, headers, timeout) with the delivery retry policy: network errors,
timeouts, 429 and 5xx are retried with backoff and ``Retry-After``; any other status is final. A 429 or 503
that says how long to wait holds every GET of the connection (``RateLimiter.hold_everywhere``, as delivery
does): on a PostgreSQL journal, with ``max_rate``, every process's GETs, through the slots they claim there.
On a PostgreSQL journal the connection's circuit breaker is shared too: every process's GETs count towards
one breaker, which opens once and is probed by one process at a time (``_store/_breaker_pg``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from .._config import Connection, join_url
from .._deliver._auth import read_capped
from .._deliver._breaker import (
    HOLDING_STATUSES,
    Admission,
    BreakerSettings,
    CircuitBreaker,
    MemoryStore,
    Outage,
    OutageWaits,
    SharedStore,
    StateStore,
)
from .._deliver._rate_limiter import RateLimiter, server_of
from .._deliver._retry_timing import backoff_delay
from .._errors import JournalError
from .._redact import get_logger
from .._runtime import Runtime, new_endpoint
from .._store._breaker_pg import PostgresStateStore
from ._enrich_answer import MAX_RESPONSE, asked_wait, document
from ._enrich_errors import (
    EnrichmentError,
    SourceUnavailable,
    let_go_by_reload,
    replaced_during_get,
    while_open,
)
from ._settings import Enrichment, PathTemplate
from ._source_client import SourceClient, SourceConnections

T = TypeVar("T")


def wants_enrichment(enrichment: Enrichment | None, event: Mapping[str, Any]) -> bool:
    if enrichment is None:
        return False
    return not enrichment.topics or str(event.get("topic")) in enrichment.topics


def render_path(template: PathTemplate, event: Any) -> str:
    """The template filled from the event; each value is URL-quoted, and a missing one is an error."""
    out: list[str] = []
    for index, part in enumerate(template.parts):
        if index % 2 == 0:
            out.append(part)
            continue
        value = part.search(event)
        if value is None or isinstance(value, dict | list):
            raise EnrichmentError(
                f"the event has no usable value for {{{part.expression}}} in {template.text}"
            )
        out.append(quote(str(value), safe=""))
    return "".join(out)


class Enricher:
    """Fetches the declared documents of events. Use as ``async with Enricher(runtime, enrichments)``."""

    def __init__(
        self,
        runtime: Runtime,
        enrichments: Mapping[str, Enrichment],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        wait: bool = True,
        clock: Callable[[], float] = time.monotonic,
        connections: Iterable[Connection] = (),
    ) -> None:
        """``wait``: an event that finds its source API's breaker open waits for it up to ``outage_wait``
        (``shipmap run``); without, it gets :class:`SourceUnavailable` at once (``shipmap serve``).
        ``connections``: a reload's, for those it added that delivery has not taken yet (``use``)."""
        self.runtime = runtime
        self.enrichments = enrichments
        self._connections = SourceConnections(runtime)  # the runtime's, and a reload's it added (``use``)
        self._connections.take(connections)
        self._transport = transport
        self._wait = wait
        # An open breaker holds up the webhooks (events) this source API enriches, not deliveries.
        self._waiting_while_open = (
            "the events it enriches wait (up to outage_wait)"
            if wait
            else "the webhooks it enriches wait, parked"
        )
        self._clock = clock
        self._apis: dict[str, SourceClient] = {}  # by connection: the client its next GET goes through
        self._share = 1  # the serve processes each max_rate is shared by (``share_rates``)
        self.breakers: dict[str, CircuitBreaker] = {}
        self.breaker_store: StateStore = runtime.breaker_store  # the one its breakers use (__aenter__)
        self.limiters: dict[str, RateLimiter] = {}  # by connection: its max_rate, and the holds it is asked
        self._shared_store: PostgresStateStore | None = None  # on a PostgreSQL journal: see below
        self._to_share: asyncio.Lock | None = None  # held while it is opened; None once looked at
        self._joining: set[str] = set()  # connections a reload's enrich took up, to add to the shared store
        # By connection: the opening (``BreakerState.opened``) its breaker was in when a reload replaced its
        # settings, which a GET in flight across the reload closes if the API answers it (``_answered``).
        self._opened_when_replaced: dict[str, int] = {}
        self._letting_go: set[asyncio.Task[None]] = set()  # the closing of clients no enrich uses any more
        # Events of each source whose documents are being fetched. Read by the service's thread (/metrics,
        # /readyz): its keys are set here and by ``use`` (which replaces the dict), only the counts change.
        self.fetching = dict.fromkeys(enrichments, 0)
        self._outage_waits = OutageWaits(clock)  # when a GET stops waiting for each open breaker (``wait``)
        self._rng = random.Random()
        self._log = get_logger("serve.enrich", runtime.redactor, runtime_name=runtime.name)
        self.fetched = 0  # successful GETs, for metrics
        self.failed = 0

    async def __aenter__(self) -> Enricher:
        # The store as it is now, for the enricher's life: on a PostgreSQL journal each run replaces the
        # runtime's with that run's shared store, so /readyz reads this one too (``breaker_store``).
        self.breaker_store = self.runtime.breaker_store
        for name in {e.connection for e in self.enrichments.values()}:
            self._set_up(name)
        if self.breakers and self.runtime.config.journal.url:
            self._to_share = asyncio.Lock()
        return self

    def _set_up(self, name: str) -> None:
        """Connection ``name``'s client, breaker and rate limiter, on the store the others use now: at start,
        or when a reload's enrich first fetches over it (``use``), a connection the same reload added too."""
        connection, auth = self._connections.of(name)
        api = self._apis[name] = SourceClient.of(self.runtime, connection, auth, self._transport)
        self.breakers[name] = self._breaker(name, api.breaker, self.breaker_store)
        limiter = self.limiters[name] = RateLimiter(name, api.connection.max_rate, store=self.breaker_store)
        limiter.share(self._share)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        apis, self._apis = self._apis, {}
        for api in apis.values():
            await api.client.aclose()
        for closing in list(self._letting_go):
            await closing
        store, self._shared_store = self._shared_store, None
        if store is not None:
            await store.aclose()

    async def _share_across_processes(self) -> None:
        """On a PostgreSQL journal, before the first GET, the breakers move to the journal's shared records
        (their own rows, apart from delivery's: ``_breaker_pg``), so every process's failures count towards one
        breaker, it opens once and one process probes at a time; and the limiters of the connections with
        ``max_rate`` move to the journal's shared slots, so a 429's or 503's hold holds every process's GETs,
        as delivery's does (``shipmap run`` enters its enricher inside a run, whose shared store its limiters
        already use). Opened at the first GET (or serve's first idle look), not at start: the journal's tables
        exist once the first run has opened it. A store that cannot be opened leaves the breakers and limiters
        in this process, with a warning."""
        lock = self._to_share
        if lock is None:
            await self._join_shared()
            return
        async with lock:
            if self._to_share is None:  # opened (or given up) while this GET waited for the lock
                return
            try:
                await self._open_shared_store()
            finally:
                self._to_share = None
        await self._join_shared()

    async def _join_shared(self) -> None:
        """The connections a reload's enrich took up since the shared store opened: their rows made there, as
        ``connect`` makes those of the connections it opens with (nothing to do on a store of this process)."""
        joining, self._joining = self._joining, set()
        store = self._shared_store
        for name in sorted(joining):
            if store is not None and name in self._apis:
                await store.add(name, self._apis[name].connection.base_url)

    async def _open_shared_store(self) -> None:
        journal = self.runtime.config.journal
        assert journal.url is not None  # __aenter__ set _to_share only then
        try:
            store = await PostgresStateStore.connect(
                journal.url,
                {name: api.connection.base_url for name, api in self._apis.items()},
                lease=journal.lease,
                reconnect_deadline=journal.reconnect_deadline,
                redactor=self.runtime.redactor,
                runtime_name=self.runtime.name,
                enrichment=True,
            )
        except JournalError as error:
            self._log.warning(
                "cannot share enrichment circuit breakers, max_rate slots and Retry-After holds with the other"
                " processes (%s); this process keeps breakers of its own, to its share of max_rate, and holds"
                " on the waits it is told alone",
                error.message,
            )
            return
        self._shared_store = store
        # A run's store is shared already: its limiters claim their slots there. No GET has gone through the
        # breakers and limiters yet: nothing they counted or hold is lost.
        rates_shared = isinstance(self.breaker_store, SharedStore)
        for name, breaker in list(self.breakers.items()):
            self.breakers[name] = self._breaker(name, breaker.settings, store)
            rate = self.limiters[name].rate
            if rate and not rates_shared:
                self.limiters[name] = RateLimiter(name, rate, store=store)
        self.breaker_store = store  # what /readyz and the stop summary read from now on

    def _breaker(self, name: str, settings: BreakerSettings, store: StateStore) -> CircuitBreaker:
        return CircuitBreaker(
            name,
            settings,
            store=store,
            clock=self._clock,
            runtime_name=self.runtime.name,
            redactor=self.runtime.redactor,
            waiting=self._waiting_while_open,
        )

    async def _follow_reload(self, name: str) -> None:
        """The connection ``name`` as the runtime has it now: after a reload that changed it (its auth,
        base_url, headers, timeout, breaker or max_rate, or delivery's it falls back on), the next GETs go
        through a new client, and those in flight end on the old one (charging the new breaker, unless moved:
        ``_in_force``). What the breaker saw of another endpoint or other credentials says nothing of these: it
        closes (``new_endpoint``, as delivery's does). Another max_rate gets a new limiter, which keeps the hold
        of a Retry-After the same host asked for; another host gets one without it."""
        api = self._apis.get(name)
        if api is None:  # let go by a reload; its GETs end on their client
            return
        connection, auth = self._connections.of(name)
        if api.current(self.runtime, connection, auth):
            return
        new = self._apis[name] = SourceClient.of(self.runtime, connection, auth, self._transport)
        api.retired, api.moved = True, new_endpoint(api.connection, connection)
        if api.uses == 0:
            await api.client.aclose()
        if new.breaker != api.breaker:
            self.breakers[name] = self._breaker(name, new.breaker, self.breaker_store)
        if api.moved:
            if isinstance(self.breaker_store, PostgresStateStore) and (
                api.connection.base_url != connection.base_url
            ):  # the record of the new one, shared
                await self.breaker_store.move(name, connection.base_url)
            else:
                await self._close_breaker(name)
        elif new.breaker != api.breaker and self.breakers[name].is_open:
            self._opened_when_replaced[name] = self.breakers[name].state.opened
        other_host = server_of(api.connection.base_url) != server_of(connection.base_url)
        if connection.max_rate != api.connection.max_rate or other_host:
            held = self.limiters[name]
            limiter = self.limiters[name] = RateLimiter(name, connection.max_rate, store=self.breaker_store)
            limiter.share(self._share)
            # A Retry-After speaks for the server that sent it: the same host's holds its next GETs, whatever
            # else the reload changed (max_rate, credentials, the path); another host's rate is its own.
            if not other_host:
                limiter.hold(held.held_for())
        self._log.info("source API %s: the last reload's connection settings in use from its next GET", name)

    async def _close_breaker(self, name: str) -> None:
        """``name``'s breaker closed in the store it lives in (a reload's doing: ``_follow_reload``)."""
        if isinstance(self.breaker_store, MemoryStore):
            self.breaker_store.close_breaker(name)
        elif isinstance(self.breaker_store, PostgresStateStore):
            await self.breaker_store.close_breaker(name)

    async def _answered(self, name: str, breaker: CircuitBreaker) -> None:
        """A GET of ``name`` answered 2xx. When it was in flight across a reload that replaced the settings of
        its open breaker (``breaker``, the one in force), the opening was those settings' verdict and the API
        answers: the breaker closes, and the GETs of the same webhook that got "later" from it go again at
        once (``documents``), not after the replaced cooldown. (Only a GET in flight as the breaker opened gets
        here: one admitted after goes as its probe, whose success closes it anyway.)"""
        opened = self._opened_when_replaced.pop(name, None)
        if opened is None or not breaker.is_open or breaker.state.opened != opened:
            return
        await self._close_breaker(name)
        self._log.warning(
            "source API %s: a GET in flight across the reload that replaced its breaker settings was answered;"
            " its circuit breaker, opened under the replaced settings, closes",
            name,
        )

    async def look_at_breakers(self) -> None:
        """On a PostgreSQL journal, read again each breaker record this process's copy of which is stale, so
        that its /readyz and stop summary say what the other processes did to the breakers meanwhile
        (serve's feed calls it while it waits for webhooks; GETs read them as they go)."""
        await self._share_across_processes()
        for breaker in list(self.breakers.values()):
            await breaker.look()

    def breakers_closed(self) -> bool:
        """Whether every source API's breaker is closed (as this process last read it)."""
        return all(not breaker.is_open for breaker in list(self.breakers.values()))

    def use(self, enrichments: Mapping[str, Enrichment], connections: Iterable[Connection]) -> None:
        """A reload's ``enrich`` sections and its ``connections``: the webhooks whose fetches start from now on
        take them; those in flight end with the section they started with (``documents`` read it once). A
        connection no section fetched over before is set up as at start (``_set_up``; on a PostgreSQL journal
        its shared rows are made before its first GET), one the reload added too (as its file has it, until
        delivery takes it); one no section fetches over any more is let go: its client is closed once its GETs
        in flight end."""
        self._connections.take(connections)
        wanted, had = {e.connection for e in enrichments.values()}, bool(self._apis)
        for name in sorted(wanted - self._apis.keys()):
            self._set_up(name)
            self._joining.add(name)
        if wanted and not had and self.runtime.config.journal.url and self._shared_store is None:
            self._to_share = asyncio.Lock()  # no breaker before: the shared store was never opened
        for name in sorted(self._apis.keys() - wanted):
            api = self._apis.pop(name)
            del self.breakers[name], self.limiters[name]
            api.retired = True
            if api.uses == 0:
                closing = asyncio.ensure_future(self._close(api))
                self._letting_go.add(closing)
                closing.add_done_callback(self._letting_go.discard)
        self.enrichments = dict(enrichments)
        # A source's count is kept while its fetches are in flight, so that they end where they began.
        self.fetching = {
            **{source: count for source, count in self.fetching.items() if count},
            **{source: self.fetching.get(source, 0) for source in enrichments},
        }
        self._log.info("the last reload's enrich sections in use from the next webhooks fetched")

    def concurrency(self, source: str) -> int | None:
        """The most webhooks of ``source`` fetched at once, as its section has it now (None: it fetches none)."""
        return concurrency_of(self.enrichments)(source)

    def applies(self, event: Mapping[str, Any]) -> bool:
        return wants_enrichment(self.enrichments.get(str(event.get("source"))), event)

    def waiting(self) -> dict[str, int]:
        """GETs waiting for their connection's ``max_rate`` or a Retry-After now, by connection."""
        return {name: limiter.waiting for name, limiter in list(self.limiters.items())}

    def share_rates(self, processes: int) -> None:
        """``processes`` serve processes fetch from the same APIs: this one keeps to 1/N of each max_rate."""
        self._share = processes
        for limiter in self.limiters.values():
            limiter.share(processes)

    async def documents(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Every declared document of this event's source, fetched concurrently. When several fail, the
        reason given is the first failure in declaration order, not whichever GET finished first, so the same
        event always fails with the same reason (a "later" before a "never", a reload's "now" before both)."""
        source = str(event["source"])
        enrichment = self.enrichments[source]
        names = list(enrichment.fetch)
        await self._follow_reload(enrichment.connection)
        if enrichment.connection not in self._apis:
            raise let_go_by_reload(enrichment.connection)
        paths = [render_path(enrichment.fetch[name], event) for name in names]
        began = self._apis[enrichment.connection]
        self.fetching[source] += 1  # its key stays while it is not 0 (``use``)
        try:
            results = await self._fetch_all(enrichment.connection, paths)
            results = await self._again_after_reload(enrichment.connection, began, paths, results)
        finally:
            self.fetching[source] -= 1
        failures = [result for result in results if isinstance(result, BaseException)]
        # "Later" outranks "never": the API that is down may hold the answer. "Now, with a reload's settings"
        # outranks "later": an open breaker a GET found before the reload was the old endpoint's.
        unavailable = [failure for failure in failures if isinstance(failure, SourceUnavailable)]
        if unavailable:
            raise next((failure for failure in unavailable if failure.by_reload), unavailable[0])
        if failures:
            raise failures[0]
        return dict(zip(names, results, strict=True))

    async def _fetch_all(self, connection: str, paths: list[str]) -> list[Any]:
        """Each path's document, or the EnrichmentError that ended its GET."""
        if self.breakers[connection].is_open:
            # One at a time while the API is in doubt: the first GET is the probe, and the others follow
            # it only if it succeeds (concurrently, they would find the breaker half-open and give up).
            results: list[Any] = []
            for path in paths:
                try:
                    results.append(await self._get(connection, path))
                except EnrichmentError as error:
                    results.append(error)
                    break
            return results
        return await asyncio.gather(*(self._get(connection, path) for path in paths), return_exceptions=True)

    async def _again_after_reload(
        self, connection: str, began: SourceClient, paths: list[str], results: list[Any]
    ) -> list[Any]:
        """``results`` with the GETs that got "later" fetched again, once and at once, when a reload replaced
        the connection's settings during the fetch (``began``: its client then) and its breaker in force is
        closed (the reload closed it, or a GET in flight across it was answered: ``_answered``): their "later"
        came from a breaker that is gone, and the webhook is not parked for its cooldown. Not when a GET
        failed through the replaced client: the whole webhook is fetched again at once then."""
        later = [
            index
            for index, result in enumerate(results)
            if isinstance(result, SourceUnavailable) and not result.by_reload
        ]
        now = self._apis.get(connection)
        if (
            not later
            or now is None
            or now is began
            or self.breakers[connection].is_open
            or any(isinstance(result, SourceUnavailable) and result.by_reload for result in results)
        ):
            return results
        again = dict(zip(later, await self._fetch_all(connection, [paths[i] for i in later]), strict=True))
        return [again.get(index, result) for index, result in enumerate(results)]

    async def _get(self, connection: str, path: str) -> Any:
        if self._to_share is not None or self._joining:
            await self._share_across_processes()
        api = self._apis.get(connection)  # this GET's, to its end: a reload meanwhile applies to the next
        if api is None:
            raise let_go_by_reload(connection)
        api.uses += 1
        try:
            return await self._get_through(api, connection, path)
        finally:
            api.uses -= 1
            if api.retired and api.uses == 0:
                await self._close(api)

    async def _close(self, api: SourceClient) -> None:
        """A retired client closed (by the last of its GETs), and said when no enrich fetches over it now."""
        await api.client.aclose()
        if api.connection.name not in self._apis:
            self._log.info(
                "source API %s: no enrich fetches over it any more; its client closed", api.connection.name
            )

    async def _get_through(self, api: SourceClient, connection: str, path: str) -> Any:
        client, auth = api.client, api.auth
        breaker = self.breakers[connection]
        limiter = self.limiters[connection]
        url = join_url(api.connection.base_url, path)
        policy = self.runtime.config.delivery.retry
        deadline = api.timeout.total
        attempt = counted = 0
        reason = ""
        while True:
            await self._follow_reload(connection)
            if api.moved:  # a reload moved it during this GET's backoff: no attempt more at the old one
                raise replaced_during_get(connection, f"GET {path}: {reason or 'not sent'}")
            breaker, limiter = self._in_force(api, connection, breaker, limiter)
            admitted = await self._admit(breaker)
            attempt += 1
            retry_after: float | None = None
            content: bytes | None = None  # of a 2xx: None when it is over the cap
            refused = False
            try:
                await limiter.acquire()  # its turn under max_rate, after any hold the API asked for
                # One deadline for the whole attempt, body included, and the body read only up to the cap:
                # an API that drips its answer a byte at a time (each within the read timeout), or sends
                # gigabytes, holds up delivery for timeout.total at most, and memory for the cap at most.
                async with asyncio.timeout(deadline), client.stream("GET", url) as response:
                    status = response.status_code
                    if 200 <= status < 300:
                        declared = response.headers.get("content-length", "")
                        if not (declared.isdigit() and int(declared) > MAX_RESPONSE):  # else refused unread
                            content = await read_capped(response, MAX_RESPONSE + 1)
            except TimeoutError:
                retryable = True
                reason = f"Timeout: no answer within the {deadline:g} s deadline (timeout.total)"
            except httpx.HTTPError as error:
                retryable = isinstance(error, httpx.TransportError)
                reason = f"{type(error).__name__}: {self.runtime.redactor.redact(str(error)) or 'no detail'}"
            except BaseException:
                if admitted.is_probe:  # a probe must always end, or the breaker stays half-open
                    await breaker.failure("the probe was interrupted", admitted)
                raise
            else:
                if 200 <= status < 300:
                    await breaker.success(admitted)
                    if breaker.is_open:  # opened while this GET was in flight: a reload may have replaced it
                        await self._follow_reload(connection)
                        in_force, _ = self._in_force(api, connection, breaker, limiter)
                        if in_force is not breaker:
                            await self._answered(connection, in_force)
                    return self._decode(content, status, path)
                # A 401 that survives the auth's fresh read of its credentials refuses them, not this event:
                # the breaker opens and the webhook waits (parked in serve), as a delivery refused so waits,
                # until the credentials are fixed; not a rejected input for each webhook meanwhile.
                refused = status == 401 and auth.retry_unauthorized
                retryable = status == 429 or status >= 500 or refused
                reason = (
                    auth.refused_reason if refused else f"HTTP {status} {response.reason_phrase}".rstrip()
                )
                retry_after = asked_wait(status, response.headers) if retryable else None
                if retry_after is not None and status in HOLDING_STATUSES:
                    await limiter.hold_everywhere(min(retry_after, policy.retry_after_cap))
            if retryable:
                await self._follow_reload(connection)
                breaker, limiter = self._in_force(api, connection, breaker, limiter)
            if retryable and api.moved:
                # In flight to the old endpoint, or with the old credentials, at a reload that replaced them:
                # its failure says nothing of the new ones (their breaker is not charged with it), and the
                # webhook is fetched again at once, through the new client.
                raise replaced_during_get(connection, f"GET {path}: {reason}")
            if retryable:
                await breaker.failure(f"GET {path}: {reason}", admitted, refused=refused)
            else:
                await breaker.success(
                    admitted
                )  # the API answered: it is up, whatever it thought of this request
            if retryable and breaker.is_open:
                continue  # the next admission waits or says "later"; attempts into an outage do not count
            counted += 1
            if not retryable or counted >= policy.max_attempts:
                self.failed += 1
                tried = f" after {attempt} attempts" if attempt > 1 else ""
                raise EnrichmentError(f"GET {path} failed{tried}: {reason}")
            delay = backoff_delay(policy, counted, self._rng, retry_after)
            self._log.info("GET %s: attempt %d failed (%s); retrying in %.2fs", path, attempt, reason, delay)
            await asyncio.sleep(delay)

    def _in_force(
        self, api: SourceClient, connection: str, breaker: CircuitBreaker, limiter: RateLimiter
    ) -> tuple[CircuitBreaker, RateLimiter]:
        """The breaker and limiter a GET through ``api`` goes on with: its connection's now, when a reload
        replaced them (its breaker or max_rate) but not the endpoint or credentials, whose failures they count
        and whose waits they keep; else those it began with (``breaker``, ``limiter``: let go or moved)."""
        now = self._apis.get(connection)
        if api.moved or now is None or new_endpoint(api.connection, now.connection):
            return breaker, limiter
        return self.breakers[connection], self.limiters[connection]

    async def _admit(self, breaker: CircuitBreaker) -> Admission:
        """This GET's admission (closed, or as the breaker's probe); SourceUnavailable when it may not go now."""
        state = await breaker.look()  # a shared record: as every process left it, at most ``refresh`` old
        if state.phase == "closed":
            self._outage_waits.found_closed(breaker.name)
            return Admission(state.opened)
        if not self._wait:
            admitted = await breaker.admit_now()
            if admitted is None:
                raise while_open(breaker)
            return admitted
        try:
            return await breaker.admit(self._outage_waits.give_up_at(breaker))
        except Outage:
            raise while_open(breaker) from None

    def unavailable(self, event: Mapping[str, Any]) -> SourceUnavailable | None:
        """What fetching this event's documents would raise before any request (``wait=False``): its source
        API's breaker is open and its next probe is not due. None when a GET would go."""
        if self._wait:
            return None
        return self._refused(self.breakers[self.enrichments[str(event["source"])].connection])

    def _refused(self, breaker: CircuitBreaker) -> SourceUnavailable | None:
        state = breaker.state
        if state.phase == "closed" or (state.phase == "open" and breaker.now() >= state.retry_at):
            return None  # closed, or due: the next GET goes (as the probe)
        return while_open(breaker)

    def _decode(self, content: bytes | None, status: int, path: str) -> Any:
        decoded = document(content, status, path)
        self.fetched += 1
        return decoded


def lane_of(event: Mapping[str, Any]) -> str:
    """The lane an event goes through: its source's (an event without one shares the lane of no source)."""
    return str(event.get("source", ""))


def concurrency_of(enrichments: Mapping[str, Enrichment]) -> Callable[[str], int | None]:
    """The most events of a source fetched at once (None: it fetches nothing), as ``_lanes`` asks."""

    def cap(source: str) -> int | None:
        enrichment = enrichments.get(source)
        return None if enrichment is None else enrichment.concurrency

    return cap
