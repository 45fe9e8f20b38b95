"""Workers sharing a journal on a real PostgreSQL server: leases, claims and fencing (a late answer changes
nothing), the marks and pending rows written one statement per 500, the end of a shared run waiting for what
others hold, and the indexes these statements read."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time

import psycopg
import pytest
from shipmap.connectors import Journal, JournalError, RunSummary
from shipmap.connectors._redact import Redactor, get_logger
from shipmap.connectors._store import _leases
from shipmap.connectors._store._claims import (
    claim_pending,
    holds,
    pending_counts,
    pending_elsewhere,
    pending_holders,
    release_leases,
    renew_leases,
)
from shipmap.connectors._store._leases import LeaseKeeper
from shipmap.connectors._store._outbox import Outbox
from test_journal import pending
from test_runtime_support import recorded_statements


def _row(key: str, digest: str = "d" * 64) -> tuple[str, ...]:
    return (key, digest, "m", "t", "fenix", f"sm-{key}", "POST", "http://127.0.0.1/x", '{"id":"1"}', "in:1")


def test_workers_share_a_journal_under_leases_and_a_late_answer_changes_nothing(postgres_url: str) -> None:
    with Journal(postgres_url, lease=0.5) as a, Journal(postgres_url, lease=0.5) as b:
        with a.transaction():
            a.put_source("d" * 64, '{"id":1}')
            assert a.mark_pending_many([_row("k1"), _row("k2")]) == {"k1", "k2"}
        with b.transaction():  # the same events read by a second worker: A holds them, B sends nothing
            assert b.mark_pending_many([_row("k1"), _row("k2")]) == set()
        assert claim_pending(b) == [] and pending_elsewhere(b) == 2
        assert renew_leases(a) == {"k1", "k2"}
        time.sleep(0.7)  # A stalls past its lease (SIGSTOP, a long GC pause, a lost network)
        taken = claim_pending(b)
        assert [entry.key for entry in taken] == ["k1", "k2"]
        assert [entry.idempotency_key for entry in taken] == ["sm-k1", "sm-k2"]  # the same request again
        assert claim_pending(b) == []  # claimed once: SKIP LOCKED and the new lease keep the others off
        assert b.mark_delivered_many([("k1", 201, 1)]) == 1
        # A wakes up: its answers are late. Its marks, its dead letters and its renewals change nothing.
        assert not holds(a, "k2")
        assert a.mark_delivered_many([("k1", 500, 3), ("k2", 201, 1)]) == 0
        assert a.mark_dead("k2", source_digest="d" * 64, mapping="m", target="t", reason="late") is False
        assert renew_leases(a) == set() and pending_elsewhere(a) == 1
        entry = b.get("k1")
        assert entry is not None and (entry.state, entry.status, entry.attempts) == ("delivered", 201, 1)
        assert b.state("k2") == "pending" and holds(b, "k2")
        with Journal(postgres_url, readonly=True) as reader:
            assert reader.counts() == {"delivered": 1, "pending": 1}
            with pytest.raises(JournalError, match="read-only"):
                reader.put_source("a", "{}")


def test_many_delivered_marks_are_one_statement_per_500_and_fenced_row_by_row(postgres_url: str) -> None:
    """A worker's marks cost one round trip per 500, not one each (bench_workers counts them per delivery);
    more than 500 are one transaction; each row still gets its own status and attempts, and a row another
    worker holds is left alone."""
    keys = [f"k{n}" for n in range(600)]
    with Journal(postgres_url, lease=30) as a, Journal(postgres_url, lease=30) as b:
        with a.transaction():
            a.put_source("d" * 64, '{"id":1}')
            assert a.mark_pending_many([_row(key) for key in keys[:-1]]) == set(keys[:-1])
        with b.transaction():
            assert b.mark_pending_many([_row(keys[-1])]) == {keys[-1]}
        statements: list[str] = []
        execute = a._db.execute

        def counted(sql: str, parameters: object = ()) -> object:
            statements.append(sql)
            return execute(sql, parameters)

        a._db.execute = counted  # type: ignore[method-assign]
        marks = [(key, 200 + n % 3, 1 + n % 4) for n, key in enumerate(keys)]
        assert a.mark_delivered_many(marks[:50]) == 50
        assert [sql.split()[0] for sql in statements] == ["UPDATE"]  # one statement, autocommitted
        statements.clear()
        assert a.mark_delivered_many(marks[50:]) == 549  # the last row is B's
        assert [sql.split()[0] for sql in statements] == ["BEGIN", "UPDATE", "UPDATE", "COMMIT"]
        assert [(e.status, e.attempts) for e in map(a.get, ("k0", "k1", "k2", "k598")) if e] == [
            (200, 1), (201, 2), (202, 3), (201, 3)
        ]  # fmt: skip
        assert a.counts() == {"delivered": 599, "pending": 1} and holds(b, keys[-1])
        with a.transaction():  # some rows not taken (B's live lease, a delivered row): not A's
            assert a.mark_pending_many([_row("new"), _row(keys[-1]), _row("k0")]) == {"new"}


def test_many_pending_rows_are_one_statement_per_500_that_returns_the_rows_taken(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shared journal writes a batch's pending rows in one upsert per 500 that returns the keys it took, and
    asks nothing afterwards: the query that asked which keys this worker held read every row it leased (on
    the index of leased rows), so a batch cost more the more rows were pending (0.10 ms a delivery at 5,000,
    0.45 at 20,000). A row another worker holds under a live lease, or a delivered one, is not taken; a dead
    one, one whose lease expired, one nobody holds and one this worker holds are; a key twice is one row."""
    with Journal(postgres_url, lease=30) as a, Journal(postgres_url, lease=30) as b:
        with b.transaction():
            b.put_source("d" * 64, '{"id":1}')
            assert b.mark_pending_many([_row(key) for key in ("theirs", "expired", "released")]) == {
                "theirs",
                "expired",
                "released",
            }
        pending(b, "delivered")
        assert b.mark_delivered_many([("delivered", 200, 1)]) == 1
        b.mark_dead("dead", source_digest="d" * 64, mapping="m", target="t", reason="HTTP 400")
        b._db.execute("UPDATE deliveries SET lease_until = 1 WHERE key = 'expired'")
        b._db.execute("UPDATE deliveries SET lease_owner = NULL, lease_until = NULL WHERE key = 'released'")
        with a.transaction():
            assert a.mark_pending_many([_row("mine")]) == {"mine"}
        statements = recorded_statements(a, monkeypatch)
        fresh = [f"new{n:04d}" for n in range(1100)]
        known = ["theirs", "expired", "released", "delivered", "dead", "mine"]
        batch = [_row(key) for key in (*known, *fresh, "mine")]
        with a.transaction():
            taken = a.mark_pending_many(batch)
        assert taken == {"expired", "released", "dead", "mine", *fresh}
        assert [sql.split()[0] for sql, _ in statements] == ["BEGIN", "INSERT", "INSERT", "INSERT", "COMMIT"]
        assert a.counts() == {"pending": 1105, "delivered": 1}
        assert {key for key in (*known, *fresh) if (entry := a.get(key)) and entry.state == "pending"} == {
            "theirs",
            *taken,
        }
        assert renew_leases(a) == taken and renew_leases(b) == {"theirs"}
        # A pipelined statement's rows changed, as sqlite3 counts them (its cursor, closed, would say -1).
        touched = a._db.executemany(
            "UPDATE deliveries SET attempts = 0 WHERE key = ?", [("mine",), ("nope",)]
        )
        assert touched.rowcount == 1


def _journal_parked(journal: Journal, count: int) -> None:
    """``count`` pending deliveries of fenix, ``parked00000`` on, each to its own URL, of one source document."""
    many = [(f"parked{n:05d}", "d" * 64, "m", "t", "fenix", None, "POST", f"http://x/{n}", "{}", None)
            for n in range(count)]  # fmt: skip

    def parked() -> None:
        journal.put_sources([("d" * 64, "{}")])
        journal.mark_pending_many(many)

    journal.run_transaction(parked)


def test_the_end_of_a_shared_run_past_the_count_cap_waits_while_others_deliver_and_stops_when_none_move(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The end of a shared run polls a count capped at ``ELSEWHERE_CAP``, which cannot move while more wait:
    there it counts every one, a third of a lease apart, so a worker delivering above the cap is waited for
    (it was not moving for three leases by the capped count), and a stuck one still ends the wait, with the
    exact number in the warning."""
    monkeypatch.setattr(_leases, "ELSEWHERE_CAP", 5)
    lease = 0.4
    with (
        Journal(postgres_url, lease=lease) as journal,
        psycopg.connect(postgres_url, autocommit=True) as other,
    ):
        _journal_parked(journal, 12)
        journal._db.execute("UPDATE deliveries SET lease_owner = 'other', lease_until = 4e9")
        keeper = LeaseKeeper(Outbox(journal, None, {}, RunSummary(), get_logger("test", Redactor())))  # type: ignore[arg-type]
        stop = threading.Event()

        def deliver() -> None:  # 12 in 3 s: 7 of them above the cap, longer than three leases (1.2 s)
            for n in range(12):
                if stop.wait(0.25):
                    return
                other.execute("UPDATE deliveries SET state = 'delivered' WHERE key = %s", (f"parked{n:05d}",))

        delivering = threading.Thread(target=deliver)
        delivering.start()
        try:
            started = time.monotonic()
            assert asyncio.run(keeper.wait_for_others(asyncio.Queue(), patience=60)) == []
            assert time.monotonic() - started > 2.5  # it waited for the last one
        finally:
            stop.set()
            delivering.join(10)

        # Pending again, held by a live worker that sends nothing.
        journal._db.execute(
            "UPDATE deliveries SET state = 'pending', lease_owner = 'stuck', lease_until = 4e9"
        )
        with caplog.at_level(logging.WARNING):
            held = asyncio.run(keeper.wait_for_others(asyncio.Queue(), patience=60))
        assert [(row.worker, row.deliveries) for row in held] == [("stuck", 12)]
        assert "12 deliveries are still pending, held by other live workers" in caplog.text
        assert "(none moved for three leases)" in caplog.text


def test_a_worker_renews_and_releases_its_leases_on_the_index_of_leased_deliveries(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A look of serve at parked work ends by releasing the worker's leases, and the lease keeper renews them
    every third of a lease: with 100,000 parked (released, held by nobody) each read every pending row to find
    the worker's few (~85 ms). Now release and renew read the index of leased pending rows, and a claim of a
    connection's oldest rows reads the index of pending rows by connection; the statements as the functions
    word them (EXPLAIN, with the statistics of a journal that holds many parked rows)."""
    with Journal(postgres_url) as journal:
        _journal_parked(journal, 3000)
        journal._db.execute(
            "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL"
        )  # parked: released
        journal._db.execute("ANALYZE deliveries")
        statements = recorded_statements(journal, monkeypatch)
        claimed = claim_pending(journal, limit=2, connections=["fenix"])
        assert [entry.key for entry in claimed] == ["parked00000", "parked00001"]
        assert renew_leases(journal) == {"parked00000", "parked00001"}
        assert release_leases(journal) == 2
        assert renew_leases(journal) == set()
        assert pending_counts(journal, held_here=True) == {}
        [claim, renew, release, *_] = statements
        monkeypatch.undo()
        plans = {
            name: "\n".join(str(row[0]) for row in journal._db.execute(f"EXPLAIN {sql}", parameters))
            for name, (sql, parameters) in {"claim": claim, "renew": renew, "release": release}.items()
        }
    assert "Index Scan using deliveries_pending on deliveries" in plans["claim"], plans["claim"]
    assert "Index Cond: ((state = 'pending'::text) AND (connection = 'fenix'::text))" in plans["claim"]
    for name in ("renew", "release"):
        assert "Index Scan using deliveries_leased on deliveries" in plans[name], plans[name]
        assert "Seq Scan" not in plans[name], plans[name]


def test_the_end_of_a_shared_run_counts_what_others_hold_on_indexes(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shared run's end polls how many pending deliveries others hold, or nobody (four times a second), and
    names their holders when it stops waiting: with 100,000 parked each poll read every pending row from the
    table (~80-160 ms). Now the pending rows are counted on an index of pending rows, without the table once
    vacuum has seen it, and the leased ones read on the index of leased rows; the counts are the same."""
    with Journal(postgres_url) as journal:
        _journal_parked(journal, 3000)
        execute = journal._db.execute
        execute("UPDATE deliveries SET lease_owner = NULL, lease_until = NULL")  # parked: released
        execute("UPDATE deliveries SET lease_owner = 'w1', lease_until = 4e9 WHERE key < 'parked00005'")
        execute("UPDATE deliveries SET lease_owner = 'w2', lease_until = 5e9 WHERE key > 'parked02997'")
        execute(
            "UPDATE deliveries SET lease_owner = ? WHERE key IN ('parked01000', 'parked01001')",
            (journal.worker,),
        )
        journal.mark_delivered_many([("parked01002", 200, 1)])  # not pending: not counted
        execute("VACUUM ANALYZE deliveries")
        statements = recorded_statements(journal, monkeypatch)
        assert pending_elsewhere(journal) == 2997  # 3,000, less this worker's 2 and the delivered one
        assert pending_holders(journal) == [(None, 2990, None), ("w1", 5, 4e9), ("w2", 2, 5e9)]
        assert pending_elsewhere(journal, cap=None) == 2997
        # Up to a cap: exact below it, the cap when at least that many wait, whatever this worker holds.
        assert [pending_elsewhere(journal, cap) for cap in (2998, 2997, 2996, 7)] == [2997, 2997, 2996, 7]
        journal.worker = "w1"
        assert pending_elsewhere(journal) == 2994
        assert [pending_elsewhere(journal, cap) for cap in (2995, 2994, 7)] == [2994, 2994, 7]
        assert pending_holders(journal)[0] == (None, 2990, None)
        [elsewhere, holders, every, capped, *_] = statements
        monkeypatch.undo()
        plans = {
            name: "\n".join(str(row[0]) for row in execute(f"EXPLAIN {sql}", parameters))
            for name, (sql, parameters) in {
                "elsewhere": elsewhere,
                "holders": holders,
                "every": every,
                "capped": capped,
            }.items()
        }
    for plan in plans.values():
        assert "Seq Scan" not in plan, plan
        # The pending rows counted on an index (by state, or of pending rows: the planner's pick), not read.
        assert re.search(
            r"Index Only Scan using deliveries_(state|pending|pending_url) on deliveries ", plan
        ), plan
        assert "using deliveries_leased on deliveries" in plan, plan
