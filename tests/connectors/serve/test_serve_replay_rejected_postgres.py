"""``shipmap replay --rejected`` on a PostgreSQL inbox (the journal's database, the real server `make test`
starts): the scenarios of ``test_serve_replay_rejected`` with live ``shipmap serve`` processes sharing the
inbox, or none running. The command requeues the webhooks itself and forgets their rejections in the same
transaction; a service that fetches one and fails again records its rejection again, with the reason of now.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import psycopg
from shipmap.connectors import Journal, Sandbox
from shipmap.connectors._serve._inbox_journal import requeue_rejected
from shipmap.connectors._serve._inbox_pg import PostgresInbox

from .harness import DRAIN_LINE, ServeProcess, retries_reach_the_breaker, with_added
from .rejected_support import NOT_FOUND, accept_and_reject, reject_and_stop, served_store, shipmap
from .replay_support import summary_document

LEASE = "10s"


def _on_postgresql(work: Path, sandbox: Sandbox, database: str) -> ServeProcess:
    """A service whose journal, and so whose inbox, is ``database`` (its config file is shared by the services
    of the test, all in ``work``)."""
    serve = ServeProcess(work, sandbox.url)
    config = serve.config.read_text()
    old = "journal:\n  path: .shipmap/journal.db\n"
    if old in config:
        serve.config.write_text(config.replace(old, f"journal:\n  url: {database}\n  lease: {LEASE}\n"))
    return serve


def _count(database: str, sql: str) -> int:
    """0 before the service's delivery side has made the journal's tables (it may listen before)."""
    with psycopg.connect(database) as db:
        try:
            row = db.execute(sql).fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    assert row is not None
    return int(row[0])


def _rejected(database: str) -> int:
    return _count(database, "SELECT count(*) FROM rejected")


def test_replay_rejected_while_two_services_share_the_inbox(tmp_path: Path, postgres_url: str) -> None:
    with served_store(tmp_path) as (store, work, sandbox):
        a = _on_postgresql(work, sandbox, postgres_url).start()
        b = _on_postgresql(work, sandbox, postgres_url).start()
        try:
            accept_and_reject(a, lambda: _rejected(postgres_url))
            config = str(a.config)
            # Before the fix: a service fetches again, the store still answers 404, the webhook is rejected
            # again (one record, with the reason of now).
            early = shipmap(work, sandbox, "replay", config, "--rejected")
            assert early.returncode == 8, early.stdout + early.stderr
            assert early.stdout.splitlines() == [
                "1 rejected webhook to replay: bc#1",
                "shipmap serve is running (2 processes on the inbox): requeued 1 webhook; they fetch their"
                " documents again",
                "read now and handed to delivery: 0 (their rejections resolved), rejected again: 1, still waiting"
                " in the inbox: 0",
                f"  still rejected: {NOT_FOUND} Not Found",
            ], early.stdout
            assert _rejected(postgres_url) == 1
            store.add_order_999()  # the store shows the order now
            fixed = shipmap(work, sandbox, "replay", config, "--rejected")
            assert fixed.returncode == 0, fixed.stdout + fixed.stderr
            assert fixed.stdout.splitlines()[1:] == [
                "shipmap serve is running (2 processes on the inbox): requeued 1 webhook; they fetch their"
                " documents again",
                "read now and handed to delivery: 1 (their rejections resolved), rejected again: 0, still waiting"
                " in the inbox: 0",
            ], fixed.stdout
            a.wait_until(lambda: sandbox.requests(endpoint="fenix.orders"), what="the order delivered")
            listed = shipmap(work, sandbox, "dead-letters", config)
            assert (listed.returncode, listed.stdout) == (0, "no dead letters\n"), listed.stdout
            again = shipmap(work, sandbox, "replay", config, "--rejected")
            assert (again.returncode, again.stdout) == (0, "no rejected webhooks to replay\n"), again.stdout
            assert a.terminate() == 0 and b.terminate() == 0
        finally:
            a.kill()
            b.kill()
        (order,) = sandbox.requests(endpoint="fenix.orders")  # delivered once, by one of the two
    assert order.body["id"] == "999" and order.body["customer"]["email"] == "jane@example.com"
    assert _rejected(postgres_url) == 0
    assert _count(postgres_url, "SELECT count(*) FROM inbox WHERE state = 'pending'") == 0


def test_replay_rejected_with_no_service_running_is_taken_by_the_next_start(
    tmp_path: Path, postgres_url: str
) -> None:
    with served_store(tmp_path) as (store, work, sandbox):
        serve = _on_postgresql(work, sandbox, postgres_url).start()
        reject_and_stop(serve, lambda: _rejected(postgres_url))
        store.add_order_999()
        config = str(serve.config)
        replay = shipmap(work, sandbox, "replay", config, "--rejected")
        assert replay.returncode == 0, replay.stdout + replay.stderr
        assert replay.stdout.splitlines() == [
            "1 rejected webhook to replay: bc#1",
            "shipmap serve is not running: requeued 1 webhook in the inbox; the next `shipmap serve` start"
            " fetches their documents again and delivers them",
        ]
        # Owed by the inbox now, its documents forgotten; its rejection forgotten in the same transaction.
        with psycopg.connect(postgres_url) as db:
            assert db.execute("SELECT id, state, documents, lease_owner FROM inbox").fetchall() == [
                (1, "pending", None, None)
            ]
        assert _rejected(postgres_url) == 0
        restarted = _on_postgresql(work, sandbox, postgres_url).start()
        try:
            restarted.wait_until(
                lambda: sandbox.requests(endpoint="fenix.orders"), what="the order delivered"
            )
            assert restarted.terminate() == 0
        finally:
            restarted.kill()
        listed = shipmap(work, sandbox, "dead-letters", config)
        assert (listed.returncode, listed.stdout) == (0, "no dead letters\n"), listed.stdout
        (order,) = sandbox.requests(endpoint="fenix.orders")
    assert order.body["id"] == "999"
    assert _rejected(postgres_url) == 0


def test_rejected_records_that_cannot_be_replayed_are_reported_with_why(
    tmp_path: Path, postgres_url: str
) -> None:
    with served_store(tmp_path) as (_, work, sandbox):
        serve = _on_postgresql(work, sandbox, postgres_url).start()
        reject_and_stop(serve, lambda: _rejected(postgres_url))
        config = str(serve.config)
        # A `shipmap run` input line that is not JSON, in the same journal: rejected too, but no inbox holds it.
        (work / "events.ndjson").write_text("{not json\n")
        run = shipmap(work, sandbox, "run", config, "--input", "events.ndjson", "--no-progress")
        assert run.returncode == 8, run.stderr
        only_shop = shipmap(work, sandbox, "replay", config, "--rejected", "--key", "shop")
        assert (only_shop.returncode, only_shop.stdout) == (
            0,
            "no rejected webhooks to replay with those keys\n",
        )
        # The webhook's row is purged (the dedup window has passed for it): its body is gone with it.
        with PostgresInbox(postgres_url) as inbox:
            assert inbox.purge(time.time() + 1) == 1
        replay = shipmap(work, sandbox, "replay", config, "--rejected")
        assert replay.returncode == 8, replay.stdout + replay.stderr
        assert replay.stdout.splitlines() == [
            "2 rejected input records cannot be replayed:",
            "  bc#1: its webhook is no longer in the inbox (forgotten serve.dedup_window after it arrived)",
            "  events.ndjson:1: not a webhook: an input line of `shipmap run` (run that file again)",
        ], replay.stdout
        one = shipmap(work, sandbox, "replay", config, "--rejected", "--key", "bc#1")
        assert (one.returncode, one.stdout.splitlines()) == (
            8,
            [
                "1 rejected input record cannot be replayed:",
                "  bc#1: its webhook is no longer in the inbox (forgotten serve.dedup_window after it arrived)",
            ],
        ), one.stdout
        assert _rejected(postgres_url) == 2  # nothing was changed
        assert sandbox.requests(endpoint="fenix.orders") == []


def test_replay_rejected_with_an_sqlite_inbox_beside_a_postgresql_journal_goes_through_the_service(
    tmp_path: Path, postgres_url: str
) -> None:
    """``serve.inbox`` set to a file beside a PostgreSQL journal: the running service holds that inbox's lock,
    so the command cannot requeue in it (it failed so, advising to run again "once it listens" of a service
    listening all along). The service takes the request through ``<inbox>.replays``, as it does beside an
    SQLite journal, and its next run resolves the rejection in the shared journal."""
    with served_store(tmp_path) as (store, work, sandbox):
        serve = _on_postgresql(work, sandbox, postgres_url)
        serve.config.write_text(
            with_added(serve.config.read_text(), DRAIN_LINE, "  inbox: .shipmap/inbox.db\n")
        )
        retries_reach_the_breaker(serve.config)  # replay's stderr is read whole
        serve.start()
        try:
            accept_and_reject(serve, lambda: _rejected(postgres_url))
            store.add_order_999()
            replay = shipmap(work, sandbox, "replay", str(serve.config), "--rejected")
            assert (replay.returncode, replay.stderr) == (0, ""), replay.stdout + replay.stderr
            # The inbox's id in the origin: other services' inboxes may write to the shared journal.
            with sqlite3.connect(work / ".shipmap" / "inbox.db") as inbox:
                (inbox_id,) = inbox.execute("SELECT v FROM meta WHERE k = 'inbox_id'").fetchone()
            assert replay.stdout.splitlines() == [
                f"1 rejected webhook to replay: bc#{inbox_id}.1",
                "shipmap serve is running: it requeues 1 webhook and fetches their documents again (request 1)",
                "requeued by shipmap serve: 1 webhook",
                "read now and handed to delivery: 1 (their rejections resolved), rejected again: 0, still waiting"
                " in the inbox: 0",
            ], replay.stdout
            serve.wait_until(lambda: sandbox.requests(endpoint="fenix.orders"), what="the order delivered")
            assert serve.terminate() == 0
        finally:
            serve.kill()
        (order,) = sandbox.requests(endpoint="fenix.orders")
    assert order.body["id"] == "999"
    assert _rejected(postgres_url) == 0
    assert (work / ".shipmap" / "inbox.db.replays").is_file()
    with psycopg.connect(postgres_url) as db:  # the inbox is the file, not a table in the journal's database
        assert db.execute("SELECT to_regclass('inbox')").fetchone() == (None,)


def test_requeue_takes_processed_rows_only_and_forgets_only_their_rejections(postgres_url: str) -> None:
    """What keeps it race-free beside the services: a row still ``pending`` is some service's (its worker has
    not marked it yet, or another command requeued it), so it and its rejection are left to that service; the
    rows requeued lose their documents and any claim, and their rejections go in the same transaction."""
    with Journal(postgres_url) as journal, PostgresInbox(postgres_url) as intake:
        ids = [intake.accept("bc", f"w{n}", "store/order/created", {}, b"{}").id for n in range(3)]
        with PostgresInbox(postgres_url) as worker:  # a service's delivery side
            assert [row.id for row in worker.pending()] == ids  # claims all three
            worker.save_documents(ids[0], {"order": {"id": 1}})
            worker.mark_processed(ids[:2])  # the third is still being worked on
            for row in ids:
                journal.record_rejected(f"bc#{row}", "enrichment failed: HTTP 404", None)
            journal.record_rejected("shop#9", "the webhook body is not JSON", None)
            requeued = requeue_rejected(journal, {row: f"bc#{row}" for row in ids})
            with psycopg.connect(postgres_url) as db:
                rows = db.execute(
                    "SELECT id, state, documents, lease_owner FROM inbox ORDER BY id"
                ).fetchall()
                origins = [row[0] for row in db.execute("SELECT origin FROM rejected ORDER BY id")]
            assert requeued == 2
            assert rows == [
                (ids[0], "pending", None, None),  # its saved documents forgotten: fetched again
                (ids[1], "pending", None, None),
                (ids[2], "pending", None, worker.worker),  # still the worker's
            ]
            assert origins == [f"bc#{ids[2]}", "shop#9"]


def test_replay_rejected_format_json_on_a_postgresql_inbox(tmp_path: Path, postgres_url: str) -> None:
    """``--rejected --format json`` on a shared PostgreSQL inbox, which the command requeues itself: the summary
    document with a service on the inbox (rejected again, then taken once the store has the order) and with
    none (requeued only: what came of them is unknown, null), as on an SQLite one (test_serve_replay_json)."""

    def replay(expected: int) -> dict[str, Any]:
        done = shipmap(work, sandbox, "replay", config, "--rejected", "--format", "json")
        assert done.returncode == expected, done.stdout + done.stderr
        return summary_document(done)

    delivery_unknown = {
        "delivered",
        "retried",
        "dead",
        "skipped",
        "unrouted",
        "recovered",
        "parked",
        "targets",
    }
    with served_store(tmp_path) as (store, work, sandbox):
        serve = _on_postgresql(work, sandbox, postgres_url).start()
        config = str(serve.config)
        try:
            nothing = replay(0)
            assert (nothing["ok"], nothing["events"], nothing["rejected"], nothing["delivered"]) == (
                True,
                0,
                0,
                0,
            )
            assert (nothing["unknown"], nothing["hints"]) == ([], ["no rejected webhooks to replay"]), nothing
            accept_and_reject(serve, lambda: _rejected(postgres_url))
            early = replay(8)
            assert (early["ok"], early["events"], early["rejected"], early["targets"]) == (False, 1, 1, None)
            assert set(early["unknown"]) == delivery_unknown, early
            assert early["rejected_webhooks"] == {
                "to_replay": 1, "unreplayable": 0, "requeued": 1, "taken": 0, "rejected_again": 1, "waiting": 0,
            }  # fmt: skip
            assert _rejected(postgres_url) == 1  # rejected again, with the reason of now
            assert serve.terminate() == 0
        finally:
            serve.kill()
        stopped = replay(0)
        assert (stopped["ok"], stopped["events"], stopped["rejected"]) == (True, 1, None), stopped
        assert set(stopped["unknown"]) == delivery_unknown | {"rejected"}, stopped
        assert stopped["rejected_webhooks"] == {
            "to_replay": 1, "unreplayable": 0, "requeued": 1, "taken": None, "rejected_again": None,
            "waiting": None,
        }  # fmt: skip
        assert stopped["hints"] == [
            "shipmap serve is not running: requeued 1 webhook in the inbox; the next `shipmap serve` start"
            " fetches their documents again and delivers them"
        ], stopped
        restarted = _on_postgresql(work, sandbox, postgres_url).start()
        try:
            restarted.wait_until(lambda: _rejected(postgres_url) == 1, what="the webhook rejected again")
            store.add_order_999()
            fixed = replay(0)
            assert (fixed["ok"], fixed["events"], fixed["rejected"], fixed["hints"]) == (True, 1, 0, []), (
                fixed
            )
            assert fixed["rejected_webhooks"] == {
                "to_replay": 1, "unreplayable": 0, "requeued": 1, "taken": 1, "rejected_again": 0, "waiting": 0,
            }  # fmt: skip
            restarted.wait_until(
                lambda: sandbox.requests(endpoint="fenix.orders"), what="the order delivered"
            )
            assert restarted.terminate() == 0
        finally:
            restarted.kill()
        (order,) = sandbox.requests(endpoint="fenix.orders")
    assert order.body["id"] == "999"
    assert _rejected(postgres_url) == 0
