"""The journal on a real PostgreSQL server (started by `make test`), and moving between backends: the same
states and keys as SQLite, schema versions and `shipmap journal migrate`, `shipmap journal copy`."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from shipmap.connectors import ConfigError, Journal, JournalError, RunSummary, Runtime, Sandbox
from shipmap.connectors._cli import main
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
from shipmap.connectors._store._entries import JournalEntry
from shipmap.connectors._store._journal import MIGRATIONS, SCHEMA_VERSION
from shipmap.connectors._store._journal_pg import TransactionConflict
from shipmap.connectors._store._leases import LeaseKeeper
from shipmap.connectors._store._moves import (
    Stranded,
    count_pending,
    move_pending,
    stranded,
)
from shipmap.connectors._store._outbox import Outbox
from test_journal import pending
from test_runtime_support import environ, order_event, recorded_statements, write_config

PASSWORD = "pg-secret-never-printed"  # the test server trusts loopback, so any password connects


def with_password(url: str) -> str:
    return url.replace("postgres@", f"postgres:{PASSWORD}@", 1)


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "journal.db")
    else:
        yield request.getfixturevalue("postgres_url")


def test_both_backends_resolve_by_hand_alike(location: str) -> None:
    from shipmap.connectors._store._resolve import resolve_by_hand

    with Journal(location) as journal:
        for key in ("abc123aa", "abc123bb", "ffff0000"):
            pending(journal, key)
            journal.mark_dead(key, source_digest="d" * 64, mapping="m", target="t", reason="HTTP 400")
        journal.record_rejected("in.ndjson:7", "not JSON", "{x")
        done = resolve_by_hand(journal, ["abc123", "in.ndjson:7", "in.ndjson:8", "ffff0000"], "test orders")
        assert done.dead == {"abc123": ["abc123aa", "abc123bb"], "ffff0000": ["ffff0000"]}
        assert done.dead_count == {"abc123": 2, "ffff0000": 1}
        assert (done.rejected, done.unmatched) == (["in.ndjson:7"], ["in.ndjson:8"])
        entry = journal.get("abc123bb")
        assert entry is not None and entry.state == "resolved"
        assert entry.reason == "resolved by hand: test orders; its dead letter's reason: HTTP 400"
        assert journal.counts() == {"resolved": 3} and journal.rejected() == []
        assert resolve_by_hand(journal, ["abc123"], "again").unmatched == [
            "abc123"
        ]  # only what is still dead


def test_both_backends_keep_a_pending_rows_attempts_as_its_retry_budget_until_a_replay_or_a_move(
    location: str,
) -> None:
    """A run that ends while a delivery waits to retry adds the attempts it made to its pending row; the next
    run goes on from there. A replay of a dead letter and a move to another base_url start it over."""
    with Journal(location) as journal:
        pending(journal, "k")
        journal.add_attempts("k", 2)
        pending(journal, "k")  # the same event journaled again while it is pending: the budget stays
        assert (entry := journal.get("k")) is not None and (entry.state, entry.attempts) == ("pending", 2)
        assert move_pending(journal, "fenix", "http://127.0.0.1", "http://127.0.0.2") == 1
        assert (entry := journal.get("k")) is not None
        assert (entry.url, entry.attempts) == ("http://127.0.0.2/x", 0)
        journal.add_attempts("k", 1)
        journal.mark_dead("k", source_digest="d" * 64, mapping="m", target="t", reason="x", attempts=2)
        journal.add_attempts("k", 5)  # a dead row is no budget: left as it is
        assert (entry := journal.get("k")) is not None and (entry.state, entry.attempts) == ("dead", 3)
        pending(journal, "k")  # a replay
        assert (entry := journal.get("k")) is not None and (entry.state, entry.attempts) == ("pending", 0)


def _claimed(journal: Journal) -> list[JournalEntry]:
    """The pending rows as a claim reads them: nobody's, or (a shared journal) those this worker holds."""
    return claim_pending(journal) or claim_pending(journal, held_here=True)


def test_both_backends_keep_the_rest_of_a_pending_rows_wait_until_a_replay_or_a_move(location: str) -> None:
    """A run's end or a stop that cuts a delivery's wait short records when it ends (``not_before``) and the
    failure it retries; the worker that claims the row next reads them (``Outbox.recover`` waits out the
    rest). The same event journaled again keeps them; a move to another base_url or a replay drops them."""
    with Journal(location) as journal:
        pending(journal, "k")
        [claimed] = _claimed(journal)
        assert (claimed.not_before, claimed.reason) == (None, None)
        journal.add_attempts("k", 1, not_before=4e9, failed="HTTP 503 Service Unavailable")
        pending(journal, "k")  # the same event again while it is pending
        [claimed] = _claimed(journal)
        assert (claimed.attempts, claimed.not_before, claimed.reason) == (
            1,
            4e9,
            "HTTP 503 Service Unavailable",
        )
        assert journal.get("k") is not None  # an entry read elsewhere does not need the column
        assert move_pending(journal, "fenix", "http://127.0.0.1", "http://127.0.0.2") == 1
        [claimed] = _claimed(journal)
        assert (claimed.attempts, claimed.not_before, claimed.reason) == (0, None, None)
        journal.add_attempts("k", 2, not_before=4e9)  # a Retry-After's hold: no failure of its own
        journal.mark_dead("k", source_digest="d" * 64, mapping="m", target="t", reason="x", attempts=1)
        pending(journal, "k")  # a replay: its budget and its wait start over
        [claimed] = _claimed(journal)
        assert (claimed.state, claimed.attempts, claimed.not_before, claimed.reason) == (
            "pending",
            0,
            None,
            None,
        )


def test_both_backends_keep_the_same_states_keys_and_records(location: str) -> None:
    with Journal(location) as journal:
        pending(journal, "k1")
        pending(journal, "abc123", idempotency_key="first")
        assert journal.state("k1") == "pending"
        journal.mark_delivered_many([("k1", 201, 2)])
        entry = journal.get("k1")
        assert entry is not None and (entry.state, entry.status, entry.attempts) == ("delivered", 201, 2)
        assert entry.payload == {"id": "1"} and entry.idempotency_key == "sm-1"
        journal.mark_dead("abc123", source_digest="d" * 64, mapping="m", target="t", reason="HTTP 400",
                          status=400, response_excerpt="{}", attempts=1)  # fmt: skip
        pending(journal, "abc123", idempotency_key="second")  # a replay keeps the recorded key
        assert journal.lookup(["k1", "abc123", "nope"]) == {
            "k1": ("delivered", "sm-1"),
            "abc123": ("pending", "first"),
        }
        journal.mark_dead("abc123", source_digest="d" * 64, mapping="m", target="t", reason="again")
        assert [d.key for d in journal.dead_letters(["abc"])] == ["abc123"]
        journal.mark_resolved("abc123", "replayed")
        assert journal.counts() == {"delivered": 1, "resolved": 1}
        journal.put_source("a" * 64, "{}")
        journal.record_unrouted("a" * 64, "in:1")
        journal.record_unrouted("a" * 64, "in:2")
        journal.record_rejected("in:3", "not JSON", "{oops")
        assert journal.unrouted_count() == 1
        assert [(r.origin, r.excerpt) for r in journal.rejected()] == [("in:3", "{oops")]
        assert journal.source("d" * 64) == {"id": 1}
        with pytest.raises(RuntimeError), journal.transaction():  # one commit, or nothing
            pending(journal, "rolled-back")
            raise RuntimeError("stop")
        assert journal.state("rolled-back") is None
        assert journal.schema_version() == SCHEMA_VERSION


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


def test_an_unreachable_server_is_a_journal_error_without_the_password() -> None:
    url = f"postgresql://shipmap:{PASSWORD}@127.0.0.1:1/shipmap"
    with pytest.raises(
        JournalError, match=r"cannot open journal postgresql://shipmap@127.0.0.1:1/shipmap"
    ) as error:
        Journal(url)
    assert PASSWORD not in str(error.value)


def test_a_read_that_fails_on_a_postgresql_journal_says_nothing_was_changed(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """journal info and dead-letters said 'journal write failed ... sent again by the next run' for a read."""
    with psycopg.connect(postgres_url, autocommit=True) as db:  # a store whose tables are half there
        db.execute("CREATE TABLE meta (k text PRIMARY KEY, v text)")
        db.execute("INSERT INTO meta VALUES ('schema_version', %s)", (str(SCHEMA_VERSION),))
    for command in (["journal", "info", postgres_url], ["dead-letters", "--journal", postgres_url]):
        assert main(command) == 7
        assert capsys.readouterr().err == (
            f'error: journal read failed {postgres_url}: PostgreSQL says: relation "deliveries" does not '
            "exist. Nothing was changed: the journal was only being read\n"
        ), command


def _v1_store(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as db:
        for statement in MIGRATIONS["postgresql"][0].split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute("INSERT INTO meta (k, v) VALUES ('schema_version', '1')")


def test_a_postgresql_store_is_upgraded_by_journal_migrate_only(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _v1_store(postgres_url)
    with pytest.raises(
        JournalError,
        match=f"schema version 1; this shipmap needs {SCHEMA_VERSION}: run `shipmap journal migrate",
    ):
        Journal(postgres_url)
    with Journal(postgres_url, readonly=True) as reader:  # an older store can still be read
        assert reader.schema_version() == 1 and reader.counts() == {}
    assert main(["journal", "migrate", with_password(postgres_url)]) == 0
    assert main(["journal", "migrate", with_password(postgres_url)]) == 0
    assert main(["journal", "info", with_password(postgres_url)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        f"{postgres_url}: schema version 1 -> {SCHEMA_VERSION}",
        f"{postgres_url}: schema version {SCHEMA_VERSION}, up to date",
        f"{postgres_url}: postgresql, schema version {SCHEMA_VERSION}; no deliveries",
    ]
    assert PASSWORD not in out
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("UPDATE meta SET v = %s WHERE k = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(
        JournalError, match=f"schema version {SCHEMA_VERSION + 1} was written by a newer shipmap"
    ):
        Journal(postgres_url)


def _v4_store(location: str) -> None:
    """A store as shipmap wrote it at schema version 4 (no index on rejected origins), with one rejection."""
    _older_store(
        location,
        4,
        "INSERT INTO rejected (origin, reason, excerpt, at) VALUES ('shop#7', 'enrichment failed: 403', NULL, 1)",
    )


def _older_store(location: str, version: int, *rows: str) -> None:
    """A store as shipmap wrote it at schema ``version``, holding ``rows`` (INSERT statements)."""
    backend = "sqlite" if not location.startswith("postgresql://") else "postgresql"
    statements = [s for step in MIGRATIONS[backend][:version] for s in step.split(";") if s.strip()] + [
        f"INSERT INTO meta (k, v) VALUES ('schema_version', '{version}')",
        *rows,
    ]
    if backend == "sqlite":
        with sqlite3.connect(location) as db:
            for statement in statements:
                db.execute(statement)
        db.close()
    else:
        with psycopg.connect(location, autocommit=True) as pg:
            for statement in statements:
                pg.execute(statement)


def test_a_store_of_version_4_gains_the_index_on_rejected_origins(
    location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """SQLite: upgraded by the writer that opens it; PostgreSQL: refused until `shipmap journal migrate`."""
    _v4_store(location)
    if location.startswith("postgresql://"):
        with pytest.raises(JournalError) as refused:
            Journal(location)
        assert refused.value.message == (
            f"journal {location} has schema version 4; this shipmap needs {SCHEMA_VERSION}: run `shipmap "
            f"journal migrate {location}` (with its password) once, then start the workers"
        )
        assert main(["dead-letters", "--journal", location, "--resolve", "shop#7", "--reason", "x"]) == 7
        assert capsys.readouterr().err == f"error: {refused.value.message}\n"
        with Journal(location, readonly=True) as reader:  # an older store can still be read
            assert reader.schema_version() == 4 and reader.rejected_origins() == {"shop#7"}
        assert main(["journal", "migrate", with_password(location)]) == 0
        assert capsys.readouterr().out == f"{location}: schema version 4 -> {SCHEMA_VERSION}\n"
        with psycopg.connect(location) as pg:
            [indexed] = pg.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'rejected_origin'")
        assert indexed[0].endswith("ON public.rejected USING btree (origin)")
    with Journal(location) as journal:
        assert journal.schema_version() == SCHEMA_VERSION
        if journal.backend == "sqlite":
            assert journal.upgraded_from == 4
            plan = " ".join(
                str(row[-1])
                for row in journal._db.execute(
                    "EXPLAIN QUERY PLAN UPDATE rejected SET at = 2 WHERE origin = 'shop#7' AND reason = 'x'"
                ).fetchall()
            )
            assert "USING INDEX rejected_origin (origin=?)" in plan
        journal.record_rejected("shop#7", "enrichment failed: 403", None)  # the same record: still one row
        journal.record_rejected("shop#8", "enrichment failed: 403", None)
        assert [(r.origin, r.at > 1) for r in journal.rejected()] == [("shop#7", True), ("shop#8", True)]
        journal.resolve_rejections(["shop#7"])
        assert journal.rejected_origins() == {"shop#8"}


def test_a_store_of_version_5_gains_the_index_of_pending_deliveries_by_connection(
    location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Version 6: a look at parked work counts a down connection's pending deliveries, and claims a few of
    them, on this index; an upgraded store has it, and its pending rows are found by it."""
    rows = [
        "INSERT INTO sources (hash, doc) VALUES ('doc', '{}')",
        *(
            "INSERT INTO deliveries (key, source_hash, mapping, target, connection, state, method, url, payload,"
            f" created_at, updated_at) VALUES ('k{n}', 'doc', 'm', 't', '{name}', 'pending', 'POST', 'http://x/',"
            f" '{{}}', {n}, {n})"
            for n, name in enumerate(["fenix", "dg", "fenix", "fenix"])
        ),
    ]
    _older_store(location, 5, *rows)
    if location.startswith("postgresql://"):
        assert main(["journal", "migrate", with_password(location)]) == 0
        assert capsys.readouterr().out == f"{location}: schema version 5 -> {SCHEMA_VERSION}\n"
        with psycopg.connect(location) as pg:
            [indexed] = pg.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'deliveries_pending'")
        assert indexed[0].endswith(
            "USING btree (state, connection, created_at, key) WHERE (state = 'pending'::text)"
        ), indexed
    with Journal(location) as journal:
        assert journal.schema_version() == SCHEMA_VERSION
        if journal.backend == "sqlite":
            assert journal.upgraded_from == 5
            [(indexed,)] = journal._db.execute(
                "SELECT sql FROM sqlite_master WHERE name = 'deliveries_pending'"
            )
            assert "(state, connection, updated_at, key) WHERE state = 'pending'" in indexed, indexed
        assert pending_counts(journal) == {"fenix": 3, "dg": 1}
        assert [e.key for e in claim_pending(journal, limit=2, connections=["fenix"])] == ["k0", "k2"]


def test_a_store_of_version_6_gains_the_index_of_pending_deliveries_by_url(
    location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Version 7: a run finds what waits for another base URL on this index (in byte order on PostgreSQL,
    whatever the database's collation); an upgraded store has it, and finds them by it."""
    rows = [
        "INSERT INTO sources (hash, doc) VALUES ('doc', '{}')",
        *(
            "INSERT INTO deliveries (key, source_hash, mapping, target, connection, state, method, url, payload,"
            f" created_at, updated_at) VALUES ('k{n}', 'doc', 'm', 't', 'fenix', 'pending', 'POST', '{url}',"
            f" '{{}}', {n}, {n})"
            for n, url in enumerate(["http://new/a", "http://old/b", "http://new/c"])
        ),
    ]
    _older_store(location, 6, *rows)
    if location.startswith("postgresql://"):
        assert main(["journal", "migrate", with_password(location)]) == 0
        assert capsys.readouterr().out == f"{location}: schema version 6 -> {SCHEMA_VERSION}\n"
        with psycopg.connect(location) as pg:
            [indexed] = pg.execute(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'deliveries_pending_url'"
            )
        assert indexed[0].endswith(
            "USING btree (connection, url COLLATE \"C\") WHERE (state = 'pending'::text)"
        ), indexed
    with Journal(location) as journal:
        assert journal.schema_version() == SCHEMA_VERSION
        if journal.backend == "sqlite":
            assert journal.upgraded_from == 6
            [(indexed,)] = journal._db.execute(
                "SELECT sql FROM sqlite_master WHERE name = 'deliveries_pending_url'"
            )
            assert "(state, connection, url) WHERE state = 'pending'" in indexed, indexed
        assert stranded(journal, {"fenix": "http://new"}) == [Stranded("fenix", 1, "http://old/b")]


def test_a_store_of_version_7_gains_the_index_of_leased_deliveries_on_postgresql(
    location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Version 8: a worker renews and releases its leases on an index of the leased pending rows (PostgreSQL
    only; SQLite's step is empty): an upgraded store has it, and a worker's leases are found by it."""
    rows = [
        "INSERT INTO sources (hash, doc) VALUES ('doc', '{}')",
        *(
            "INSERT INTO deliveries (key, source_hash, mapping, target, connection, state, method, url, payload,"
            f" lease_owner, lease_until, created_at, updated_at) VALUES ('k{n}', 'doc', 'm', 't', 'fenix',"
            f" '{state}', 'POST', 'http://x/', '{{}}', {owner}, 4e9, {n}, {n})"
            for n, (state, owner) in enumerate(
                [
                    ("pending", "'other'"),
                    ("pending", "NULL"),
                    ("delivered", "'other'"),
                    ("pending", "'other'"),
                ]
            )
        ),
    ]
    _older_store(location, 7, *rows)
    if location.startswith("postgresql://"):
        with pytest.raises(JournalError) as refused:
            Journal(location)
        assert (
            f"has schema version 7; this shipmap needs {SCHEMA_VERSION}: run `shipmap journal migrate"
            in str(refused.value)
        )
        assert main(["journal", "migrate", with_password(location)]) == 0
        captured = capsys.readouterr()
        assert captured.out == f"{location}: schema version 7 -> {SCHEMA_VERSION}\n"
        assert PASSWORD not in captured.out + captured.err
        with psycopg.connect(location) as pg:
            [indexed] = pg.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'deliveries_leased'")
            assert indexed[0].endswith(
                "USING btree (lease_owner) WHERE ((state = 'pending'::text) AND (lease_owner IS NOT NULL))"
            ), indexed
    with Journal(location) as journal:
        assert journal.schema_version() == SCHEMA_VERSION
        if journal.backend == "sqlite":
            assert journal.upgraded_from == 7
            assert journal._db.execute(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'deliveries_leased'"
            ).fetchone() == (0,)
            return
        journal.worker = "other"  # the rows' holder: its two pending leases, not the delivered row's
        assert renew_leases(journal) == {"k0", "k3"}
        assert release_leases(journal) == 2
        assert renew_leases(journal) == set()
        assert pending_counts(journal) == {"fenix": 3}


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


def test_an_sqlite_journal_of_version_1_is_upgraded_when_a_run_opens_it(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS["sqlite"][0])
    db.execute("INSERT INTO meta (k, v) VALUES ('schema_version', '1')")
    db.commit()
    db.close()
    with Journal(path, readonly=True) as reader:
        assert reader.schema_version() == 1
    with Journal(path) as journal:
        assert journal.schema_version() == SCHEMA_VERSION
        pending(journal, "k")
    columns = {row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(deliveries)")}
    assert {"lease_owner", "lease_until"} <= columns


def test_journal_copy_moves_an_sqlite_run_into_postgresql_and_runs_resume_there(
    tmp_path: Path, sandbox: Sandbox, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, sandbox.url)
    events = [order_event(n) for n in range(6)] + [order_event(99, email=None)]  # one breaks fenix.order
    summary = Runtime.from_config(config).run(events)
    assert (summary.delivered, summary.dead) == (6, 1)
    sqlite_path = tmp_path / "journal.db"
    with Journal(sqlite_path) as journal:
        journal.record_rejected("in.ndjson:9", "not JSON", "{oops")
    url = with_password(postgres_url)
    assert main(["journal", "copy", str(sqlite_path), url]) == 0
    out = capsys.readouterr().out
    assert (
        out.strip()
        == f"copied {sqlite_path} -> {postgres_url}: 7 sources, 7 deliveries, 0 unrouted, 1 rejected"
    )
    with Journal(sqlite_path, readonly=True) as old, Journal(postgres_url, readonly=True) as new:
        assert list(new.entries()) == list(old.entries())
        assert new.rejected() == old.rejected()
    assert main(["journal", "copy", str(sqlite_path), url]) == JournalError.exit_code
    assert (
        "is not empty (7 sources, 7 deliveries, 1 rejected); copy into an empty store"
        in capsys.readouterr().err
    )

    # The same config, pointed at PostgreSQL: everything delivered is skipped, the dead letter stays dead.
    sandbox.reset()
    moved = write_config(tmp_path, sandbox.url, journal=url)
    again = Runtime.from_config(moved).run(events)
    assert (again.delivered, again.skipped, again.dead) == (0, 7, 0)
    assert sandbox.requests() == []
    assert main(["dead-letters", str(moved)]) == 0
    listed = capsys.readouterr().out
    assert "fenix.order" in listed and PASSWORD not in listed


def test_a_config_names_a_postgresql_journal_by_url(tmp_path: Path, postgres_url: str) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9", journal={"url": with_password(postgres_url)})
    runtime = Runtime.from_config(config)
    assert runtime.config.journal.location == with_password(postgres_url)
    assert runtime.redactor.redact(with_password(postgres_url)).count(PASSWORD) == 0
    both = write_config(tmp_path, "http://127.0.0.1:9", journal={"url": postgres_url, "path": "j.db"})
    with pytest.raises(ConfigError, match=r"takes path \(an SQLite file\) or url \(PostgreSQL\), not both"):
        Runtime.from_config(both)
    wrong = write_config(tmp_path, "http://127.0.0.1:9", journal="mysql://db/x")
    with pytest.raises(ConfigError, match="journal: must be a postgresql:// URL, or a mapping with path"):
        Runtime.from_config(wrong)
    wrong = write_config(tmp_path, "http://127.0.0.1:9", journal={"url": "mysql://db/x"})
    with pytest.raises(ConfigError, match=r"journal\.url: must be a postgresql:// URL"):
        Runtime.from_config(wrong)
    short = write_config(tmp_path, "http://127.0.0.1:9", journal=postgres_url)  # the whole section as a URL
    assert Runtime.from_config(short).config.journal.url == postgres_url


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


def test_both_backends_hand_a_replay_its_dead_letters_a_page_at_a_time(location: str) -> None:
    """A replay pages through the dead letters there were when it started, by (updated_at, key): one that
    dies again during it (written later) is not handed over twice. The same query on SQLite and PostgreSQL."""
    with Journal(location) as journal:
        for number in range(5):
            pending(journal, f"dead{number}")
            journal.mark_dead(f"dead{number}", source_digest="d" * 64, mapping="m", target="t", reason="400")
        pages = journal.dead_letter_pages(limit=2)
        first = next(pages)
        assert [entry.key for entry in first] == ["dead0", "dead1"]
        time.sleep(0.01)  # the replay dies again on dead0: rewritten after the replay started
        pending(journal, "dead0")
        journal.mark_dead("dead0", source_digest="d" * 64, mapping="m", target="t", reason="400 again")
        rest = [entry.key for page in pages for entry in page]
        assert rest == ["dead2", "dead3", "dead4"]
        only = journal.dead_letter_pages(["dead3"], limit=2)
        assert [[entry.key for entry in page] for page in only] == [["dead3"]]


def test_both_backends_count_dead_letters_by_key_prefix_and_page_rejected_records(location: str) -> None:
    """What `shipmap dead-letters` and `shipmap replay` read: a count (not the rows) and the rejected input
    records a page at a time, in the order they were recorded."""
    with Journal(location) as journal:
        for key in ("abc1", "abc2", "abd3", "x_%4"):
            pending(journal, key)
            journal.mark_dead(key, source_digest="d" * 64, mapping="m", target="t", reason="400")
        pending(journal, "abc9")  # pending, not dead: not counted
        assert journal.dead_letter_count() == 4
        assert journal.dead_letter_count(["abc"]) == 2
        assert journal.dead_letter_count(["abc", "abd3", "abc1"]) == 3  # overlapping prefixes count once
        assert journal.dead_letter_count(["x_%"]) == 1  # a prefix is text, not a LIKE pattern
        assert journal.dead_letter_count(["x_"]) == 1 and journal.dead_letter_count(["x%"]) == 0
        assert journal.dead_letter_count(["zzz"]) == 0
        for line in range(1, 6):
            journal.record_rejected(f"in.ndjson:{line}", "not JSON", "{broken")
        pages = [[bad.origin for bad in page] for page in journal.rejected_pages(limit=2)]
        assert pages == [["in.ndjson:1", "in.ndjson:2"], ["in.ndjson:3", "in.ndjson:4"], ["in.ndjson:5"]]


def test_both_backends_resolve_rejections_in_one_statement_per_500_origins(location: str) -> None:
    """A run that reads many rejected records again (``replay --rejected`` of a store API's outage) resolves
    them together. One DELETE per origin, on a table with no index on ``origin``, read the whole table once
    per origin: 10,000 took 3.1 s on PostgreSQL. One statement per 500 now, on both backends."""
    with Journal(location) as journal:
        with journal.transaction():
            for row in range(1, 1202):
                journal.record_rejected(f"bc#{row}", "enrichment failed: HTTP 404", None)
            journal.record_rejected("bc#1", "enrichment failed: HTTP 403", None)  # two reasons, one origin
            journal.record_rejected("bc#12020", "enrichment failed: HTTP 404", None)
            journal.record_rejected("events.ndjson:3", "not JSON", "{broken")
        statements: list[str] = []
        execute, executemany = journal._db.execute, journal._db.executemany

        def counted(sql: str, parameters: object = ()) -> object:
            statements.append(sql)
            return execute(sql, parameters)

        def counted_many(sql: str, rows: list[object]) -> object:
            statements.extend(sql for _ in rows)
            return executemany(sql, rows)

        journal._db.execute = counted  # type: ignore[method-assign]
        journal._db.executemany = counted_many  # type: ignore[method-assign]
        with journal.transaction():
            journal.resolve_rejections({f"bc#{row}" for row in range(1, 1202)})
        assert [sql.split()[0] for sql in statements] == ["BEGIN", "DELETE", "DELETE", "DELETE", "COMMIT"]
        assert sorted(journal.rejected_origins()) == ["bc#12020", "events.ndjson:3"]
        statements.clear()
        journal.resolve_rejections(set())
        assert statements == []


def test_what_waits_for_another_base_url_is_found_on_the_index_of_pending_urls(location: str) -> None:
    """Every run asks whether a connection's pending deliveries include some journaled for another base URL:
    a look of serve at parked work read the URL of each of a down connection's pending rows to find none
    (56 ms at 100,000 on SQLite, 85 ms on PostgreSQL, at every look). Now only the URLs before the base's
    range and after it are read, on the index of pending rows by URL; the bounds are exact in byte order
    (a base that another extends, /api and /api2; a URL past ASCII)."""
    base = "http://x.example/api"
    with Journal(location) as journal:
        for n, url in enumerate(
            [
                f"{base}/v1/orders/1",
                f"{base}/v1/é/2",  # within: past ASCII
                f"{base}/~",  # within: the last ASCII character
                "http://x.example/ap/3",  # before the base's range
                "http://x.example/api-v2/4",  # '-' sorts before '/': before
                "http://x.example/api2/5",  # after
                "http://x.example/api0",  # the range's end itself: after
            ]
        ):
            pending(journal, f"k{n}", url=url)
        pending(journal, "dg", url="http://elsewhere/x", connection="dg")
        [left] = stranded(journal, {"fenix": base, "dg": "http://elsewhere/"})
        assert left == Stranded("fenix", 4, "http://x.example/ap/3")
        assert count_pending(journal, "fenix", base + "/") == 3
        statements: list[tuple[str, tuple[object, ...]]] = []
        execute = journal._db.execute

        def recorded(sql: str, parameters: tuple[object, ...] = ()) -> object:
            statements.append((sql, parameters))
            return execute(sql, parameters)

        journal._db.execute = recorded  # type: ignore[method-assign]
        try:
            stranded(journal, {"fenix": base})
        finally:
            journal._db.execute = execute  # type: ignore[method-assign]
        [(sql, parameters)] = statements
        if journal.shared:  # PostgreSQL plans by its statistics: of a connection with rows enough to choose
            many = [(f"many{n}", "d" * 64, "m", "t", "fenix", None, "POST", f"{base}/{n}", "{}", None)
                    for n in range(2000)]  # fmt: skip
            journal.run_transaction(lambda: journal.mark_pending_many(many))
            execute("ANALYZE deliveries")
            plan = "\n".join(str(row[0]) for row in execute(f"EXPLAIN {sql}", parameters))
            assert plan.count("Index Only Scan using deliveries_pending_url") == 2, plan
            assert "Index Cond: ((connection = 'fenix'::text) AND (url < " in plan, plan
            assert "Index Cond: ((connection = 'fenix'::text) AND (url >= " in plan, plan
        else:
            plan = "\n".join(str(row[-1]) for row in execute(f"EXPLAIN QUERY PLAN {sql}", parameters))
            assert "USING COVERING INDEX deliveries_pending_url (state=? AND connection=? AND url<?)" in plan
            assert "USING COVERING INDEX deliveries_pending_url (state=? AND connection=? AND url>?)" in plan


def test_both_backends_move_a_connections_pending_deliveries_to_its_new_base_url(location: str) -> None:
    """A reload moved a connection: its pending deliveries journaled for the old base_url go to the new one,
    the rest of each URL kept; delivered ones, other connections' and other bases' stay as they are."""
    with Journal(location) as journal:
        pending(journal, "p1", url="http://old.example/api/v1/orders/1/created")
        pending(journal, "p2", url="http://old.example/api/v1/orders/2/created")
        pending(journal, "other", url="http://old.example/api/v1/orders/3/created", connection="dg")
        pending(journal, "elsewhere", url="http://older.example/api/v1/orders/4/created")
        pending(journal, "done", url="http://old.example/api/v1/orders/5/created")
        journal.mark_delivered("done", status=200, attempts=1)
        # Before: fenix's two under the old base and one under another are left behind by a move to the new.
        assert count_pending(journal, "fenix", "http://old.example/api") == 2
        assert stranded(
            journal, {"fenix": "https://new.example:8443/fenix/", "dg": "http://old.example/api"}
        ) == [
            Stranded("fenix", 3, "http://old.example/api/v1/orders/1/created")
        ]  # an example: the first by URL
        # Counted up to a cap, so a monitor's question stays cheap when an outage left millions.
        [capped] = stranded(journal, {"fenix": "https://new.example:8443/fenix/"}, cap=2)
        assert (capped.count, capped.capped, capped.describe()) == (2, True, "2 or more pending deliveries")
        assert (
            move_pending(journal, "fenix", "http://old.example/api/", "https://new.example:8443/fenix") == 2
        )
        assert stranded(journal, {"fenix": "https://new.example:8443/fenix"}) == [
            Stranded("fenix", 1, "http://older.example/api/v1/orders/4/created")
        ]
        urls = {
            key: entry.url
            for key in ("p1", "p2", "other", "elsewhere", "done")
            if (entry := journal.get(key))
        }
        assert urls == {
            "p1": "https://new.example:8443/fenix/v1/orders/1/created",
            "p2": "https://new.example:8443/fenix/v1/orders/2/created",
            "other": "http://old.example/api/v1/orders/3/created",
            "elsewhere": "http://older.example/api/v1/orders/4/created",
            "done": "http://old.example/api/v1/orders/5/created",
        }
        assert move_pending(journal, "fenix", "http://old.example/api", "https://x.example") == 0  # none left
        # A page at a time (here one row), and a new base that extends the old one moves each row once.
        assert (
            move_pending(
                journal,
                "fenix",
                "https://new.example:8443/fenix",
                "https://new.example:8443/fenix/v2",
                page=1,
            )
            == 2
        )
        assert journal.get("p1").url == "https://new.example:8443/fenix/v2/v1/orders/1/created"  # type: ignore[union-attr]
        assert journal.get("p2").url == "https://new.example:8443/fenix/v2/v1/orders/2/created"  # type: ignore[union-attr]


def test_a_store_of_version_8_gains_the_not_before_of_pending_deliveries(
    location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Version 9 adds ``deliveries.not_before``: SQLite gains it when a writer opens the file, PostgreSQL at
    `shipmap journal migrate` (refused before, still readable). A pending row of version 8 has none (sent at
    once, as before), and keeps its attempts; a cut wait is recorded on it after the upgrade."""
    _older_store(
        location,
        8,
        "INSERT INTO sources (hash, doc) VALUES ('doc', '{}')",
        "INSERT INTO deliveries (key, source_hash, mapping, target, connection, state, method, url, payload,"
        " attempts, created_at, updated_at) VALUES ('k', 'doc', 'm', 't', 'fenix', 'pending', 'POST',"
        " 'http://x/', '{}', 2, 1, 1)",
    )
    if location.startswith("postgresql://"):
        with pytest.raises(JournalError) as refused:
            Journal(location)
        assert (
            f"has schema version 8; this shipmap needs {SCHEMA_VERSION}: run `shipmap journal migrate"
            in str(refused.value)
        )
        with Journal(location, readonly=True) as reader:  # an older store can still be read
            assert [(e.key, e.attempts, e.not_before) for e in reader.entries("pending")] == [("k", 2, None)]
        assert main(["journal", "migrate", with_password(location)]) == 0
        assert capsys.readouterr().out == f"{location}: schema version 8 -> {SCHEMA_VERSION}\n"
    with Journal(location) as journal:
        assert journal.schema_version() == SCHEMA_VERSION
        if journal.backend == "sqlite":
            assert journal.upgraded_from == 8
        [claimed] = _claimed(journal)
        assert (claimed.attempts, claimed.not_before) == (2, None)
        journal.add_attempts("k", 1, not_before=4e9, failed="HTTP 503")
        [claimed] = _claimed(journal)
        assert (claimed.attempts, claimed.not_before, claimed.reason) == (3, 4e9, "HTTP 503")


def _copied_waits(source: Path, location: str) -> list[tuple[str, int, float | None]]:
    """``shipmap journal copy`` of ``source`` into the empty journal at ``location``: its deliveries' keys,
    attempts and ``not_before``."""
    destination = with_password(location) if location.startswith("postgresql") else location
    assert main(["journal", "copy", str(source), destination]) == 0
    with Journal(location, readonly=True) as copy:
        rows = copy._db.execute("SELECT key, attempts, not_before FROM deliveries ORDER BY key").fetchall()
    return [tuple(row) for row in rows]


def _cut_wait(path: Path, until: float) -> None:
    """An SQLite journal with two pending rows: ``cut``, whose wait a stop cut short (1 attempt, its rest
    until ``until``), and ``fresh``, never tried."""
    with Journal(path) as journal:
        pending(journal, "cut")
        pending(journal, "fresh", idempotency_key="sm-2")
        journal.add_attempts("cut", 1, not_before=until, failed="HTTP 503 Service Unavailable")


def test_journal_copy_carries_the_rest_of_a_cut_wait(tmp_path: Path, location: str) -> None:
    """A row's ``not_before`` (the rest of a backoff or a Retry-After a stop cut short) goes with it, into
    SQLite or PostgreSQL: the copy's next run waits it out too, as the source's would have (it was dropped:
    the copy's runs sent it at once)."""
    source = tmp_path / "source.db"
    until = 4_000_000_000.5
    _cut_wait(source, until)
    assert _copied_waits(source, location) == [("cut", 1, until), ("fresh", 0, None)]


def test_journal_copy_of_a_store_older_than_not_before_leaves_it_null(tmp_path: Path, location: str) -> None:
    """A version 8 source (read-only, so never upgraded) has no ``not_before``: the copy reads NULL for every
    row, and its runs send them at once, as that source's runs did."""
    source = tmp_path / "source.db"
    _cut_wait(source, 4_000_000_000.5)
    db = sqlite3.connect(source)
    db.execute("ALTER TABLE deliveries DROP COLUMN not_before")
    db.execute("UPDATE meta SET v = '8' WHERE k = 'schema_version'")
    db.commit()
    db.close()
    with Journal(source, readonly=True) as reader:
        assert reader.schema_version() == 8
    assert _copied_waits(source, location) == [("cut", 1, None), ("fresh", 0, None)]
