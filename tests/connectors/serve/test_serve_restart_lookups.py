"""The connections a PostgreSQL service opens beside its journal's and its delivery inbox's ride out a database
restart within ``journal.reconnect_deadline`` too (``_store/_reconnect``): the hourly purge's look-up of the
journal's rejections, and the delivery side's lease renewer. A real server whose database refuses new sessions
for a few seconds, as one coming back up does, and whose sessions are ended, as a restart does."""

from __future__ import annotations

import logging
import threading
import time

import psycopg
import pytest
from shipmap.connectors._redact import Redactor, get_logger
from shipmap.connectors._serve import PostgresInbox
from shipmap.connectors._serve._inbox_retention import Purged, Retention, purge_inbox
from shipmap.connectors._serve._origins import webhook_origin
from shipmap.connectors._store._journal import Journal
from shipmap.connectors._store._journal_pg import display_url

BODY = b'{"id": 1}'
HOUR = 3600.0
AWAY_S = 3.0  # how long the database refuses new sessions
DEADLINE_S = 60.0


def _refuse_for(
    admin_url: str, database: str, seconds: float, *, end_sessions: bool = False
) -> threading.Thread:
    """The database refuses new sessions from now on (its sessions ended too, with ``end_sessions``), and takes
    them again after ``seconds``, on a thread (joined by the caller)."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
        if end_sessions:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                " AND pid <> pg_backend_pid()",
                (database,),
            )

    def back() -> None:
        time.sleep(seconds)
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")

    thread = threading.Thread(target=back, daemon=True)
    thread.start()
    return thread


def test_the_hourly_purge_reads_the_rejections_through_a_database_coming_back_up(
    postgres_server: str, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, the look-up failed at once: the purge kept every body (the safe side) and said it could not read
    which webhooks were rejected. Now it waits for the database, and drops the bodies it may drop, once."""
    database = postgres_url.rsplit("/", 1)[1]
    with Journal(postgres_url):
        pass
    with PostgresInbox(postgres_url, keep_leases=False, reconnect_deadline=DEADLINE_S) as inbox:
        rows = {}
        for webhook_id in ("rejected", "delivered"):
            rows[webhook_id] = inbox.accept(
                "shop", webhook_id, None, {}, BODY, received_at=time.time() - 2 * HOUR
            ).id
        inbox.mark_processed(rows.values())
        inbox._execute("UPDATE inbox SET processed_at = %s", (time.time() - 2 * HOUR,))
        with Journal(postgres_url) as journal:
            journal.record_rejected(
                webhook_origin("shop", rows["rejected"], inbox.inbox_id), "HTTP 404", None
            )

        # The inbox's session stays (delivery's, already open): the look-up opens the journal anew meanwhile.
        back = _refuse_for(postgres_server, database, AWAY_S)
        try:
            with caplog.at_level(logging.INFO):
                purged = purge_inbox(
                    inbox,
                    Retention(keep_bodies=HOUR),
                    journal=postgres_url,
                    log=get_logger("serve", Redactor()),
                    reconnect_deadline=DEADLINE_S,
                    stop=threading.Event(),
                )
        finally:
            back.join(30)
    assert purged == Purged(0, 1)
    messages = " ".join(caplog.messages)
    assert f"journal {display_url(postgres_url)}: the database does not take a new session yet" in messages
    assert f"journal {display_url(postgres_url)}: connection opened again after" in messages
    assert "cannot read which of them were rejected" not in messages
    with psycopg.connect(postgres_url) as db:
        bodies = dict(db.execute("SELECT webhook_id, body_dropped_at IS NOT NULL FROM inbox").fetchall())
    assert bodies == {"rejected": False, "delivered": True}


def test_the_lease_renewer_renews_again_as_soon_as_the_restarted_database_takes_sessions(
    postgres_server: str, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, the renewer's round on the ended session failed ("cannot renew the inbox's claims"), and so did
    each round while new sessions were refused: a third of a lease each, so a restart of more than two thirds of
    a lease lapsed the claims, and other processes took the rows over. Now its renewal waits for the database
    through the delivery side's reconnect policy and renews at once after."""
    database = postgres_url.rsplit("/", 1)[1]
    with PostgresInbox(postgres_url, keep_leases=False) as intake:
        for webhook_id in ("a", "b", "c"):
            intake.accept("shop", webhook_id, None, {}, BODY)
    opened_again = f"inbox {display_url(postgres_url)}: connection opened again after"
    with (
        caplog.at_level(logging.WARNING),
        PostgresInbox(postgres_url, lease=3.0, keep_leases=True, reconnect_deadline=DEADLINE_S) as delivery,
    ):
        claimed = {row.id for row in delivery.pending()}
        assert len(claimed) == 3
        _refuse_for(postgres_server, database, AWAY_S, end_sessions=True).join(30)
        # The delivery side runs no statement meanwhile: only the renewer opens a session again.
        ends = time.monotonic() + DEADLINE_S
        while not any(message.startswith(opened_again) for message in caplog.messages):
            assert time.monotonic() < ends, caplog.messages
            time.sleep(0.1)
        with psycopg.connect(postgres_url) as db:
            held = db.execute(
                "SELECT id FROM inbox WHERE lease_owner = %s AND lease_until > EXTRACT(EPOCH FROM clock_timestamp())",
                (delivery.worker,),
            ).fetchall()
        assert {row_id for (row_id,) in held} == claimed
    assert not [message for message in caplog.messages if "cannot renew the inbox's claims" in message]
