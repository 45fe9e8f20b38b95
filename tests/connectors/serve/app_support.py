"""What the tests of the webhook app in process share (no listener: httpx's ASGI transport): the service's
state around a real SQLite inbox, a Shopify webhook's headers signed with the source's secret, and a POST."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import httpx
from shipmap.connectors._serve import Inbox, SourceSettings
from shipmap.connectors._serve._app import ServiceState
from shipmap.connectors._serve._inbox_gauges import InboxGauges
from shipmap.connectors._serve._metrics import ServiceMetrics

SHOP_SECRET = b"secret"


def shop_source() -> SourceSettings:
    """A Shopify source named ``shop``, its secret ``SHOP_SECRET``."""
    return SourceSettings(name="shop", type="shopify", secrets=(SHOP_SECRET,))


def shop_headers(body: bytes) -> dict[str, str]:
    """The headers of Shopify's webhook ``w1`` of ``body``, signed with ``SHOP_SECRET``."""
    signature = hmac.new(SHOP_SECRET, body, hashlib.sha256).digest()
    return {
        "Content-Type": "application/json",
        "X-Shopify-Webhook-Id": "w1",
        "X-Shopify-Hmac-Sha256": base64.b64encode(signature).decode(),
    }


def app_state(sources: dict[str, SourceSettings], inbox: Inbox) -> ServiceState:
    """What the app's endpoints share, with no delivery side: an empty queue, no breakers, never stalled."""
    metrics = ServiceMetrics(
        summary=lambda: None,
        queue=lambda: (0, None),
        breakers=dict,
        in_flight=lambda: 0,
        stalled=lambda: False,
    )
    gauges = InboxGauges(lambda: Inbox(inbox.path, lock=False))
    return ServiceState(sources, inbox, metrics, on_accept=lambda: None, readiness=dict, gauges=gauges)


async def post(app: Any, body: bytes, headers: dict[str, str], path: str = "/hooks/shop") -> httpx.Response:
    """The app's answer, a 500 included: an exception it raises is an answer, not raised here."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://serve"
    ) as client:
        return await client.post(path, content=body, headers=headers)
