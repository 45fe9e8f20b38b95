"""Enrichment GETs and the connection's circuit breaker, in ``shipmap run``'s mode (wait up to outage_wait,
then reject with the reason) and in ``serve``'s (say "later" at once), against the sandbox's fake store API
made to fail; and two serve processes on one PostgreSQL journal sharing the breaker."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from shipmap.connectors import Runtime, Sandbox
from shipmap.connectors._serve import Enricher, enrich_records, enrichments
from shipmap.connectors._serve._enrich_errors import SourceUnavailable
from shipmap.connectors._store._breaker_pg import breaker_row, enrichment_breaker_row

from .harness import (
    BC_API_TOKEN,
    BC_HEADERS,
    DRAIN_LINE,
    SOURCE_DOCUMENTS,
    ServeProcess,
    bc_webhook,
    environment,
    on_postgres,
    store_api,
    with_added,
)

BREAKER = "failures: 2, cooldown: 100ms, cooldown_cap: 200ms, outage_wait: 400ms"


def _runtime(tmp_path: Path, url: str) -> Runtime:
    serve = ServeProcess(tmp_path, url)  # only for its copy of the config files
    text = serve.config.read_text().replace("  bc_store:\n", f"  bc_store:\n    breaker: {{{BREAKER}}}\n", 1)
    serve.config.write_text(text)
    return Runtime.from_config(serve.config, environ=environment(url))


def _skinny(order: int) -> dict[str, Any]:
    return {"source": "bc", "topic": "store/order/created", "payload": bc_webhook(order)}


def test_run_waits_for_the_open_breaker_then_rejects_each_event_with_the_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="shipmap.connectors.breaker")
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
    # The line that says it opened says what waits: the events it enriches, not deliveries.
    (opened,) = [m for m in caplog.messages if "circuit breaker open after" in m]
    assert "; the events it enriches wait (up to outage_wait), probing in " in opened, opened


def test_serve_mode_says_later_at_once_and_probes_when_due(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="shipmap.connectors.breaker")
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
    (opened,) = [m for m in caplog.messages if "circuit breaker open after" in m]
    assert "; the webhooks it enriches wait, parked, probing in " in opened, opened


def test_before_the_breaker_opens_the_gets_in_flight_go_and_so_do_the_retries_of_the_failures_it_counted(
    tmp_path: Path,
) -> None:
    """How many GETs reach a store API that is down before its breaker opens: those of the events fetched at
    once (3 each), and the retries of the failures counted before the one that opens it (``failures`` - 1),
    which go while it is still closed; then none until a probe is due. The first GET gets a 500 at once and
    the others hang until their timeout: the 500's retry (after 50 ms of backoff at most) goes out before
    the timeouts open the breaker, as a retry did in serve's outage test, which counted 13 GETs for a bound
    of 12."""
    failures, timeout = 2, 0.5
    with Sandbox(
        source_documents=SOURCE_DOCUMENTS,
        source_token=BC_API_TOKEN,
        source_faults=f"slow=1:{2 * timeout},schedule=500",  # the first GET: a 500; the others: no answer
    ) as sandbox:
        serve = ServeProcess(tmp_path, sandbox.url)  # only for its copy of the config files
        breaker = f"failures: {failures}, cooldown: 30s"  # no probe is due while the test looks
        text = serve.config.read_text().replace(
            "  bc_store:\n", f"  bc_store:\n    timeout: {timeout}s\n    breaker: {{{breaker}}}\n", 1
        )
        serve.config.write_text(text)
        runtime = Runtime.from_config(serve.config, environ=environment(sandbox.url))
        concurrency = enrichments(runtime.config)["bc"].concurrency

        async def fetch_at_once() -> list[Any]:
            async with Enricher(runtime, enrichments(runtime.config), wait=False) as enricher:
                events = [_skinny(100 + i % 2) for i in range(concurrency)]
                return await asyncio.gather(*map(enricher.documents, events), return_exceptions=True)

        results = asyncio.run(fetch_at_once())
        received = sandbox.stats()["source_api"]["received"]
        deadline = time.monotonic() + 10  # the hung GETs are recorded once the sandbox has answered them
        while len(gets := sandbox.source_requests()) < received and time.monotonic() < deadline:
            time.sleep(0.05)
    assert all(isinstance(result, SourceUnavailable) for result in results), results
    state = runtime.breaker_store.breaker("bc_store")
    assert (state.phase, state.opened, state.probes) == ("open", 1, 0), state
    assert received == 3 * concurrency + failures - 1, (received, gets)
    # The GET past those in flight is the retry of the one that failed first, sent before any timed out.
    first, *_, last = gets
    assert first["status"] == 500 and last["path"] == first["path"], gets
    assert last["at"] - first["at"] < timeout, gets


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
                return len(enricher._apis["bc_store"].client.cookies.jar)

        assert asyncio.run(fetch_twice()) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert sent_back == []


def test_serve_processes_on_postgresql_share_one_breaker_per_source_api(
    tmp_path: Path, postgres_url: str
) -> None:
    """Two serve processes on one PostgreSQL journal, the store API down: their GETs count towards one
    breaker (the journal's row ``enrichment bc_store BASE_URL``), which opens once and is probed by one of
    them at a time, so the API gets the failures and the probes of one process (plus the GETs the other had
    in flight as it opened), not twice as many; both /readyz say it is open. The API back: both say closed,
    and each webhook is enriched and delivered once."""
    failures, cooldown, gets = 6, 0.3, 3  # gets: a webhook's documents (order, products, shipments)
    orders = range(100, 104)
    work = tmp_path / "work"
    work.mkdir()
    api = store_api(tmp_path / "api", orders)
    with Sandbox(source_documents=api, source_token=BC_API_TOKEN, source_faults="5xx=1") as sandbox:
        a = ServeProcess(work, sandbox.url)
        text = a.config.read_text().replace(
            "  bc_store:\n",
            f"  bc_store:\n    breaker: {{failures: {failures}, cooldown: {cooldown}s, cooldown_cap: {cooldown}s}}\n",
            1,
        )
        # Quick sweeps: parked webhooks are tried again (each process's, so each may probe) about once a
        # second. One webhook of a source fetched at a time: a process has one webhook's GETs in flight.
        text = with_added(text, DRAIN_LINE, "  resweep: 100ms\n  resweep_cap: 200ms\n")
        text = text.replace("        shipments: /v2/orders/{payload.data.id}/shipments\n",
                            "        shipments: /v2/orders/{payload.data.id}/shipments\n      concurrency: 1\n")  # fmt: skip
        assert "concurrency: 1" in text and "resweep: 100ms" in text and "cooldown_cap" in text
        a.config.write_text(on_postgres(text, postgres_url))
        b = ServeProcess(work, sandbox.url)  # the same config file
        base_url = f"{sandbox.url}/_source/bigcommerce/stores/abc123"
        a.start()
        b.start()
        try:
            with httpx.Client(timeout=10) as client:

                def breaker_of(serve: ServeProcess) -> str:
                    return str(client.get(f"{serve.url}/readyz").json()["breakers"]["bc_store"])

                posted_at = time.monotonic()  # the outage began before this test saw the breaker open
                for serve, order in ((a, 100), (a, 101), (b, 102), (b, 103)):
                    body = bc_webhook(order, f"shared-breaker-{order}")
                    answer = serve.post(client, "bc", json.dumps(body).encode(), BC_HEADERS)
                    assert answer.json()["status"] == "accepted", answer.text
                for serve in (a, b):
                    serve.wait_until(
                        lambda s=serve: breaker_of(s) != "closed", what="an open breaker in /readyz"
                    )
                time.sleep(3.0)  # the outage goes on: probes only, one per cooldown for the pair
                sandbox.set_source_faults(None)  # the store's API is back
                outage = time.monotonic() - posted_at
                a.wait_until(
                    lambda: len(sandbox.requests(endpoint="fenix.orders")) >= len(orders), what="every order"
                )
                for serve in (a, b):
                    serve.wait_until(
                        lambda s=serve: breaker_of(s) == "closed", what="a closed breaker in /readyz"
                    )
            assert a.terminate() == 0 and b.terminate() == 0
        finally:
            a.kill()
            b.kill()
        delivered = sorted(request.body["id"] for request in sandbox.requests(endpoint="fenix.orders"))
        duplicates = sandbox.duplicates()
        failed = [get for get in sandbox.source_requests() if get["status"] >= 500]
    with psycopg.connect(postgres_url) as db:
        rows = dict(db.execute("SELECT name, opened FROM connection_state").fetchall())
        probes = db.execute(
            "SELECT probes FROM connection_state WHERE name = %s",
            (enrichment_breaker_row("bc_store", base_url),),
        ).fetchone()
    assert delivered == [str(order) for order in orders], delivered  # each webhook delivered once
    assert not any(duplicates.values()), duplicates
    # One breaker for the pair, opened once, in a row of its own (no delivery breaker's, and only one).
    assert rows[enrichment_breaker_row("bc_store", base_url)] == 1, rows
    assert rows.get(breaker_row("bc_store", base_url), 0) == 0, rows
    assert probes is not None and 1 <= probes[0] <= outage / cooldown + 1, (probes, outage)
    # One process makes `failures` failed GETs, then one probe per cooldown at most; the pair, at most the
    # GETs in flight as the breaker opened more (one webhook's GETs a process: 2 x gets, less the one that
    # opened it). Every other failed GET is a probe the shared record counted. With a breaker each, the pair
    # made `failures` each before any probe, and each process probed on its own: 16 failed GETs in each of two
    # runs (12 + 4 probes); 8 to 11 with the shared breaker (3 of them probes), in four.
    assert len(failed) - probes[0] <= failures + 2 * gets - 1, (len(failed), probes[0], failed)
    for serve in (a, b):
        stderr = "".join(serve.errors)
        assert "cannot share enrichment" not in stderr, stderr
        assert "connection bc_store is down" not in stderr, stderr  # closed at stop, in both
