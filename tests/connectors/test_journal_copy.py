"""`shipmap journal copy`: an SQLite run moved into PostgreSQL (runs resume there), and what each row carries
across, into either backend."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from shipmap.connectors import Journal, JournalError, Runtime, Sandbox
from shipmap.connectors._cli import main
from test_journal import pending
from test_journal_support import PASSWORD, with_password
from test_runtime_support import order_event, write_config


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
