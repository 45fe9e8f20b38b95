"""A live ``shipmap serve`` whose inbox cannot store a webhook in time answers its sender before the sender
gives up, and a webhook refused so is delivered once, after the sender's retry.

Senders wait a few seconds for an answer (Shopify 5 s), then retry. Before ``serve.intake_deadline`` a
webhook waited for its commit up to the server's statement timeout (30 s): the sender had long given up, and
its retries piled up behind it, unbounded. Now:

- PostgreSQL, the inbox table locked by another session (``LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE``, what an
  ``ALTER TABLE`` or a ``VACUUM FULL`` holds): a webhook is answered ``503 inbox_timeout`` with
  ``Retry-After`` at the deadline. One whose INSERT was still waiting when the lock went is committed after its
  503; the sender's retry finds it (``200 duplicate``), and it is delivered once. The one whose INSERT the
  deadline ended is accepted on its retry, delivered once.
- The webhooks waiting for the inbox at once are capped (``serve.intake_max_waiting``): one more is answered
  ``503 inbox_busy`` at once, counted in ``shipmap_webhooks_rejected_total``.
- SQLite, its write lock held by another connection (``BEGIN IMMEDIATE``): the same deadline is the inbox's
  busy timeout.
- Each source may have its own (``sources.S.intake_deadline``): WooCommerce waits 60 s and never retries, so
  a short deadline loses its webhooks. In one service, a short source is answered 503 at its deadline while a
  long one, in the same locked moment, waits on and is stored; intake's connection waits as long as the
  longest deadline of its batch, no longer (a batch of the short source's ends with them).
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import hashlib
import hmac
import json
import signal
import sqlite3
import time
from pathlib import Path

import httpx
import psycopg
from shipmap.connectors import Sandbox
from shipmap.connectors._serve._inbox_pg_connection import STATEMENT_TIMEOUT_MS

from .harness import REAL_SHOPIFY, SECRETS, SQLITE_BUSY_TIMEOUT_S, ServeProcess, on_postgres, shopify_headers

ORDER = json.loads((REAL_SHOPIFY / "orders_cancelled_webhook.json").read_text())
# A refusal at a deadline comes after it (time does not run backwards, however busy the machine), and, where
# the time is what tells it from the wait it replaced, well before that wait: the server's statement timeout
# (30 s) for PostgreSQL, ten times the deadline at least; SQLite's busy timeout (5 s) is the one closer.
STATEMENT_TIMEOUT_S = STATEMENT_TIMEOUT_MS / 1000
RETRY_AFTER = "5"


def _body(order_id: int) -> bytes:
    return json.dumps(dict(ORDER, id=order_id, name=f"#D{order_id}")).encode()


def _configured(serve: ServeProcess, postgres_url: str | None = None, **keys: str) -> ServeProcess:
    """``serve`` with these ``serve:`` keys, its journal and inbox in ``postgres_url`` when given."""
    text = serve.config.read_text()
    if postgres_url is not None:
        text = on_postgres(text, postgres_url)
    written = "".join(f"  {key}: {value}\n" for key, value in keys.items())
    assert "  drain_timeout: 30s\n" in text, text
    serve.config.write_text(text.replace("  drain_timeout: 30s\n", f"  drain_timeout: 30s\n{written}"))
    return serve


def _post(serve: ServeProcess, client: httpx.Client, order_id: int) -> tuple[httpx.Response, float]:
    """Order ``order_id`` posted as Shopify posts it (webhook id ``wh-{order_id}``, as each retry of it)."""
    body = _body(order_id)
    started = time.monotonic()
    answer = serve.post(client, "shop", body, shopify_headers(body, "orders/create", f"wh-{order_id}"))
    return answer, time.monotonic() - started


def _status(answer: httpx.Response) -> tuple[int, str]:
    return answer.status_code, answer.json().get("status") or answer.json().get("error")


def _stored(url: str) -> list[str]:
    with psycopg.connect(url) as db:
        return [row[0] for row in db.execute("SELECT webhook_id FROM inbox ORDER BY id").fetchall()]


def _metric(text: str, line: str) -> bool:
    return line in text.splitlines()


def _delivered(sandbox: Sandbox) -> list[int]:
    return sorted(int(r.body["id"]) for r in sandbox.requests(endpoint="fenix.orders"))


def test_a_locked_postgresql_inbox_answers_503_at_the_deadline_and_each_webhook_is_delivered_once(
    source_sandbox: Sandbox, tmp_path: Path, postgres_url: str
) -> None:
    deadline = 2.0
    serve = _configured(ServeProcess(tmp_path, source_sandbox.url), postgres_url, intake_deadline="2s")
    serve.start()
    try:
        with httpx.Client(timeout=30) as client:
            assert _status(_post(serve, client, 1)[0]) == (200, "accepted")

            with psycopg.connect(postgres_url) as holder:  # a transaction, open until the rollback
                holder.execute("SET lock_timeout = '20s'")
                holder.execute("LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE")
                with concurrent.futures.ThreadPoolExecutor(2) as senders:
                    # 2's INSERT waits for the lock, until the deadline ends it; 3 waits behind it for the
                    # next commit, whose INSERT then waits for the lock in turn.
                    second = senders.submit(_post, serve, client, 2)
                    time.sleep(0.3)
                    third = senders.submit(_post, serve, client, 3)
                    refused = [second.result(timeout=30), third.result(timeout=30)]
                # 3's INSERT still waits, a deadline from when its commit began: the lock goes now.
                holder.rollback()

            for answer, took in refused:
                assert answer.status_code == 503, answer.text
                assert answer.json() == {
                    "error": "inbox_timeout",
                    "message": "the webhook could not be stored within 2s (serve.intake_deadline); retry later",
                }
                assert answer.headers["Retry-After"] == RETRY_AFTER
                assert deadline - 0.1 < took < 10 * deadline < STATEMENT_TIMEOUT_S, took
            # Half-accepted? 3's commit landed after its 503; 2's, ended by the deadline, never did.
            serve.wait_until(
                lambda: _stored(postgres_url) == ["wh-1", "wh-3"], what="3's late commit", timeout=10
            )

            # The sender retries each: 2 is accepted now, 3 is the row its late commit stored.
            assert _status(_post(serve, client, 2)[0]) == (200, "accepted")
            assert _status(_post(serve, client, 3)[0]) == (200, "duplicate")
            assert _status(_post(serve, client, 2)[0]) == (200, "duplicate")  # a retry that crossed the 200
            serve.wait_until(lambda: _delivered(source_sandbox) == [1, 2, 3], what="three deliveries")
            assert _stored(postgres_url) == ["wh-1", "wh-3", "wh-2"]

            metrics = client.get(f"{serve.url}/metrics").text
            assert _metric(
                metrics, 'shipmap_webhooks_rejected_total{reason="inbox_timeout",source="shop"} 2.0'
            )
            assert _metric(metrics, 'shipmap_webhooks_accepted_total{source="shop"} 2.0')
            assert _metric(metrics, 'shipmap_webhooks_duplicate_total{source="shop"} 2.0')
            assert _metric(metrics, "shipmap_intake_waiting 0.0")
        assert serve.terminate() == 0
    finally:
        serve.kill()
    assert _delivered(source_sandbox) == [1, 2, 3]  # each once, after the drain too
    log = "".join(serve.errors)
    assert "POST /hooks/shop: 503 the webhook could not be stored within 2s" in log, log


def test_past_intake_max_waiting_a_webhook_gets_503_at_once_and_the_waiting_ones_are_stored(
    source_sandbox: Sandbox, tmp_path: Path, postgres_url: str
) -> None:
    serve = _configured(
        ServeProcess(tmp_path, source_sandbox.url),
        postgres_url,
        intake_deadline="20s",
        intake_max_waiting="2",
    )
    serve.start()
    try:
        with httpx.Client(timeout=30) as client:
            with psycopg.connect(postgres_url) as holder:
                holder.execute("SET lock_timeout = '20s'")
                holder.execute("LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE")
                with concurrent.futures.ThreadPoolExecutor(2) as senders:
                    waiting = [senders.submit(_post, serve, client, n) for n in (1, 2)]
                    serve.wait_until(
                        lambda: _metric(
                            client.get(f"{serve.url}/metrics").text, "shipmap_intake_waiting 2.0"
                        ),
                        what="two webhooks waiting for the inbox",
                        timeout=15,
                    )
                    # At once: answered while the two still wait for the locked inbox (20 s), not after them.
                    busy = _post(serve, client, 3)[0]
                    assert not any(posted.done() for posted in waiting)
                    still = client.get(f"{serve.url}/metrics").text
                    assert _metric(still, "shipmap_intake_waiting 2.0"), still
                    holder.rollback()  # the lock goes: the two waiting are stored
                    stored = [posted.result(timeout=30)[0] for posted in waiting]
            assert busy.status_code == 503, busy.text
            assert busy.json() == {
                "error": "inbox_busy",
                "message": "2 webhooks are waiting for the inbox already (serve.intake_max_waiting); retry later",
            }
            assert busy.headers["Retry-After"] == RETRY_AFTER
            assert [_status(answer) for answer in stored] == [(200, "accepted"), (200, "accepted")]
            assert _status(_post(serve, client, 3)[0]) == (200, "accepted")  # its sender's retry
            serve.wait_until(lambda: _delivered(source_sandbox) == [1, 2, 3], what="three deliveries")

            metrics = client.get(f"{serve.url}/metrics").text
            assert _metric(metrics, 'shipmap_webhooks_rejected_total{reason="inbox_busy",source="shop"} 1.0')
            assert _metric(metrics, "shipmap_intake_waiting 0.0")
        assert serve.terminate() == 0
    finally:
        serve.kill()
    assert _delivered(source_sandbox) == [1, 2, 3]


def test_an_sqlite_inbox_whose_write_lock_is_held_answers_503_at_the_deadline_and_takes_the_retry(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    serve = _configured(ServeProcess(tmp_path, source_sandbox.url), intake_deadline="1s").start()
    try:
        with httpx.Client(timeout=30) as client:
            assert _status(_post(serve, client, 1)[0]) == (200, "accepted")
            holder = sqlite3.connect(tmp_path / ".shipmap" / "inbox.db", isolation_level=None)
            try:
                holder.execute("BEGIN IMMEDIATE")  # the write lock, as a backup tool or a long purge takes it
                refused, took = _post(serve, client, 2)
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            assert refused.status_code == 503, refused.text
            assert refused.json() == {
                "error": "inbox_timeout",
                "message": "the webhook could not be stored within 1s (serve.intake_deadline); retry later",
            }
            assert refused.headers["Retry-After"] == RETRY_AFTER
            assert 0.9 < took < SQLITE_BUSY_TIMEOUT_S - 0.5, took  # the deadline, not the busy timeout
            assert _status(_post(serve, client, 2)[0]) == (200, "accepted")  # its sender's retry
            serve.wait_until(lambda: _delivered(source_sandbox) == [1, 2], what="two deliveries")
            metrics = client.get(f"{serve.url}/metrics").text
            assert _metric(
                metrics, 'shipmap_webhooks_rejected_total{reason="inbox_timeout",source="shop"} 1.0'
            )
        assert serve.terminate() == 0
    finally:
        serve.kill()
    assert _delivered(source_sandbox) == [1, 2]


def _post_woo(serve: ServeProcess, client: httpx.Client, order_id: int) -> tuple[httpx.Response, float]:
    """Order ``order_id`` posted as WooCommerce posts it (delivery id ``d-{order_id}``)."""
    body = json.dumps({"id": order_id, "status": "processing"}).encode()
    signature = base64.b64encode(hmac.new(SECRETS["WOO_SECRET"].encode(), body, hashlib.sha256).digest())
    headers = {
        "Content-Type": "application/json",
        "X-WC-Webhook-Topic": "order.created",
        "X-WC-Webhook-Delivery-ID": f"d-{order_id}",
        "X-WC-Webhook-Signature": signature.decode(),
    }
    started = time.monotonic()
    answer = serve.post(client, "woo", body, headers)
    return answer, time.monotonic() - started


def _intake_waits_on_a_lock(url: str) -> bool:
    """Whether a serve process's intake connection waits for a lock now."""
    with psycopg.connect(url) as db:
        row = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'shipmap serve'"
            " AND wait_event_type = 'Lock'"
        ).fetchone()
    return bool(row and row[0])


def test_each_source_waits_its_own_deadline_in_one_service_over_a_locked_postgresql_inbox(
    source_sandbox: Sandbox, tmp_path: Path, postgres_url: str
) -> None:
    # shop 1 s, woo 10 s: ten times as long, so which of them ended a wait shows without a tight window.
    serve = _configured(ServeProcess(tmp_path, source_sandbox.url), postgres_url, intake_deadline="1s")
    text = serve.config.read_text()
    assert "    secret: ${WOO_SECRET}\n" in text, text
    serve.config.write_text(
        text.replace("    secret: ${WOO_SECRET}\n", "    secret: ${WOO_SECRET}\n    intake_deadline: 10s\n")
    )
    serve.start()
    try:
        with httpx.Client(timeout=30) as client:
            assert _status(_post(serve, client, 1)[0]) == (200, "accepted")

            with psycopg.connect(postgres_url) as holder:
                holder.execute("SET lock_timeout = '20s'")
                holder.execute("LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE")
                with concurrent.futures.ThreadPoolExecutor(2) as senders:
                    # woo's INSERT waits for the lock; shop's webhook waits behind it for the next commit.
                    patient = senders.submit(_post_woo, serve, client, 10)
                    time.sleep(0.3)
                    short, short_took = senders.submit(_post, serve, client, 2).result(timeout=30)
                    # Past serve's 1 s, woo's INSERT still waits (the connection's limit is its 10 s): shop's
                    # 503 came first, at its own deadline, not at the end of the INSERT it waited behind.
                    time.sleep(max(0.0, 2.0 - 0.3 - short_took))
                    assert not patient.done()
                    assert _intake_waits_on_a_lock(postgres_url)
                    holder.rollback()  # the lock goes
                    stored, stored_took = patient.result(timeout=30)
            assert short.status_code == 503, short.text
            assert short.json() == {
                "error": "inbox_timeout",
                "message": "the webhook could not be stored within 1s (serve.intake_deadline); retry later",
            }
            assert short_took > 0.9, short_took  # not before its deadline
            assert _status(stored) == (200, "accepted")  # within its deadline: stored when the lock went
            assert stored_took > 1.9, stored_took  # it waited for the lock through shop's 503
            assert _status(_post(serve, client, 2)[0]) == (200, "accepted")  # shop's retry

            with psycopg.connect(postgres_url) as holder:
                holder.execute("SET lock_timeout = '20s'")
                holder.execute("LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE")
                # A batch of shop's webhooks alone: its INSERT ends at shop's 1 s, with its 503, not at woo's
                # 10 s, 9 s later.
                short, short_took = _post(serve, client, 3)
                serve.wait_until(
                    lambda: not _intake_waits_on_a_lock(postgres_url),
                    what="intake's INSERT ended",
                    timeout=5.0,
                )
                refused, refused_took = _post_woo(serve, client, 11)
                # Its INSERT ends at its own 10 s, a moment after its 503 on a busy machine: the lock goes
                # once it has (else it would commit after its 503, and the retry below be a duplicate).
                serve.wait_until(
                    lambda: not _intake_waits_on_a_lock(postgres_url),
                    what="woo's INSERT ended",
                    timeout=10.0,
                )
                holder.rollback()
            assert _status(short) == (503, "inbox_timeout")
            assert 0.9 < short_took < 10 * 1.0, short_took  # shop's 1 s, not woo's 10 s
            assert refused.status_code == 503, refused.text
            assert refused.json() == {
                "error": "inbox_timeout",
                "message": "the webhook could not be stored within 10s (sources.woo.intake_deadline); retry later",
            }
            assert 9.9 < refused_took < STATEMENT_TIMEOUT_S, refused_took
            assert _status(_post_woo(serve, client, 11)[0]) == (200, "accepted")  # a retry by hand
            assert sorted(_stored(postgres_url)) == ["d-10", "d-11", "wh-1", "wh-2"]
        assert serve.terminate() == 0
    finally:
        serve.kill()


def _inbox_ids(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [row[0] for row in db.execute("SELECT webhook_id FROM inbox ORDER BY id").fetchall()]


def _with_source_key(serve: ServeProcess, after: str, line: str) -> None:
    text = serve.config.read_text()
    assert after in text, text
    serve.config.write_text(text.replace(after, f"{after}{line}", 1))


def test_while_another_program_holds_an_sqlite_inbox_s_write_lock_the_service_answers_everything_else(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """A webhook of a patient source (30 s) waits for an SQLite write lock another connection holds: the
    commit waits on intake's thread, so /healthz and /metrics answer meanwhile, and another source's webhook
    is refused at its own deadline (1 s), never stored. The lock goes: the patient one is accepted and
    delivered once; the refused one's retry is accepted, not a duplicate. Before, the commit waited on the
    event loop, which answered nothing until the lock went."""
    serve = _configured(ServeProcess(tmp_path, source_sandbox.url), intake_deadline="1s")
    _with_source_key(serve, "    rate_limit: {per_second: 5000, burst: 5000}\n", "    intake_deadline: 30s\n")
    serve.start()
    inbox = tmp_path / ".shipmap" / "inbox.db"
    try:
        # scrape: past the gauges' own deadline (2 s), generous for /healthz too: what shows the commit does not
        # wait on the event loop is that they answer while the patient webhook still waits, not how soon.
        with httpx.Client(timeout=30) as client:
            with httpx.Client(timeout=10.0) as scrape:
                assert _status(_post(serve, client, 1)[0]) == (200, "accepted")
                holder = sqlite3.connect(inbox, isolation_level=None)
                try:
                    holder.execute("BEGIN IMMEDIATE")  # the write lock, as a backup tool takes it
                    with concurrent.futures.ThreadPoolExecutor(1) as sender:
                        patient = sender.submit(_post, serve, client, 2)
                        serve.wait_until(
                            lambda: _metric(
                                scrape.get(f"{serve.url}/metrics").text, "shipmap_intake_waiting 1.0"
                            ),
                            what="shop's webhook waiting for the inbox",
                            timeout=15,
                        )
                        health = scrape.get(f"{serve.url}/healthz")
                        assert not patient.done()  # answered while the lock still holds it
                        refused = _post_woo(serve, client, 10)[0]
                        assert not patient.done()
                        holder.execute("ROLLBACK")
                        stored = patient.result(timeout=30)[0]
                finally:
                    holder.close()
            assert health.status_code == 200 and health.json() == {"status": "ok"}
            assert refused.status_code == 503, refused.text
            assert refused.json() == {
                "error": "inbox_timeout",
                "message": "the webhook could not be stored within 1s (serve.intake_deadline); retry later",
            }
            assert refused.headers["Retry-After"] == RETRY_AFTER
            assert _status(stored) == (200, "accepted")
            assert _status(_post_woo(serve, client, 10)[0]) == (
                200,
                "accepted",
            )  # its retry: never half-stored
            assert _status(_post(serve, client, 2)[0]) == (200, "duplicate")  # dedup holds
            serve.wait_until(lambda: _delivered(source_sandbox) == [1, 2], what="two deliveries")
        assert serve.terminate() == 0
    finally:
        serve.kill()
    assert _delivered(source_sandbox) == [1, 2]  # each once
    assert _inbox_ids(inbox) == ["wh-1", "wh-2", "d-10"]


def test_a_reload_applies_the_intake_deadlines_and_the_cap_on_waiting_webhooks_to_the_next_requests(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """``serve.intake_deadline``, ``serve.intake_max_waiting`` and ``sources.S.intake_deadline`` are read at
    each request: SIGHUP applies them, and the log names them as applied, not as waiting for a restart."""
    serve = _configured(ServeProcess(tmp_path, source_sandbox.url), intake_deadline="1s")
    serve.start()
    inbox = tmp_path / ".shipmap" / "inbox.db"
    try:
        with httpx.Client(timeout=30) as client, httpx.Client(timeout=10.0) as scrape:
            assert _status(_post(serve, client, 1)[0]) == (200, "accepted")
            text = serve.config.read_text()
            serve.config.write_text(
                text.replace("  intake_deadline: 1s\n", "  intake_deadline: 8s\n  intake_max_waiting: 1\n")
            )
            _with_source_key(serve, "    secret: ${WOO_SECRET}\n", "    intake_deadline: 3s\n")
            assert serve.process is not None
            serve.process.send_signal(signal.SIGHUP)
            serve.wait_until(
                lambda: any("reloaded " in line for line in serve.errors), what="the reload", timeout=30
            )
            reloaded = next(line for line in serve.errors if "reloaded " in line)
            assert reloaded.rstrip().endswith(
                ": woo: intake_deadline; serve: intake_deadline, intake_max_waiting"
            )

            holder = sqlite3.connect(inbox, isolation_level=None)
            try:
                holder.execute("BEGIN IMMEDIATE")
                with concurrent.futures.ThreadPoolExecutor(1) as sender:
                    # Long enough to be seen waiting by a scrape, which takes the gauges' 2 s meanwhile.
                    waiting = sender.submit(_post, serve, client, 2)
                    serve.wait_until(
                        lambda: _metric(
                            scrape.get(f"{serve.url}/metrics").text, "shipmap_intake_waiting 1.0"
                        ),
                        what="shop's webhook waiting for the inbox",
                        timeout=15,
                    )
                    busy = _post_woo(serve, client, 10)[0]  # one waits: the new cap is reached
                    shop_refused = waiting.result(timeout=30)[0]
                woo_refused = _post_woo(serve, client, 11)[0]
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            assert busy.status_code == 503, busy.text
            assert busy.json()["message"] == (
                "1 webhook is waiting for the inbox already (serve.intake_max_waiting); retry later"
            )
            assert shop_refused.json()["message"] == (
                "the webhook could not be stored within 8s (serve.intake_deadline); retry later"
            )
            assert woo_refused.json()["message"] == (
                "the webhook could not be stored within 3s (sources.woo.intake_deadline); retry later"
            )
            assert [_status(_post(serve, client, 2)[0]), _status(_post_woo(serve, client, 10)[0])] == [
                (200, "accepted"),
                (200, "accepted"),
            ]
            # 11, alone in its commit, was answered by it: its 503 came once the commit gave up.
            assert _status(_post_woo(serve, client, 11)[0]) == (200, "accepted")
        assert serve.terminate() == 0
    finally:
        serve.kill()
    log = "".join(serve.errors)
    assert "a reload does not apply it" not in log, log
    assert _inbox_ids(inbox) == ["wh-1", "wh-2", "d-10", "d-11"]  # each once, the refused ones on retry
