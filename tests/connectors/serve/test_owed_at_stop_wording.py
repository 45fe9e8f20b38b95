"""The stop report's "owed at stop" line, read from a real SQLite journal and inbox: its counts and its
pronoun agree with what is owed (one delivery: "sends it")."""

from __future__ import annotations

from pathlib import Path

from shipmap.connectors import Journal
from shipmap.connectors._serve._inbox import Inbox
from shipmap.connectors._serve._totals import owed_at_stop

LOST = "nothing acknowledged is lost"


def _pend(journal: Journal, key: str) -> None:
    journal.put_source("d" + key, "{}")
    journal.mark_pending(
        key,
        source_digest="d" + key,
        mapping="orders",
        target="shipment",
        connection="fenix",
        method="POST",
        url="http://127.0.0.1:9/shipments",
        payload={"id": key},
        idempotency_key=None,
        origin=None,
    )


def test_one_thing_owed_is_sent_as_it_and_more_as_them(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with Journal(path) as journal, Inbox(tmp_path / "inbox.db") as inbox:
        _pend(journal, "k1")
        assert owed_at_stop(path, inbox) == (
            f"owed at stop: 1 delivery pending in the journal; the next start sends it, {LOST}"
        )
        inbox.accept("shop", "wh1", None, {}, b'{"id": 1}')
        assert owed_at_stop(path, inbox) == (
            "owed at stop: 1 delivery pending in the journal and 1 webhook waiting in the inbox;"
            f" the next start sends them, {LOST}"
        )
        _pend(journal, "k2")
        assert (
            owed_at_stop(None, inbox)
            == f"owed at stop: 1 webhook waiting in the inbox; the next start sends it, {LOST}"
        )
        assert owed_at_stop(path, inbox) == (
            "owed at stop: 2 deliveries pending in the journal and 1 webhook waiting in the inbox;"
            f" the next start sends them, {LOST}"
        )
