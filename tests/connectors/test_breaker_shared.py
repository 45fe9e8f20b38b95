"""Breaker and max_rate state shared through a real PostgreSQL journal (issue 16): two stores on one database
stand for two worker processes. One worker's open breaker stops the other, one probe goes at a time across
them, a probe whose worker died is taken over after its lease, and rate slots are claimed atomically on the
database's clock. A store whose own connection is lost runs on its worker's copy and reconnects, within a
deadline."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import psycopg
import pytest
from shipmap.connectors import Journal, JournalError, Sandbox
from shipmap.connectors._deliver._breaker import (
    Admission,
    BreakerSettings,
    CircuitBreaker,
    SharedStore,
)
from shipmap.connectors._deliver._rate_limiter import RateLimiter
from shipmap.connectors._store._breaker_pg import (
    APPLICATION_NAME,
    REREAD_TIMEOUT_MS,
    PostgresStateStore,
    breaker_row,
)
from shipmap.connectors._store._journal_pg import STATEMENT_TIMEOUT_MS as JOURNAL_STATEMENT_TIMEOUT_MS
from test_breaker_support import LateFailure, late_failure_under_the_probe

SETTINGS = BreakerSettings(failures=3, cooldown=0.2, cooldown_cap=0.4, outage_wait=60.0)
FAR = float("inf")
FENIX = {"fenix": "https://fenix.example.com/api"}  # the connection and its base_url, as a config names them


async def two_workers(
    url: str, *, lease: float = 30.0, endpoints: dict[str, str] = FENIX
) -> tuple[PostgresStateStore, PostgresStateStore]:
    with Journal(url):  # the schema, as a worker's journal creates it
        pass
    first = await PostgresStateStore.connect(url, endpoints, lease=lease, refresh=0.05)
    second = await PostgresStateStore.connect(url, endpoints, lease=lease, refresh=0.05)
    return first, second


def record(url: str, endpoint: str = FENIX["fenix"]) -> tuple[str, int, int]:
    """The shared breaker of fenix at ``endpoint``, as the database holds it."""
    with psycopg.connect(url) as db:
        row = db.execute(
            "SELECT phase, opened, probes FROM connection_state WHERE name = %s",
            (breaker_row("fenix", endpoint),),
        ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def test_one_workers_open_breaker_stops_the_other_and_one_probe_goes_at_a_time(postgres_url: str) -> None:
    async def scenario() -> list[bool]:
        a, b = await two_workers(postgres_url)
        assert isinstance(a, SharedStore)
        one, two = CircuitBreaker("fenix", SETTINGS, store=a), CircuitBreaker("fenix", SETTINGS, store=b)
        try:
            # Failures in a row are counted in the store, whichever worker saw them: the third opens it.
            await one.failure("HTTP 503", await one.admit(FAR))
            await two.failure("HTTP 503", await two.admit(FAR))
            assert record(postgres_url) == ("closed", 0, 0)
            late = await two.admit(FAR)  # a request of the other worker's, sent while closed, answered late
            await one.failure("HTTP 503", await one.admit(FAR))
            assert record(postgres_url) == ("open", 1, 0)
            await b.refresh("fenix")
            assert two.is_open  # the other worker sees it open, and its late failure changes nothing
            await two.failure("HTTP 503", late)
            assert record(postgres_url) == ("open", 1, 0)
            # After the cooldown both ask to send: one becomes the probe, the other waits for its outcome.
            first = asyncio.ensure_future(one.admit(FAR))
            second = asyncio.ensure_future(two.admit(FAR))
            done, waiting = await asyncio.wait({first, second}, return_when=asyncio.FIRST_COMPLETED)
            assert len(done) == 1
            admitted = done.pop().result()
            assert admitted == Admission(opened=1, probe=1)
            assert record(postgres_url) == ("half_open", 1, 1)
            await asyncio.sleep(0.3)  # more than a cooldown: still one probe, the other still waits
            assert not waiting.pop().done()
            probe = one if first.done() else two
            await probe.success(admitted)
            outcomes = [(await asyncio.wait_for(task, 30)).is_probe for task in (first, second)]
            assert record(postgres_url) == ("closed", 1, 1)
            return outcomes
        finally:
            await a.aclose()
            await b.aclose()

    assert sorted(asyncio.run(scenario())) == [False, True]


def test_a_caller_that_cannot_wait_is_told_at_once_while_another_workers_probe_is_out(
    postgres_url: str,
) -> None:
    """``admit_now()`` (serve's enrichment, which parks a webhook rather than wait): with the probe claimed by
    the other worker it answers None at once, not after that probe and the next cooldown; once the probe is
    answered it finds the breaker closed (False), and an open breaker that is due makes it the probe (True)."""

    async def scenario() -> None:
        a, b = await two_workers(postgres_url)
        one, two = CircuitBreaker("fenix", SETTINGS, store=a), CircuitBreaker("fenix", SETTINGS, store=b)
        try:
            for _ in range(SETTINGS.failures):
                await one.failure("HTTP 503", await one.admit(FAR))
            assert await two.admit_now() is None  # open, its probe not due: no request
            await asyncio.sleep(SETTINGS.cooldown + 0.05)
            first_probe = await one.admit(FAR)
            assert first_probe == Admission(opened=1, probe=1)  # the first worker probes
            async with asyncio.timeout(1.0):  # told at once, though the probe is not answered yet
                assert await two.admit_now() is None
            await one.failure("HTTP 503", first_probe)
            await asyncio.sleep(SETTINGS.cooldown_cap + 0.05)
            second_probe = await two.admit_now()
            assert second_probe == Admission(opened=1, probe=2)  # due: the second worker probes this time
            assert record(postgres_url) == ("half_open", 1, 2)
            assert await one.admit_now() is None
            await two.success(second_probe)
            await asyncio.sleep(a.refresh_seconds + 0.05)  # the first worker's copy is stale: read again
            assert await one.admit_now() == Admission(opened=1)  # closed
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(scenario())


def test_a_breaker_is_shared_per_base_url_and_max_rate_per_connection(postgres_url: str) -> None:
    """A rollout that moves fenix: the workers still on the old base_url share its open breaker; a worker on
    the new one starts closed there and sends, while the max_rate slots stay one sequence for all of them. A
    reload that changes the credentials closes the breaker for every worker on that base_url."""
    moved = {"fenix": "https://fenix-new.example.com/api"}

    async def scenario() -> None:
        old_a, old_b = await two_workers(postgres_url)
        new = await PostgresStateStore.connect(postgres_url, moved, lease=30.0, refresh=0.05)
        old, other = (
            CircuitBreaker("fenix", SETTINGS, store=old_a),
            CircuitBreaker("fenix", SETTINGS, store=old_b),
        )
        fresh = CircuitBreaker("fenix", SETTINGS, store=new)
        try:
            await old.failure("HTTP 401", await old.admit(FAR), refused=True)  # open at once
            assert record(postgres_url) == ("open", 1, 0)
            await old_b.refresh("fenix")
            assert other.is_open  # the same endpoint: the same breaker
            await new.refresh("fenix")
            assert not fresh.is_open and await fresh.admit(FAR) == Admission(
                opened=0
            )  # another endpoint: its own; goes now
            assert record(postgres_url, moved["fenix"]) == ("closed", 0, 0)

            # One rate: a slot claimed through either endpoint's worker moves the same next_free.
            first = await old_a.claim_rate("fenix", 60.0)
            second = await new.claim_rate("fenix", 60.0)
            assert first < 1.0 and 59.0 < second <= 60.0

            await old_b.close_breaker("fenix")  # the credentials changed (a reload): closed for everyone
            assert record(postgres_url) == ("closed", 1, 0)  # its count of openings stays
            await old_a.refresh("fenix")
            assert not old.is_open
        finally:
            for store in (old_a, old_b, new):
                await store.aclose()

    asyncio.run(scenario())
    with psycopg.connect(postgres_url) as db:
        names = [row[0] for row in db.execute("SELECT name FROM connection_state ORDER BY name")]
    assert names == sorted(
        ["fenix", breaker_row("fenix", FENIX["fenix"]), breaker_row("fenix", moved["fenix"])]
    )


def test_a_probe_whose_worker_died_is_taken_over_after_its_lease(postgres_url: str) -> None:
    async def scenario() -> None:
        a, b = await two_workers(postgres_url, lease=0.5)
        one, two = CircuitBreaker("fenix", SETTINGS, store=a), CircuitBreaker("fenix", SETTINGS, store=b)
        try:
            await one.failure("HTTP 401", await one.admit(FAR), refused=True)  # refused: open at once
            assert (await asyncio.wait_for(one.admit(FAR), 30)).is_probe
            await a.aclose()  # the probing worker dies: its probe never ends
            taken_over = await asyncio.wait_for(two.admit(FAR), 30)  # after the probe's lease
            assert taken_over == Admission(opened=1, probe=2)
            assert record(postgres_url) == ("half_open", 1, 2)
            await two.failure("HTTP 401", taken_over, refused=True)
            assert record(postgres_url)[0] == "open"
        finally:
            await b.aclose()

    asyncio.run(scenario())


def test_rate_slots_are_claimed_atomically_by_many_workers(postgres_url: str) -> None:
    # Slots 0.2 s apart: claims made on a loaded machine never outrun them (the sleeps are only recorded).
    rate, claims = 5.0, 40

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
                    " WHERE name = 'fenix'"
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


def terminate_store_backends(url: str) -> int:
    """Ends the breaker store's own backends on ``url``'s database, as an operator's pg_terminate_backend."""
    with psycopg.connect(url, autocommit=True) as db:
        rows = db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s",
            (APPLICATION_NAME,),
        ).fetchall()
    return len(rows)


def test_each_stores_connection_says_in_pg_stat_activity_what_it_holds(postgres_url: str) -> None:
    """An operator looking at pg_stat_activity tells delivery's store from enrichment's, and learns that the
    enrichment one holds breakers too (it was named a "rate store")."""

    async def scenario() -> list[str]:
        with Journal(postgres_url):
            pass
        stores = [
            await PostgresStateStore.connect(postgres_url, FENIX, lease=30.0),
            await PostgresStateStore.connect(postgres_url, FENIX, lease=30.0, enrichment=True),
        ]
        try:
            with psycopg.connect(postgres_url) as db:
                rows = db.execute(
                    "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
                    " AND application_name LIKE 'shipmap%' ORDER BY 1"
                ).fetchall()
            return [row[0] for row in rows]
        finally:
            for store in stores:
                await store.aclose()

    assert asyncio.run(scenario()) == ["shipmap breaker store", "shipmap enrichment breaker and rate store"]


def test_a_lost_connection_falls_back_on_this_workers_copy_and_reconnects(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        a, b = await two_workers(postgres_url)
        one, two = CircuitBreaker("fenix", SETTINGS, store=a), CircuitBreaker("fenix", SETTINGS, store=b)
        try:
            assert terminate_store_backends(postgres_url) == 2
            # Lost: every operation answers from this worker's copy, with no error and no wait for the server.
            assert await one.admit(FAR) == Admission(opened=0)
            for _ in range(SETTINGS.failures):
                await one.failure("HTTP 503", await one.admit(FAR))
            assert one.is_open and not a.connected  # opened here only
            for _ in range(5):
                await RateLimiter("fenix", 1000.0, store=a).acquire()
            await b.refresh("fenix")  # the other worker finds its connection lost too
            await asyncio.wait_for(asyncio.gather(reconnected(a), reconnected(b)), 30)
            # Back: the shared record is read again and wins (it never opened).
            await a.refresh("fenix")
            assert not one.is_open and record(postgres_url) == ("closed", 0, 0)
            # Shared again: a transition here is seen by the other worker.
            await one.failure("HTTP 401", await one.admit(FAR), refused=True)
            assert record(postgres_url) == ("open", 1, 0)
            await b.refresh("fenix")
            assert two.is_open
        finally:
            await a.aclose()
            await b.aclose()

    with caplog.at_level(logging.WARNING, logger="shipmap.connectors.breaker"):
        asyncio.run(scenario())
    said = [r.getMessage() for r in caplog.records]
    # Once per worker, however many operations fell back meanwhile.
    assert sum("lost the connection for breaker and rate state" in m for m in said) == 2, said
    assert sum("breaker and rate state reconnected after" in m for m in said) == 2, said


def test_workers_that_lose_the_database_together_keep_to_max_rate_between_them(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Three workers share max_rate 10/s. With the database away, each spaces its requests on its own clock:
    3 x 0.1 s apart, so the three together still send at most 10 a second."""
    rate, claims = 10.0, 5

    async def unreachable() -> None:  # the server stays down: a real refused connection
        await psycopg.AsyncConnection.connect("postgresql://127.0.0.1:9/none", connect_timeout=2)

    async def scenario() -> list[list[float]]:
        a, b = await two_workers(postgres_url)
        c = await PostgresStateStore.connect(postgres_url, FENIX, lease=30.0, refresh=0.05)
        stores = (a, b, c)
        try:
            for store in stores:
                await store.refresh("fenix")  # a read counts the workers: three store connections
                store._reopen = unreachable
            assert [store.peers for store in stores] == [3, 3, 3]
            assert terminate_store_backends(postgres_url) == 3
            waits: list[list[float]] = []
            for store in stores:
                recorded: list[float] = []

                async def record_sleep(seconds: float, into: list[float] = recorded) -> None:
                    into.append(seconds)

                limiter = RateLimiter("fenix", rate, store=store, sleep=record_sleep)
                for _ in range(claims):
                    await limiter.acquire()
                assert not store.connected
                waits.append([0.0, *recorded])  # the first claim starts at once, without a sleep
            return waits
        finally:
            for store in stores:
                await store.aclose()

    with caplog.at_level(logging.WARNING, logger="shipmap.connectors.breaker"):
        waits = asyncio.run(scenario())
    for worker in waits:
        # Each claim's wait from the first: k x 3 / rate (the claims themselves take a few microseconds).
        assert [round(wait, 2) for wait in worker] == [round(k * 3 / rate, 2) for k in range(claims)], waits
    said = [r.getMessage() for r in caplog.records if "lost the connection" in r.getMessage()]
    assert len(said) == 3 and all(
        "and 1/3 of each max_rate (the share of each of the 3 workers on it)" in m for m in said
    ), said


def test_the_count_of_workers_follows_them_as_they_come_and_go(postgres_url: str) -> None:
    async def scenario() -> list[int]:
        a, b = await two_workers(postgres_url)
        seen = [a.peers, b.peers]  # at connect: a saw itself, b saw both
        await b.aclose()
        give_up = asyncio.get_running_loop().time() + 10.0
        while a.peers != 1 and asyncio.get_running_loop().time() < give_up:  # b's backend ends just after
            await asyncio.sleep(0.06)
            await a.refresh("fenix")
        seen.append(a.peers)
        await a.aclose()
        return seen

    assert asyncio.run(scenario()) == [1, 2, 1]


async def reconnected(store: PostgresStateStore) -> None:
    while not store.connected:
        await asyncio.sleep(0.02)


def test_a_connection_away_past_its_deadline_is_a_journal_error(postgres_url: str) -> None:
    async def scenario() -> None:
        a, b = await two_workers(postgres_url)
        await b.aclose()

        async def refused() -> None:  # the server is unreachable: a real refused connection
            await psycopg.AsyncConnection.connect("postgresql://127.0.0.1:9/none", connect_timeout=2)

        a._reopen, a.reconnect_deadline = refused, 0.5  # as if the server stayed down
        try:
            terminate_store_backends(postgres_url)
            limiter = RateLimiter("fenix", 1000.0, store=a)
            await limiter.acquire()  # lost: falls back, and starts reconnecting
            assert not a.connected

            async def acquire_until_it_fails() -> None:
                while True:  # each acquire falls back until the deadline passes, then it ends the run
                    await limiter.acquire()
                    await asyncio.sleep(0.05)

            with pytest.raises(JournalError, match=r"breaker and rate state: no connection for 0.5 s \(last"):
                await asyncio.wait_for(acquire_until_it_fails(), 60)
        finally:
            await a.aclose()

    asyncio.run(scenario())


def test_a_hold_on_one_worker_delays_the_next_slot_any_worker_claims(postgres_url: str) -> None:
    """A 429's Retry-After on a connection with max_rate is shared: it pushes the next free slot in the
    database, so the other worker's next request waits it out too (its sleeps are only recorded)."""

    async def scenario() -> tuple[list[float], list[float]]:
        a, b = await two_workers(postgres_url)
        waits: dict[str, list[float]] = {"a": [], "b": []}

        def recorder(name: str) -> Callable[[float], Awaitable[None]]:
            async def sleep(seconds: float) -> None:
                waits[name].append(seconds)

            return sleep

        try:
            told = RateLimiter("fenix", 100.0, store=a, sleep=recorder("a"))
            other = RateLimiter("fenix", 100.0, store=b, sleep=recorder("b"))
            await other.acquire()  # a slot now: no wait
            await told.hold_everywhere(2.0)
            await other.acquire()
            return waits["a"], waits["b"]
        finally:
            await a.aclose()
            await b.aclose()

    told_waits, other_waits = asyncio.run(scenario())
    assert told_waits == []  # acquire() was never called on it
    # The other worker's first slot went at once (or one interval later); its second, after the hold.
    assert len(other_waits) >= 1 and 1.8 <= other_waits[-1] <= 2.0 + 1e-6, other_waits


def test_a_reread_that_waits_on_a_locked_table_keeps_the_copy_and_says_so_once(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An idle process's look at its breakers (``CircuitBreaker.look``, what ``Runtime.look_at_breakers`` and
    the enricher's do) waited on a locked ``connection_state`` table for the session's statement_timeout
    (30 s), and that timeout ended the run (a JournalError). It waits ``REREAD_TIMEOUT_MS`` now, keeps the copy
    it had, warns once however often it looks meanwhile, and reads the record once the table answers again."""

    async def scenario() -> tuple[list[float], list[str], str]:
        a, b = await two_workers(postgres_url)
        opener, looker = (
            CircuitBreaker("fenix", SETTINGS, store=a),
            CircuitBreaker("fenix", SETTINGS, store=b),
        )
        try:
            for _ in range(3):
                await opener.failure("HTTP 503", await opener.admit(FAR))
            assert (await looker.look()).phase == "open"
            took: list[float] = []
            with psycopg.connect(postgres_url) as holder:  # closes the breaker, and holds the table meanwhile
                holder.execute("SET lock_timeout = '20s'")
                holder.execute(
                    "UPDATE connection_state SET phase = 'closed', failures = 0 WHERE name = %s",
                    (breaker_row("fenix", FENIX["fenix"]),),
                )
                holder.execute("LOCK TABLE connection_state IN ACCESS EXCLUSIVE MODE")
                phases = []
                for _ in range(2):  # two idle looks while the table is locked
                    await asyncio.sleep(0.06)  # past the store's refresh: the copy is stale
                    started = time.monotonic()
                    phases.append((await looker.look()).phase)
                    took.append(time.monotonic() - started)
                holder.commit()  # the close, and the lock goes
            await asyncio.sleep(0.06)
            after = (await looker.look()).phase
            return took, phases, after
        finally:
            await a.aclose()
            await b.aclose()

    with caplog.at_level(logging.INFO, logger="shipmap.connectors.breaker"):
        took, phases, after = asyncio.run(scenario())
    deadline = REREAD_TIMEOUT_MS / 1000
    # Each look waited for the re-read's 2 s and no longer: ten times it at most, where the store's own
    # statement timeout (60 s) would have held it; the log line below says the server cancelled it at 2 s.
    assert 10 * deadline < JOURNAL_STATEMENT_TIMEOUT_MS / 1000
    assert all(deadline - 0.1 <= seconds < 10 * deadline for seconds in took), took
    assert phases == ["open", "open"]  # the copy it had: the close was not committed yet
    assert after == "closed"  # read again once the table answers
    said = [r.getMessage() for r in caplog.records if r.name == "shipmap.connectors.breaker"]
    late = [line for line in said if "did not answer within 2 s" in line]
    assert len(late) == 1, said
    assert "canceling statement due to statement timeout" in late[0]
    assert "keeps its last copy of each and reads again after 0.05 s" in late[0]
    assert [line for line in said if "breaker records read again after" in line], said


def test_a_request_another_worker_sent_while_closed_that_fails_under_the_probe_changes_nothing(
    postgres_url: str, sandbox: Sandbox
) -> None:
    """The late failure over the real sandbox, across workers: the second worker's request, sent while the
    breaker was closed, fails after the first worker opened it and claimed the probe. It reopened the shared
    breaker and doubled the cooldown under the probe in flight; the record now stays half-open until the
    probe's success closes it."""
    settings = BreakerSettings(failures=1, cooldown=0.1, cooldown_cap=10.0)

    async def scenario() -> LateFailure:
        a, b = await two_workers(postgres_url, endpoints={"dg": sandbox.url})
        prober, late = CircuitBreaker("dg", settings, store=a), CircuitBreaker("dg", settings, store=b)
        try:
            return await late_failure_under_the_probe(sandbox, late, prober)
        finally:
            await a.aclose()
            await b.aclose()

    seen = asyncio.run(scenario())
    assert seen.probe_in_flight
    after = seen.after_late_failure
    assert (after.phase, after.opened, after.probes, after.cooldown) == ("half_open", 1, 1, 0.1)
    assert (seen.after_probe.phase, seen.after_probe.opened, seen.after_probe.cooldown) == ("closed", 1, 0.1)


def test_a_probe_that_outlived_its_lease_does_not_decide_for_the_probe_that_took_over(
    postgres_url: str,
) -> None:
    """A probe whose answer took longer than its lease (not dead: slow) was taken over by another worker's
    probe; its late failure changes nothing, and the probe in flight decides."""

    async def scenario() -> list[tuple[str, int, int]]:
        a, b = await two_workers(postgres_url, lease=0.3)
        one, two = CircuitBreaker("fenix", SETTINGS, store=a), CircuitBreaker("fenix", SETTINGS, store=b)
        try:
            await one.failure("HTTP 401", await one.admit(FAR), refused=True)  # open at once
            slow_probe = await asyncio.wait_for(one.admit(FAR), 30)
            taken_over = await asyncio.wait_for(two.admit(FAR), 30)  # after the slow probe's lease
            assert (slow_probe.probe, taken_over.probe) == (1, 2)
            seen = [record(postgres_url)]
            await one.failure("Timeout", slow_probe)
            seen.append(record(postgres_url))
            await two.success(taken_over)
            seen.append(record(postgres_url))
            return seen
        finally:
            await a.aclose()
            await b.aclose()

    assert asyncio.run(scenario()) == [("half_open", 1, 2), ("half_open", 1, 2), ("closed", 1, 2)]
