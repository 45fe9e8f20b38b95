"""shipmap as a library inside your own program: a small webhook receiver, no YAML config file.

    .venv/bin/python examples/library_embed/main.py

It starts the local sandbox (Fenix + Digital Genius on 127.0.0.1), then:

1. loads three ready mappings with ``shipmap.engine.load_mapping`` and previews one payload with
   ``transform`` (no network: what ``shipmap preview`` does);
2. builds a ``shipmap.connectors.Runtime`` from objects (connections, routes by topic, a journal file) instead
   of a config file;
3. hands it webhooks one at a time, as a web framework's request handler would: real Shopify payloads from
   tests/fixtures/real, then the same webhook again (Shopify retries deliveries it thinks failed), then a
   broken one;
4. prints what happened to each, and what the sandbox received.

It exits 0 when the sandbox received exactly the expected requests.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from shipmap.connectors import (
    AuthSettings,
    Connection,
    EventSettings,
    JournalSettings,
    MappingRoute,
    RunSummary,
    Runtime,
    RuntimeConfig,
    Sandbox,
)
from shipmap.engine import ShipmapError, load_mapping

REAL = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "real" / "shopify"


class WebhookReceiver:
    """Maps and delivers each webhook it is given. One Runtime, built once, serves every call."""

    def __init__(self, sandbox: Sandbox, journal: Path) -> None:
        creds = sandbox.config.credentials  # the sandbox's demo credentials; yours come from a secret store
        orders = load_mapping("shopify/order")  # packaged mappings by short name, or a path to your own
        cancels = load_mapping("shopify/order_cancelled")
        fulfillments = load_mapping("shopify/fulfillment")
        config = RuntimeConfig(
            connections=(
                Connection(
                    "fenix",
                    "fenix",
                    sandbox.url,
                    AuthSettings(
                        "fenix_session",
                        username=creds.fenix_username,
                        password=creds.fenix_password,
                        api_key=creds.fenix_api_key,
                        store_name=creds.fenix_store_name,
                    ),
                ),
                Connection(
                    "dg",
                    "dg",
                    sandbox.url,
                    AuthSettings("basic", username=creds.dg_api_key, password=creds.dg_api_secret),
                ),
            ),
            mappings=(
                MappingRoute(orders, topics=("orders/create",)),
                MappingRoute(cancels, topics=("orders/cancelled",)),
                # The DG flow id the ready mapping reads from the document, added by the route.
                MappingRoute(
                    fulfillments,
                    topics=("fulfillments/create",),
                    body="merge(body, {dg_action_id: 'flow_shipment_update'})",
                ),
            ),
            events=EventSettings(topic="topic", body="body"),
            # A journal file: it remembers what was delivered, so a repeated webhook is not sent twice.
            journal=JournalSettings(path=journal),
        )
        self.runtime = Runtime(config)

    def receive(self, topic: str, body: Any) -> RunSummary:
        return self.runtime.run([{"topic": topic, "body": body}])


def outcome(summary: RunSummary) -> str:
    parts = []
    for target in summary.targets.values():
        for word, count in (
            ("delivered", target.delivered),
            ("skipped", target.skipped),
            ("dead", target.dead),
        ):
            if count:
                parts.append(f"{target.label} {word}")
    return ", ".join(parts) or ("unrouted" if summary.unrouted else "nothing to send")


def main() -> int:
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    order = json.loads((REAL / "order_rest_get_with_fulfillment.json").read_text())["order"]
    fulfillment = json.loads((REAL / "fulfillments_create_webhook.json").read_text())
    cancelled = json.loads((REAL / "orders_cancelled_webhook.json").read_text())
    broken = copy.deepcopy(order)
    broken.update(id=450789470, email=None, contact_email=None)
    broken["customer"]["email"] = None  # Fenix requires the customer's email: nothing to take it from

    # 1. The engine alone: map without sending anything.
    payload = load_mapping("shopify/order").transform(order)["order"]
    print(
        f"transform: Shopify order {order['name']} -> fenix.order id {payload['id']}, status {payload['status']}, "
        f"{payload['item_quantity']} items, customer {payload['customer']['email']}"
    )
    try:
        load_mapping("shopify/order").transform(broken)
    except ShipmapError as error:
        where, field = error.render().splitlines()[:2]
        print(
            f"transform of a broken order fails, naming the mapping line and the field:\n  {where}\n  {field}"
        )

    # 2. and 3. The runtime, built from objects, fed webhook by webhook.
    with tempfile.TemporaryDirectory() as scratch, Sandbox() as sandbox:
        print(f"\nsandbox {sandbox.url}")
        receiver = WebhookReceiver(sandbox, Path(scratch) / "journal.db")
        webhooks = [
            ("orders/create", order),
            ("fulfillments/create", fulfillment),
            ("fulfillments/create", fulfillment),  # Shopify retried it: the journal knows it was delivered
            ("orders/cancelled", cancelled),
            ("orders/create", broken),  # dead-lettered, with the reason; the others are not held up
            ("customers/update", {"id": 1}),  # no route for this topic: reported as unrouted
        ]
        for topic, body in webhooks:
            summary = receiver.receive(topic, body)
            print(f"  {topic:20} -> {outcome(summary)}")
        for letter in receiver.runtime.dead_letters():
            reason = (letter.reason or "").splitlines()[0]
            label = f"{letter.mapping}.{letter.target}" if letter.target else f"{letter.mapping} (mapping)"
            print(f"dead letter {letter.key[:12]} {label}: {reason}")

        received = [r for r in sandbox.requests() if r.endpoint != "fenix.login"]
        print("\nwhat the sandbox received:")
        for request in received:
            print(f"  {request.method} {request.path:62} {request.kind}")
        expected = [
            ("/api/v1/orders/450789469/created", "fenix.order"),
            ("/api/v1/order/820982911946154500/fulfillment/123456/created", "fenix.fulfillment"),
            ("/execution", "dg.execution"),
            ("/api/v1/orders/820982911946154500/created", "fenix.order_cancel"),
        ]
        got = sorted((r.path, r.kind) for r in received)
        ok = got == sorted(expected) and len(receiver.runtime.dead_letters()) == 1
    print("OK" if ok else f"FAILED: expected {sorted(expected)}, got {got}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
