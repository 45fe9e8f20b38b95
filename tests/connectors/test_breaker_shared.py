"""Breaker and max_rate state shared through a real PostgreSQL journal (issue 16): two stores on one database
stand for two worker processes. One worker's open breaker stops the other, one probe goes at a time across
them, a probe whose worker died is taken over after its lease, and rate slots are claimed atomically on the
database's clock."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from shipmap.connectors import Journal, JournalError
from shipmap.connectors._deliver._breaker import BreakerSettings, CircuitBreaker, RateLimiter, SharedStore
from shipmap.connectors._store._breaker_pg import PostgresStateStore

SETTINGS = BreakerSettings(failures=3, cooldown=0.2, cooldown_cap=0.4, outage_wait=60.0)
FAR = float("inf")


async def two_workers(url: str, *, lease: float = 30.0) -> tuple[PostgresStateStore, PostgresStateStore]:
    with Journal(url):  # the schema, as a worker's journal creates it
        pass
    first = await PostgresStateStore.connect(url, ["fenix"], lease=lease, refresh=0.05)
    second = await PostgresStateStore.connect(url, ["fenix"], lease=lease, refresh=0.05)
    return first, second


def record(url: str) -> tuple[str, int, int]:
    with psycopg.connect(url) as db:
        row = db.execute("SELECT phase, opened, probes FROM connection_state WHERE name = 'fenix'").fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def test_one_workers_open_breaker_stops_the_other_and_one_probe_goes_at_a_time(postgres_url: str) -> None:
    async def scenario() -> list[bool]:
        a, b = await two_workers(postgres_url)
        assert isinstance(a, SharedStore)
        one, two = CircuitBreaker("fenix", SETTINGS, store=a), CircuitBreaker("fenix", SETTINGS, store=b)
        try:
            # Failures in a row are counted in the store, whichever worker saw them: the third opens it.
            await one.failure("HTTP 503")
            await two.failure("HTTP 503")
            assert record(postgres_url) == ("closed", 0, 0)
            await one.failure("HTTP 503")
            assert record(postgres_url) == ("open", 1, 0)
            await b.refresh("fenix")
            assert two.is_open  # the other worker sees it open, and its failure changes nothing
            await two.failure("HTTP 503")
            assert record(postgres_url) == ("open", 1, 0)
            # After the cooldown both ask to send: one becomes the probe, the other waits for its outcome.
            first = asyncio.ensure_future(one.admit(FAR))
            second = asyncio.ensure_future(two.admit(FAR))
            done, waiting = await asyncio.wait({first, second}, return_when=asyncio.FIRST_COMPLETED)
            assert len(done) == 1 and done.pop().result() is True
            assert record(postgres_url) == ("half_open", 1, 1)
            await asyncio.sleep(0.3)  # more than a cooldown: still one probe, the other still waits
            assert not waiting.pop().done()
            probe = one if first.done() else two
            await probe.success()
            outcomes = [await asyncio.wait_for(task, 30) for task in (first, second)]
            assert record(postgres_url) == ("closed", 1, 1)
            return outcomes
        finally:
            await a.aclose()
            await b.aclose()

    assert sorted(asyncio.run(scenario())) == [False, True]


def test_a_probe_whose_worker_died_is_taken_over_after_its_lease(postgres_url: str) -> None:
    async def scenario() -> None:
        a, b = await two_workers(postgres_url, lease=0.5)
        one, two = CircuitBreaker("fenix", SETTINGS, store=a), CircuitBreaker("fenix", SETTINGS, store=b)
        try:
            await one.failure("HTTP 401", refused=True)  # refused credentials: open at once
            assert await asyncio.wait_for(one.admit(FAR), 30) is True
            await a.aclose()  # the probing worker dies: its probe never ends
            assert await asyncio.wait_for(two.admit(FAR), 30) is True  # after the probe's lease
            assert record(postgres_url) == ("half_open", 1, 2)
            await two.failure("HTTP 401", probe=True, refused=True)
            assert record(postgres_url)[0] == "open"
        finally:
            await b.aclose()

    asyncio.run(scenario())


def test_rate_slots_are_claimed_atomically_by_many_workers(postgres_url: str) -> None:
    rate, claims = 50.0, 40

    async def scenario() -> tuple[float, float, float]:
        a, b = await two_workers(postgres_url)
        waits: list[float] = []

        async def record_sleep(seconds: float) -> None:
            waits.append(seconds)

        try:
            limiters = [RateLimiter("fenix", rate, store=s, sleep=record_sleep) for s in (a, b)]
            with psycopg.connect(postgres_url) as db:
                before = db.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8").fetchone()
                await asyncio.gather(*(limiters[n % 2].acquire() for n in range(claims)))
                after = db.execute(
                    "SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8, next_free FROM connection_state"
                ).fetchone()
            assert before is not None and after is not None
            assert len(waits) >= claims - 1  # every claim but the first waits for its own slot
            return before[0], after[0], after[1]
        finally:
            await a.aclose()
            await b.aclose()

    before, after, next_free = asyncio.run(scenario())
    # 40 slots, one interval apart, from the first claim on: none given twice, none skipped.
    assert before + claims / rate <= next_free + 1e-6
    assert next_free <= after + claims / rate + 1e-6


def test_a_lost_database_is_a_journal_error(postgres_url: str) -> None:
    async def scenario() -> None:
        a, b = await two_workers(postgres_url)
        await b.aclose()
        with psycopg.connect(postgres_url, autocommit=True) as db:
            db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                "AND datname = current_database()"
            )
        with pytest.raises(JournalError, match="breaker and rate state: PostgreSQL says"):
            await RateLimiter("fenix", 10.0, store=a).acquire()
        await a.aclose()

    asyncio.run(scenario())
