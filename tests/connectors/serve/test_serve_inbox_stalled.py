"""A live ``shipmap serve`` whose inbox stops answering: its health endpoints answer within their deadline.

The inbox's figures behind ``/readyz`` and ``/metrics`` are read on a thread and a connection of their own,
waited for at most ``INBOX_READ_DEADLINE_S`` (2 s). Before, they were read on intake's event loop, so a locked
or slow inbox held every request of the service for up to the server's statement_timeout (30 s).

- PostgreSQL: another session holds ``LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE`` (what an ``ALTER TABLE``,
  a ``VACUUM FULL`` or a stuck migration holds). ``/readyz`` answers 503 naming the inbox, ``/metrics``
  answers with its other series and ``shipmap_queue_stale 1``. A webhook posted meanwhile needs the inbox
  (its acknowledgement is its committed row): its INSERT waits for the lock on intake's connection thread,
  not on the loop, so the probes still answer while it waits, and it is acknowledged once the lock goes
  (within ``serve.intake_deadline``: past it, ``test_serve_intake_deadline.py``).
- SQLite: another connection holds the write lock (``BEGIN IMMEDIATE``); ``/readyz``'s write check would
  wait the busy timeout (5 s) for it. It answers 503 naming the inbox within the deadline, and ``shipmap
  status`` shows that reason.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
from shipmap.connectors import Sandbox
from shipmap.connectors._serve._inbox_gauges import INBOX_READ_DEADLINE_S
from shipmap.connectors._serve._inbox_pg_connection import STATEMENT_TIMEOUT_MS

from .harness import REAL_SHOPIFY, SQLITE_BUSY_TIMEOUT_S, ServeProcess, on_postgres, shopify_headers

ORDER = json.loads((REAL_SHOPIFY / "orders_cancelled_webhook.json").read_text())
STALE = "inbox did not answer within 2s"
# The answer comes at the deadline; what tells it from the wait it replaced is the reason it gives (the reading
# did not answer within 2s) and, with a margin no busy machine closes, the time: ten times the deadline at most,
# where a reading waited for on the loop would take PostgreSQL's statement timeout (30 s); under SQLite's busy
# timeout (5 s), which such a reading (the write check) would wait for the held lock.
ANSWERED_WITHIN = 10 * INBOX_READ_DEADLINE_S
SQLITE_ANSWERED_WITHIN = SQLITE_BUSY_TIMEOUT_S - 0.5


def _body(order_id: int) -> bytes:
    return json.dumps(dict(ORDER, id=order_id, name=f"#S{order_id}")).encode()


def _timed_get(client: httpx.Client, url: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    answer = client.get(url)
    return answer, time.monotonic() - started


def _metric(text: str, name: str) -> float:
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(f"{name} ")]
    assert len(values) == 1, (name, text)
    return values[0]


def test_a_locked_postgresql_inbox_leaves_readyz_and_metrics_answering_and_intake_waiting_for_its_row(
    source_sandbox: Sandbox, tmp_path: Path, postgres_url: str
) -> None:
    assert ANSWERED_WITHIN < STATEMENT_TIMEOUT_MS / 1000  # the bound tells the deadline from the old wait
    serve = ServeProcess(tmp_path, source_sandbox.url)
    text = on_postgres(serve.config.read_text(), postgres_url)  # the inbox is there too
    # The webhook below waits for the lock through the probes (3 s, the default deadline, could end it first:
    # test_serve_intake_deadline.py has what comes then).
    serve.config.write_text(
        text.replace("  drain_timeout: 30s\n", "  drain_timeout: 30s\n  intake_deadline: 20s\n")
    )
    serve.start()
    try:
        with httpx.Client(timeout=30) as client:
            first = serve.post(client, "shop", _body(1), shopify_headers(_body(1), "orders/create", "st-1"))
            assert (first.status_code, first.json()["status"]) == (200, "accepted"), first.text
            serve.wait_until(
                lambda: len(source_sandbox.requests(endpoint="fenix.orders")) == 1, what="delivery"
            )
            ready = client.get(f"{serve.url}/readyz")
            assert ready.status_code == 200, ready.text
            assert (ready.json()["queue_stale"], ready.json()["queue_depth"]) == (False, 0)
            assert "reason" not in ready.json()

            with psycopg.connect(postgres_url) as holder:  # a transaction, open until the rollback
                holder.execute("SET lock_timeout = '20s'")
                holder.execute("LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE")

                unready, took = _timed_get(client, f"{serve.url}/readyz")
                assert took < ANSWERED_WITHIN, took
                assert unready.status_code == 503, unready.text
                body = unready.json()
                assert (body["ready"], body["reason"], body["queue_stale"]) == (False, STALE, True), body
                assert (body["inbox_writable"], body["queue_depth"]) == (False, 0)  # the last answer's depth
                assert body["delivering"] is True and set(body["breakers"].values()) == {"closed"}
                # The probes that follow wait for the same reading, which the server's statement timeout ends a
                # second after the deadline, and then for the next: each says the inbox did not answer.
                for _ in range(3):
                    probed, took = _timed_get(client, f"{serve.url}/readyz")
                    assert took < ANSWERED_WITHIN, took
                    assert (probed.status_code, probed.json()["reason"]) == (503, STALE), probed.text

                scraped, took = _timed_get(client, f"{serve.url}/metrics")
                assert took < ANSWERED_WITHIN, took
                assert scraped.status_code == 200
                assert _metric(scraped.text, "shipmap_queue_stale") == 1.0
                assert _metric(scraped.text, "shipmap_queue_depth") == 0.0  # the last answer's
                assert 'shipmap_webhooks_accepted_total{source="shop"} 1.0' in scraped.text
                assert (
                    'shipmap_deliveries_total{outcome="delivered",target="shopify-order.order"} 1.0'
                    in scraped.text
                )

                # A webhook needs its row committed before its 200: it waits for the lock, off the loop.
                with concurrent.futures.ThreadPoolExecutor(1) as sender:
                    body2 = _body(2)
                    posted = sender.submit(
                        serve.post, client, "shop", body2, shopify_headers(body2, "orders/create", "st-2")
                    )
                    time.sleep(0.5)  # its INSERT is waiting for the lock now
                    # The loop answers while the commit waits: both answers come before the webhook's.
                    again, took = _timed_get(client, f"{serve.url}/readyz")
                    assert took < ANSWERED_WITHIN, took
                    assert (again.status_code, again.json()["reason"]) == (503, STALE)
                    healthy = client.get(f"{serve.url}/healthz")
                    assert (healthy.status_code, healthy.json()) == (200, {"status": "ok"}), healthy.text
                    assert not posted.done()
                    holder.rollback()  # the lock goes
                    accepted = posted.result(timeout=20)
                assert (accepted.status_code, accepted.json()["status"]) == (200, "accepted"), accepted.text

            serve.wait_until(
                lambda: len(source_sandbox.requests(endpoint="fenix.orders")) == 2, what="delivery"
            )
            back = client.get(f"{serve.url}/readyz")
            assert back.status_code == 200, back.text
            assert back.json()["queue_stale"] is False and "reason" not in back.json()
            assert _metric(client.get(f"{serve.url}/metrics").text, "shipmap_queue_stale") == 0.0
        assert serve.terminate() == 0
    finally:
        serve.kill()
    delivered = sorted(str(r.body["id"]) for r in source_sandbox.requests(endpoint="fenix.orders"))
    assert delivered == ["1", "2"]


def test_an_sqlite_inbox_whose_write_lock_is_held_gets_readyz_its_reason_within_the_deadline(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    serve = ServeProcess(tmp_path, source_sandbox.url).start()
    try:
        with httpx.Client(timeout=30) as client:
            assert client.get(f"{serve.url}/readyz").status_code == 200
            holder = sqlite3.connect(tmp_path / ".shipmap" / "inbox.db", isolation_level=None)
            try:
                holder.execute("BEGIN IMMEDIATE")  # the write lock, as a long purge or a backup tool takes it
                unready, took = _timed_get(client, f"{serve.url}/readyz")
                scraped, scrape_took = _timed_get(client, f"{serve.url}/metrics")
                status = subprocess.run(
                    [sys.executable, "-c", "from shipmap.connectors._cli import entry; entry()", "status",
                     str(serve.config), "--url", serve.url],
                    capture_output=True, text=True, timeout=60, cwd=tmp_path, env=serve.env,
                )  # fmt: skip
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            assert took < SQLITE_ANSWERED_WITHIN, took
            assert (unready.status_code, unready.json()["reason"]) == (503, STALE), unready.text
            assert scrape_took < SQLITE_ANSWERED_WITHIN, scrape_took
            assert _metric(scraped.text, "shipmap_queue_stale") == 1.0
            assert "shipmap_webhooks_received_total" in scraped.text
            # shipmap status reads the file itself (a reader is not held by the write lock) and asks /readyz,
            # which says why it is not ready: the reading in flight did not answer within the deadline, or (the
            # status process's start took as long as the write check's 5 s busy timeout) it answered no write.
            assert status.returncode == 0, status.stderr
            reasons = f"({re.escape(STALE)}|the inbox does not take writes)"
            assert re.search(
                f"^service     NOT READY \\({reasons}\\) at {re.escape(serve.url)}/readyz$",
                status.stdout,
                re.M,
            ), status.stdout
            serve.wait_until(
                lambda: client.get(f"{serve.url}/readyz").status_code == 200, what="ready again", timeout=15
            )
        assert serve.terminate() == 0
    finally:
        serve.kill()
