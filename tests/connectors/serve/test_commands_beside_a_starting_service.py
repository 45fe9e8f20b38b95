"""The commands that read a service's journal and inbox (``dead-letters``, ``replay``, ``status``) run in the
moment after ``shipmap serve`` starts, while its files exist and their tables are being created: each reads
as empty (nothing journaled, nothing accepted yet), not as a file of another application. A file that holds
another application's tables is still refused."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import ServeProcess, retries_reach_the_breaker

SERVICE_URL = "http://127.0.0.1:9"  # no service answers there: status says so


def _shipmap(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    serve = ServeProcess(work, SERVICE_URL)  # only for its copy of the config files and its environment
    return subprocess.run(
        [sys.executable, "-c", "from shipmap.connectors._cli import entry; entry()", *args, ],
        capture_output=True, text=True, env=serve.env, cwd=work, check=False, timeout=120,
    )  # fmt: skip


def _being_created(path: Path) -> sqlite3.Connection:
    """``path`` as a starting service leaves it for a moment: the file opened in WAL mode, its tables created
    in a transaction not committed yet (readers see none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("BEGIN IMMEDIATE")
    db.execute("CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
    return db


@pytest.fixture
def starting(tmp_path: Path) -> Iterator[Path]:
    """A service's working directory in the moment after it started: its inbox and journal files exist,
    their tables not committed yet."""
    retries_reach_the_breaker(ServeProcess(tmp_path, SERVICE_URL).config)
    held = [_being_created(tmp_path / ".shipmap" / name) for name in ("inbox.db", "journal.db")]
    yield tmp_path
    for db in held:
        db.execute("ROLLBACK")
        db.close()


def test_dead_letters_and_replay_read_a_journal_being_created_as_empty(starting: Path) -> None:
    journal = starting / ".shipmap" / "journal.db"
    listed = _shipmap(starting, "dead-letters", "serve.yaml")
    assert (listed.returncode, listed.stdout, listed.stderr) == (
        0,
        f"no journal at {journal}: nothing was run yet\n",
        "",
    )
    replay = _shipmap(starting, "replay", "serve.yaml")
    assert (replay.returncode, replay.stdout, replay.stderr) == (0, "no dead letters to replay\n", "")
    rejected = _shipmap(starting, "replay", "serve.yaml", "--rejected")
    assert (rejected.returncode, rejected.stdout, rejected.stderr) == (
        0,
        "no rejected webhooks to replay\n",
        "",
    )


def test_status_reads_an_inbox_and_a_journal_being_created_as_empty(starting: Path) -> None:
    status = _shipmap(starting, "status", "serve.yaml", "--url", SERVICE_URL)
    assert status.returncode == 0 and status.stderr == "", status.stderr
    assert status.stdout.splitlines() == [
        f"service     not answering at {SERVICE_URL}/readyz",
        "queue       0 waiting",
        "deliveries  none",
        "journal     keeps 30d",
        "dead        0 dead letters, 0 rejected inputs",
    ], status.stdout


def test_an_empty_file_reads_as_empty_and_another_applications_database_is_still_refused(
    tmp_path: Path,
) -> None:
    retries_reach_the_breaker(ServeProcess(tmp_path, SERVICE_URL).config)
    journal = tmp_path / ".shipmap" / "journal.db"
    journal.parent.mkdir()
    journal.touch()  # the moment between the file's creation and its first page
    listed = _shipmap(tmp_path, "dead-letters", "serve.yaml")
    assert (listed.returncode, listed.stdout) == (0, f"no journal at {journal}: nothing was run yet\n")
    journal.unlink()
    for path in (journal, tmp_path / ".shipmap" / "inbox.db"):
        shop = sqlite3.connect(path)
        shop.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
        shop.commit()
        shop.close()
    refused = (
        f"error: {journal} is not a shipmap journal: it holds other tables (orders); give the journal a file"
        " of its own (nothing was written to this one)\n"
    )
    for command in (["dead-letters", "serve.yaml"], ["replay", "serve.yaml"]):
        result = _shipmap(tmp_path, *command)
        assert (result.returncode, result.stdout, result.stderr) == (7, "", refused), command
    status = _shipmap(tmp_path, "status", "serve.yaml", "--url", SERVICE_URL)  # reads the inbox first
    assert (status.returncode, status.stdout, status.stderr) == (
        7,
        "",
        f"error: {tmp_path / '.shipmap' / 'inbox.db'} is not a shipmap inbox (it has no inbox schema version)\n",
    )
