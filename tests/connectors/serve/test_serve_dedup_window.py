"""``serve.dedup_window``: a live service remembers a processed webhook's id for the window, from when it
arrived, and forgets it after: the same id is then a new webhook, accepted and handed to delivery again (whose
deduplication by content still sends the same order once). On an SQLite inbox and on a PostgreSQL one.

The window is at least an hour, so the test does not wait for it: it moves the rows' arrival back in the
inbox while the service is stopped, and the next start looks at once (then hourly)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
from shipmap.connectors import Sandbox

from .harness import DRAIN_LINE, REAL_SHOPIFY, ServeProcess, on_postgres, shopify_headers, with_added

ORDER = json.loads((REAL_SHOPIFY / "orders_cancelled_webhook.json").read_text())
HOUR = 3600.0
# The inbox's rows by webhook id (state, received_at), and a way to move one's arrival back by some seconds.
Rows = Callable[[], dict[str, str]]
Backdate = Callable[[str, float], None]


def _sqlite_inbox(work: Path) -> tuple[Rows, Backdate]:
    path = work / ".shipmap" / "inbox.db"

    def rows() -> dict[str, str]:
        with sqlite3.connect(path) as db:
            return dict(db.execute("SELECT webhook_id, state FROM inbox ORDER BY id").fetchall())

    def backdate(webhook_id: str, seconds: float) -> None:
        with sqlite3.connect(path) as db:
            db.execute(
                "UPDATE inbox SET received_at = received_at - ? WHERE webhook_id = ?", (seconds, webhook_id)
            )

    return rows, backdate


def _postgres_inbox(url: str) -> tuple[Rows, Backdate]:
    def rows() -> dict[str, str]:
        with psycopg.connect(url) as db:
            return dict(db.execute("SELECT webhook_id, state FROM inbox ORDER BY id").fetchall())

    def backdate(webhook_id: str, seconds: float) -> None:
        with psycopg.connect(url) as db:
            db.execute(
                "UPDATE inbox SET received_at = received_at - %s WHERE webhook_id = %s", (seconds, webhook_id)
            )

    return rows, backdate


def _forgets_an_id_after_the_window(
    work: Path, sandbox: Sandbox, inbox: tuple[Rows, Backdate], database: str | None = None
) -> None:
    rows, backdate = inbox
    serve = ServeProcess(work, sandbox.url)
    text = with_added(serve.config.read_text(), DRAIN_LINE, "  dedup_window: 1h\n")
    serve.config.write_text(on_postgres(text, database) if database else text)
    bodies = {
        name: json.dumps(dict(ORDER, id=7_300_000 + i, name=f"#WIN{i}")).encode()
        for i, name in enumerate(("old", "recent"))
    }

    def post(client: httpx.Client, service: ServeProcess, name: str) -> dict[str, object]:
        answer = service.post(
            client, "shop", bodies[name], shopify_headers(bodies[name], "orders/create", name)
        )
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    serve.start()
    try:
        with httpx.Client(timeout=10) as client:
            assert [post(client, serve, name)["status"] for name in bodies] == ["accepted", "accepted"]
            serve.wait_until(lambda: rows() == {"old": "processed", "recent": "processed"}, what="processed")
            assert post(client, serve, "old")["status"] == "duplicate"  # within the window
        assert serve.terminate() == 0
    finally:
        serve.kill()
    assert len(sandbox.requests(endpoint="fenix.orders")) == 2
    backdate("old", 2 * HOUR)  # past the 1h window
    backdate("recent", HOUR / 2)  # within it

    restarted = ServeProcess(work, sandbox.url).start()  # a start looks at once
    try:
        assert rows() == {"recent": "processed"}
        with httpx.Client(timeout=10) as client:
            again = post(client, restarted, "old")
            assert again["status"] == "accepted", again  # a new webhook: its id was forgotten
            assert post(client, restarted, "recent")["status"] == "duplicate"
        restarted.wait_until(
            lambda: rows() == {"recent": "processed", "old": "processed"}, what="the new copy processed"
        )
        assert restarted.terminate() == 0
    finally:
        restarted.kill()
    # Handed to delivery again, where the journal still knows its content: the order is sent once.
    orders = sorted(str(order.body["id"]) for order in sandbox.requests(endpoint="fenix.orders"))
    assert orders == ["7300000", "7300001"]
    assert any(
        line.rstrip().endswith(
            "inbox: forgot 1 webhook received more than 1h ago (serve.dedup_window); dropped 0 bodies of"
            " webhooks processed more than 1h ago (serve.keep_bodies)"
        )
        for line in restarted.errors
    ), restarted.errors[-20:]


def test_a_service_forgets_an_id_after_its_dedup_window_on_sqlite(tmp_path: Path) -> None:
    with Sandbox() as sandbox:
        _forgets_an_id_after_the_window(tmp_path, sandbox, _sqlite_inbox(tmp_path))


def test_a_service_forgets_an_id_after_its_dedup_window_on_postgresql(
    tmp_path: Path, postgres_url: str
) -> None:
    with Sandbox() as sandbox:
        _forgets_an_id_after_the_window(tmp_path, sandbox, _postgres_inbox(postgres_url), postgres_url)
