"""A PostgreSQL journal whose statement or transaction loses (a real deadlock, a session the server ended, a
worker frozen holding row locks): run again, whole, on a new session where needed; bounded, and an error that
is not a conflict is never run again."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from shipmap.connectors import Journal, JournalError, RunSummary, Runtime, Sandbox
from shipmap.connectors._store._claims import claim_pending, holds
from shipmap.connectors._store._journal_pg import TransactionConflict
from test_journal import pending
from test_runtime_support import environ, order_event, write_config


def test_a_statement_that_loses_a_deadlock_outside_a_transaction_is_run_again(postgres_url: str) -> None:
    # Two workers locking the same rows in opposite orders: PostgreSQL ends one statement (40P01). The
    # journal's autocommit statement is the one that loses here, and it must be run again, not fail the run.
    import threading

    from shipmap.connectors._store._journal_pg import PostgresConnection

    with psycopg.connect(postgres_url, autocommit=True) as setup:
        setup.execute("CREATE TABLE rows (k INT PRIMARY KEY, v INT NOT NULL)")
        setup.execute("INSERT INTO rows VALUES (1, 0), (2, 0)")
    store = PostgresConnection(postgres_url, readonly=False)
    store_pid = store.execute("SELECT pg_backend_pid()").fetchone()[0]
    other = psycopg.connect(postgres_url, autocommit=True)
    # Its own autocommit connection: inside other's open transaction pg_stat_activity is one frozen snapshot.
    watcher = psycopg.connect(postgres_url, autocommit=True)
    try:
        other.execute("SET deadlock_timeout = '30s'")  # so the deadlock is found by the store's statement
        other.execute("BEGIN")
        other.execute("UPDATE rows SET v = v + 10 WHERE k = 1")
        outcome: list[object] = []

        def lock_both() -> None:
            try:  # locks row 2, then waits for row 1
                outcome.append(
                    store.execute(
                        "SELECT k FROM rows WHERE k IN (1, 2) ORDER BY k DESC FOR UPDATE"
                    ).fetchall()
                )
            except JournalError as error:
                outcome.append(error)

        thread = threading.Thread(target=lock_both)
        thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the store's statement is waiting for row 1
            waiting = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
                (store_pid,),
            ).fetchone()
            if waiting and waiting[0]:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the store's statement never waited for row 1: no deadlock was set up")
        other.execute("UPDATE rows SET v = v + 10 WHERE k = 2")  # waits for row 2: a deadlock
        other.execute("COMMIT")
        thread.join(60)
        assert outcome == [[(2,), (1,)]]
        assert other.execute("SELECT v FROM rows ORDER BY k").fetchall() == [(10,), (10,)]
    finally:
        watcher.close()
        other.close()
        store.close()


def test_a_transaction_that_loses_a_deadlock_is_run_again_whole(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Two workers' transactions lock the same two rows in opposite orders: a real deadlock. PostgreSQL rolls
    # one back whole; its runner runs the whole transaction again (after the winner commits), and both land.
    import threading

    with Journal(postgres_url) as setup:
        pending(setup, "k1")
        pending(setup, "k2")
    both_hold_one = threading.Barrier(2, timeout=30)
    runs = {"a": 0, "b": 0}
    errors: list[BaseException] = []

    def worker(name: str, first: str, second: str) -> None:
        with Journal(postgres_url) as journal:

            def body() -> None:
                runs[name] += 1
                journal.mark_resolved(first, f"by {name}")
                if runs[name] == 1:
                    both_hold_one.wait()  # each holds one row: the second statements deadlock
                journal.mark_resolved(second, f"by {name}")

            try:
                journal.run_transaction(body)
            except BaseException as error:
                errors.append(error)

    threads = [
        threading.Thread(target=worker, args=("a", "k1", "k2")),
        threading.Thread(target=worker, args=("b", "k2", "k1")),
    ]
    with caplog.at_level("INFO", logger="shipmap.journal"):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert errors == []
    assert sorted(runs.values()) == [1, 2]  # the loser ran once more, whole; the winner once
    loser = "a" if runs["a"] == 2 else "b"
    with Journal(postgres_url, readonly=True) as journal:
        # The loser's second run came after the winner's commit: it wrote both rows last, atomically.
        assert [journal.get(key).reason for key in ("k1", "k2")] == [f"by {loser}"] * 2  # type: ignore[union-attr]
    assert any("deadlock detected" in r.getMessage() and "running the whole transaction again" in r.getMessage()
               for r in caplog.records)  # fmt: skip


def test_a_transaction_whose_idle_session_the_server_ended_runs_again_on_a_new_one(postgres_url: str) -> None:
    # The server ends a session idle inside a transaction for a lease (idle_in_transaction_session_timeout),
    # so a stopped worker cannot hold row locks longer. A worker that was merely starved past it (alive, its
    # transaction rolled back) reconnects and runs the transaction again: the run goes on.
    with Journal(postgres_url, lease=1.0) as journal:
        pending(journal, "k1")
        backend = journal._db.execute("SELECT pg_backend_pid()").fetchone()[0]
        runs = 0

        def body() -> int:
            nonlocal runs
            runs += 1
            journal.mark_resolved("k1", f"run {runs}")
            if runs == 1:  # stalled inside the transaction until the server has ended the session
                with psycopg.connect(postgres_url, autocommit=True) as watcher:
                    deadline = time.monotonic() + 60
                    while watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                                          (backend,)).fetchone()[0]:  # fmt: skip
                        assert time.monotonic() < deadline, "the server never ended the idle session"
                        time.sleep(0.05)
            return runs  # the commit finds the session gone

        assert journal.run_transaction(body) == 2
        entry = journal.get("k1")
        assert runs == 2 and entry is not None and (entry.state, entry.reason) == ("resolved", "run 2")


def test_a_transaction_that_keeps_losing_ends_as_a_journal_error(postgres_url: str) -> None:
    from shipmap.connectors._store._journal import TRANSACTION_TRIES
    from shipmap.connectors._store._journal_pg import TransactionConflict

    with Journal(postgres_url) as journal:
        runs = 0

        def body() -> None:
            nonlocal runs
            runs += 1
            journal._db.execute("SELECT 1/0")  # not a conflict: never run again

        with pytest.raises(JournalError, match="division by zero") as raised:
            journal.run_transaction(body)
        assert runs == 1 and not isinstance(raised.value, TransactionConflict)

        def conflicting() -> None:
            nonlocal runs
            runs += 1
            journal._db.execute("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '40001'; END $$")

        runs = 0
        with pytest.raises(TransactionConflict):
            journal.run_transaction(conflicting)
        assert runs == TRANSACTION_TRIES  # bounded
        assert journal.counts() == {}


def test_a_run_whose_batch_loses_a_real_deadlock_journals_it_again_and_delivers_everything(
    tmp_path: Path, sandbox: Sandbox, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Another session holds the second event's delivery row; the run's batch transaction writes the first
    # one's and waits for the second, then the other session asks for the first: a deadlock, which the run's
    # session detects (its deadlock_timeout is the shorter), so the run's whole batch is rolled back after it
    # had scheduled both deliveries. The run journals the batch again with its own state put back: both
    # events are delivered, none taken for a repeat and skipped.
    import threading

    from shipmap.connectors._store._journal import delivery_key, source_hash

    database = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {database} SET deadlock_timeout = '3s'")
    with Journal(postgres_url):  # the schema
        pass
    events = [order_event(1), order_event(2)]
    digests = [source_hash(event["payload"]) for event in events]
    first, second = (delivery_key("acme-orders", "order", digest) for digest in digests)
    with psycopg.connect(postgres_url, autocommit=True) as setup:
        for digest in digests:
            setup.execute("INSERT INTO sources (hash, doc) VALUES (%s, '{}')", (digest,))
    row = "INSERT INTO deliveries (key, source_hash, mapping, target, state, created_at, updated_at) "
    row += "VALUES (%s, %s, 'acme-orders', 'order', 'pending', 0, 0)"
    config = write_config(tmp_path, sandbox.url, journal={"url": postgres_url, "lease": "30s"})
    runtime = Runtime.from_config(config, environ=environ(sandbox.url))
    other = psycopg.connect(postgres_url, autocommit=True)
    result: dict[str, object] = {}
    try:
        other.execute("SET deadlock_timeout = '60s'")
        other.execute("BEGIN")
        other.execute(row, (second, digests[1]))

        def run() -> None:
            try:
                result["summary"] = runtime.run(events)
            except BaseException as error:
                result["error"] = error

        thread = threading.Thread(target=run)
        with caplog.at_level("INFO", logger="shipmap.journal"):
            thread.start()
            deadline = time.monotonic() + 60
            with psycopg.connect(
                postgres_url, autocommit=True
            ) as watcher:  # (a transaction sees one snapshot)
                while not watcher.execute(  # until the run's batch waits for the second row
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                ).fetchone()[0]:  # type: ignore[index]
                    assert time.monotonic() < deadline, ("the run never waited for the other session", result)
                    time.sleep(0.02)
            other.execute(row, (first, digests[0]))  # the deadlock
            other.execute("ROLLBACK")
            thread.join(120)
        assert "error" not in result, result
        summary = result["summary"]
        assert isinstance(summary, RunSummary)
        assert (summary.delivered, summary.skipped, summary.dead) == (2, 0, 0)
        assert sorted(r.order_id for r in sandbox.requests(endpoint="fenix.orders")) == ["1001", "1002"]
        assert any("deadlock detected" in r.getMessage() and "whole transaction again" in r.getMessage()
                   for r in caplog.records)  # fmt: skip
        with Journal(postgres_url, readonly=True) as journal:
            assert journal.counts() == {"delivered": 2}
            assert [journal.state(key) for key in (first, second)] == ["delivered", "delivered"]
    finally:
        other.close()


def test_a_worker_frozen_mid_statement_holding_row_locks_is_ended_after_a_lease(postgres_url: str) -> None:
    # A paused worker (SIGSTOP, a frozen VM) caught between the rows of a pipelined executemany: the server
    # ran the first row's statement in A's transaction (its row lock held) and waits for the next message, so
    # the session is not idle in a transaction and idle_in_transaction_session_timeout never ends it. Another
    # worker that waits a lease for that lock ends the stuck session and goes on (before: 60 s, then failed).
    with Journal(postgres_url, lease=1.0) as a, Journal(postgres_url, lease=1.0) as b:
        pending(a, "k1")
        frozen, wake = threading.Event(), threading.Event()
        failures: list[BaseException] = []

        def rows() -> Iterator[tuple[object, ...]]:
            yield (time.time() + 1.0, "k1")
            frozen.set()  # the first row ran; the pipeline has no Sync yet
            wake.wait(120)
            yield (time.time() + 1.0, "k1")

        def stuck() -> None:
            try:
                with a.transaction(), a._db._conn.cursor() as cursor:
                    cursor.executemany("UPDATE deliveries SET lease_until = %s WHERE key = %s", rows())
            except BaseException as error:  # recorded, asserted below
                failures.append(error)

        thread = threading.Thread(target=stuck)
        thread.start()
        try:
            assert frozen.wait(60)
            with psycopg.connect(postgres_url, autocommit=True) as watcher:
                deadline = time.monotonic() + 60
                while not watcher.execute(
                    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
                    " WHERE c.relname = 'deliveries' AND l.mode = 'RowExclusiveLock' AND l.granted"
                ).fetchone()[0]:
                    assert time.monotonic() < deadline, "A's statement never ran"
                    time.sleep(0.01)
            pending(b, "k1")  # the row A locked: B waits a lease, ends A's session, runs its statement again
        finally:
            wake.set()
            thread.join(60)
        # A, woken, finds its session gone: to its journal a conflict whose transaction runs again whole on a
        # new session (Journal.run_transaction); its row lock went with it, and B's write stands.
        assert len(failures) == 1 and isinstance(failures[0], psycopg.OperationalError), failures
        conflict = a._db._fault(failures[0], True)
        assert isinstance(conflict, TransactionConflict) and conflict.reconnect
        # B waited a lease, so A's lease has lapsed too: B takes the row over (SKIP LOCKED: a lock still held
        # would hide it).
        assert [entry.key for entry in claim_pending(b)] == ["k1"] and holds(b, "k1")
