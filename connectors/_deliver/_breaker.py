"""A circuit breaker per connection: how delivery stops sending to a destination that is down, probes it, and
resumes; and the stores that hold its state and the rate limiter's (``_rate_limiter``).

The breaker has Convoy's three states. **Closed**: requests go; ``failures`` outage failures in a row (a
connection error, a timeout, a 5xx, a 429) open it, and so does one failure that says the credentials are
refused. **Open**: nothing goes; callers wait. After ``cooldown`` one caller becomes the probe (**half-open**)
and the others keep waiting. The probe's success closes the breaker and releases them; its failure opens
it again for twice the cooldown (up to ``cooldown_cap``). Only the outcome of a request admitted in the
state it comes back to counts (its :class:`Admission`): a request sent while the breaker was closed that fails
once it is open or half-open, or once it closed again, changes nothing: above all it never reopens a
half-open breaker under the probe in flight, nor doubles the cooldown. A caller whose wait passes its
``give_up_at`` (the delivery's ``outage_wait``, counted from when its run first found the breaker open) gets
:class:`Outage`: the delivery is left ``pending``, never dead-lettered.

State lives in a :class:`BreakerState`/:class:`RateState` record held by a store. :class:`MemoryStore`
keeps them in this process. A :class:`SharedStore` (``_breaker_pg``: the PostgreSQL journal's database)
shares them between worker processes: each transition is made on the record under the database's row lock
and on its clock, so one worker's open breaker stops the others and one probe goes at a time across them;
reads come from a local copy at most ``refresh`` seconds old; ``max_rate`` slots are claimed in the
database, one round trip per request, and so is a hold (a Retry-After) on a connection with ``max_rate``:
it pushes the shared next slot, so every worker waits it out. The transition rules below are the same for both
stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar, runtime_checkable

from .._config_key import about, compared_in_effect, duration_text
from .._key_pairs import COOLDOWN, in_use, refuse_out_of_order
from .._redact import Redactor, get_logger

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
BreakerPhase = Literal["closed", "open", "half_open"]
_T = TypeVar("_T")
# Answers whose Retry-After speaks for the API, not for the one request that got it: every request of the
# connection is held until then (a 500 or 502 that says Retry-After only delays its own retry).
HOLDING_STATUSES = (429, 503)


DEFAULT_COOLDOWN = 1.0  # a breaker's cooldown, left out


@compared_in_effect
@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """Thresholds of one connection's breaker (``delivery.breaker``, or ``connections.N.breaker``)."""

    failures: int = field(
        default=5,
        metadata=about(
            "Outage failures in a row (connection errors, timeouts, 5xx, 429) that open it.",
            minimum=1,
            maximum=1000,
        ),
    )
    cooldown: float | None = field(  # None: left out, the default, at most cooldown_cap
        default=None,
        metadata=about(
            "Open this long before the first probe; doubled after each failed probe.",
            duration=True,
            exclusiveMinimum=0,  # 0 would probe a destination that is down without pause
            default_text=f"{duration_text(DEFAULT_COOLDOWN)}, at most cooldown_cap",
            schema_default=DEFAULT_COOLDOWN,
        ),
    )
    cooldown_cap: float = field(
        default=60.0, metadata=about("Longest wait between probes.", duration=True, exclusiveMinimum=0)
    )
    outage_wait: float = field(
        default=300.0,
        metadata=about(
            "How long shipmap run waits for an open breaker before leaving the rest pending (exit 9).",
            duration=True,
        ),
    )

    def __post_init__(self) -> None:
        refuse_out_of_order(self, COOLDOWN)

    @property
    def first_cooldown(self) -> float:
        """How long it stays open before the first probe: ``cooldown``, or left out its default, at most
        ``cooldown_cap``."""
        return in_use(self, COOLDOWN, DEFAULT_COOLDOWN)

    def key_in_use(self, name: str) -> object:
        return self.first_cooldown if name == "cooldown" else getattr(self, name)


@dataclass(slots=True)
class BreakerState:
    """What a breaker remembers. Times are on the breaker's clock (monotonic by default)."""

    phase: BreakerPhase = "closed"
    failures: int = 0  # outage failures in a row while closed
    opened_at: float = 0.0  # when this outage began (the first open since the last close)
    retry_at: float = 0.0  # when the next probe may go
    cooldown: float = 0.0
    reason: str = ""  # the failure that opened it, redacted: a store and /readyz hold it
    opened: int = 0  # times it went from closed to open
    probes: int = 0
    probe_until: float = 0.0  # a half-open probe not ended by then was lost (its worker died): another may go


@dataclass(frozen=True, slots=True)
class Admission:
    """Under which state of its breaker a request went, taken when it was admitted: with the breaker closed
    (``opened``: its count of openings then, so a later opening makes the request one of an earlier spell), or
    as the half-open probe ``probe`` (its number, ``BreakerState.probes`` when claimed; 0: not a probe). Its
    outcome is handed back to ``success()`` or ``failure()``, which count it only while that state holds."""

    opened: int
    probe: int = 0

    @property
    def is_probe(self) -> bool:
        return self.probe != 0

    def current(self, state: BreakerState) -> bool:
        """Whether the breaker is still in the state this request was admitted under: closed since the same
        opening, or half-open with this request as its probe (not a later probe, which took over after this
        one's lease, nor closed by a reload)."""
        if self.probe:
            return state.phase == "half_open" and state.probes == self.probe
        return state.phase == "closed" and state.opened == self.opened


@dataclass(slots=True)
class RateState:
    next_free: float = 0.0  # the earliest time the next request may start


class StateStore(Protocol):
    """Where breaker and limiter records live, by connection name."""

    def breaker(self, name: str) -> BreakerState: ...

    def rate(self, name: str) -> RateState: ...


@runtime_checkable
class SharedStore(StateStore, Protocol):
    """A store that many processes share. ``breaker()`` is this process's copy of the record; it is
    ``stale()`` after ``refresh`` seconds, and ``refresh()`` reads it again. ``locked()`` yields the record
    under the store's lock with the store's clock (seconds), and writes back what the caller changed."""

    probe_lease: float  # how long a probe may take before another worker takes over
    poll: float  # how often a waiting caller looks again: other processes' transitions are not signalled

    def stale(self, name: str) -> bool: ...

    async def refresh(self, name: str) -> None: ...

    def locked(self, name: str) -> AbstractAsyncContextManager[tuple[BreakerState, float]]: ...

    def now(self) -> float:
        """The store's clock, estimated from this process's clock and the last round trip."""
        ...

    async def claim_rate(self, name: str, interval: float) -> float:
        """Claim the next request slot ``interval`` after the last one claimed: seconds until it starts."""
        ...

    async def hold_rate(self, name: str, seconds: float) -> None:
        """No slot of ``name`` starts before ``seconds`` from now, for any process (a Retry-After)."""
        ...


def store_now(store: StateStore) -> float:
    """Now on the clock of ``store``'s record times: a shared store's (the database's, estimated), else this
    process's monotonic clock (the breakers' default)."""
    return store.now() if isinstance(store, SharedStore) else time.monotonic()


class MemoryStore:
    """Records in this process's memory: one breaker per connection for the life of the store."""

    def __init__(self) -> None:
        self._breakers: dict[str, BreakerState] = {}
        self._rates: dict[str, RateState] = {}

    def breaker(self, name: str) -> BreakerState:
        return self._breakers.setdefault(name, BreakerState())

    def rate(self, name: str) -> RateState:
        return self._rates.setdefault(name, RateState())

    def close_breaker(self, name: str) -> None:
        """Close ``name``'s breaker: its endpoint or credentials changed (a reload), so the failures it
        counted say nothing about them. Its count of openings stays (a metric that only goes up)."""
        state = self._breakers.get(name)
        if state is not None:
            state.phase, state.failures, state.reason = "closed", 0, ""
            state.retry_at = state.cooldown = 0.0


# What a delivery was waiting for when a reload moved its connection (``Outage(moved=...)``).
MovedWhile = Literal["open", "retrying", "held"]
_MOVED_WHILE: dict[MovedWhile, str] = {
    "open": "its circuit breaker was open",
    "retrying": "a delivery was retrying",
    "held": "a Retry-After held its requests",
}


class Outage(Exception):
    """The breaker stayed open past ``outage_wait``, or a reload moved the connection while a delivery waited
    for its open breaker or was retrying (``moved`` says which): leave the delivery pending for a later run.
    The message is ``connection NAME`` and ``detail``; a line that names the connection already shows
    ``detail`` alone."""

    def __init__(
        self, connection: str, reason: str, waited: float, *, moved: MovedWhile | None = None
    ) -> None:
        self.detail = (
            f"moved by a reload while {_MOVED_WHILE[moved]} ({reason}); "
            "left pending for the next run, which sends to the new endpoint"
            if moved is not None
            else f"unavailable for {waited:.0f} s (circuit breaker open: {reason}); left pending for the next run"
        )
        super().__init__(f"connection {connection} {self.detail}")
        self.connection = connection
        self.reason = reason


class CircuitBreaker:
    """One connection's breaker. ``admit()`` before each attempt (or ``admission()`` when it is ``at_rest``),
    then ``success()`` or ``failure()`` with the :class:`Admission` it gave.

    A failure's reason comes from the destination (a status line's reason phrase, an error's text) and may hold
    a secret the runtime knows (a token echoed back, a URL with credentials): it is masked with ``redactor``
    before the record keeps it, a shared store writes it or a line logs it."""

    def __init__(
        self,
        name: str,
        settings: BreakerSettings,
        *,
        store: StateStore | None = None,
        clock: Clock = time.monotonic,
        runtime_name: str | None = None,
        redactor: Redactor | None = None,
        waiting: str = "deliveries wait (pending)",
    ) -> None:
        """``waiting``: what waits while it is open, as the line that says it opened words it."""
        self.name = name
        self.settings = settings
        self._waiting = waiting
        self._redactor = redactor if redactor is not None else Redactor()
        # A named runtime's breakers mark their records with its name, as its other loggers do.
        self._log = get_logger("breaker", self._redactor, runtime_name=runtime_name)
        self._store = store if store is not None else MemoryStore()
        self._shared = store if isinstance(store, SharedStore) else None
        # In one process the probe always ends (``failure(probe=True)`` when interrupted); across processes
        # its worker may die mid-probe, so a probe holds the breaker for one lease at most.
        self._probe_lease = self._shared.probe_lease if self._shared is not None else math.inf
        self._clock = clock
        self._changed: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        # Its waiting deliveries stay pending: a reload moved the connection, or the service's run ends.
        self._stop_waiting: Literal["moved", "run ends"] | None = None
        # A MemoryStore keeps one record per name for its life: read it without asking the store each time.
        self._own = self._store.breaker(name) if type(self._store) is MemoryStore else None
        self._closed = Admission(0)  # ``admission()``'s, for the closed spell it names

    @property
    def at_rest(self) -> bool:
        """Closed with no failure counted, in this process's own store: a request goes at once and its
        success records nothing, so a sender may skip ``admit()`` and ``success()`` (the common case)."""
        own = self._own
        return own is not None and own.phase == "closed" and own.failures == 0

    def admission(self) -> Admission:
        """The admission of a request sent without ``admit()``: the breaker is ``at_rest``."""
        opened = (self._own or self.state).opened
        closed = self._closed
        if closed.opened != opened:  # one per closed spell: not a new record per request (the common path)
            closed = self._closed = Admission(opened)
        return closed

    @property
    def state(self) -> BreakerState:
        """The record (with a shared store: this process's copy, at most its ``refresh`` old)."""
        return self._store.breaker(self.name)

    @property
    def is_open(self) -> bool:
        return self.state.phase != "closed"

    async def look(self) -> BreakerState:
        """The record, read again first when a shared store's copy is stale (another process may have opened
        or closed the breaker since)."""
        if self._shared is not None and self._shared.stale(self.name):
            await self._shared.refresh(self.name)
        return self._store.breaker(self.name)

    async def admit_now(self) -> Admission | None:
        """``admit()`` without waiting: the admission when closed or when this caller claimed the probe, None
        when neither (open with the next probe not due, or another caller's probe under way, in this process
        or another)."""
        state = await self.look()
        if state.phase == "closed":
            return Admission(state.opened)
        if self._shared is None:
            probe, _ = self._claim_probe(state, self._clock())
        else:  # the copy says when a probe is due; only then is the record locked to claim it
            probe = False
            if self._due(state, self._shared.now()):
                async with self._shared.locked(self.name) as (state, now):
                    if state.phase == "closed":  # closed by another process since the copy was read
                        return Admission(state.opened)
                    probe, _ = self._claim_probe(state, now)
        if not probe:
            return None
        self._log.info("connection %s: probing (probe %d)", self.name, state.probes)
        return Admission(state.opened, state.probes)

    async def admit(self, give_up_at: float) -> Admission:
        """Wait until a request may go: its admission, closed or as the half-open probe. Raises Outage once
        the clock passes ``give_up_at`` with the breaker still open."""
        shared = self._shared
        while True:
            state = await self.look()
            if state.phase == "closed":
                return Admission(state.opened)
            now = self._clock()
            if now >= give_up_at or self._stop_waiting is not None:
                raise self.outage()
            if shared is None:
                probe, wait = self._claim_probe(state, now)
            else:  # the copy says when a probe is due; only then is the record locked to claim it
                wait = (state.retry_at if state.phase == "open" else state.probe_until) - shared.now()
                probe = False
                if wait <= 0:
                    async with shared.locked(self.name) as (state, store_now):
                        probe, wait = self._claim_probe(state, store_now)
                wait = min(wait, shared.poll)
            if probe:
                self._log.info("connection %s: probing (probe %d)", self.name, state.probes)
                return Admission(state.opened, state.probes)
            await self._wait_for_change(min(now + wait, give_up_at) - now)

    async def wait_closed(self, give_up_at: float) -> bool:
        """Wait until this breaker is closed (True), or until the clock passes ``give_up_at`` or its waiting
        is stopped with it still open (False). Never the probe: the deliveries waiting in ``admit()`` probe,
        this caller only learns that one was answered (a run's deliveries held back behind them)."""
        shared = self._shared
        while True:
            if (await self.look()).phase == "closed":
                return True
            now = self._clock()
            if now >= give_up_at or self._stop_waiting is not None:
                return False
            # Another process's transitions are not signalled: a shared copy is looked at again each poll.
            wait = give_up_at - now if shared is None else min(give_up_at - now, shared.poll)
            await self._wait_for_change(wait)

    def outage(self, failed: str = "") -> Outage:
        """The Outage of a delivery that does not wait for this open breaker: since when it is open, and why.
        Once a reload ``moved`` the connection, that it moved: while the breaker was open, or, closed, while
        the delivery was retrying after ``failed`` (its own last failure)."""
        state = self._store.breaker(self.name)
        if self.moved:
            if state.phase == "closed":
                return Outage(self.name, failed, 0.0, moved="retrying")
            return Outage(self.name, state.reason, 0.0, moved="open")
        return Outage(self.name, state.reason, self.now() - state.opened_at)

    @property
    def moved(self) -> bool:
        """A reload moved the connection (another endpoint or credentials): a delivery that would wait for
        this breaker, or retry after a failure, stops instead (left pending), and the next run sends it with
        the new settings."""
        return self._stop_waiting == "moved"

    @property
    def stopped(self) -> bool:
        """``stop_waiting`` was called (the connection moved, or the run ends): a delivery that finds this
        breaker open is parked rather than wait, so nothing should say that it waits."""
        return self._stop_waiting is not None

    def stop_waiting(self, why: Literal["moved", "run ends"] = "moved") -> None:
        """The callers waiting for this breaker, and those that find it open from now on, stop waiting
        (``Outage``: their deliveries stay pending): the connection moved, or the service's run ends, and the
        next run sends them. A move stays a move: the run's end that follows a reload (it ends the run) must
        not make a probe in flight at the move, failing after it, park as an outage of the old endpoint."""
        if self._stop_waiting != "moved":
            self._stop_waiting = why
        self._notify()

    async def pause(self, seconds: float) -> bool:
        """Wait ``seconds`` (a retry's backoff, a Retry-After's hold), or less: until a reload moves the
        connection, so that a delivery retrying against the old endpoint follows the move at once, or until
        the run ends (``stop_waiting``), which no backoff holds up. True when the wait was cut short."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            if self._stop_waiting is not None:
                return True
            await self._wait_for_change(left)
        return False

    @staticmethod
    def _due(state: BreakerState, now: float) -> bool:
        """Whether a probe may go now: open past ``retry_at``, or half-open past a lost probe's lease."""
        return (state.phase == "open" and now >= state.retry_at) or (
            state.phase == "half_open" and now >= state.probe_until
        )

    def _claim_probe(self, state: BreakerState, now: float) -> tuple[bool, float]:
        """Whether this caller becomes the probe; if not, how long until one may go (or the probe ends)."""
        if state.phase == "closed":  # closed by another process meanwhile
            return False, 0.0
        if self._due(state, now):
            state.phase = "half_open"
            state.probes += 1
            state.probe_until = now + self._probe_lease
            return True, 0.0
        return False, (state.retry_at if state.phase == "open" else state.probe_until) - now

    async def success(self, admitted: Admission) -> None:
        """An answer that says the destination is up (any status but an outage one) to a request admitted so."""
        state = self._store.breaker(self.name)
        if state.phase == "closed" and state.failures == 0:
            return  # nothing to record: no round trip to a shared store
        if self._shared is None:
            self._close(state, self._clock(), admitted)
            return
        async with self._shared.locked(self.name) as (state, now):
            self._close(state, now, admitted)

    def _close(self, state: BreakerState, now: float, admitted: Admission) -> None:
        if not admitted.current(state):  # sent before the breaker opened: the probe says whether it is up
            return
        if state.phase != "closed":
            self._log.warning(
                "connection %s: circuit breaker closed; sending again after %.1f s",
                self.name,
                now - state.opened_at,
            )
            state.phase = "closed"
            self._notify()
        state.failures = 0

    async def failure(self, reason: str, admitted: Admission, *, refused: bool = False) -> None:
        """An outage failure of a request admitted so. ``refused``: the credentials are refused, which no retry
        fixes: open at once."""
        reason = self._redactor.redact(reason)
        if self._shared is None:
            self._fail(self._store.breaker(self.name), self._clock(), reason, admitted, refused)
            return
        async with self._shared.locked(self.name) as (state, now):
            self._fail(state, now, reason, admitted, refused)

    def _fail(self, state: BreakerState, now: float, reason: str, admitted: Admission, refused: bool) -> None:
        if not admitted.current(state):
            # Sent before the breaker opened (or a probe taken over after its lease, or closed by a reload):
            # the destination's state since is the probe's to say.
            self._log.debug(
                "connection %s: %s of a request sent while the breaker was %s: not counted (it is %s)",
                self.name,
                reason,
                f"half-open (probe {admitted.probe})" if admitted.probe else "closed",
                state.phase.replace("_", "-"),
            )
            return
        if state.phase == "closed":
            state.failures += 1
            if state.failures < self.settings.failures and not refused:
                return
            state.phase = "open"
            state.opened_at = now
            state.cooldown = self.settings.first_cooldown
            state.retry_at = now + state.cooldown
            state.reason = reason
            state.opened += 1
            self._log.warning(
                "connection %s: circuit breaker open after %s; %s, probing in %.1f s",
                self.name,
                reason,
                self._waiting,
                state.cooldown,
            )
            self._notify()
        else:  # half-open, and this was its probe
            state.phase = "open"
            state.cooldown = min(
                max(state.cooldown, self.settings.first_cooldown) * 2, self.settings.cooldown_cap
            )
            state.retry_at = now + state.cooldown
            state.reason = reason
            self._log.info(
                "connection %s: probe failed (%s); next probe in %.1f s", self.name, reason, state.cooldown
            )
            self._notify()

    def now(self) -> float:
        """Now on the clock the record's times are on (a shared store's: the database's, estimated)."""
        return self._shared.now() if self._shared is not None else self._clock()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed[1].set()
            self._changed = None

    async def _wait_for_change(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        if self._changed is None or self._changed[0] is not loop:  # a runtime may run several loops in turn
            self._changed = (loop, asyncio.Event())
        changed = self._changed[1]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(seconds, 0.001)):  # not wait_for: see _serve/_feed.py
                await changed.wait()


class OutageWaits:
    """When the callers of each connection's open breaker stop waiting for it (``admit``'s ``give_up_at``):
    ``outage_wait`` after their run first found it open, so a later run probes again at once. A run's
    deliveries (``Deliverer``) and ``shipmap run``'s enrichment GETs (``Enricher``) count it so. Forgotten once
    the breaker is found closed: the next outage counts from its own start."""

    __slots__ = ("_clock", "since")

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        # When each connection's breaker was first found open; empty while none is (a sender's cheap test).
        self.since: dict[str, float] = {}

    def give_up_at(self, breaker: CircuitBreaker) -> float:
        since = self.since.setdefault(breaker.name, self._clock())
        return since + breaker.settings.outage_wait

    def found_open(self, name: str) -> None:
        self.since.setdefault(name, self._clock())

    def found_closed(self, name: str) -> None:
        self.since.pop(name, None)


__all__ = [
    "Admission",
    "BreakerSettings",
    "BreakerState",
    "CircuitBreaker",
    "MemoryStore",
    "Outage",
    "RateState",
    "SharedStore",
    "StateStore",
    "store_now",
]
