"""A webhook's origin names its inbox beside a shared journal (``_origins``): an SQLite inbox draws its id once
and keeps it, a file made before inboxes had ids gets one when a writer opens it, and the origins a journal
already holds (``shop#1``) still name rows of the inbox that the reading config names. The end to end case, two
services with their own inboxes on one PostgreSQL journal, is ``test_serve_inboxes_on_one_journal``."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

import pytest
from shipmap.connectors._redact import Redactor, get_logger
from shipmap.connectors._serve import Inbox
from shipmap.connectors._serve._inbox_retention import Purged, Retention, purge_inbox
from shipmap.connectors._serve._origins import WebhookOrigin, parse_webhook_origin, webhook_origin
from shipmap.connectors._serve._rejected import GONE, find_rejected
from shipmap.connectors._store._journal import Journal

BODY = b'{"id": 1}'


@pytest.mark.parametrize(
    ("origin", "webhook"),
    [
        ("bc#3", WebhookOrigin("bc", 3)),
        ("bc#kqzmvt.3", WebhookOrigin("bc", 3, "kqzmvt")),
        ("my-shop#kqzmvt.120", WebhookOrigin("my-shop", 120, "kqzmvt")),
        ("events.ndjson:3", None),  # a `shipmap run` input line
        ("bc#KQZMVT.3", None),
        ("bc#kqzmvt.", None),
    ],
)
def test_an_origin_is_read_back_as_the_webhook_it_names(origin: str, webhook: WebhookOrigin | None) -> None:
    assert parse_webhook_origin(origin) == webhook
    if webhook is not None:
        assert str(webhook) == origin == webhook_origin(webhook.source, webhook.row, webhook.inbox)


def test_an_sqlite_inbox_draws_its_id_once_and_an_older_file_gets_one_from_its_first_writer(
    tmp_path: Path,
) -> None:
    path = tmp_path / "inbox.db"
    with sqlite3.connect(path) as db:  # a file as a shipmap before inbox ids left it
        db.executescript(
            """CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
               INSERT INTO meta VALUES ('inbox_schema', '1');
               CREATE TABLE inbox (id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL,
                   webhook_id TEXT NOT NULL, topic TEXT, received_at REAL NOT NULL, headers TEXT NOT NULL,
                   body BLOB NOT NULL, documents TEXT, state TEXT NOT NULL DEFAULT 'pending',
                   processed_at REAL, UNIQUE (source, webhook_id));"""
        )
    with Inbox(path, readonly=True) as reader:  # read as it is: a reader writes nothing
        assert reader.inbox_id is None
    with Inbox(path) as writer:
        drawn = writer.inbox_id
    assert drawn is not None and re.fullmatch("[bcdfghjklmnpqrstvwxz]{6}", drawn), drawn  # never a word
    with Inbox(path) as writer, Inbox(path, readonly=True) as reader:
        assert writer.inbox_id == reader.inbox_id == drawn  # kept for good
    with Inbox(tmp_path / "another.db") as another:
        assert another.inbox_id not in (None, drawn)


def test_rejections_name_the_rows_of_their_own_inbox_old_origins_included(
    tmp_path: Path, postgres_url: str
) -> None:
    """Beside a PostgreSQL journal that another service's SQLite inbox shares: an origin of this inbox and an
    origin written before inboxes had ids name rows here; the other inbox's origin does not, for a replay or
    for the bodies kept. Row 4's rejection was purged with its row: its origin says so."""
    path = tmp_path / "inbox.db"
    with Inbox(path) as inbox:
        rows = [
            inbox.accept("shop", f"w{n}", None, {}, BODY, received_at=time.time() - 60).id for n in range(3)
        ]
        inbox.mark_processed(rows)
        mine = inbox.inbox_id
        assert mine is not None
        theirs = "zzzzzz" if mine != "zzzzzz" else "yyyyyy"
        with Journal(postgres_url) as journal:
            journal.record_rejected("shop#1", "enrichment failed: HTTP 404", None)  # before inbox ids
            journal.record_rejected(f"shop#{mine}.2", "enrichment failed: HTTP 404", None)
            journal.record_rejected(f"shop#{theirs}.3", "enrichment failed: HTTP 404", None)
            journal.record_rejected(f"shop#{mine}.4", "enrichment failed: HTTP 404", None)
            found = find_rejected(journal, path, {"shop"}, None)
            one = find_rejected(journal, path, {"shop"}, [f"shop#{mine}.2"])
        assert found.rows == {1: "shop#1", 2: f"shop#{mine}.2"}
        assert [(u.origin, u.why) for u in found.unreplayable] == [
            (
                f"shop#{theirs}.3",
                f"a webhook of another inbox ({theirs}): replay it with the config of the service that keeps"
                " that inbox",
            ),
            (f"shop#{mine}.4", GONE),
        ]
        assert (one.rows, one.unreplayable) == ({2: f"shop#{mine}.2"}, [])
        # Bodies: the rows rejected here keep theirs; row 3's rejection is the other inbox's, so its goes.
        log = get_logger("serve", Redactor())
        assert purge_inbox(inbox, Retention(keep_bodies=0), journal=postgres_url, log=log) == Purged(0, 1)
        assert [row for row in rows if inbox.held([row])[row].body_dropped] == [3]
