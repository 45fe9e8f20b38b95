"""A delivery that failed some attempts before its connection's breaker opened keeps them when it is parked
(a run's end, a stop): the journal adds them to its row, as it does for a delivery interrupted in a backoff,
and the next run counts them towards ``max_attempts`` once the breaker closes (docs/runtime.md). And a stop
that lands in the shared breaker's database write after an attempt keeps that attempt.

A live service over HTTP; the sandbox's fault injection answers Fenix ``503`` as the test says; PostgreSQL is
the test server (``make postgres``)."""

from __future__ import annotations

from pathlib import Path

import httpx
from shipmap.connectors import FaultPlan, Journal, Sandbox
from shipmap.connectors._store._breaker_pg import APPLICATION_NAME
from shipmap.connectors._store._database import NoJournalError

from .harness import ServeProcess, moving_nothing, on_postgres, post_order, with_drain_timeout

FENIX = "  fenix:\n    api: fenix\n"
WAITING = "waiting for the circuit breaker of fenix"


def _configure(serve: ServeProcess, cooldown: str, drain: str = "30s") -> str:
    """Fenix's breaker opens at 3 failures in a row and probes after ``cooldown`` (the fixture's retries: 4
    attempts, 50 ms backoff); returns the config with one change that moves no connection (a reload of it
    ends the run in progress, and nothing else)."""
    text = serve.config.read_text()
    assert text.count(FENIX) == 1
    breaker = f"    breaker: {{failures: 3, cooldown: {cooldown}, cooldown_cap: {cooldown}}}\n"
    text = with_drain_timeout(text.replace(FENIX, FENIX + breaker), drain)
    serve.config.write_text(text)
    return moving_nothing(text)


def _entries(url: str) -> list[tuple[str, int]]:
    try:
        with Journal(url, readonly=True) as journal:
            return sorted((e.state, e.attempts) for e in journal.entries())
    except NoJournalError:  # the service makes it at its first run
        return []


def _failed_twice_then_opened(serve: ServeProcess) -> None:
    """Attempts 1 and 2 fail and count; attempt 3's failure opens the breaker (it does not count)."""
    serve.wait_until(lambda: serve.said(WAITING) > 0, timeout=30, what="the breaker opened by attempt 3")
    assert serve.said("attempt 2 failed (HTTP 503") == 1, serve.errors[-10:]
    assert serve.said("attempt 3 failed (HTTP 503") == 1, serve.errors[-10:]


def test_a_reload_keeps_the_attempts_of_a_delivery_parked_at_its_open_breaker(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """The delivery waits at Fenix's open breaker (10 s cooldown) after 2 counted attempts when a reload ends
    the run: it is parked with those 2 in its row (it kept none before), and once the breaker closes the next
    run delivers it: 3 attempts in the journal (1 before)."""
    source_sandbox.set_faults(FaultPlan(schedule=("503", "503", "503")), api="fenix")
    serve = ServeProcess(tmp_path, source_sandbox.url)
    reloaded = _configure(serve, cooldown="10s")
    serve.start()
    try:
        with httpx.Client(timeout=10) as client:
            post_order(serve, client, 7_500_001, "parked7500001")
            _failed_twice_then_opened(serve)
            serve.reload(reloaded)
            assert serve.attempts() == [("pending", 2)]
            serve.wait_until(lambda: serve.attempts() == [("delivered", 3)], timeout=40, what="the probe")
        assert serve.terminate() == 0
    finally:
        serve.kill()
    assert len(source_sandbox.requests(endpoint="fenix.orders")) == 1
    assert serve.said("dead letter") == 0, serve.errors[-10:]


def test_a_stop_keeps_the_attempts_of_a_delivery_waiting_at_its_open_breaker(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """``SIGTERM`` with a 2 s ``drain_timeout`` while the delivery waits at Fenix's open breaker (60 s cooldown)
    after 2 counted attempts: the deadline cancels the wait, and the row keeps the 2 (it kept none before).
    The next start goes on with them: delivered at its first attempt there, 3 in all."""
    source_sandbox.set_faults(FaultPlan(schedule=("503", "503", "503")), api="fenix")
    serve = ServeProcess(tmp_path, source_sandbox.url)
    _configure(serve, cooldown="60s", drain="2s")
    serve.start()
    try:
        with httpx.Client(timeout=10) as client:
            post_order(serve, client, 7_500_002, "parked7500002")
            _failed_twice_then_opened(serve)
        assert serve.terminate() == 0
        assert serve.attempts() == [("pending", 2)]
        said = "left pending at the stop waiting for its connection's open circuit breaker"
        assert serve.said(said) == 1, "".join(serve.errors)
        serve.errors.clear()
        serve.start()
        serve.wait_until(lambda: serve.attempts() == [("delivered", 3)], timeout=30, what="the next start")
        assert serve.terminate() == 0
    finally:
        serve.kill()
    assert len(source_sandbox.requests(endpoint="fenix.orders")) == 1


def test_a_stop_in_the_shared_breakers_write_after_an_attempt_keeps_it(
    source_sandbox: Sandbox, tmp_path: Path, postgres_url: str
) -> None:
    """On a PostgreSQL journal the breaker's failure is a database write. Once a first order is delivered (the
    run has made Fenix's breaker row), the test holds that row locked, so that the write waits on it after a
    second order's first attempt's 503, and ``SIGTERM`` with a 2 s ``drain_timeout`` cancels it there: the
    row keeps the attempt (it kept none before), and the next start delivers the order, 2 attempts in all."""
    import psycopg

    source_sandbox.set_faults(FaultPlan(schedule=("ok", "503")), api="fenix")
    serve = ServeProcess(tmp_path, source_sandbox.url)
    _configure(serve, cooldown="60s", drain="2s")
    serve.config.write_text(on_postgres(serve.config.read_text(), postgres_url))
    serve.start()
    try:
        with psycopg.connect(postgres_url) as lock, httpx.Client(timeout=10) as client:
            post_order(serve, client, 7_500_003, "parked7500003")
            serve.wait_until(lambda: _entries(postgres_url) == [("delivered", 1)], timeout=30,
                             what="the first order")  # fmt: skip
            rows = lock.execute("SELECT name FROM connection_state WHERE name LIKE 'fenix %' FOR UPDATE")
            assert len(rows.fetchall()) == 1
            post_order(serve, client, 7_500_004, "parked7500004")

            def waits_for_the_row() -> bool:
                with psycopg.connect(postgres_url, autocommit=True) as look:
                    found = look.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                        " AND wait_event_type = 'Lock'",
                        (APPLICATION_NAME,),
                    ).fetchone()
                return found is not None and found[0] == 1

            serve.wait_until(waits_for_the_row, timeout=30, what="the breaker's write after the 503")
            assert serve.terminate() == 0
            lock.rollback()
        assert _entries(postgres_url) == [("delivered", 1), ("pending", 1)]
        said = "left pending at the stop recording an attempt's answer in its connection's circuit breaker"
        assert serve.said(said) == 1, "".join(serve.errors)
        serve.errors.clear()
        serve.start()
        serve.wait_until(lambda: _entries(postgres_url) == [("delivered", 1), ("delivered", 2)], timeout=30,
                         what="the next start")  # fmt: skip
        assert serve.terminate() == 0
    finally:
        serve.kill()
    assert len(source_sandbox.requests(endpoint="fenix.orders")) == 2  # a 503 is not recorded
