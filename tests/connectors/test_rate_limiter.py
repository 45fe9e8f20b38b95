"""``RateLimiter``'s holds (a Retry-After that speaks for the whole API) and shares (1/N of the rate when N
serve processes fetch from one API), on a clock the test moves. The limit on the wire, over real HTTP, is in
``tests/connectors/serve/test_enrich_rate.py``."""

from __future__ import annotations

import asyncio

from shipmap.connectors._deliver._breaker import MemoryStore
from shipmap.connectors._deliver._rate_limiter import RateLimiter
from test_breaker_support import Clock


def _starts(limiter: RateLimiter, clock: Clock, count: int) -> list[float]:
    async def go() -> list[float]:
        starts = []
        for _ in range(count):
            await limiter.acquire()
            starts.append(round(clock.now, 6))
        return starts

    return asyncio.run(go())


def test_a_limiter_shared_by_two_processes_spaces_its_requests_twice_as_far() -> None:
    clock = Clock()
    limiter = RateLimiter("store", 4.0, store=MemoryStore(), clock=clock, sleep=clock.sleep)
    limiter.share(2)
    assert _starts(limiter, clock, 3) == [0.0, 0.5, 1.0]
    limiter.share(1)  # the other process stopped
    assert _starts(limiter, clock, 3) == [1.5, 1.75, 2.0]


def test_a_hold_delays_the_next_requests_with_or_without_a_rate() -> None:
    clock = Clock()
    unlimited = RateLimiter("store", None, store=MemoryStore(), clock=clock, sleep=clock.sleep)
    assert _starts(unlimited, clock, 2) == [0.0, 0.0]  # no rate: nothing waits
    unlimited.hold(1.5)
    unlimited.hold(0.5)  # a shorter hold does not shorten the one in force
    assert _starts(unlimited, clock, 2) == [1.5, 1.5]
    assert unlimited.waiting == 0

    limited = RateLimiter("other", 2.0, store=MemoryStore(), clock=clock, sleep=clock.sleep)
    limited.hold(2.0)  # from 1.5: until 3.5, then spaced by the rate again
    assert _starts(limited, clock, 3) == [3.5, 4.0, 4.5]
