"""``shipmap replay --rejected``: a skinny webhook whose enrichment failed for good (the store API's 404) is a
rejected input record; once the store has the order, the command brings the webhook back from the inbox, its
documents fetched again, with ``shipmap serve`` running (through its replay requests) and stopped (the next
start takes it). Records it cannot bring back are reported with why."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from shipmap.connectors._serve import Inbox
from shipmap.connectors._serve._inbox import HeldRow
from shipmap.connectors._store._journal import open_readonly

from .harness import (
    BC_API_TOKEN,
    BC_HEADERS,
    BC_ORDER_CREATED,
    DRAIN_LINE,
    ServeProcess,
    retries_reach_the_breaker,
    with_added,
)
from .rejected_support import (
    NOT_FOUND,
    accept_and_reject,
    reject_and_stop,
    rejected_in,
    served_store,
    webhook_999,
)
from .rejected_support import shipmap as _shipmap


def test_replay_rejected_while_serve_runs(tmp_path: Path) -> None:
    with served_store(tmp_path) as (store, work, sandbox):
        serve = ServeProcess(work, sandbox.url).start()
        try:
            accept_and_reject(serve)
            config = str(serve.config)
            # Before the fix: the service fetches again, the store still answers 404, the webhook is rejected
            # again (one record still, with the reason of now).
            early = _shipmap(work, sandbox, "replay", config, "--rejected")
            assert early.returncode == 8, early.stdout + early.stderr
            assert early.stdout.splitlines() == [
                "1 rejected webhook to replay: bc#1",
                "shipmap serve is running: it requeues 1 webhook and fetches their documents again (request 1)",
                "requeued by shipmap serve: 1 webhook",
                "read now and handed to delivery: 0 (their rejections resolved), rejected again: 1, still waiting"
                " in the inbox: 0",
                f"  still rejected: {NOT_FOUND} Not Found",
            ], early.stdout
            assert rejected_in(work) == 1
            store.add_order_999()  # the store shows the order now
            fixed = _shipmap(work, sandbox, "replay", config, "--rejected")
            assert fixed.returncode == 0, fixed.stdout + fixed.stderr
            assert fixed.stdout.splitlines()[1:] == [
                "shipmap serve is running: it requeues 1 webhook and fetches their documents again (request 2)",
                "requeued by shipmap serve: 1 webhook",
                "read now and handed to delivery: 1 (their rejections resolved), rejected again: 0, still waiting"
                " in the inbox: 0",
            ], fixed.stdout
            serve.wait_until(lambda: sandbox.requests(endpoint="fenix.orders"), what="the order delivered")
            listed = _shipmap(work, sandbox, "dead-letters", config)
            assert (listed.returncode, listed.stdout) == (0, "no dead letters\n"), listed.stdout
            again = _shipmap(work, sandbox, "replay", config, "--rejected")
            assert (again.returncode, again.stdout) == (0, "no rejected webhooks to replay\n"), again.stdout
            assert serve.terminate() == 0
        finally:
            serve.kill()
        (order,) = sandbox.requests(endpoint="fenix.orders")  # delivered once
    assert order.body["id"] == "999" and order.body["customer"]["email"] == "jane@example.com"
    log = "".join(serve.errors)
    assert "bc#1: rejected by an earlier run, now reads: rejection resolved" in log, log
    assert "requeued 1 webhook rejected earlier, as `shipmap replay --rejected` asked (request 2)" in log


def test_replay_rejected_while_serve_is_stopped_is_taken_by_the_next_start(tmp_path: Path) -> None:
    with served_store(tmp_path) as (store, work, sandbox):
        serve = ServeProcess(work, sandbox.url).start()
        reject_and_stop(serve)
        store.add_order_999()
        config = str(serve.config)
        replay = _shipmap(work, sandbox, "replay", config, "--rejected")
        assert replay.returncode == 0, replay.stdout + replay.stderr
        assert replay.stdout.splitlines() == [
            "1 rejected webhook to replay: bc#1",
            "shipmap serve is not running: requeued 1 webhook in the inbox; the next `shipmap serve` start"
            " fetches their documents again and delivers them",
        ]
        with Inbox(work / ".shipmap" / "inbox.db", readonly=True) as inbox:
            assert inbox.depth() == 1
        assert rejected_in(work) == 1  # resolved when the webhook reads, not before
        restarted = ServeProcess(work, sandbox.url).start()
        try:
            restarted.wait_until(
                lambda: sandbox.requests(endpoint="fenix.orders"), what="the order delivered"
            )
            restarted.wait_until(lambda: rejected_in(work) == 0, what="the rejection resolved")
            assert restarted.terminate() == 0
        finally:
            restarted.kill()
        listed = _shipmap(work, sandbox, "dead-letters", config)
        assert (listed.returncode, listed.stdout) == (0, "no dead letters\n"), listed.stdout
        (order,) = sandbox.requests(endpoint="fenix.orders")
    assert order.body["id"] == "999"


def _inbox_rows(work: Path) -> dict[int, HeldRow]:
    with Inbox(work / ".shipmap" / "inbox.db", readonly=True) as inbox:
        return inbox.held(range(1, 10))


def test_keep_bodies_drops_a_delivered_webhooks_body_and_keeps_a_rejected_one_for_replay(
    tmp_path: Path,
) -> None:
    """``serve.keep_bodies: 0s``: the next start drops the body of the webhook delivered fine (its id still a
    duplicate), and keeps the rejected one's, which ``replay --rejected`` then brings back and delivers."""
    delivered = BC_ORDER_CREATED.read_bytes()
    with served_store(tmp_path) as (store, work, sandbox):
        serve = ServeProcess(work, sandbox.url)
        serve.config.write_text(with_added(serve.config.read_text(), DRAIN_LINE, "  keep_bodies: 0s\n"))
        serve.start()
        try:
            with httpx.Client(timeout=10) as client:
                assert serve.post(client, "bc", delivered, BC_HEADERS).json() == {
                    "status": "accepted",
                    "id": 1,
                }
            serve.wait_until(lambda: sandbox.requests(endpoint="fenix.orders"), what="order 100 delivered")
            accept_and_reject(serve)  # bc#2
            serve.wait_until(
                lambda: [row.state for row in _inbox_rows(work).values()] == ["processed", "processed"],
                what="both rows processed",
            )
            assert serve.terminate() == 0
        finally:
            serve.kill()
        assert [row.body_dropped for row in _inbox_rows(work).values()] == [False, False]  # not before a look
        restarted = ServeProcess(work, sandbox.url).start()  # a start looks at once
        try:
            assert [row.body_dropped for row in _inbox_rows(work).values()] == [True, False]
            with httpx.Client(timeout=10) as client:
                again = restarted.post(client, "bc", delivered, BC_HEADERS)
            assert again.json() == {"status": "duplicate", "id": 1}
            store.add_order_999()
            replay = _shipmap(work, sandbox, "replay", str(restarted.config), "--rejected")
            assert replay.returncode == 0, replay.stdout + replay.stderr
            assert replay.stdout.splitlines()[0] == "1 rejected webhook to replay: bc#2", replay.stdout
            restarted.wait_until(
                lambda: len(sandbox.requests(endpoint="fenix.orders")) == 2, what="order 999"
            )
            assert restarted.terminate() == 0
        finally:
            restarted.kill()
        orders = sorted(order.body["id"] for order in sandbox.requests(endpoint="fenix.orders"))
    assert orders == ["100", "999"]  # each once: the duplicate was not delivered again
    assert any(
        line.rstrip().endswith(
            "inbox: forgot 0 webhooks received more than 7d ago (serve.dedup_window); dropped 1 body of webhooks"
            " processed more than 0s ago (serve.keep_bodies)"
        )
        for line in restarted.errors
    ), restarted.errors


def test_rejected_records_that_cannot_be_replayed_are_reported_with_why(tmp_path: Path) -> None:
    with served_store(tmp_path) as (_, work, sandbox):
        serve = ServeProcess(work, sandbox.url).start()
        reject_and_stop(serve)
        config = str(serve.config)
        # A `shipmap run` input line that is not JSON: rejected too, but no inbox holds it.
        (work / "events.ndjson").write_text("{not json\n")
        run = _shipmap(work, sandbox, "run", config, "--input", "events.ndjson", "--no-progress")
        assert run.returncode == 8, run.stderr
        only_shop = _shipmap(work, sandbox, "replay", config, "--rejected", "--key", "shop")
        assert (only_shop.returncode, only_shop.stdout) == (
            0,
            "no rejected webhooks to replay with those keys\n",
        )
        # The webhook's row is purged (the dedup window has passed for it): its body is gone with it.
        with Inbox(work / ".shipmap" / "inbox.db") as inbox:
            assert inbox.purge(time.time() + 1) == 1
        replay = _shipmap(work, sandbox, "replay", config, "--rejected")
        assert replay.returncode == 8, replay.stdout + replay.stderr
        assert replay.stdout.splitlines() == [
            "2 rejected input records cannot be replayed:",
            "  bc#1: its webhook is no longer in the inbox (forgotten serve.dedup_window after it arrived)",
            "  events.ndjson:1: not a webhook: an input line of `shipmap run` (run that file again)",
        ], replay.stdout
        one = _shipmap(work, sandbox, "replay", config, "--rejected", "--key", "bc#1")
        assert (
            one.returncode == 8
            and one.stdout.splitlines()[0] == "1 rejected input record cannot be replayed:"
        )
        assert rejected_in(work) == 2  # nothing was changed
        assert sandbox.requests(endpoint="fenix.orders") == []


def test_key_selects_a_source_or_one_webhook() -> None:
    from shipmap.connectors._serve._rejected import selected

    assert selected("bc#12", ["bc"]) and not selected("bc2#1", ["bc"]) and not selected("bc.ndjson:1", ["bc"])
    assert selected("bc#1", ["bc#1"]) and not selected("bc#12", ["bc#1"])
    assert selected("events.ndjson:1", None)


def test_a_postgresql_inbox_beside_an_sqlite_journal_is_refused_with_the_reason(tmp_path: Path) -> None:
    """The requeue and the forgetting of the rejection are one transaction, so the inbox must be in the
    journal's database: refused before any connection to it is tried (none listens on port 9 here)."""
    serve = ServeProcess(tmp_path, "http://127.0.0.1:9")  # only for its copy of the config files
    inbox = "  inbox: postgresql://shipmap:pw@127.0.0.1:9/shipmap\n"
    serve.config.write_text(with_added(serve.config.read_text(), DRAIN_LINE, inbox))
    retries_reach_the_breaker(serve.config)
    result = subprocess.run(
        [sys.executable, "-c", "from shipmap.connectors._cli import entry; entry()",
         "replay", str(serve.config), "--rejected"],
        capture_output=True, text=True, env=serve.env, cwd=tmp_path, check=False, timeout=60,
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (7, ""), result.stderr
    journal = (tmp_path / ".shipmap" / "journal.db").resolve()
    assert result.stderr == (
        "error: shipmap replay --rejected: the PostgreSQL inbox postgresql://shipmap@127.0.0.1:9/shipmap needs"
        f" the journal in its database (this one is the SQLite file {journal}): requeueing a webhook and"
        " forgetting its rejection are one transaction; put the journal there (journal.url) and leave"
        " serve.inbox unset (docs/serve.md#enrichment-fetching-from-the-sources-api)\n"
    )


def test_a_postgresql_inbox_must_share_the_journals_database() -> None:
    from shipmap.connectors._errors import JournalError
    from shipmap.connectors._serve._rejected import refuse_apart

    journal = "postgresql://shipmap:secret@db.internal:5432/shipmap"
    refuse_apart(journal, journal)  # the default: serve.inbox unset
    refuse_apart("postgresql://shipmap@db.internal:5432/shipmap?sslmode=require", journal)  # spelt otherwise
    refuse_apart(Path("inbox.db"), journal)  # an SQLite inbox: the service requeues, between two runs
    refuse_apart(None, journal)  # no sources
    with pytest.raises(JournalError) as refused:
        refuse_apart("postgresql://shipmap:secret@db.internal:5432/intake", journal)
    message = refused.value.message
    assert (
        "the PostgreSQL inbox postgresql://shipmap@db.internal:5432/intake needs the journal in its"
        in message
    )
    assert "(this one is in postgresql://shipmap@db.internal:5432/shipmap)" in message
    assert "secret" not in message


def test_a_row_received_after_its_rejection_is_another_webhook_beyond_clock_skew(tmp_path: Path) -> None:
    """An inbox made afresh begins its ids again: row 1 then holds another webhook than the one rejected, and
    it is not replayed in its place. A row stamped a little after its rejection is the same webhook: on
    PostgreSQL, the intake's host stamps the row and a delivery host the rejection, by their own clocks."""
    from shipmap.connectors import Journal
    from shipmap.connectors._serve._rejected import find_rejected

    with Journal(tmp_path / "journal.db") as journal:
        journal.record_rejected("bc#1", "enrichment failed: HTTP 404", None)
        journal.record_rejected("bc#2", "enrichment failed: HTTP 404", None)
        rejected_at = max(record.at for record in journal.rejected())
        with Inbox(tmp_path / "inbox.db") as inbox:
            inbox.accept("bc", "made-afresh", None, {}, b"{}", received_at=rejected_at + 3600)
            inbox.accept("bc", "skewed-clock", None, {}, b"{}", received_at=rejected_at + 2)
        found = find_rejected(journal, tmp_path / "inbox.db", {"bc"}, None)
    assert found.rows == {2: "bc#2"}
    assert [(record.origin, record.why) for record in found.unreplayable] == [
        ("bc#1", "inbox row 1 holds another webhook now (the inbox was started anew)")
    ]


def test_a_rejected_webhooks_excerpt_masks_a_secret_it_echoes(tmp_path: Path) -> None:
    """The excerpt of a webhook whose enrichment failed went into the journal as the body's first 500 bytes;
    `shipmap run` redacts its excerpts. A body echoing the store API's token (a registered secret) is masked."""
    body = json.loads(webhook_999())
    body["note"] = f"token {BC_API_TOKEN}"
    with served_store(tmp_path) as (_, work, sandbox):
        serve = ServeProcess(work, sandbox.url).start()
        try:
            with httpx.Client(timeout=10) as client:
                answer = serve.post(client, "bc", json.dumps(body).encode(), BC_HEADERS)
            assert answer.json()["status"] == "accepted", answer.text
            serve.wait_until(lambda: rejected_in(work) == 1, what="the rejected webhook")
            assert serve.terminate() == 0
        finally:
            serve.kill()
    journal = open_readonly(work / ".shipmap" / "journal.db")
    assert journal is not None
    with journal:
        (record,) = journal.rejected()
    assert record.excerpt is not None and '"note": "token ' in record.excerpt, record.excerpt
    assert BC_API_TOKEN not in record.excerpt, record.excerpt
