"""Schema versions: an older SQLite journal is upgraded by the writer that opens it, an older PostgreSQL one
only by `shipmap journal migrate` (refused before, still readable); each version's step and what it gains."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest
from shipmap.connectors import Journal, JournalError
from shipmap.connectors._cli import main
from shipmap.connectors._store._claims import claim_pending, pending_counts, release_leases, renew_leases
from shipmap.connectors._store._journal import MIGRATIONS, SCHEMA_VERSION
from shipmap.connectors._store._moves import Stranded, stranded
from test_journal import pending
from test_journal_support import PASSWORD, claimed_rows, with_password


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


SOURCE = "INSERT INTO sources (hash, doc) VALUES ('doc', '{}')"  # the document of the rows below


def _pending(n: int, *, connection: str = "fenix", url: str = "http://x/") -> str:
    """An INSERT of pending delivery ``k{n}`` of ``SOURCE``, created and updated at ``n``: the columns of every
    schema version."""
    return (
        "INSERT INTO deliveries (key, source_hash, mapping, target, connection, state, method, url, payload,"
        f" created_at, updated_at) VALUES ('k{n}', 'doc', 'm', 't', '{connection}', 'pending', 'POST', '{url}',"
        f" '{{}}', {n}, {n})"
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


def _v4_store(location: str) -> None:
    """A store as shipmap wrote it at schema version 4 (no index on rejected origins), with one rejection."""
    _older_store(
        location,
        4,
        "INSERT INTO rejected (origin, reason, excerpt, at) VALUES ('shop#7', 'enrichment failed: 403', NULL, 1)",
    )


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
        SOURCE,
        *(_pending(n, connection=name) for n, name in enumerate(["fenix", "dg", "fenix", "fenix"])),
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
        SOURCE,
        *(_pending(n, url=url) for n, url in enumerate(["http://new/a", "http://old/b", "http://new/c"])),
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
        SOURCE,
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


def test_a_store_of_version_8_gains_the_not_before_of_pending_deliveries(
    location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Version 9 adds ``deliveries.not_before``: SQLite gains it when a writer opens the file, PostgreSQL at
    `shipmap journal migrate` (refused before, still readable). A pending row of version 8 has none (sent at
    once, as before), and keeps its attempts; a cut wait is recorded on it after the upgrade."""
    _older_store(
        location,
        8,
        SOURCE,
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
        [claimed] = claimed_rows(journal)
        assert (claimed.attempts, claimed.not_before) == (2, None)
        journal.add_attempts("k", 1, not_before=4e9, failed="HTTP 503")
        [claimed] = claimed_rows(journal)
        assert (claimed.attempts, claimed.not_before, claimed.reason) == (3, 4e9, "HTTP 503")


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
