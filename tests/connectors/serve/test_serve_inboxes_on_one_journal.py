"""Two ``shipmap serve`` processes, each with an SQLite inbox of its own (``serve.inbox`` a file), that share
one PostgreSQL journal (the real server `make test` starts), against the real sandbox. Each inbox numbers its
rows from 1, so each service's first webhook is row 1: their origins in the shared journal name the inbox as
well as the row, so that resolving, or replaying, one service's rejected webhook leaves the other's alone.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import psycopg
from shipmap.connectors import Sandbox

from .harness import (
    BC_HEADERS,
    DRAIN_LINE,
    ServeProcess,
    on_postgres,
    retries_reach_the_breaker,
    with_added,
)
from .rejected_support import served_store, shipmap, webhook_999

REASON = "enrichment failed: GET /v2/orders/999 failed: HTTP 404 Not Found"


def _service(work: Path, sandbox: Sandbox, database: str) -> ServeProcess:
    """A service in ``work`` whose inbox is the file ``work/.shipmap/inbox.db`` and whose journal is ``database``."""
    work.mkdir()
    serve = ServeProcess(work, sandbox.url)
    config = on_postgres(serve.config.read_text(), database)
    serve.config.write_text(with_added(config, DRAIN_LINE, "  inbox: .shipmap/inbox.db\n"))
    retries_reach_the_breaker(serve.config)  # the commands' whole stderr is read
    return serve


def _inbox_id(work: Path) -> str:
    with sqlite3.connect(work / ".shipmap" / "inbox.db") as db:
        (found,) = db.execute("SELECT v FROM meta WHERE k = 'inbox_id'").fetchone()
    return str(found)


def _rejected(database: str) -> list[str]:
    with psycopg.connect(database) as db:
        try:
            return [row[0] for row in db.execute("SELECT origin FROM rejected ORDER BY origin")]
        except psycopg.errors.UndefinedTable:  # the delivery side has not made the journal's tables yet
            return []


def _states(work: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(work / ".shipmap" / "inbox.db") as db:
        return [(int(i), str(s)) for i, s in db.execute("SELECT id, state FROM inbox ORDER BY id")]


def test_rejected_webhooks_of_two_sqlite_inboxes_on_one_postgresql_journal_are_told_apart(
    tmp_path: Path, postgres_url: str
) -> None:
    with served_store(tmp_path) as (store, _, sandbox):
        a = _service(tmp_path / "a", sandbox, postgres_url).start()
        b = _service(tmp_path / "b", sandbox, postgres_url).start()
        try:
            # Two webhooks of order 999 (which the store API does not show yet: 404), each to one service:
            # each is row 1 of its service's inbox, and each is rejected.
            other = json.loads(webhook_999())
            other["hash"] = "order-999-updated"
            with httpx.Client(timeout=10) as client:
                for serve, body in ((a, webhook_999()), (b, json.dumps(other).encode())):
                    answer = serve.post(client, "bc", body, BC_HEADERS)
                    assert answer.json() == {"status": "accepted", "id": 1}, answer.text
            a.wait_until(lambda: len(_rejected(postgres_url)) == 2, what="both webhooks rejected")
            mine, theirs = f"bc#{_inbox_id(a.workdir)}.1", f"bc#{_inbox_id(b.workdir)}.1"
            assert mine != theirs
            assert _rejected(postgres_url) == sorted([mine, theirs])
            listed = shipmap(a.workdir, sandbox, "dead-letters", str(a.config))
            assert listed.returncode == 0, listed.stdout + listed.stderr
            assert f"rejected input {mine}: {REASON}\n" in listed.stdout, listed.stdout
            assert f"rejected input {theirs}: {REASON}\n" in listed.stdout, listed.stdout

            # Resolving A's rejection by hand forgets that one only.
            resolved = shipmap(a.workdir, sandbox, "dead-letters", str(a.config), "--resolve", mine)
            assert (resolved.returncode, resolved.stdout) == (0, f"resolved rejected input {mine}\n"), (
                resolved.stdout + resolved.stderr
            )
            assert _rejected(postgres_url) == [theirs]

            # A's replay of rejected webhooks leaves B's to B: row 1 of A's inbox is not B's webhook.
            from_a = shipmap(a.workdir, sandbox, "replay", str(a.config), "--rejected")
            assert (from_a.returncode, from_a.stderr) == (8, ""), from_a.stdout + from_a.stderr
            assert from_a.stdout.splitlines() == [
                "1 rejected input record cannot be replayed:",
                f"  {theirs}: a webhook of another inbox ({_inbox_id(b.workdir)}): replay it with the config"
                " of the service that keeps that inbox",
            ], from_a.stdout
            assert _states(a.workdir) == [(1, "processed")]

            # B's replay, once the store shows the order, brings B's webhook back, and only it.
            store.add_order_999()
            from_b = shipmap(b.workdir, sandbox, "replay", str(b.config), "--rejected")
            assert (from_b.returncode, from_b.stderr) == (0, ""), from_b.stdout + from_b.stderr
            assert from_b.stdout.splitlines() == [
                f"1 rejected webhook to replay: {theirs}",
                "shipmap serve is running: it requeues 1 webhook and fetches their documents again (request 1)",
                "requeued by shipmap serve: 1 webhook",
                "read now and handed to delivery: 1 (their rejections resolved), rejected again: 0, still waiting"
                " in the inbox: 0",
            ], from_b.stdout
            b.wait_until(lambda: sandbox.requests(endpoint="fenix.orders"), what="the order delivered")
            assert a.terminate() == 0 and b.terminate() == 0
        finally:
            a.kill()
            b.kill()
        (order,) = sandbox.requests(endpoint="fenix.orders")  # B's webhook; A's was resolved by hand
    assert order.body["id"] == "999"
    assert _rejected(postgres_url) == []
    assert _states(a.workdir) == [(1, "processed")] and _states(b.workdir) == [(1, "processed")]


def test_a_rejection_recorded_before_inboxes_had_ids_is_replayed_and_resolved(
    tmp_path: Path, postgres_url: str
) -> None:
    """A journal and an inbox as an earlier shipmap left them: the rejection's origin is ``bc#1``, the inbox
    has no id. ``replay --rejected`` finds the webhook by the old origin and gives the rejection the name the
    feed gives the row now (the inbox draws its id then), so the run that delivers the webhook resolves it."""
    with served_store(tmp_path) as (store, _, sandbox):
        serve = _service(tmp_path / "a", sandbox, postgres_url).start()
        try:
            with httpx.Client(timeout=10) as client:
                answer = serve.post(client, "bc", webhook_999(), BC_HEADERS)
            assert answer.json() == {"status": "accepted", "id": 1}, answer.text
            serve.wait_until(lambda: len(_rejected(postgres_url)) == 1, what="the webhook rejected")
            assert serve.terminate() == 0
        finally:
            serve.kill()
        with psycopg.connect(postgres_url) as db:
            db.execute("UPDATE rejected SET origin = 'bc#1'")
        with sqlite3.connect(serve.workdir / ".shipmap" / "inbox.db") as inbox:
            inbox.execute("DELETE FROM meta WHERE k = 'inbox_id'")
        listed = shipmap(serve.workdir, sandbox, "dead-letters", str(serve.config))
        assert (listed.returncode, listed.stdout.splitlines()[0]) == (0, f"rejected input bc#1: {REASON}")

        store.add_order_999()
        replay = shipmap(serve.workdir, sandbox, "replay", str(serve.config), "--rejected")
        assert (replay.returncode, replay.stderr) == (0, ""), replay.stdout + replay.stderr
        assert replay.stdout.splitlines() == [
            "1 rejected webhook to replay: bc#1",
            "shipmap serve is not running: requeued 1 webhook in the inbox; the next `shipmap serve` start"
            " fetches their documents again and delivers them",
        ], replay.stdout
        assert _rejected(postgres_url) == [f"bc#{_inbox_id(serve.workdir)}.1"]
        assert _states(serve.workdir) == [(1, "pending")]
        restarted = serve.start()
        try:
            restarted.wait_until(
                lambda: sandbox.requests(endpoint="fenix.orders") and not _rejected(postgres_url),
                what="the order delivered and its rejection resolved",
            )
            assert restarted.terminate() == 0
        finally:
            restarted.kill()
        (order,) = sandbox.requests(endpoint="fenix.orders")
    assert order.body["id"] == "999"
    assert _states(serve.workdir) == [(1, "processed")]
