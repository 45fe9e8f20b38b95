"""``shipmap status`` reads the inbox and the journal itself, each read within ``READ_DEADLINE_S`` (5 s).

Before, its reads were bounded by the servers' own statement timeouts alone (30 s for the inbox, 60 s for the
journal), and a monitor that runs it every minute piled up behind a locked table. Now a table locked by
another session (``LOCK TABLE ... IN ACCESS EXCLUSIVE MODE``: an ``ALTER TABLE``, a ``VACUUM FULL``), or an
SQLite file another program holds alone, ends the command at the deadline with exit code 7 and one line that
names what did not answer, and says that nothing was changed.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import psycopg
import pytest
from shipmap.connectors import Journal
from shipmap.connectors._cli import main, status
from shipmap.connectors._cli.status import READ_DEADLINE_S
from shipmap.connectors._serve import Inbox, PostgresInbox
from shipmap.connectors._serve._inbox_pg_connection import STATEMENT_TIMEOUT_MS

from .harness import SERVE_FIXTURES, environment

PASSWORD = "pg-status-secret-never-printed"  # the test server trusts loopback, so any password connects
NO_SERVICE = "http://127.0.0.1:9"
# The command ends after the deadline (time does not run backwards) and well before the wait it replaced: the
# inbox's statement timeout (30 s; the journal's is 60 s). Its error names the deadline, the server's
# cancellation or SQLite's busy lock: what ended the read.
REPLACED_WAIT_S = STATEMENT_TIMEOUT_MS / 1000
TIMED_OUT = "no answer within 5s (PostgreSQL says: canceling statement due to statement timeout)"


def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, journal: str | None = None) -> Path:
    """The serve fixture's config in ``tmp_path``: its journal (and so its inbox) at ``journal`` when given, a
    PostgreSQL URL; else SQLite files under .shipmap."""
    for name, value in environment(NO_SERVICE).items():
        monkeypatch.setenv(name, value)
    for item in SERVE_FIXTURES.glob("*.yaml"):
        (tmp_path / item.name).write_text(item.read_text())
    config = tmp_path / "serve.yaml"
    if journal is not None:
        text = config.read_text()
        assert "  path: .shipmap/journal.db\n" in text, text
        config.write_text(text.replace("  path: .shipmap/journal.db\n", f"  url: {journal}\n"))
    return config


def _status(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, float]:
    started = time.monotonic()
    code = main(["status", str(config), "--url", NO_SERVICE])
    return code, capsys.readouterr().err, time.monotonic() - started


@pytest.mark.parametrize(
    ("table", "what", "cost"),
    [
        ("inbox", "inbox", "Nothing was changed: the inbox was only being read"),
        ("deliveries", "journal read failed", "Nothing was changed: the journal was only being read"),
    ],
    ids=["inbox", "journal"],
)
def test_a_locked_postgresql_table_ends_status_at_its_deadline_naming_what_did_not_answer(
    tmp_path: Path,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    table: str,
    what: str,
    cost: str,
) -> None:
    secret_url = postgres_url.replace("postgres@", f"postgres:{PASSWORD}@", 1)
    config = _config(tmp_path, monkeypatch, secret_url)
    with PostgresInbox(postgres_url) as inbox, Journal(postgres_url):
        inbox.accept("shop", "wh-1", "orders/create", {}, b'{"id": 1}')
    assert _status(config, capsys)[:2] == (0, "")  # both answer: the report

    with psycopg.connect(postgres_url) as holder:
        holder.execute("SET lock_timeout = '20s'")
        holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        code, err, took = _status(config, capsys)
    assert code == 7, err
    assert err == f"error: {what} {postgres_url}: {TIMED_OUT}. {cost}\n"
    assert PASSWORD not in err
    assert READ_DEADLINE_S - 0.1 < took < REPLACED_WAIT_S, took
    assert _status(config, capsys)[:2] == (0, "")  # the lock gone, the report again


def test_an_sqlite_inbox_held_alone_by_another_program_ends_status_at_its_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A reader of a WAL file waits for no writer; only a connection that holds the file alone (exclusive
    locking mode, as some backup and maintenance tools take it) keeps it out, for its busy timeout."""
    config = _config(tmp_path, monkeypatch)
    path = tmp_path / ".shipmap" / "inbox.db"
    with Inbox(path) as inbox:
        inbox.accept("shop", "wh-1", "orders/create", {}, b'{"id": 1}')
    assert _status(config, capsys)[:2] == (0, "")

    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode = EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("DELETE FROM meta WHERE k = 'nothing'")  # a write: the file is this connection's now
        code, err, took = _status(config, capsys)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert code == 7, err
    assert err == (
        f"error: inbox {path}: no answer within 5s (SQLite says: database is locked)."
        " Nothing was changed: the inbox was only being read\n"
    )
    assert READ_DEADLINE_S - 0.1 < took < REPLACED_WAIT_S, took
    assert _status(config, capsys)[:2] == (0, "")


def _hold_alone(path: Path) -> sqlite3.Connection:
    """A connection that holds the SQLite file at ``path`` alone (exclusive locking mode and a write) until it
    is rolled back and closed, as some backup and maintenance tools hold one."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("DELETE FROM meta WHERE k = 'nothing'")
    return holder


def _let_go(holder: sqlite3.Connection) -> None:
    holder.execute("ROLLBACK")
    holder.close()


def test_status_ends_within_its_whole_deadline_when_each_read_answers_within_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The inbox held by another program for 3 s, the journal for 7 s: each read answers within its 5 s (the
    inbox at 3 s, the journal at 7 s, 4 s after its read began), and the command used to end at 7 s with a
    report. The whole command has a deadline too (10 s; lowered here to 6 s, so that two reads show it): past
    it, the command ends with exit 7 naming what it was reading, having changed nothing."""
    config = _config(tmp_path, monkeypatch)
    inbox_path, journal_path = tmp_path / ".shipmap" / "inbox.db", tmp_path / ".shipmap" / "journal.db"
    with Inbox(inbox_path) as inbox:
        inbox.accept("shop", "wh-1", "orders/create", {}, b'{"id": 1}')
    with Journal(journal_path):
        pass
    assert _status(config, capsys)[:2] == (0, "")
    monkeypatch.setattr(status, "STATUS_DEADLINE_S", 6.0)

    holders = [_hold_alone(inbox_path), _hold_alone(journal_path)]
    timers = [threading.Timer(3.0, _let_go, [holders[0]]), threading.Timer(7.0, _let_go, [holders[1]])]
    for timer in timers:
        timer.start()
    code, err, _ = _status(config, capsys)
    assert code == 7, err
    assert err == (
        f"error: journal {journal_path}: no answer before the command's deadline (6s in all, each read within"
        " 5s). Nothing was changed: status only reads\n"
    )
    for timer in timers:
        timer.join()  # both let go, and the command's abandoned read ends at the journal's
    assert _status(config, capsys)[:2] == (0, "")  # both let go: the report again
