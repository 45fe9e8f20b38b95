"""Retention (``journal.keep``): what a prune forgets and what it keeps, on both backends; a run that prunes as it
goes; ``shipmap journal prune``; the version-4 upgrade its indexes need."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from pathlib import Path

import psycopg
import pytest
from shipmap.connectors import ConfigError, Journal, Runtime, Sandbox
from shipmap.connectors._cli import main
from shipmap.connectors._config import load_config
from shipmap.connectors._store._journal import MIGRATIONS, SCHEMA_VERSION
from shipmap.connectors._store._retention import (
    Pruned,
    count_prunable,
    oldest_forgettable,
    prune,
    prune_chunk,
    prune_periodically,
)
from test_journal import pending
from test_runtime_support import environ, order_event, write_config

DAY = 86400.0


def age(journal: Journal, key: str, seconds: float) -> None:
    """Make a delivery's row look last changed ``seconds`` ago."""
    journal._db.execute("UPDATE deliveries SET updated_at = ? WHERE key = ?", (time.time() - seconds, key))


def sources(journal: Journal) -> set[str]:
    return {row[0] for row in journal._db.execute("SELECT hash FROM sources").fetchall()}


def keys(journal: Journal) -> set[str]:
    return {row[0] for row in journal._db.execute("SELECT key FROM deliveries").fetchall()}


def filled(journal: Journal) -> None:
    """Rows of every kind, old (40 days) and recent, each source document named after what refers to it."""
    pending(journal, "old-delivered", "a" * 64)
    journal.mark_delivered("old-delivered", status=201, attempts=1)
    pending(journal, "old-shared", "b" * 64)  # its document is also a recent row's
    journal.mark_delivered("old-shared", status=201, attempts=1)
    pending(journal, "new-shared", "b" * 64)
    journal.mark_delivered("new-shared", status=201, attempts=1)
    pending(journal, "old-dead", "c" * 64)
    journal.mark_dead("old-dead", source_digest="c" * 64, mapping="m", target="t", reason="HTTP 400")
    pending(journal, "old-pending", "d" * 64)
    pending(journal, "old-resolved", "e" * 64)
    journal.mark_dead("old-resolved", source_digest="e" * 64, mapping="m", target="t", reason="HTTP 400")
    journal.mark_resolved("old-resolved", "fixed by hand")
    for key in ("old-delivered", "old-shared", "old-dead", "old-pending", "old-resolved"):
        age(journal, key, 40 * DAY)
    for digest, seen in (("f" * 64, 40 * DAY), ("0" * 64, 0.0)):
        journal.put_source(digest, '{"id":2}')
        journal.record_unrouted(digest, "in.ndjson:9")
        journal._db.execute(
            "UPDATE unrouted SET last_seen = ? WHERE source_hash = ?", (time.time() - seen, digest)
        )
    journal.record_rejected("in.ndjson:1", "not JSON", "{oops")
    journal._db.execute("UPDATE rejected SET at = ?", (time.time() - 40 * DAY,))
    journal.record_rejected("in.ndjson:2", "not JSON", "{again")


def test_a_prune_forgets_old_delivered_and_resolved_rows_and_the_documents_only_they_refer_to(
    location: str,
) -> None:
    with Journal(location) as journal:
        filled(journal)
        before = time.time() - 30 * DAY
        assert count_prunable(journal, before) == Pruned(deliveries=3, unrouted=1, rejected=1)
        # Chunks of 2 rows: a prune goes on until a chunk deletes nothing.
        assert prune(journal, before, limit=2) == Pruned(deliveries=3, sources=3, unrouted=1, rejected=1)
        assert keys(journal) == {"new-shared", "old-dead", "old-pending"}  # dead letters and owed rows stay
        assert sources(journal) == {"b" * 64, "c" * 64, "d" * 64, "0" * 64}
        assert journal.unrouted_count() == 1
        assert [item.origin for item in journal.rejected()] == ["in.ndjson:2"]
        assert not prune_chunk(journal, before)  # nothing left to forget
        dead = journal.get("old-dead")
        assert dead is not None and journal.source(dead.source_hash) == {"id": 1}  # still replayable


def test_a_prune_keeps_everything_newer_than_its_cut_off(location: str) -> None:
    with Journal(location) as journal:
        filled(journal)
        assert not prune(journal, time.time() - 60 * DAY)
        assert len(keys(journal)) == 6 and len(sources(journal)) == 7


def test_a_run_forgets_what_is_older_than_keep_and_a_forgotten_event_is_delivered_again(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config = write_config(tmp_path, sandbox.url, journal={"path": "journal.db", "keep": "1h"})
    first = Runtime.from_config(config, environ=environ(sandbox.url)).run([order_event(1), order_event(2)])
    assert first.delivered == 2
    with Journal(tmp_path / "journal.db") as journal:
        [old, recent] = sorted(
            journal.entries("delivered"), key=lambda entry: entry.payload["id"]
        )  # 1001, 1002
        age(journal, old.key, 2 * 3600)
    second = Runtime.from_config(config, environ=environ(sandbox.url)).run([order_event(3)])
    assert second.delivered == 1
    with Journal(tmp_path / "journal.db") as journal:
        assert journal.get(old.key) is None and journal.get(recent.key) is not None
        assert old.source_hash not in sources(journal)
    # Forgotten, its event is new again: delivered a second time (the documented end of deduplication).
    third = Runtime.from_config(config, environ=environ(sandbox.url)).run([order_event(1), order_event(2)])
    assert (third.delivered, third.skipped) == (1, 1)
    orders = sorted(str(request.order_id) for request in sandbox.requests(endpoint="fenix.orders"))
    assert orders == ["1001", "1001", "1002", "1003"]


def test_keep_null_keeps_everything(tmp_path: Path, sandbox: Sandbox) -> None:
    config = write_config(tmp_path, sandbox.url, journal={"path": "journal.db", "keep": None})
    assert Runtime.from_config(config, environ=environ(sandbox.url)).run([order_event(1)]).delivered == 1
    with Journal(tmp_path / "journal.db") as journal:
        [row] = journal.entries("delivered")
        age(journal, row.key, 400 * DAY)
    assert Runtime.from_config(config, environ=environ(sandbox.url)).run([order_event(1)]).skipped == 1


@pytest.mark.parametrize(
    ("given", "kept"), [("missing", 30 * DAY), ("90d", 90 * DAY), ("12h", 12 * 3600.0), (None, None)]
)
def test_keep_is_a_duration_or_null_and_30_days_by_default(
    tmp_path: Path, given: object, kept: float | None
) -> None:
    journal = {"path": "journal.db"} if given == "missing" else {"path": "journal.db", "keep": given}
    config = write_config(tmp_path, "http://127.0.0.1:1", journal=journal)
    assert load_config(config, environ=environ("http://127.0.0.1:1")).journal.keep == kept


def test_keep_that_is_not_a_duration_is_located(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:1", journal={"path": "journal.db", "keep": "forever"})
    with pytest.raises(ConfigError) as error:
        load_config(config, environ=environ("http://127.0.0.1:1"))
    assert str(error.value) == f"{config}:39:9: error: journal.keep: must be a duration such as 30d, or null"
    assert error.value.exit_code == 2


def test_journal_prune_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "journal.db"
    with Journal(path) as journal:
        filled(journal)
    assert main(["journal", "prune", str(path), "--dry-run"]) == 0
    assert main(["journal", "prune", str(path), "--older-than", "90d"]) == 0
    assert main(["journal", "prune", str(path)]) == 0  # 30 days by default
    assert capsys.readouterr().out.splitlines() == [
        f"{path}: would forget 3 deliveries, 1 unrouted and 1 rejected input records (and the source documents"
        " only they refer to) older than 30d",
        f"{path}: forgot 0 deliveries, 0 source documents, 0 unrouted and 0 rejected input records older than 90d",
        f"{path}: forgot 3 deliveries, 3 source documents, 1 unrouted and 1 rejected input records older than 30d",
    ]
    with Journal(path, exclusive=True):  # a run holds the journal: it prunes itself
        assert main(["journal", "prune", str(path)]) == 7
    assert capsys.readouterr().err.strip() == (
        f"error: journal {path} is in use by another shipmap run (lock {path}.lock); a run or `shipmap serve`"
        " forgets what is older than journal.keep itself"
    )
    with pytest.raises(SystemExit) as usage:
        main(["journal", "prune", str(path), "--older-than", "a month"])
    assert usage.value.code == 2
    assert "--older-than: 'a month' is not a duration (such as 90s, 12h or 30d)" in capsys.readouterr().err


def test_journal_prune_says_one_row_and_no_age_as_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--older-than 0s`` (everything settled) is echoed as ``0s``, not ``0ms``; one row is ``1 delivery``."""
    path = tmp_path / "journal.db"
    with Journal(path) as journal:
        pending(journal, "only", "a" * 64)
        journal.mark_delivered("only", status=201, attempts=1)
    assert main(["journal", "prune", str(path), "--older-than", "0s", "--dry-run"]) == 0
    assert main(["journal", "prune", str(path), "--older-than", "0s"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{path}: would forget 1 delivery, 0 unrouted and 0 rejected input records (and the source documents"
        " only they refer to) older than 0s",
        f"{path}: forgot 1 delivery, 1 source document, 0 unrouted and 0 rejected input records older than 0s",
    ]


def test_an_sqlite_journal_of_version_3_gains_the_indexes_retention_needs(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    db = sqlite3.connect(path)
    for step in MIGRATIONS["sqlite"][:3]:
        db.executescript(step)
    db.execute("INSERT INTO meta (k, v) VALUES ('schema_version', '3')")
    db.commit()
    db.close()
    with Journal(path) as journal:
        assert (journal.upgraded_from, journal.schema_version()) == (3, SCHEMA_VERSION)
    indexes = dict(
        sqlite3.connect(path).execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'").fetchall()
    )
    assert "deliveries(source_hash)" in indexes["deliveries_source"]
    assert "deliveries(state, updated_at)" in indexes["deliveries_state"]


def test_postgresql_a_prune_racing_a_worker_over_a_document_runs_the_loser_again(postgres_url: str) -> None:
    """The foreign key ends whichever of a prune and a worker's transaction came second over one source
    document; that one runs again, whole, and both end as they should."""
    digest = "9" * 64
    with Journal(postgres_url) as journal, Journal(postgres_url) as pruner:
        journal.put_source(digest, '{"id":9}')
        pending(journal, "gone", digest)
        journal.mark_delivered("gone", status=201, attempts=1)
        age(journal, "gone", 40 * DAY)
        go, pruned_inside, release = threading.Event(), threading.Event(), threading.Event()

        def prune_slowly() -> None:
            assert go.wait(10)
            with pruner.transaction():
                pruner._db.execute("DELETE FROM deliveries WHERE key = 'gone'")
                pruner._db.execute("DELETE FROM sources WHERE hash = ?", (digest,))
                pruned_inside.set()
                assert release.wait(10)

        thread = threading.Thread(target=prune_slowly)
        thread.start()
        tries: list[int] = []

        def refer_again() -> (
            None
        ):  # a worker's settle: the document (there already: nothing written), its row
            tries.append(1)
            journal._db.execute("INSERT INTO sources (hash, doc) VALUES (?, ?) ON CONFLICT DO NOTHING",
                                (digest, '{"id":9}'))  # fmt: skip
            if (
                len(tries) == 1
            ):  # the prune deletes the document now; it commits while the row waits on its lock
                go.set()
                assert pruned_inside.wait(10)
                threading.Timer(0.3, release.set).start()
            journal.mark_pending("again", source_digest=digest, mapping="m", target="u", connection="fenix",
                                 method="POST", url="http://127.0.0.1/x", payload={"id": "9"},
                                 idempotency_key=None, origin="in.ndjson:3")  # fmt: skip

        journal.run_transaction(refer_again)
        thread.join(10)
        assert len(tries) == 2  # the first run lost to the prune's delete; the second wrote the document anew
        assert journal.state("again") == "pending" and journal.source(digest) == {"id": 9}
    with psycopg.connect(postgres_url) as db:
        assert db.execute("SELECT count(*) FROM deliveries WHERE key = 'gone'").fetchone() == (0,)


def test_a_prune_that_fails_is_logged_and_tried_again_and_delivery_is_not_stopped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Journal(tmp_path / "journal.db") as journal:
        pending(journal, "old", "a" * 64)
        journal.mark_delivered("old", status=201, attempts=1)
        age(journal, "old", 40 * DAY)
        journal._db.execute("PRAGMA query_only = ON")  # every write fails, as on a read-only disk
        passes: list[Pruned] = []

        async def prune_for_a_while() -> None:
            log = logging.getLogger("shipmap.test")
            task = asyncio.create_task(
                prune_periodically(journal, 30 * DAY, log=log, every=0.05, forgotten=passes.append)
            )
            await asyncio.sleep(0.3)
            assert not task.done()  # a failed pass does not end the pruner (nor, so, the run's TaskGroup)
            journal._db.execute("PRAGMA query_only = OFF")
            for _ in range(100):
                if passes:
                    break
                await asyncio.sleep(0.05)
            task.cancel()

        with caplog.at_level(logging.WARNING, logger="shipmap.test"):
            asyncio.run(prune_for_a_while())
        assert passes == [Pruned(deliveries=1, sources=1)] and journal.get("old") is None
    failures = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(failures) >= 2
    assert failures[0] == (
        "journal: could not forget what is older than 30d: journal write failed "
        f"{tmp_path / 'journal.db'}: the journal is read-only; make the file and its directory writable. Nothing "
        "is lost: deliveries not recorded as delivered are sent again, under the same keys, by the next run; trying "
        "again in 50ms"
    )


def test_journal_info_says_how_far_back_the_journal_remembers(
    location: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with Journal(location) as journal:
        assert oldest_forgettable(journal) is None  # nothing delivered yet: no line
        filled(journal)  # its oldest delivered row: 40 days ago
        oldest = oldest_forgettable(journal)
    assert oldest is not None and 40 * DAY - 60 < time.time() - oldest < 40 * DAY + 60
    assert main(["journal", "info", location]) == 0
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(oldest))
    assert (
        capsys.readouterr().out.splitlines()[1] == f"oldest delivered or resolved row: {when} (40 days ago)"
    )
    with Journal(location) as journal:
        prune(journal, time.time() - 30 * DAY)
        newest_left = oldest_forgettable(journal)
    assert newest_left is not None and time.time() - newest_left < 60
    assert main(["journal", "info", location]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith("(less than a minute ago)")


@pytest.mark.parametrize(("aged", "said"), [(DAY + 60, "1 day"), (3600 + 60, "1 hour"), (90, "1 minute")])
def test_one_day_hour_or_minute_is_said_in_the_singular(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], aged: float, said: str
) -> None:
    """journal info and shipmap status said '1 days ago', '1 minutes ago'."""
    path = str(tmp_path / "journal.db")
    with Journal(path) as journal:
        pending(journal, "k", "a" * 64)
        journal.mark_delivered("k", status=201, attempts=1)
        age(journal, "k", aged)
    assert main(["journal", "info", path]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith(f"({said} ago)")
