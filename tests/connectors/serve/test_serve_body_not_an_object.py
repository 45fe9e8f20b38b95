"""A signed webhook whose JSON body is not an object (``[]``, a string) is acknowledged, and its dead letter
says what the body was, not only that the mapping's first field is null; the webhooks after it are delivered."""

from __future__ import annotations

from pathlib import Path

import httpx
from shipmap.connectors import Sandbox
from shipmap.connectors._store._journal import open_readonly

from .harness import REAL_SHOPIFY, ServeProcess, shopify_headers
from .rejected_support import shipmap

ORDER = (REAL_SHOPIFY / "orders_cancelled_webhook.json").read_bytes()


def _dead(work: Path) -> int:
    journal = open_readonly(work / ".shipmap" / "journal.db")
    if journal is None:
        return 0
    with journal:
        return journal.counts().get("dead", 0)


def test_a_body_that_is_not_an_object_is_a_dead_letter_that_says_what_it_was(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    serve = ServeProcess(tmp_path, source_sandbox.url).start()
    try:
        with httpx.Client(timeout=10) as client:
            for index, body in enumerate((b"[]", b'"an order"', ORDER)):
                answer = serve.post(
                    client, "shop", body, shopify_headers(body, "orders/create", f"wh-{index}")
                )
                assert answer.status_code == 200, answer.text
        serve.wait_until(lambda: _dead(tmp_path) == 2, what="two dead letters")
        serve.wait_until(lambda: source_sandbox.requests(endpoint="fenix.orders"), what="the order delivered")
        listed = shipmap(tmp_path, source_sandbox, "dead-letters", str(serve.config))
        found = [line.strip() for line in listed.stdout.splitlines() if line.strip().startswith("found:")]
        # A webhook's body is the event's `payload` (serve's events.body): the line names where it was read.
        assert sorted(found) == [
            "found: the source document (events.body `payload`) is array [], not an object",
            'found: the source document (events.body `payload`) is string "an order", not an object',
        ], listed.stdout
        assert "source: " in listed.stdout and "order.yaml:" in listed.stdout, listed.stdout
        assert serve.terminate() == 0
    finally:
        serve.kill()
