"""``serve.keep_bodies``: the inbox drops the bodies of webhooks processed without rejection after it, keeps
the rows (so their ids are still duplicates) and the bodies of rejected webhooks (``replay --rejected``), and
does it in chunks that let intake commit between two; an inbox of version 1 is read as it is and upgraded by
a writer."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from shipmap.connectors._redact import Redactor, get_logger
from shipmap.connectors._serve import Inbox, InboxError
from shipmap.connectors._serve._inbox_retention import Purged, Retention, purge_inbox
from shipmap.connectors._serve._rejected import BODY_DROPPED, find_rejected
from shipmap.connectors._store._journal import Journal

from .harness import DRAIN_LINE, ServeProcess, with_added

BODY = b'{"id": 1}'
HOUR = 3600.0


def _processed(inbox: Inbox, webhook_id: str, *, ago: float) -> int:
    """A webhook accepted and processed ``ago`` seconds ago (as the feed marks it)."""
    row = inbox.accept("shop", webhook_id, "orders/create", {}, BODY, received_at=time.time() - ago).id
    inbox.mark_processed([row])
    inbox._db.execute("UPDATE inbox SET processed_at = ? WHERE id = ?", (time.time() - ago, row))
    return row


def _bodies(path: Path) -> dict[str, tuple[bytes, bool]]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT webhook_id, body, body_dropped_at IS NOT NULL FROM inbox").fetchall()
    return {webhook_id: (bytes(body), bool(dropped)) for webhook_id, body, dropped in rows}


def test_bodies_past_keep_bodies_are_dropped_but_rejected_ones_and_their_ids_stay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal_path = tmp_path / "journal.db"
    with Inbox(tmp_path / "inbox.db") as inbox:
        old = _processed(inbox, "old", ago=2 * HOUR)
        rejected = _processed(inbox, "rejected", ago=2 * HOUR)
        recent = _processed(inbox, "recent", ago=60)
        inbox.accept("shop", "waiting", None, {}, BODY, received_at=time.time() - 2 * HOUR)  # still pending
        for row in (old, rejected, recent):  # what an enrichment fetched: a skinny webhook's bulk
            inbox.save_documents(row, {"order": {"id": row, "notes": "x" * 1000}})
        with Journal(journal_path) as journal:
            journal.record_rejected(f"shop#{rejected}", "enrichment failed: HTTP 404", None)
            journal.record_rejected(f"other#{old + 100}", "another source's row", None)
            journal.record_rejected("events.ndjson:3", "not JSON", None)  # a `run` input line: no row
        log = get_logger("serve", Redactor())
        with caplog.at_level(logging.INFO, logger="shipmap.connectors.serve"):
            assert purge_inbox(inbox, Retention(keep_bodies=HOUR), journal=journal_path, log=log) == Purged(
                0, 1
            )
        assert caplog.messages == [
            "inbox: forgot 0 webhooks received more than 7d ago (serve.dedup_window); dropped 1 body of webhooks"
            " processed more than 1h ago (serve.keep_bodies)"
        ]
        assert _bodies(tmp_path / "inbox.db") == {
            "old": (b"", True),
            "rejected": (BODY, False),
            "recent": (BODY, False),
            "waiting": (BODY, False),
        }
        # Its documents go with its body (the soak: a BigCommerce row kept 7 KB of them, its body 200 bytes).
        with sqlite3.connect(tmp_path / "inbox.db") as db:
            documents = dict(db.execute("SELECT webhook_id, documents IS NOT NULL FROM inbox").fetchall())
        assert documents == {"old": 0, "rejected": 1, "recent": 1, "waiting": 0}
        # The id is still a duplicate; a requeue does not hand over a row with nothing to map.
        assert inbox.accept("shop", "old", None, {}, BODY).duplicate
        assert inbox.requeue([old, rejected]) == 1
        assert [row.webhook_id for row in inbox.pending()] == ["rejected", "waiting"]
        assert inbox.held([old])[old].body_dropped and not inbox.held([recent])[recent].body_dropped
        # Done once: the next purge finds nothing more to drop, and the default keeps every body.
        assert purge_inbox(inbox, Retention(keep_bodies=HOUR), journal=journal_path, log=log) == Purged(0, 0)
        assert purge_inbox(inbox, Retention(keep_bodies=7 * 24 * HOUR), journal=None, log=log) == Purged(0, 0)
        # No journal at all: nothing was recorded as rejected, so every old body goes.
        inbox.mark_processed([rejected])
        assert purge_inbox(
            inbox, Retention(keep_bodies=0), journal=tmp_path / "absent.db", log=log
        ) == Purged(0, 2)


def test_a_journal_that_cannot_be_read_keeps_every_body(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_journal = tmp_path / "journal.db"
    not_a_journal.write_text("these are not the rejections\n")
    with Inbox(tmp_path / "inbox.db") as inbox:
        _processed(inbox, "old", ago=2 * HOUR)
        with caplog.at_level(logging.WARNING, logger="shipmap.connectors.serve"):
            purged = purge_inbox(
                inbox, Retention(keep_bodies=0), journal=not_a_journal, log=get_logger("serve", Redactor())
            )
    assert purged == Purged(0, 0)
    assert _bodies(tmp_path / "inbox.db") == {"old": (BODY, False)}
    assert caplog.messages == [
        "the inbox keeps the bodies of processed webhooks for now (serve.keep_bodies): it cannot read which of"
        f" them were rejected: cannot open journal {not_a_journal}: the file is not a journal, or it is corrupt;"
        " move it aside. Nothing was changed: the journal was only being read"
    ]


def test_bodies_are_dropped_in_chunks_and_intake_commits_between_them(tmp_path: Path) -> None:
    with Inbox(tmp_path / "inbox.db") as inbox:
        rows = [_processed(inbox, f"old-{i}", ago=2 * HOUR) for i in range(7)]
        intake = sqlite3.connect(tmp_path / "inbox.db", isolation_level=None, timeout=0)  # no waiting
        updates: list[str] = []

        def on_statement(sql: str) -> None:
            if sql.startswith("UPDATE inbox SET body"):
                updates.append(sql)
                if len(updates) > 1:  # the previous chunk is committed: intake may write now
                    intake.execute(
                        "INSERT INTO inbox (source, webhook_id, topic, received_at, headers, body)"
                        " VALUES ('shop', ?, 'orders/create', 2e9, '{}', x'7b7d')",
                        (f"between-{len(updates)}",),
                    )

        inbox._db.set_trace_callback(on_statement)
        try:
            assert inbox.drop_bodies(time.time() - HOUR, {rows[3]}, chunk=2) == 6
        finally:
            inbox._db.set_trace_callback(None)
            intake.close()
        assert len(updates) == 4  # 2, 1 (the kept row was in that chunk), 2, 1
        assert [
            webhook for webhook, (_, dropped) in _bodies(tmp_path / "inbox.db").items() if not dropped
        ] == [
            "old-3",
            "between-2",
            "between-3",
            "between-4",
        ]


def test_replay_rejected_says_when_a_rejected_webhooks_body_is_gone(tmp_path: Path) -> None:
    with Inbox(tmp_path / "inbox.db") as inbox:
        row = _processed(inbox, "old", ago=2 * HOUR)
        assert inbox.drop_bodies(time.time(), set()) == 1
    with Journal(tmp_path / "journal.db") as journal:
        journal.record_rejected(f"shop#{row}", "the event cannot be routed", None)  # recorded after the drop
        found = find_rejected(journal, tmp_path / "inbox.db", {"shop"}, None)
    assert (found.rows, [(u.origin, u.why) for u in found.unreplayable]) == (
        {},
        [(f"shop#{row}", BODY_DROPPED)],
    )
    assert BODY_DROPPED == "the inbox no longer holds its body (dropped after serve.keep_bodies)"


_VERSION_1 = """
CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL, webhook_id TEXT NOT NULL, topic TEXT,
    received_at REAL NOT NULL, headers TEXT NOT NULL, body BLOB NOT NULL, documents TEXT,
    state TEXT NOT NULL DEFAULT 'pending', processed_at REAL, UNIQUE (source, webhook_id)
);
CREATE INDEX inbox_pending ON inbox (id) WHERE state = 'pending';
INSERT INTO meta VALUES ('inbox_schema', '1');
INSERT INTO inbox (source, webhook_id, received_at, headers, body, state, processed_at)
    VALUES ('shop', 'before', 1000, '{}', x'7b7d', 'processed', 1000);
"""


def test_an_inbox_of_version_1_is_read_as_it_is_and_upgraded_by_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "inbox.db"
    with sqlite3.connect(path) as db:
        db.executescript(_VERSION_1)
    with Inbox(path, readonly=True) as reader:  # replay --rejected while no service has upgraded it yet
        assert (reader.version, reader.held([1])[1].body_dropped) == ("1", False)
    with Inbox(path) as inbox:
        assert inbox.version == "3"
        assert inbox.accept("shop", "before", None, {}, BODY).duplicate  # its rows are kept
        assert inbox.drop_bodies(2000.0, set()) == 1
    assert _bodies(path) == {"before": (b"", True)}
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET v = '4' WHERE k = 'inbox_schema'")
    with pytest.raises(InboxError) as newer:
        Inbox(path)
    assert newer.value.message == (
        f"{path} is an inbox this shipmap cannot read: schema version 4 was written by a newer shipmap (this one"
        " reads versions up to 3)"
    )


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("keep_bodies: 8d", "must be at most dedup_window (7d, its default)"),
        ("keep_bodies: 604801", "must be at most dedup_window (7d, its default)"),
        ("dedup_window: 1d\n  keep_bodies: 2d", "must be at most dedup_window (1d)"),
    ],
)
def test_keep_bodies_past_the_dedup_window_is_a_config_error(
    tmp_path: Path, written: str, message: str
) -> None:
    serve = ServeProcess(tmp_path, "http://127.0.0.1:9")  # for its copy of the config files
    serve.config.write_text(with_added(serve.config.read_text(), DRAIN_LINE, f"  {written}\n"))
    keep_bodies = written.split("\n  ")[-1]
    line = serve.config.read_text().splitlines().index(f"  {keep_bodies}") + 1
    stopped = subprocess.run(
        [sys.executable, "-c", "from shipmap.connectors._cli import entry; entry()", "serve", str(serve.config)],
        capture_output=True, text=True, env=serve.env, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert stopped.returncode == 2, stopped.stderr
    assert stopped.stderr.startswith(
        f"{serve.config}:{line}:16: error: serve.keep_bodies: {message}: the inbox forgets a webhook, its id and"
        " its body, that long after it arrived"
    ), stopped.stderr
    assert "Traceback" not in stopped.stderr


def test_rows_past_the_dedup_window_are_forgotten_and_pending_ones_never(tmp_path: Path) -> None:
    """``serve.dedup_window`` of an hour: a processed row received 2 h ago is forgotten (its id is new again),
    one received 30 min ago is kept, and a pending one, however old, is owed and kept."""
    with Inbox(tmp_path / "inbox.db") as inbox:
        _processed(inbox, "old", ago=2 * HOUR)
        _processed(inbox, "recent", ago=HOUR / 2)
        inbox.accept("shop", "waiting", None, {}, BODY, received_at=time.time() - 2 * HOUR)
        log = get_logger("serve", Redactor())
        window = Retention(dedup_window=HOUR, keep_bodies=HOUR)
        assert purge_inbox(inbox, window, journal=None, log=log) == Purged(1, 0)
        assert sorted(_bodies(tmp_path / "inbox.db")) == ["recent", "waiting"]
        assert not inbox.accept("shop", "old", None, {}, BODY).duplicate
        assert inbox.accept("shop", "recent", None, {}, BODY).duplicate
        # The default window (7 days) keeps them all.
        _processed(inbox, "older", ago=2 * HOUR)
        assert purge_inbox(inbox, Retention(), journal=None, log=log) == Purged(0, 0)
