"""The purge past ``serve.dedup_window`` reads an index of the processed rows by ``received_at``
(``inbox_processed``: PostgreSQL inbox schema 5, SQLite inbox schema 3), not the whole table: each statement
reads only what it deletes. An older inbox gains it from `shipmap journal migrate` (PostgreSQL) or its first
writer (SQLite); a reader reads an older SQLite file as it is. On the real server `make test` starts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest
from shipmap.connectors import Journal
from shipmap.connectors._cli import main
from shipmap.connectors._serve import Inbox, InboxError, PostgresInbox, _inbox_pg_schema
from shipmap.connectors._serve._inbox_pg import INBOX_SCHEMA_VERSION
from shipmap.connectors._serve._inbox_schema import SCHEMA_VERSION

from .test_inbox_postgres import BODY, _plan, _with_password


def test_a_postgresql_inbox_of_version_4_gains_the_index_the_purge_reads(
    postgres_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with Journal(postgres_url):
        pass
    with psycopg.connect(postgres_url, autocommit=True) as db:
        for step in _inbox_pg_schema.MIGRATIONS[:4]:
            db.execute(step)
        db.execute("INSERT INTO meta (k, v) VALUES ('inbox_schema_version', '4')")
        # 3,000 processed rows, the first 5 received long ago, and a pending one as old as those
        db.execute(
            "INSERT INTO inbox (source, webhook_id, received_at, headers, body, state, processed_at)"
            " SELECT 'shop', 'w' || n, CASE WHEN n <= 5 THEN 1000 ELSE 5000 + n END, '{}', %s, 'processed',"
            " 5000 + n FROM generate_series(1, 3000) AS n",
            (BODY,),
        )
        db.execute(
            "INSERT INTO inbox (source, webhook_id, received_at, headers, body)"
            " VALUES ('shop', 'owed', 1000, '{}', %s)",
            (BODY,),
        )
    with pytest.raises(InboxError, match=f"has schema version 4; this shipmap needs {INBOX_SCHEMA_VERSION}"):
        PostgresInbox(postgres_url)
    assert INBOX_SCHEMA_VERSION == 5
    assert main(["journal", "migrate", _with_password(postgres_url)]) == 0
    assert f"{postgres_url}: inbox schema version 4 -> 5" in capsys.readouterr().out
    with psycopg.connect(postgres_url, autocommit=True) as db:
        [(indexed,)] = db.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'inbox_processed'")
        assert indexed.endswith("USING btree (received_at) WHERE (state = 'processed'::text)"), indexed
        db.execute("ANALYZE inbox")
    statements: list[tuple[str, object]] = []
    with PostgresInbox(postgres_url) as inbox:
        execute = inbox._execute

        def recording(sql: str, parameters: object = None) -> object:
            statements.append((sql, parameters))
            return execute(sql, parameters)

        monkeypatch.setattr(inbox, "_execute", recording)
        assert inbox.purge(2000.0, chunk=2) == 5
        assert inbox.purge(2000.0, chunk=2) == 0  # nothing old enough: still the index, not the table
        monkeypatch.undo()
        assert inbox.counts() == {"shop/processed": 2995, "shop/pending": 1}  # the pending one is owed
        assert [row.webhook_id for row in inbox.pending()] == ["owed"]
    assert [sql.split()[0] for sql, _ in statements] == ["DELETE"] * 4  # 2, 2, 1; then 0
    for statement in statements:
        plan = _plan(postgres_url, statement)
        assert "inbox_processed" in plan, plan
        assert "Seq Scan" not in plan, plan


_VERSION_2 = """
CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL, webhook_id TEXT NOT NULL, topic TEXT,
    received_at REAL NOT NULL, headers TEXT NOT NULL, body BLOB NOT NULL, documents TEXT,
    state TEXT NOT NULL DEFAULT 'pending', processed_at REAL, body_dropped_at REAL, UNIQUE (source, webhook_id)
);
CREATE INDEX inbox_pending ON inbox (id) WHERE state = 'pending';
CREATE INDEX inbox_bodies ON inbox (processed_at) WHERE state = 'processed' AND body_dropped_at IS NULL;
INSERT INTO meta VALUES ('inbox_schema', '2');
INSERT INTO inbox (source, webhook_id, received_at, headers, body, state, processed_at, body_dropped_at)
    VALUES ('shop', 'dropped', 1000, '{}', x'', 'processed', 1000, 1500),
           ('shop', 'old', 1000, '{}', x'7b7d', 'processed', 1000, NULL),
           ('shop', 'owed', 1000, '{}', x'7b7d', 'pending', NULL, NULL),
           ('shop', 'recent', 5000, '{}', x'7b7d', 'processed', 5000, NULL);
"""


def test_a_sqlite_inbox_of_version_2_is_read_as_it_is_and_gains_the_index_from_a_writer(
    tmp_path: Path,
) -> None:
    path = tmp_path / "inbox.db"
    with sqlite3.connect(path) as db:
        db.executescript(_VERSION_2)
    with Inbox(path, readonly=True) as reader:  # replay --rejected before a service upgraded it
        held = reader.held([1, 2])
        assert (reader.version, held[1].body_dropped, held[2].body_dropped) == ("2", True, False)
    assert SCHEMA_VERSION == "3"
    statements: list[str] = []
    with Inbox(path) as inbox:
        assert inbox.version == "3"
        inbox._db.set_trace_callback(statements.append)
        assert inbox.purge(2000.0) == 2
        assert inbox.purge(2000.0) == 0  # nothing old enough
        inbox._db.set_trace_callback(None)
        assert inbox.counts() == {"shop/processed": 1, "shop/pending": 1}
        assert inbox.accept("shop", "recent", None, {}, BODY).duplicate
        assert not inbox.accept("shop", "old", None, {}, BODY).duplicate  # forgotten: new again
    deletes = [sql for sql in statements if sql.startswith("DELETE")]
    assert len(deletes) == 2
    with sqlite3.connect(path) as db:
        for sql in deletes:
            plan = " | ".join(str(row[3]) for row in db.execute(f"EXPLAIN QUERY PLAN {sql}"))
            assert "USING INDEX inbox_processed" in plan, plan
            assert "SCAN inbox" not in plan.replace("SCAN inbox USING", ""), plan
        db.execute("UPDATE meta SET v = '4' WHERE k = 'inbox_schema'")
    with pytest.raises(InboxError) as newer:
        Inbox(path)
    assert newer.value.message.endswith(
        "schema version 4 was written by a newer shipmap (this one reads versions up to 3)"
    )


def test_journal_copy_of_a_sqlite_inbox_of_version_2_keeps_when_its_bodies_were_dropped(
    tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The copy reads the file as it is (read-only: no upgrade); version 2 has ``body_dropped_at`` as 3 does."""
    journal_path = tmp_path / "journal.db"
    Journal(journal_path).close()
    with sqlite3.connect(tmp_path / "inbox.db") as db:
        db.executescript(_VERSION_2)
    assert main(["journal", "copy", str(journal_path), _with_password(postgres_url)]) == 0
    assert capsys.readouterr().out.strip().endswith(" 4 inbox webhooks")
    with psycopg.connect(postgres_url) as db:
        rows = db.execute("SELECT webhook_id, body_dropped_at FROM inbox ORDER BY id").fetchall()
    assert rows == [("dropped", 1500.0), ("old", None), ("owed", None), ("recent", None)]
    with sqlite3.connect(tmp_path / "inbox.db") as db:
        assert db.execute("SELECT v FROM meta WHERE k = 'inbox_schema'").fetchone() == ("2",)
