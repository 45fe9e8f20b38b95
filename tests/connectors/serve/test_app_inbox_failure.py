"""When the inbox cannot commit, the answer is 503 with Retry-After: nothing is acknowledged that is not stored."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from shipmap.connectors._redact import Redactor
from shipmap.connectors._serve import Inbox
from shipmap.connectors._serve._app import build_app

from .app_support import app_state, post, shop_headers, shop_source


def test_a_webhook_the_inbox_cannot_commit_gets_503(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "inbox.db")
    state = app_state({"shop": shop_source()}, inbox)
    app = build_app(state, Redactor())
    body = b'{"id": 1}'

    def post_once() -> httpx.Response:
        return asyncio.run(post(app, body, shop_headers(body)))

    assert post_once().json()["status"] == "accepted"
    inbox.close()  # the disk is gone, as far as the service can tell
    answer = post_once()
    assert answer.status_code == 503
    assert answer.json()["error"] == "inbox_unavailable"
    assert answer.headers["Retry-After"] == "5"
    assert (
        'shipmap_webhooks_rejected_total{reason="inbox_unavailable",source="shop"} 1.0'
        in state.metrics.render().decode()
    )
