"""A slow store API holds up its own source's webhooks and no other's: ``shipmap serve`` fetches webhooks of a
source concurrently (``enrich.concurrency``), hands them over in the order they arrived, and hands the other
sources' webhooks over as they come.

The store API is the sandbox's, slowed by its fault plan. In the service's tests the webhooks are delivered to
the sandbox's Fenix, and ``delivery.concurrency: 1`` makes the order of the deliveries the order the feed
handed the events over (docs/guarantees.md, "Order across events"); the feed's own test reads a real SQLite
inbox with a backlog, to show what it holds in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from pathlib import Path

import httpx
from shipmap.connectors import Runtime, Sandbox
from shipmap.connectors._serve import Enricher, enrichments
from shipmap.connectors._serve._feed import InboxFeed
from shipmap.connectors._serve._inbox import Inbox

from .harness import (
    BC_API_TOKEN,
    BC_HEADERS,
    REAL_SHOPIFY,
    SOURCE_DOCUMENTS,
    InFlight,
    ServeProcess,
    bc_webhook,
    enrich_config,
    environment,
    shopify_headers,
    store_api,
)

SHOPIFY_ORDER = json.loads((REAL_SHOPIFY / "orders_cancelled_webhook.json").read_text())
BC_ORDERS = range(100, 108)
CONCURRENCY = 2
FIRST_DELAY = 5.0  # seconds: the first order's three GETs
DELAY = 1.0  # every later GET


def _bc_webhook(order: int) -> bytes:
    return json.dumps(bc_webhook(order, f"lanes-{order}")).encode()


def _shopify_webhook(index: int) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(dict(SHOPIFY_ORDER, id=8_000_000 + index, name=f"#LANE{index}")).encode()
    return body, shopify_headers(body, "orders/create", f"lanes-shop-{index}")


def test_a_slow_store_api_delays_only_its_own_sources_webhooks_which_keep_their_order(tmp_path: Path) -> None:
    documents = store_api(tmp_path / "store_api", BC_ORDERS)
    work = tmp_path / "work"
    work.mkdir()
    # The first three GETs (order 100's) take FIRST_DELAY, every later one DELAY: order 101 is fetched long
    # before order 100, and must still be delivered after it.
    faults = f"slow=1:{DELAY},schedule=slow:{FIRST_DELAY},slow:{FIRST_DELAY},slow:{FIRST_DELAY}"
    with Sandbox(source_documents=documents, source_token=BC_API_TOKEN, source_faults=faults) as sandbox:
        serve = ServeProcess(work, sandbox.url, config=enrich_config(work, concurrency=CONCURRENCY)).start()
        try:
            with httpx.Client(timeout=10) as client, InFlight(sandbox) as in_flight:
                started = time.monotonic()
                assert serve.post(client, "bc", _bc_webhook(100), BC_HEADERS).json()["status"] == "accepted"
                serve.wait_until(
                    lambda: sandbox.stats()["source_api"]["received"] >= 3, what="order 100's three GETs"
                )
                for order in BC_ORDERS[1:]:
                    answer = serve.post(client, "bc", _bc_webhook(order), BC_HEADERS)
                    assert answer.json()["status"] == "accepted", answer.text
                for index in range(3):
                    body, headers = _shopify_webhook(index)
                    assert serve.post(client, "shop", body, headers).json()["status"] == "accepted"

                def delivered() -> list[str]:
                    return [request.body["id"] for request in sandbox.requests(endpoint="fenix.orders")]

                serve.wait_until(lambda: len(delivered()) >= 3, what="the Shopify orders")
                shop_delivered_after = time.monotonic() - started
                serve.wait_until(lambda: len(delivered()) == 3 + len(BC_ORDERS), what="every order")
                everything_after = time.monotonic() - started
            assert serve.terminate() == 0
        finally:
            serve.kill()
        orders = delivered()
    shopify = [str(8_000_000 + index) for index in range(3)]
    # The Shopify webhooks (no fetch) went first, while order 100's GETs were still answering; then the bc
    # orders, in the order their webhooks arrived, though 101..107 were fetched before 100.
    assert orders == shopify + [str(order) for order in BC_ORDERS], orders
    assert shop_delivered_after < FIRST_DELAY < everything_after, (shop_delivered_after, everything_after)
    # Two bc webhooks fetched at once, each with its three GETs: never more, and more than one at a time.
    assert 3 < in_flight.most <= 3 * CONCURRENCY, in_flight.most


def test_a_stop_waits_for_slow_fetches_only_up_to_its_deadline_and_loses_nothing(tmp_path: Path) -> None:
    """SIGTERM while two bc webhooks' GETs hang (30 s each) and two more wait for room: the drain deadline
    (2 s) cancels the fetches, the service exits, the four webhooks stay pending in the inbox, and the next
    start delivers them, in order."""
    documents = store_api(tmp_path / "store_api", BC_ORDERS)
    work = tmp_path / "work"
    work.mkdir()
    config = enrich_config(work, concurrency=CONCURRENCY)
    config.write_text(config.read_text().replace("drain_timeout: 30s", "drain_timeout: 2s"))
    bc_orders = list(BC_ORDERS[:4])
    with Sandbox(source_documents=documents, source_token=BC_API_TOKEN, source_faults="slow=1:30") as sandbox:
        serve = ServeProcess(work, sandbox.url, config=config).start()
        try:
            with httpx.Client(timeout=10) as client:
                for order in bc_orders:
                    assert serve.post(client, "bc", _bc_webhook(order), BC_HEADERS).status_code == 200
                body, headers = _shopify_webhook(0)
                assert serve.post(client, "shop", body, headers).status_code == 200
                serve.wait_until(
                    lambda: sandbox.stats()["source_api"]["received"] >= 3 * CONCURRENCY,
                    what="two webhooks' GETs under way",
                )
                serve.wait_until(
                    lambda: len(sandbox.requests(endpoint="fenix.orders")) == 1, what="the Shopify order"
                )
            stopping = time.monotonic()
            assert serve.terminate() == 0
            stopped_in = time.monotonic() - stopping
        finally:
            serve.kill()
        assert stopped_in < 15, stopped_in  # the deadline (2 s) and the cancellation's few seconds, not 30 s
        assert any("drain deadline reached" in line for line in serve.errors), serve.errors[-10:]
        # The source API saw the two webhooks' GETs and no more: the others waited for room.
        assert sandbox.stats()["source_api"]["received"] == 3 * CONCURRENCY
        with sqlite3.connect(work / ".shipmap" / "inbox.db") as inbox:
            states = dict(inbox.execute("SELECT webhook_id, state FROM inbox WHERE source = 'bc'").fetchall())
        assert states == {f"lanes-{order}": "pending" for order in bc_orders}, states

        sandbox.set_source_faults(None)
        again = ServeProcess(work, sandbox.url, config=config).start()
        try:
            again.wait_until(
                lambda: len(sandbox.requests(endpoint="fenix.orders")) == 1 + len(bc_orders),
                what="every order",
            )
            assert again.terminate() == 0
        finally:
            again.kill()
        orders = [request.body["id"] for request in sandbox.requests(endpoint="fenix.orders")]
    assert orders == ["8000000"] + [str(order) for order in bc_orders], orders


def test_a_backlog_of_a_slow_source_stays_in_the_inbox_while_the_others_are_handed_over(
    tmp_path: Path,
) -> None:
    """200 bc webhooks, then 10 Shopify ones, in the inbox: the feed fetches two bc webhooks at once, holds no
    more than those and a page in memory, reads past the bc backlog to the Shopify webhooks and hands them
    over first; the bc ones follow in order, and what it did not hand over stays pending in the inbox."""
    work = tmp_path / "work"
    work.mkdir()
    config = enrich_config(work, concurrency=CONCURRENCY)
    backlog, shopify = 200, 10
    with Sandbox(
        source_documents=SOURCE_DOCUMENTS, source_token=BC_API_TOKEN, source_faults="slow=1:0.2"
    ) as sandbox:
        runtime = Runtime.from_config(config, environ=environment(sandbox.url))
        inbox = Inbox(work / "inbox.db")
        for index in range(backlog):
            inbox.accept("bc", f"backlog-{index}", "store/order/created", {}, _bc_webhook(100 + index % 2))
        for index in range(shopify):
            inbox.accept("shop", f"shop-{index}", "orders/create", {}, _shopify_webhook(index)[0])
        held: list[int] = []

        async def consume() -> list[str]:
            origins: list[str] = []
            async with Enricher(runtime, enrichments(runtime.config), wait=False) as enricher:
                feed = InboxFeed(inbox, enricher, runtime.redactor)
                try:
                    async with contextlib.aclosing(feed.events()) as events:
                        async for event in events:
                            held.append(len(feed._lanes))
                            assert event.ok, event.error
                            origins.append(event.origin)
                            if len(origins) == shopify + 6:
                                break
                finally:
                    await feed.aclose()
            return origins

        try:
            origins = asyncio.run(consume())
            received = sandbox.stats()["source_api"]["received"]
            pending = inbox.pending(limit=backlog + shopify)
        finally:
            inbox.close()
    assert [origin.split("#")[0] for origin in origins] == ["shop"] * shopify + ["bc"] * 6, origins
    bc_rows = [int(origin.split("#")[1]) for origin in origins[shopify:]]
    assert bc_rows == list(range(1, 7)), origins  # the first six bc webhooks, in the order they arrived
    assert max(held) <= CONCURRENCY + 64, max(held)
    # Fetched: the six handed over, and at most two more under way when the feed closed; never the backlog.
    assert 3 * 6 <= received <= 3 * (6 + CONCURRENCY), received
    # Marked processed: what the consumer settled (it asked for the next event after it). The last one it
    # took and never settled stays pending with the backlog, as a run cancelled mid-event leaves it.
    assert [row.source for row in pending] == ["bc"] * (backlog - 5)
    assert pending[0].id == bc_rows[-1] and pending[0].documents is not None  # its responses kept
