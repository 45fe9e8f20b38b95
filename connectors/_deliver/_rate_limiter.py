"""A rate limiter per connection: how delivery keeps to a vendor's request rate (``max_rate``), and holds every
request of a connection while the API's Retry-After says so. Its state (the next free slot) lives in the
breaker's stores (``_breaker``): this process's, or the PostgreSQL journal's database, shared by workers.
A hold speaks for the server that asked for it (``server_of``): it outlives a limiter that another with the
same server replaces (a reload's, the next run's), never one on another server."""

from __future__ import annotations

import asyncio
import math
import time

import httpx

from ._breaker import Clock, MemoryStore, SharedStore, Sleep, StateStore

Server = tuple[str, str, int | None]  # scheme, host, port


def server_of(url: str) -> Server:
    """The server a URL names (scheme, host, port): whose Retry-After a hold keeps to."""
    parsed = httpx.URL(url)
    return parsed.scheme, parsed.host, parsed.port


class RateLimiter:
    """At most ``rate`` request starts per second on one connection, evenly spaced (no burst); None: no
    spacing. ``hold()`` keeps this limiter's requests from starting for a while: the API answered 429 or 503
    with a Retry-After, which speaks for the API, not for the one request that got it."""

    def __init__(
        self,
        name: str,
        rate: float | None,
        *,
        store: StateStore | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.name = name
        self.rate = rate
        self.interval = 1.0 / rate if rate else 0.0
        self._store = store if store is not None else MemoryStore()
        self._shared = store if isinstance(store, SharedStore) else None
        self._clock = clock
        self._sleep = sleep
        self._held_until = -math.inf  # on ``clock``: no request starts before
        self.waiting = 0  # callers in acquire() now: held, or waiting for their slot

    def share(self, parts: int) -> None:
        """This process takes 1/``parts`` of the rate: ``parts`` processes share the API and not a store that
        spaces their requests (a shared store already hands each process its slots)."""
        if self.rate and self._shared is None:
            self.interval = max(1, parts) / self.rate

    def hold(self, seconds: float) -> None:
        """No request starts for ``seconds`` from now (or later, if a hold already says so)."""
        self._held_until = max(self._held_until, self._clock() + seconds)

    async def hold_everywhere(self, seconds: float) -> None:
        """``hold()``, and with a shared store and a rate, for the other processes too: they claim their slots
        there, so pushing the next free slot holds them at the cost of one round trip. Without a rate they
        ask the store nothing per request, and each holds on its own 429."""
        self.hold(seconds)
        if self._shared is not None and self.interval:
            await self._shared.hold_rate(self.name, seconds)

    def held_for(self) -> float:
        """Seconds left of the hold in force (a Retry-After); 0 when none."""
        return max(0.0, self._held_until - self._clock())

    @property
    def idle(self) -> bool:
        """Nothing to wait for: no rate and no hold in force (a sender may skip ``acquire()``)."""
        return not self.interval and self._held_until <= self._clock()

    async def acquire(self) -> None:
        self.waiting += 1
        try:
            while True:
                while (held := self._held_until - self._clock()) > 0:  # a loop: a hold may grow meanwhile
                    await self._sleep(held)
                if not self.interval:
                    return
                await self._slot()
                if self._held_until <= self._clock():
                    return
                # A hold came while this caller waited for its slot: the slot is given up, and the caller
                # takes a new one after the hold (the callers it held go on spaced, not all at once).
        finally:
            self.waiting -= 1

    async def _slot(self) -> None:
        """Wait for the next free slot, one ``interval`` after the last one claimed."""
        if self._shared is not None:  # the slot is claimed in the shared store, on its clock
            delay = await self._shared.claim_rate(self.name, self.interval)
            if delay > 0:
                await self._sleep(delay)
            return
        state = self._store.rate(self.name)
        now = self._clock()
        start = max(now, state.next_free)
        state.next_free = start + self.interval
        if start > now:
            await self._sleep(start - now)


__all__ = ["RateLimiter", "Server", "server_of"]
