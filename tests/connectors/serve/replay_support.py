"""What the tests of ``shipmap replay`` through a running service share: ``shipmap serve`` with the packaged
Shopify order mapping broken (a number where Fenix wants text: every order is its own dead letter, with the
contract's reason, and no request), the fix, and a Shopify order posted to it."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from shipmap.connectors import Sandbox

from .harness import REAL_SHOPIFY, ServeProcess, shopify_headers

ORDER = json.loads((REAL_SHOPIFY / "orders_cancelled_webhook.json").read_bytes())
PACKAGED = Path(__file__).resolve().parents[3] / "mappings" / "shopify" / "order.yaml"
LITERAL = "source: {literal: Shopify}"
MAPPING = "shopify_order.yaml"  # the broken copy, in the service's folder


def serve_a_broken_mapping(work: Path, sandbox: Sandbox) -> ServeProcess:
    """A started service in ``work`` whose config names a copy of the packaged mapping that sends the order's
    number where Fenix wants text; ``fix_the_mapping`` writes the packaged one over it (for a reload)."""
    packaged = PACKAGED.read_text()
    assert LITERAL in packaged
    (work / MAPPING).write_text(packaged.replace(LITERAL, "source: {path: id}"))
    serve = ServeProcess(work, sandbox.url)
    config = serve.config.read_text()
    assert "- mapping: shopify/order\n" in config
    serve.config.write_text(config.replace("- mapping: shopify/order\n", f"- mapping: ./{MAPPING}\n"))
    return serve.start()


def fix_the_mapping(work: Path) -> None:
    (work / MAPPING).write_text(PACKAGED.read_text())


def post_order(serve: ServeProcess, client: httpx.Client, order_id: int, webhook_id: str) -> None:
    """The Shopify order ``order_id`` as an orders/create webhook, accepted."""
    body = json.dumps({**ORDER, "id": order_id}).encode()
    headers = shopify_headers(body, "orders/create", webhook_id)
    assert serve.post(client, "shop", body, headers).status_code == 200
