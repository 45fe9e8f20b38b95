"""When the inbox cannot commit, the answer is 503 with Retry-After: nothing is acknowledged that is not stored."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from pathlib import Path

import httpx
from shipmap.connectors._redact import Redactor
from shipmap.connectors._serve import Inbox, SourceSettings
from shipmap.connectors._serve._app import ServiceState, build_app
from shipmap.connectors._serve._inbox_gauges import InboxGauges
from shipmap.connectors._serve._metrics import ServiceMetrics


def test_a_webhook_the_inbox_cannot_commit_gets_503(tmp_path: Path) -> None:
    source = SourceSettings(name="shop", type="shopify", secrets=(b"secret",))
    inbox = Inbox(tmp_path / "inbox.db")
    metrics = ServiceMetrics(
        summary=lambda: None,
        queue=lambda: (0, None),
        breakers=dict,
        in_flight=lambda: 0,
        stalled=lambda: False,
    )
    gauges = InboxGauges(lambda: Inbox(inbox.path, lock=False))
    state = ServiceState(
        {"shop": source}, inbox, metrics, on_accept=lambda: None, readiness=dict, gauges=gauges
    )
    app = build_app(state, Redactor())
    body = b'{"id": 1}'
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Webhook-Id": "w1",
        "X-Shopify-Hmac-Sha256": base64.b64encode(
            hmac.new(b"secret", body, hashlib.sha256).digest()
        ).decode(),
    }

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://serve"
        ) as client:
            return await client.post("/hooks/shop", content=body, headers=headers)

    assert asyncio.run(post()).json()["status"] == "accepted"
    inbox.close()  # the disk is gone, as far as the service can tell
    answer = asyncio.run(post())
    assert answer.status_code == 503
    assert answer.json()["error"] == "inbox_unavailable"
    assert answer.headers["Retry-After"] == "5"
    assert (
        'shipmap_webhooks_rejected_total{reason="inbox_unavailable",source="shop"} 1.0'
        in metrics.render().decode()
    )
