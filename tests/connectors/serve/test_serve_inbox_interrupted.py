"""A live ``shipmap serve`` whose PostgreSQL inbox commit is ended by an administrator says so, and goes on.

An INSERT waiting on a lock held elsewhere (``LOCK TABLE inbox``, as an ``ALTER TABLE`` holds) is what an
operator cancels (``pg_cancel_backend``) or ends with its session (``pg_terminate_backend``). PostgreSQL reports
a cancel with the statement timeout's SQLSTATE (57014), so it was answered ``503 inbox_timeout`` and logged as a
timeout, well before the deadline. Now the sender gets ``503 inbox_cancelled`` (the session ended:
``503 inbox_unavailable``, the connection closed), ``Retry-After`` either way; the log says what the server did;
nothing was stored, so the retry is accepted, and the next webhook is taken (on a new connection after a
terminate).
"""

from __future__ import annotations

import concurrent.futures
import json
from pathlib import Path

import httpx
import psycopg
from shipmap.connectors import Sandbox
from shipmap.connectors._store._journal_pg import display_url

from .harness import REAL_SHOPIFY, ServeProcess, on_postgres, shopify_headers

ORDER = json.loads((REAL_SHOPIFY / "orders_cancelled_webhook.json").read_text())
# Far past the moment the test ends the waiting INSERT: what it sees cannot be the deadline.
DEADLINE = "20s"
_WAITING = (
    "SELECT pid FROM pg_stat_activity WHERE application_name = 'shipmap serve' AND wait_event_type = 'Lock'"
)


def _post(serve: ServeProcess, client: httpx.Client, order_id: int) -> httpx.Response:
    body = json.dumps(dict(ORDER, id=order_id, name=f"#I{order_id}")).encode()
    return serve.post(client, "shop", body, shopify_headers(body, "orders/create", f"wh-{order_id}"))


def _status(answer: httpx.Response) -> tuple[int, str]:
    return answer.status_code, answer.json().get("status") or answer.json().get("error")


def _stored(url: str) -> list[str]:
    with psycopg.connect(url) as db:
        return [row[0] for row in db.execute("SELECT webhook_id FROM inbox ORDER BY id").fetchall()]


def _ended_while_waiting(
    serve: ServeProcess, client: httpx.Client, url: str, order_id: int, end: str
) -> httpx.Response:
    """Order ``order_id``'s answer, its INSERT ended by ``end`` (``pg_cancel_backend``, ...) while it waits for
    a lock on the inbox table that another session holds."""
    with psycopg.connect(url) as holder, psycopg.connect(url, autocommit=True) as admin:
        holder.execute("SET lock_timeout = '30s'")
        holder.execute("LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE")
        with concurrent.futures.ThreadPoolExecutor(1) as sender:
            answer = sender.submit(_post, serve, client, order_id)
            serve.wait_until(
                lambda: admin.execute(_WAITING).fetchone() is not None,
                what="intake's INSERT waiting",
                timeout=15,
            )
            (pid,) = admin.execute(_WAITING).fetchone() or (None,)
            assert admin.execute(f"SELECT {end}(%s)", (pid,)).fetchone() == (True,)
            result = answer.result(timeout=30)
        holder.rollback()
    return result


def test_an_inbox_commit_cancelled_or_ended_by_an_administrator_is_named_so_and_intake_goes_on(
    source_sandbox: Sandbox, tmp_path: Path, postgres_url: str
) -> None:
    serve = ServeProcess(tmp_path, source_sandbox.url)
    text = on_postgres(serve.config.read_text(), postgres_url)
    assert "  drain_timeout: 30s\n" in text, text
    serve.config.write_text(
        text.replace("  drain_timeout: 30s\n", f"  drain_timeout: 30s\n  intake_deadline: {DEADLINE}\n")
    )
    serve.start()
    try:
        with httpx.Client(timeout=60) as client:
            assert _status(_post(serve, client, 1)) == (200, "accepted")

            cancelled = _ended_while_waiting(serve, client, postgres_url, 2, "pg_cancel_backend")
            assert cancelled.status_code == 503, cancelled.text
            assert cancelled.json() == {
                "error": "inbox_cancelled",
                "message": "the inbox's database cancelled the statement storing the webhook; retry later",
            }
            assert cancelled.headers["Retry-After"] == "5"
            # Nothing stored: the sender's retry is a new webhook; the next one is taken as before.
            assert _status(_post(serve, client, 2)) == (200, "accepted")
            assert _status(_post(serve, client, 3)) == (200, "accepted")

            ended = _ended_while_waiting(serve, client, postgres_url, 4, "pg_terminate_backend")
            assert ended.status_code == 503, ended.text
            assert ended.json() == {
                "error": "inbox_unavailable",
                "message": "the inbox's database closed the connection while storing the webhook; retry later",
            }
            assert ended.headers["Retry-After"] == "5"
            # The next webhook is stored on a new connection, and the retry too.
            assert _status(_post(serve, client, 5)) == (200, "accepted")
            assert _status(_post(serve, client, 4)) == (200, "accepted")
            assert _stored(postgres_url) == ["wh-1", "wh-2", "wh-3", "wh-5", "wh-4"]

            metrics = client.get(f"{serve.url}/metrics").text.splitlines()
            assert 'shipmap_webhooks_rejected_total{reason="inbox_cancelled",source="shop"} 1.0' in metrics
            assert 'shipmap_webhooks_rejected_total{reason="inbox_unavailable",source="shop"} 1.0' in metrics
            assert not any(
                line.startswith('shipmap_webhooks_rejected_total{reason="inbox_timeout"') for line in metrics
            )
        assert serve.terminate() == 0
    finally:
        serve.kill()
    log = "".join(serve.errors)
    inbox = f"inbox {display_url(postgres_url)}"
    assert (
        "POST /hooks/shop: 503 the inbox's database cancelled the statement storing the webhook; retry later"
        f" ({inbox}: the statement was cancelled on the server after "
    ) in log, log
    assert (
        f"s, before its {DEADLINE} deadline (PostgreSQL says: canceling statement due to user request))"
        in log
    )
    assert (
        "POST /hooks/shop: 503 the inbox's database closed the connection while storing the webhook; retry later"
        f" ({inbox}: PostgreSQL says: terminating connection due to administrator command)"
    ) in log, log
    assert "no answer within" not in log and "could not be stored within" not in log, log
