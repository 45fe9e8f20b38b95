"""Enrichment keeps to the store API's rate limit wherever it runs: the enrichment connection's ``max_rate``
spaces the GETs of every lane and every document of a webhook, a 429's wait (``Retry-After``, or BigCommerce's
``X-Rate-Limit-Time-Reset-Ms``) holds every GET of the connection, and ``shipmap run`` and ``shipmap replay
--refetch`` fetch several events at once as ``serve`` does, in their order within each source.

Measured on the sandbox's fake store API, which remembers when each GET arrived (``source_requests()``).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from shipmap.connectors import Runtime, Sandbox
from shipmap.connectors._serve import enrich_records, enrichments

from .harness import (
    BC_API_TOKEN,
    BC_HEADERS,
    REAL_SHOPIFY,
    InFlight,
    ServeProcess,
    bc_webhook,
    enrich_config,
    environment,
    on_postgres,
    store_api,
)

GETS = 3  # each bc webhook's documents: order, products, shipments


def _bc_payload(order: int) -> dict[str, Any]:
    return bc_webhook(order, f"rate-{order}")


def _skinny(order: int) -> dict[str, Any]:
    return {"source": "bc", "topic": "store/order/created", "payload": _bc_payload(order)}


def _shop_event(index: int) -> dict[str, Any]:
    order = json.loads((REAL_SHOPIFY / "orders_cancelled_webhook.json").read_text())
    return {"source": "shop", "topic": "orders/create", "payload": dict(order, id=9_000_000 + index)}


def _most_in_any(arrivals: list[float], seconds: float) -> int:
    """The most GETs that arrived within any ``seconds`` (a window starting at an arrival)."""
    return max(sum(1 for t in arrivals[i:] if t - start < seconds) for i, start in enumerate(arrivals))


def _shipmap(sandbox: Sandbox, work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from shipmap.connectors._cli import entry; entry()", *args, "--no-progress"],
        capture_output=True, text=True, env=environment(sandbox.url), cwd=work, check=False, timeout=120,
    )  # fmt: skip


def test_serve_keeps_every_lane_to_the_store_apis_max_rate_and_reports_the_gets_waiting(
    tmp_path: Path,
) -> None:
    """Ten bc webhooks, four fetched at once, against ``max_rate: 10``: their 30 GETs reach the store API at
    10 a second, never faster (without the limit, the four webhooks' 12 GETs would go at once), and /metrics
    and /readyz show the webhooks being fetched and the GETs waiting for their turn meanwhile."""
    orders = range(100, 110)
    work = tmp_path / "work"
    work.mkdir()
    with Sandbox(source_documents=store_api(tmp_path / "api", orders), source_token=BC_API_TOKEN) as sandbox:
        serve = ServeProcess(work, sandbox.url, config=enrich_config(work, max_rate=10)).start()
        try:
            with httpx.Client(timeout=10) as client:
                for order in orders:
                    answer = serve.post(client, "bc", json.dumps(_bc_payload(order)).encode(), BC_HEADERS)
                    assert answer.json()["status"] == "accepted", answer.text
                fetching = waiting = 0
                readiness: dict[str, Any] = {}
                give_up = time.monotonic() + 60
                while len(sandbox.requests(endpoint="fenix.orders")) < len(orders):
                    metrics = client.get(f"{serve.url}/metrics").text
                    found = re.search(r'^shipmap_enrich_fetching\{source="bc"\} (\S+)$', metrics, re.M)
                    assert found is not None, metrics
                    fetching = max(fetching, int(float(found.group(1))))
                    found = re.search(
                        r'^shipmap_enrich_waiting_for_rate\{connection="bc_store"\} (\S+)$', metrics, re.M
                    )
                    assert found is not None, metrics
                    waiting = max(waiting, int(float(found.group(1))))
                    ready = client.get(f"{serve.url}/readyz").json()
                    if ready["enrichment"]["waiting_for_rate"]["bc_store"] > 0:
                        readiness = ready["enrichment"]
                    assert time.monotonic() < give_up, "the orders were not delivered in 60 s"
                    time.sleep(0.05)
            assert serve.terminate() == 0
        finally:
            serve.kill()
        delivered = [request.body["id"] for request in sandbox.requests(endpoint="fenix.orders")]
        gets = sandbox.source_requests()
    assert delivered == [str(order) for order in orders]  # in the order they arrived
    assert len(gets) == GETS * len(orders) and all(get["status"] in (200, 204) for get in gets), gets
    arrivals = [get["at"] for get in gets]
    assert _most_in_any(arrivals, 1.0) <= 10 + 1, arrivals  # the slot at the window's far edge, at most
    assert arrivals[-1] - arrivals[0] >= 0.85 * (len(arrivals) - 1) / 10, arrivals
    assert fetching > 1 and waiting > 1, (fetching, waiting)  # several webhooks at once, queued for the rate
    assert readiness["fetching"]["bc"] >= 1 and readiness["waiting_for_rate"]["bc_store"] >= 1, readiness


def test_two_serve_processes_on_a_postgresql_inbox_share_the_max_rate(
    tmp_path: Path, postgres_url: str
) -> None:
    """Two serve processes on one PostgreSQL inbox, ``max_rate: 10``: each counts the other and keeps to 5
    GETs a second, so the store API sees 10 a second from both together (each at 10 would make 20)."""
    orders = range(100, 110)
    work = tmp_path / "work"
    work.mkdir()
    config = enrich_config(work, max_rate=10)
    text = config.read_text()
    config.write_text(on_postgres(text, postgres_url))
    with Sandbox(source_documents=store_api(tmp_path / "api", orders), source_token=BC_API_TOKEN) as sandbox:
        a = ServeProcess(work, sandbox.url, config=config).start()
        b = ServeProcess(work, sandbox.url, config=config).start()
        try:
            for service in (a, b):
                service.wait_until(
                    lambda s=service: (
                        "their enrichment GETs keep to each max_rate together" in "".join(s.errors)
                    ),
                    timeout=30,
                    what="the processes counting each other",
                )
            with httpx.Client(timeout=10) as client:
                for order in orders:
                    service = a if order % 2 == 0 else b
                    answer = service.post(client, "bc", json.dumps(_bc_payload(order)).encode(), BC_HEADERS)
                    assert answer.json()["status"] == "accepted", answer.text
            a.wait_until(
                lambda: len(sandbox.requests(endpoint="fenix.orders")) == len(orders), what="every order"
            )
            assert a.terminate() == 0 and b.terminate() == 0
        finally:
            a.kill()
            b.kill()
        gets = sandbox.source_requests()
    assert len(gets) == GETS * len(orders), gets
    arrivals = [get["at"] for get in gets]
    # Each process's slots are 0.2 s apart, on its own clock: in any second, at most 6 from each.
    assert _most_in_any(arrivals, 1.0) <= 2 * 6, arrivals
    assert arrivals[-1] - arrivals[0] >= 0.85 * (len(arrivals) - 2) / 10, arrivals


@pytest.mark.parametrize(
    ("platform", "header"),
    [("shopify", "Retry-After"), ("bigcommerce", "X-Rate-Limit-Time-Reset-Ms")],
)
def test_a_429s_wait_holds_every_get_of_the_store_api(tmp_path: Path, platform: str, header: str) -> None:
    """The first GET gets a 429 that says to come back in 1 s (``Retry-After: 1`` as Shopify says it,
    ``X-Rate-Limit-Time-Reset-Ms: 1000`` as BigCommerce does): no GET of any event goes to the API in that
    second, not only that GET's retry; then they go on at ``max_rate``, and every event is enriched."""
    orders = range(100, 104)
    with Sandbox(
        source_documents=store_api(tmp_path / "api", orders, platform),
        source_token=BC_API_TOKEN,
        source_faults="retry-after=1,schedule=429",
    ) as sandbox:
        work = tmp_path / "work"
        work.mkdir()
        runtime = Runtime.from_config(
            enrich_config(work, max_rate=20, platform=platform), environ=environment(sandbox.url)
        )

        async def enrich() -> list[Any]:
            records = enrich_records(
                runtime, [_skinny(order) for order in orders], enrichments(runtime.config)
            )
            return [record async for record in records]

        with httpx.Client() as client:  # the sandbox answers the 429 with the platform's header
            probe = client.get(f"{sandbox.url}/_source/{platform}/stores/abc123/v2/orders/100")
            assert probe.status_code == 429 and header in probe.headers, probe.headers
        sandbox.reset()  # the schedule from its start: the enrichment's first GET gets the 429
        records = asyncio.run(enrich())
        gets = sandbox.source_requests()
    assert [record.origin for record in records] == [f"event[{i}]" for i in range(len(orders))]
    assert all(record.ok for record in records), [record.error for record in records]
    assert [record.document["order"]["id"] for record in records] == list(orders)
    assert gets[0]["status"] == 429 and len(gets) == 1 + GETS * len(orders), gets
    assert all(get["status"] in (200, 204) for get in gets[1:]), gets  # 204: an order without shipments
    refused_at = gets[0]["at"]
    # A GET already on its way when the 429 came back (max_rate spaces them 50 ms apart) may arrive; after
    # that, none until the second has passed.
    later = [get["at"] - refused_at for get in gets[1:] if get["at"] - refused_at > 0.1]
    assert len(later) >= GETS * len(orders) - 2, gets
    assert min(later) >= 0.95, gets


def test_shipmap_run_enriches_several_events_at_once_in_their_order_within_each_source(
    tmp_path: Path,
) -> None:
    """Eight skinny bc events, then a Shopify one, against a store API that takes 0.5 s a GET: run fetches
    four bc events at once (``enrich.concurrency``) where it fetched one, delivers the Shopify event without
    waiting for the bc fetches, and the bc orders in the order of the file."""
    orders = range(100, 108)
    work = tmp_path / "work"
    work.mkdir()
    events = work / "skinny.ndjson"
    lines = [_skinny(orders[0]), _shop_event(0), *(_skinny(order) for order in orders[1:])]
    events.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with Sandbox(
        source_documents=store_api(tmp_path / "api", orders),
        source_token=BC_API_TOKEN,
        source_faults="slow=1:0.5",
    ) as sandbox:
        config = enrich_config(work)
        with InFlight(sandbox) as in_flight:
            result = _shipmap(sandbox, work, "run", str(config), "--input", str(events))
        delivered = [request.body["id"] for request in sandbox.requests(endpoint="fenix.orders")]
    assert result.returncode == 0, result.stderr
    assert delivered == ["9000000"] + [str(order) for order in orders], delivered
    assert GETS < in_flight.most <= GETS * 4, in_flight.most  # more than one event's GETs, four at most


def test_replay_refetch_fetches_several_dead_letters_at_once(tmp_path: Path) -> None:
    """Eight orders dead-lettered (the store's data was wrong), fixed in the store, replayed with
    ``--refetch`` against a store API that takes 0.5 s a GET: the replay fetches four at once, and delivers
    them in the order they were dead-lettered."""
    orders = range(100, 108)
    api = store_api(tmp_path / "api", orders)
    folder = api / "bigcommerce" / "stores" / "abc123" / "v2" / "orders"
    good = {order: (folder / f"{order}.json").read_text() for order in orders}
    for order, text in good.items():
        broken = re.sub(r'"email": "[^"]*"', '"email": null', text)
        assert broken != text
        (folder / f"{order}.json").write_text(broken)  # no customer email: the mapping refuses the order
    work = tmp_path / "work"
    work.mkdir()
    events = work / "skinny.ndjson"
    events.write_text("".join(json.dumps(_skinny(order)) + "\n" for order in orders))
    with Sandbox(source_documents=api, source_token=BC_API_TOKEN) as sandbox:
        config = enrich_config(work)
        first = _shipmap(sandbox, work, "run", str(config), "--input", str(events))
        assert first.returncode == 8 and first.stderr.count("customer.email") >= len(orders), first.stderr
        for order, text in good.items():
            (folder / f"{order}.json").write_text(text)  # fixed in the store
        sandbox.set_source_faults("slow=1:0.5")
        with InFlight(sandbox) as in_flight:
            fresh = _shipmap(sandbox, work, "replay", str(config), "--refetch")
        delivered = [request.body["id"] for request in sandbox.requests(endpoint="fenix.orders")]
    assert fresh.returncode == 0, fresh.stderr
    assert sorted(delivered) == [str(order) for order in orders], delivered
    assert GETS < in_flight.most <= GETS * 4, in_flight.most


def test_the_sandbox_store_api_remembers_each_get_and_answers_429_as_its_platform_does(
    tmp_path: Path,
) -> None:
    with Sandbox(
        source_documents=store_api(tmp_path / "api", range(100, 101), "shopify"),
        source_token=BC_API_TOKEN,
        source_faults="retry-after=3,schedule=429,ok,429",
    ) as sandbox:
        store_api(tmp_path / "api", range(100, 101))  # a bigcommerce platform too, beside it
        with httpx.Client(base_url=sandbox.url, headers={"X-Auth-Token": BC_API_TOKEN}) as client:
            shopify = client.get("/_source/shopify/stores/abc123/v2/orders/100")
            ok = client.get("/_source/shopify/stores/abc123/v2/orders/100")
            bigcommerce = client.get("/_source/bigcommerce/stores/abc123/v2/orders/100")
            listed = client.get("/_sandbox/source-requests").json()
        gets = sandbox.source_requests()
        sandbox.reset()
        after_reset = sandbox.source_requests()
    assert shopify.status_code == 429 and shopify.headers["Retry-After"] == "3"
    assert "X-Rate-Limit-Time-Reset-Ms" not in shopify.headers
    assert ok.status_code == 200 and ok.json()["id"] == 100
    assert bigcommerce.status_code == 429 and bigcommerce.headers["X-Rate-Limit-Time-Reset-Ms"] == "3000"
    assert "Retry-After" not in bigcommerce.headers
    assert [(get["path"], get["status"]) for get in gets] == [
        ("/_source/shopify/stores/abc123/v2/orders/100", 429),
        ("/_source/shopify/stores/abc123/v2/orders/100", 200),
        ("/_source/bigcommerce/stores/abc123/v2/orders/100", 429),
    ]
    assert gets[0]["at"] <= gets[1]["at"] <= gets[2]["at"]
    assert listed == {"count": 3, "forgotten": 0, "requests": gets}
    assert after_reset == []


@pytest.mark.parametrize("as_date", [False, True], ids=["seconds", "http-date"])
def test_serve_holds_every_get_of_the_store_api_for_a_503s_retry_after(tmp_path: Path, as_date: bool) -> None:
    """The store API's first GET gets a 503 that says ``Retry-After: 2`` (in seconds, or as an HTTP date);
    every later GET takes 0.1 s. In ``shipmap serve``, no GET of any webhook reaches the API for those 2 s
    but those already in flight when the 503 came; then every webhook is enriched and delivered, once."""
    orders = range(100, 108)
    work = tmp_path / "work"
    work.mkdir()
    spec = "schedule=503:2,slow=1:0.1" + (",retry-after-date=true" if as_date else "")
    concurrency = 4
    with Sandbox(
        source_documents=store_api(tmp_path / "api", orders), source_token=BC_API_TOKEN, source_faults=spec
    ) as sandbox:
        serve = ServeProcess(work, sandbox.url, config=enrich_config(work, concurrency=concurrency)).start()
        try:
            with httpx.Client(timeout=10) as client:
                for order in orders:
                    answer = serve.post(client, "bc", json.dumps(_bc_payload(order)).encode(), BC_HEADERS)
                    assert answer.json()["status"] == "accepted", answer.text
            serve.wait_until(
                lambda: len(sandbox.requests(endpoint="fenix.orders")) >= len(orders), what="every order"
            )
            assert serve.terminate() == 0
        finally:
            serve.kill()
        delivered = [request.body["id"] for request in sandbox.requests(endpoint="fenix.orders")]
        gets = sandbox.source_requests()
    assert sorted(delivered) == [str(order) for order in orders], delivered  # each once
    told = [get for get in gets if get["status"] == 503]
    assert len(told) == 1 and gets[0] is told[0], gets
    assert len(gets) == 1 + GETS * len(orders) and all(get["status"] in (200, 204) for get in gets[1:]), gets
    told_at = told[0]["at"]
    # GETs already sent when the 503 came back (one batch of each lane's documents at most) arrive at once;
    # then none until the 2 s have passed.
    early = [get["at"] - told_at for get in gets[1:] if get["at"] - told_at < 2 - 0.01]
    assert len(early) <= concurrency * GETS - 1 and all(delay < 0.5 for delay in early), early
    later = [get["at"] - told_at for get in gets[1:] if get["at"] - told_at >= 2 - 0.01]
    assert len(later) >= GETS * (len(orders) - concurrency) + 1, gets


def test_a_429_seen_by_one_serve_process_holds_the_gets_of_another_on_postgresql(
    tmp_path: Path, postgres_url: str
) -> None:
    """Two serve processes on one PostgreSQL journal and inbox, ``max_rate: 10`` on the store's connection,
    which reaches the store API by two paths (``a`` under ``shopify/``, ``b`` under ``bigcommerce/``) so the
    API's record says which process sent each GET. ``a``'s first GET gets a 429 that says ``Retry-After: 2``;
    the webhooks posted to ``b`` right after it are fetched only once the 2 s have passed: ``b`` claims its
    slots in the journal, where ``a``'s hold pushed them. (It held ``a``'s GETs only: ``b`` fetched at once.)"""
    orders = range(100, 105)
    work = tmp_path / "work"
    work.mkdir()
    api = store_api(store_api(tmp_path / "api", orders, "shopify"), orders, "bigcommerce")
    configs = {}
    for name, platform in (("a", "shopify"), ("b", "bigcommerce")):
        text = enrich_config(work, max_rate=10, platform=platform).read_text()
        configs[name] = work / f"serve_{name}.yaml"
        configs[name].write_text(on_postgres(text, postgres_url))
    with Sandbox(
        source_documents=api, source_token=BC_API_TOKEN, source_faults="retry-after=2,schedule=429"
    ) as sandbox:
        a = ServeProcess(work, sandbox.url, config=configs["a"]).start()
        b = ServeProcess(work, sandbox.url, config=configs["b"]).start()
        try:
            with httpx.Client(timeout=10) as client:
                answer = a.post(client, "bc", json.dumps(_bc_payload(orders[0])).encode(), BC_HEADERS)
                assert answer.json()["status"] == "accepted", answer.text
                give_up = time.monotonic() + 30
                while not sandbox.source_requests():  # the 429, as soon as it is answered
                    assert time.monotonic() < give_up, "a's first GET never came"
                    time.sleep(0.02)
                posted_at = time.monotonic()
                for order in orders[1:]:
                    answer = b.post(client, "bc", json.dumps(_bc_payload(order)).encode(), BC_HEADERS)
                    assert answer.json()["status"] == "accepted", answer.text
                posting = time.monotonic() - posted_at
            a.wait_until(
                lambda: len(sandbox.requests(endpoint="fenix.orders")) >= len(orders), what="every order"
            )
            assert a.terminate() == 0 and b.terminate() == 0
        finally:
            a.kill()
            b.kill()
        delivered = [request.body["id"] for request in sandbox.requests(endpoint="fenix.orders")]
        gets = sandbox.source_requests()
    assert posting < 1.0, posting  # b had its webhooks well inside the hold
    assert sorted(delivered) == [str(order) for order in orders], delivered  # each once
    told = gets[0]
    assert told["status"] == 429 and told["path"].startswith("/_source/shopify/"), gets
    assert len(gets) == 1 + GETS * len(orders) and all(get["status"] in (200, 204) for get in gets[1:]), gets
    from_b = [get["at"] - told["at"] for get in gets if get["path"].startswith("/_source/bigcommerce/")]
    assert from_b, gets  # b fetched some of the webhooks posted to it (whichever process took the rest)
    assert min(from_b) >= 2 - 0.05, from_b
    assert not any("cannot share enrichment" in line for line in a.errors + b.errors)
