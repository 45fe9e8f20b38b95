"""Enrichment GETs and the connection's circuit breaker, in ``shipmap run``'s mode (wait up to outage_wait,
then reject with the reason) and in ``serve``'s (say "later" at once), against the sandbox's fake store API
made to fail."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from shipmap.connectors import Runtime, Sandbox
from shipmap.connectors._serve import Enricher, enrich_records, enrichments
from shipmap.connectors._serve._enrich import SourceUnavailable

from .harness import BC_API_TOKEN, SERVE_FIXTURES, SOURCE_DOCUMENTS, ServeProcess, environment

BREAKER = "failures: 2, cooldown: 100ms, cooldown_cap: 200ms, outage_wait: 400ms"


def _runtime(tmp_path: Path, url: str) -> Runtime:
    serve = ServeProcess(tmp_path, url)  # only for its copy of the config files
    text = serve.config.read_text().replace("  bc_store:\n", f"  bc_store:\n    breaker: {{{BREAKER}}}\n", 1)
    serve.config.write_text(text)
    return Runtime.from_config(serve.config, environ=environment(url))


def _skinny(order: int) -> dict[str, Any]:
    payload = json.loads((SERVE_FIXTURES / "webhooks" / "bigcommerce_order_created_100.json").read_text())
    payload["data"]["id"] = order
    return {"source": "bc", "topic": "store/order/created", "payload": payload}


def test_run_waits_for_the_open_breaker_then_rejects_each_event_with_the_reason(tmp_path: Path) -> None:
    with Sandbox(
        source_documents=SOURCE_DOCUMENTS, source_token=BC_API_TOKEN, source_faults="5xx=1"
    ) as sandbox:
        runtime = _runtime(tmp_path, sandbox.url)

        async def enrich() -> list[Any]:
            records = enrich_records(
                runtime, [_skinny(100 + i % 2) for i in range(6)], enrichments(runtime.config)
            )
            return [record async for record in records]

        records = asyncio.run(enrich())
        received = sandbox.stats()["source_api"]["received"]
    assert all(not r.ok for r in records)
    assert all("source API bc_store unavailable (circuit breaker open" in (r.error or "") for r in records)
    probes = runtime.breaker_store.breaker("bc_store").probes
    concurrency = enrichments(runtime.config)["bc"].concurrency
    # The first events' GETs (as many events as are fetched at once) open the breaker; after that only probes
    # go (one per cooldown), within the one outage_wait the run spends; the other events are told at once.
    # Without the breaker: 6 x 3 x 4.
    assert concurrency == 4
    assert received <= 3 * 2 * concurrency + probes < 6 * 3 * 4, (received, probes)


def test_serve_mode_says_later_at_once_and_probes_when_due(tmp_path: Path) -> None:
    with Sandbox(
        source_documents=SOURCE_DOCUMENTS, source_token=BC_API_TOKEN, source_faults="5xx=1"
    ) as sandbox:
        runtime = _runtime(tmp_path, sandbox.url)

        async def scenario() -> tuple[float, int, dict[str, Any]]:
            async with Enricher(runtime, enrichments(runtime.config), wait=False) as enricher:
                with pytest.raises(SourceUnavailable) as first:
                    await enricher.documents(_skinny(100))
                requests = sandbox.stats()["source_api"]["received"]
                with pytest.raises(SourceUnavailable):  # open, probe not yet due: no request at all
                    await enricher.documents(_skinny(101))
                assert sandbox.stats()["source_api"]["received"] == requests
                sandbox.set_source_faults(None)  # the store's API is back
                await asyncio.sleep(first.value.retry_in + 0.05)  # the probe is due
                documents = await enricher.documents(_skinny(101))
                return first.value.retry_in, requests, documents

        retry_in, requests, documents = asyncio.run(scenario())
    assert 0 < retry_in <= 0.1 and requests <= 3 * 2
    assert documents["order"]["id"] == 101 and runtime.breaker_store.breaker("bc_store").phase == "closed"


def test_a_source_api_that_sets_cookies_gets_none_back_and_the_client_keeps_none(tmp_path: Path) -> None:
    """The source APIs authenticate with headers. A cookie one sets (a session, a load balancer's stickiness)
    is never sent back, and the service's client, which lives for months, keeps no jar of them."""
    import http.server
    import threading

    sent_back: list[str] = []

    class CookieSettingAPI(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            sent_back.extend(self.headers.get_all("Cookie") or [])
            body = b"[]" if self.path.endswith(("/products", "/shipments")) else b'{"id": 1}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Set-Cookie", f"session={len(sent_back)}-{self.path.count('/')}; Path=/")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CookieSettingAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        runtime = _runtime(tmp_path, "http://127.0.0.1:9")
        api = f"http://127.0.0.1:{server.server_address[1]}"
        connections = tuple(
            dataclasses.replace(c, base_url=api) if c.name == "bc_store" else c
            for c in runtime.config.connections
        )
        runtime = Runtime(dataclasses.replace(runtime.config, connections=connections))

        async def fetch_twice() -> int:
            async with Enricher(runtime, enrichments(runtime.config), wait=False) as enricher:
                for order in (100, 101):
                    documents = await enricher.documents(_skinny(order))
                    assert documents["order"] == {"id": 1} and documents["products"] == []
                return len(enricher._clients["bc_store"].cookies.jar)

        assert asyncio.run(fetch_twice()) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert sent_back == []
