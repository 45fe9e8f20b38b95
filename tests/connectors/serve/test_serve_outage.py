"""Outages while ``shipmap serve`` runs: the store's API down (enrichment parks, the breaker keeps requests
down), a destination down (deliveries parked, then re-sent by the running service on its own), and
``shipmap replay`` of a dead letter while the service holds the journal."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from shipmap.connectors import Sandbox
from shipmap.connectors._config._serve_model import DEFAULT_ENRICH_CONCURRENCY
from shipmap.connectors._store._breaker_pg import APPLICATION_NAME

from .harness import (
    BC_API_TOKEN,
    BC_HEADERS,
    DRAIN_LINE,
    FIXTURES,
    REAL_SHOPIFY,
    SOURCE_DOCUMENTS,
    ServeProcess,
    bc_webhook,
    easypost_headers,
    environment,
    on_postgres,
    shopify_headers,
    with_added,
)

ORDER = json.loads((REAL_SHOPIFY / "orders_cancelled_webhook.json").read_text())


def _configure(serve: ServeProcess, connection: str, breaker: str) -> None:
    """The test config with a quick breaker on ``connection`` and quick sweeps."""
    text = with_added(serve.config.read_text(), f"  {connection}:\n", f"    breaker: {{{breaker}}}\n")
    serve.config.write_text(with_added(text, DRAIN_LINE, "  resweep: 200ms\n  resweep_cap: 1s\n"))


def _breaker_states(metrics: str, connection: str) -> dict[str, float]:
    (family,) = [f for f in text_string_to_metric_families(metrics) if f.name == "shipmap_breaker_state"]
    return {s.labels["state"]: s.value for s in family.samples if s.labels["connection"] == connection}


def _dead(metrics: str) -> float:
    families = [f for f in text_string_to_metric_families(metrics) if f.name == "shipmap_deliveries"]
    return sum(s.value for f in families for s in f.samples if s.labels.get("outcome") == "dead")


def _shopify_order(index: int) -> bytes:
    return json.dumps(dict(ORDER, id=7_000_000 + index, name=f"#OUT{index}")).encode()


def _post_orders(client: httpx.Client, prefix: str, count: int, *services: ServeProcess) -> None:
    """Shopify orders 0 to ``count - 1`` (webhook ids ``prefix-i``), each accepted, by ``services`` in turn."""
    for i in range(count):
        body = _shopify_order(i)
        headers = shopify_headers(body, "orders/create", f"{prefix}-{i}")
        assert services[i % len(services)].post(client, "shop", body, headers).status_code == 200


def test_store_api_outage_parks_webhooks_and_the_breaker_holds_requests_back(tmp_path: Path) -> None:
    with Sandbox(
        source_documents=SOURCE_DOCUMENTS, source_token=BC_API_TOKEN, source_faults="5xx=1"
    ) as sandbox:
        serve = ServeProcess(tmp_path, sandbox.url)
        failures = 2
        _configure(serve, "bc_store", f"failures: {failures}, cooldown: 200ms, cooldown_cap: 1s")
        serve.start()
        try:
            with httpx.Client(timeout=10) as client:
                for i in range(10):
                    body = bc_webhook(100 + i % 2, f"outage-{i}")
                    answer = serve.post(client, "bc", json.dumps(body).encode(), BC_HEADERS)
                    assert answer.json()["status"] == "accepted", answer.text

                def ready() -> Any:
                    return client.get(f"{serve.url}/readyz")

                serve.wait_until(lambda: ready().json()["parked_webhooks"] == 10, what="10 parked webhooks")
                # Before /readyz: a probe is counted when it is claimed, before its GET goes, so each probe
                # the API has received by now is in the count read next (the other way round, a probe
                # claimed between the two reads would be received and not counted).
                received = sandbox.stats()["source_api"]["received"]
                answer = ready()
                body = answer.json()
                # Degraded, not unready: intake still commits webhooks while the store's API is down.
                assert answer.status_code == 200 and body["ready"] is True and body["degraded"] is True
                assert body["breakers"]["bc_store"] in ("open", "half_open")
                assert (body["queue_depth"], body["queue_depth_capped"]) == (10, False)  # parked: waiting
                outage = body["outages"]["bc_store"]
                assert "HTTP 5" in outage["reason"]
                # Every GET after the breaker opened is a probe, one per cooldown: without the breaker,
                # each of the 10 events would have made 3 GETs x 4 attempts. Before it opened, while it
                # was closed, the events being fetched at once (enrich.concurrency) had sent their GETs,
                # and the failures it counted before the one that opened it their retries (a retry goes
                # within 50 ms: test_enrich_breaker reaches this bound).
                before_open = 3 * DEFAULT_ENRICH_CONCURRENCY + failures - 1
                assert received <= before_open + outage["probes"], (received, outage)
                states = _breaker_states(client.get(f"{serve.url}/metrics").text, "bc_store")
                assert states["closed"] == 0.0 and states["open"] + states["half_open"] == 1.0
                assert sandbox.requests(endpoint="fenix.orders") == []
                sandbox.set_source_faults(None)  # the store's API is back
                serve.wait_until(
                    lambda: len(sandbox.requests(endpoint="fenix.orders")) == 10, what="10 orders delivered"
                )
                body = ready().json()
                assert body["breakers"]["bc_store"] == "closed" and body["degraded"] is False
                assert body["parked_webhooks"] == 0 and body["queue_depth"] == 0
                assert _dead(client.get(f"{serve.url}/metrics").text) == 0
            assert serve.terminate() == 0
        finally:
            serve.kill()
        orders = sandbox.requests(endpoint="fenix.orders")
    assert sorted(o.body["id"] for o in orders) == ["100"] * 5 + ["101"] * 5
    assert all(o.body["line_items"] for o in orders)  # mapped from the fetched /products


def test_an_open_enrichment_breaker_shows_in_readyz_and_metrics_on_a_postgresql_journal(
    tmp_path: Path, postgres_url: str
) -> None:
    """Enrichment's breakers live in the store its enricher took at start; on a PostgreSQL journal each run
    replaces the runtime's store with that run's shared one, which /readyz and /metrics read alone: an open
    enrichment breaker showed as closed there."""
    with Sandbox(
        source_documents=SOURCE_DOCUMENTS, source_token=BC_API_TOKEN, source_faults="5xx=1"
    ) as sandbox:
        serve = ServeProcess(tmp_path, sandbox.url)
        _configure(serve, "bc_store", "failures: 2, cooldown: 200ms, cooldown_cap: 1s")
        serve.config.write_text(on_postgres(serve.config.read_text(), postgres_url))
        serve.start()
        try:
            with httpx.Client(timeout=10) as client:
                for i in range(4):
                    body = bc_webhook(100 + i % 2, f"pg-outage-{i}")
                    answer = serve.post(client, "bc", json.dumps(body).encode(), BC_HEADERS)
                    assert answer.json()["status"] == "accepted", answer.text
                serve.wait_until(
                    lambda: client.get(f"{serve.url}/readyz").json()["parked_webhooks"] == 4,
                    what="4 parked webhooks",
                )
                # Parked in the inbox too, where the claims' floor steps past them (inbox schema 4).
                serve.wait_until(
                    lambda: _parked_in_inbox(postgres_url) == 4, what="4 rows parked in the inbox"
                )
                answer = client.get(f"{serve.url}/readyz")
                body = answer.json()
                assert answer.status_code == 200 and body["ready"] is True and body["degraded"] is True, body
                assert body["breakers"]["bc_store"] in ("open", "half_open"), body["breakers"]
                assert "HTTP 5" in body["outages"]["bc_store"]["reason"]
                states = _breaker_states(client.get(f"{serve.url}/metrics").text, "bc_store")
                assert states["closed"] == 0.0 and states["open"] + states["half_open"] == 1.0, states
                sandbox.set_source_faults(None)  # the store's API is back
                serve.wait_until(
                    lambda: len(sandbox.requests(endpoint="fenix.orders")) == 4, what="4 orders delivered"
                )
                body = client.get(f"{serve.url}/readyz").json()
                assert body["breakers"]["bc_store"] == "closed" and body["degraded"] is False, body
            assert serve.terminate() == 0
        finally:
            serve.kill()
    assert _parked_in_inbox(postgres_url) == 0  # handed over when due: processed, none parked


def _parked_in_inbox(url: str) -> int:
    with psycopg.connect(url) as db:
        row = db.execute(
            "SELECT count(*) FROM inbox WHERE state = 'pending' AND parked_at IS NOT NULL"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_running_service_resends_parked_deliveries_on_its_own(tmp_path: Path) -> None:
    with Sandbox(faults="5xx=1") as sandbox:
        serve = ServeProcess(tmp_path, sandbox.url)
        _configure(serve, "fenix", "failures: 2, cooldown: 200ms, cooldown_cap: 1s, outage_wait: 500ms")
        serve.start()
        try:
            with httpx.Client(timeout=10) as client:
                _post_orders(client, "parked", 3, serve)
                serve.wait_until(
                    lambda: client.get(f"{serve.url}/readyz").json()["parked_deliveries"] > 0,
                    what="deliveries parked by the open breaker",
                )
                answer = client.get(f"{serve.url}/readyz")
                assert answer.status_code == 200 and answer.json()["degraded"] is True
                assert answer.json()["breakers"]["fenix"] in ("open", "half_open")
                sandbox.set_faults(None)  # Fenix is back; no new webhook arrives
                serve.wait_until(
                    lambda: len(sandbox.requests(endpoint="fenix.orders")) >= 3, what="3 orders re-sent"
                )
                assert _dead(client.get(f"{serve.url}/metrics").text) == 0
                assert client.get(f"{serve.url}/readyz").json()["breakers"]["fenix"] == "closed"
            assert serve.terminate() == 0
        finally:
            serve.kill()
        orders = sandbox.requests(endpoint="fenix.orders")
    assert sorted(o.body["id"] for o in orders) == ["7000000", "7000001", "7000002"]
    assert any("looking again at parked work" in line for line in serve.errors), serve.errors[-20:]
    # The outage ended before the stop: the summary says it was, not that Fenix is down.
    summary = "".join(serve.output)
    assert "connection fenix was down meanwhile; its circuit breaker has closed since\n" in summary, summary
    assert "is down" not in summary and "left pending" not in summary and "dead-lettered" not in summary


@pytest.mark.parametrize("journal", ["sqlite", "postgresql"])
def test_a_stop_while_a_destination_is_down_says_it_is_down(
    tmp_path: Path, journal: str, request: pytest.FixtureRequest
) -> None:
    """SIGTERM while Fenix is down, its deliveries waiting for the breaker (outage_wait is long): the drain
    deadline cuts the wait short, so no delivery was parked as an Outage, and the summary said nothing of
    Fenix; now the breaker open at stop is reported, and what is owed with it. How long it has been open is
    counted on the clock of the breaker's times: on a PostgreSQL journal the database's (it said 0 s, and
    /readyz's next probe was due in 1.8e9 s, against this process's monotonic clock)."""
    with Sandbox(faults="5xx=1") as sandbox:
        serve = ServeProcess(tmp_path, sandbox.url)
        _configure(serve, "fenix", "failures: 2, cooldown: 200ms, cooldown_cap: 1s, outage_wait: 10m")
        config = serve.config.read_text().replace("  drain_timeout: 30s\n", "  drain_timeout: 1s\n")
        if journal == "postgresql":
            url = request.getfixturevalue("postgres_url")
            config = on_postgres(config, url)
        serve.config.write_text(config)
        serve.start()
        try:
            with httpx.Client(timeout=10) as client:
                _post_orders(client, "down", 3, serve)
                serve.wait_until(
                    lambda: client.get(f"{serve.url}/readyz").json()["breakers"]["fenix"] != "closed",
                    what="the breaker of fenix open",
                )
                time.sleep(1.2)  # open for a second at least
                outage = client.get(f"{serve.url}/readyz").json()["outages"]["fenix"]
                assert 1.0 <= outage["open_for_seconds"] < 60, outage
                assert 0 <= outage["next_probe_in_seconds"] <= 1.0, outage  # cooldown_cap
            assert serve.terminate() == 0
        finally:
            serve.kill()
    summary = "".join(serve.output)
    found = re.search(
        r"^connection fenix is down: unavailable for (\d+) s \(circuit breaker (open|half_open): HTTP 50\d [^)]*\);"
        r" what waits for it stays owed for the next start$",
        summary,
        re.MULTILINE,
    )
    assert found is not None, summary
    assert 1 <= int(found.group(1)) < 60, found.group(0)
    owed = [line for line in serve.errors if "owed at stop: 3 deliveries pending in the journal" in line]
    assert owed, serve.errors[-5:]


@pytest.mark.parametrize("journal", ["sqlite", "postgresql"])
def test_a_stop_while_the_store_api_is_down_says_it_is_down(
    tmp_path: Path, journal: str, request: pytest.FixtureRequest
) -> None:
    """SIGTERM while the store's API is down, its webhooks parked in the inbox: the summary names the source
    API's outage, with how long its breaker has been open, as it names a destination's. On a PostgreSQL
    journal it read the breakers of delivery's store alone (each run's shared one), which enrichment's are
    not in, and said nothing of the store's API."""
    with Sandbox(
        source_documents=SOURCE_DOCUMENTS, source_token=BC_API_TOKEN, source_faults="5xx=1"
    ) as sandbox:
        serve = ServeProcess(tmp_path, sandbox.url)
        _configure(serve, "bc_store", "failures: 2, cooldown: 30s, cooldown_cap: 60s")
        if journal == "postgresql":
            url = request.getfixturevalue("postgres_url")
            serve.config.write_text(on_postgres(serve.config.read_text(), url))
        serve.start()
        try:
            with httpx.Client(timeout=10) as client:
                for i in range(2):
                    body = bc_webhook(100 + i, f"down-{i}")
                    answer = serve.post(client, "bc", json.dumps(body).encode(), BC_HEADERS)
                    assert answer.json()["status"] == "accepted", answer.text
                serve.wait_until(
                    lambda: client.get(f"{serve.url}/readyz").json()["parked_webhooks"] == 2,
                    what="2 parked webhooks",
                )
                time.sleep(1.2)  # the breaker open for a second at least: the summary says how long
            assert serve.terminate() == 0
        finally:
            serve.kill()
    summary = "".join(serve.output)
    found = re.search(
        r"^connection bc_store is down: unavailable for (\d+) s \(circuit breaker open: GET /v2/orders/10[01]\S*:"
        r" HTTP 50\d [^)]*\); what waits for it stays owed for the next start$",
        summary,
        re.MULTILINE,
    )
    assert found is not None, summary
    assert 1 <= int(found.group(1)) < 60, found.group(0)
    assert "connection fenix" not in summary, summary  # Fenix was never called, never down
    owed = [line for line in serve.errors if "owed at stop: 2 webhooks waiting in the inbox" in line]
    assert owed, serve.errors[-5:]


def test_a_source_api_refusing_its_token_parks_webhooks_until_the_token_is_rotated(tmp_path: Path) -> None:
    """The store's API answers 401 to a token revoked there before the secret file was updated: each skinny
    webhook became a rejected input (no replay brings it back). Now the breaker opens, the webhooks wait in
    the inbox, and the token rotated in its file delivers them, with no restart and no reload."""
    with Sandbox(source_documents=SOURCE_DOCUMENTS, source_token=BC_API_TOKEN) as sandbox:
        serve = ServeProcess(tmp_path, sandbox.url)
        _configure(serve, "bc_store", "failures: 5, cooldown: 200ms, cooldown_cap: 1s")
        token = tmp_path / "bc_token"
        token.write_text("a-token-the-store-revoked\n")
        text = serve.config.read_text().replace("api_key: ${BC_API_TOKEN}", f"api_key: ${{file:{token}}}")
        serve.config.write_text(text)
        serve.start()
        try:
            with httpx.Client(timeout=10) as client:
                for i in range(3):
                    body = bc_webhook(100 + i % 2, f"refused-{i}")
                    answer = serve.post(client, "bc", json.dumps(body).encode(), BC_HEADERS)
                    assert answer.json()["status"] == "accepted", answer.text

                def ready() -> Any:
                    return client.get(f"{serve.url}/readyz").json()

                serve.wait_until(lambda: ready()["parked_webhooks"] == 3, what="3 parked webhooks")
                outage = ready()["outages"]["bc_store"]
                assert outage["reason"] == "GET /v2/orders/100: HTTP 401: the credentials are refused", outage
                token.write_text(BC_API_TOKEN + "\n")  # rotated where the config reads it
                serve.wait_until(
                    lambda: len(sandbox.requests(endpoint="fenix.orders")) == 3, what="3 orders delivered"
                )
            assert serve.terminate() == 0
        finally:
            serve.kill()
    assert not any("rejected input" in line for line in serve.errors), serve.errors[-10:]
    assert "dead-lettered" not in "".join(serve.output)


def test_replay_of_a_dead_letter_while_serve_runs(tmp_path: Path) -> None:
    # Four 5xx in a row: the delivery gives up after its 4 attempts (the breaker needs 5 to open): dead.
    with Sandbox(faults="schedule=500,500,500,500") as sandbox:
        serve = ServeProcess(tmp_path, sandbox.url).start()
        try:
            with httpx.Client(timeout=10) as client:
                body = _shopify_order(9)
                headers = shopify_headers(body, "orders/create", "dead-then-replayed")
                assert serve.post(client, "shop", body, headers).status_code == 200
                serve.wait_until(
                    lambda: _dead(client.get(f"{serve.url}/metrics").text) == 1, what="a dead letter"
                )

                def shipmap(*args: str) -> subprocess.CompletedProcess[str]:
                    return subprocess.run(
                        [sys.executable, "-c", "from shipmap.connectors._cli import entry; entry()", *args],
                        capture_output=True, text=True, env=environment(sandbox.url), cwd=tmp_path,
                        check=False, timeout=120,
                    )  # fmt: skip

                replay = shipmap("replay", str(serve.config), "--no-progress")
                assert replay.returncode == 0, replay.stdout + replay.stderr
                assert "shipmap serve is running: it replays 1 dead letter" in replay.stdout
                assert "replayed by shipmap serve: delivered 1, still dead 0" in replay.stdout
                (order,) = sandbox.requests(endpoint="fenix.orders")
                assert order.body["id"] == "7000009"
                again = shipmap("replay", str(serve.config), "--no-progress")
                assert (again.returncode, again.stdout.strip()) == (0, "no dead letters to replay")
                sandbox.set_faults("schedule=500,500,500,500")  # a second order, dead-lettered and left so
                body = _shopify_order(10)
                headers = shopify_headers(body, "orders/create", "dead-and-left")
                assert serve.post(client, "shop", body, headers).status_code == 200
                serve.wait_until(
                    lambda: _dead(client.get(f"{serve.url}/metrics").text) == 2, what="a second dead letter"
                )
            assert serve.terminate() == 0
        finally:
            serve.kill()
    # The stop summary counts what the service dead-lettered in its life, and tells to replay only what the
    # journal still holds: the first was replayed meanwhile (by `shipmap replay`, through the service).
    summary = "".join(serve.output)
    assert (
        "2 dead-lettered while serving; 1 dead letter in the journal now: see `shipmap dead-letters`; fix and"
        " `shipmap replay`\n" in summary
    ), summary


def test_parked_webhooks_are_counted_past_the_ids_kept_and_recounted_by_each_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A long outage of a busy source's API parks millions of webhooks (they wait in the inbox): the feed keeps
    the ids of the first ``KEPT`` and counts the rest, and a new pass over the inbox counts those again."""
    from shipmap.connectors._serve._feed import ParkedRows

    monkeypatch.setattr(ParkedRows, "KEPT", 3)
    parked = ParkedRows()
    for row in range(1, 8):
        parked.add(row)
    assert len(parked) == 7 and parked
    parked.new_pass()  # a new run reads the inbox from its first pending row: every parked row comes again
    parked.discard(1)  # its source answers now: handed over
    for row in range(2, 8):
        parked.add(row)  # still waiting
    assert len(parked) == 6
    parked.clear()  # a sweep: what still waits parks again as the feed meets it
    assert len(parked) == 0 and not parked


TWO_DESTINATIONS = """version: 1
env_file: false
connections:
  fenix:
    api: fenix
    base_url: ${SANDBOX_URL}
    auth: {scheme: fenix_session, username: "${FENIX_USERNAME}", password: "${FENIX_PASSWORD}",
           api_key: "${FENIX_API_KEY}", store_name: demo-store}
    breaker: {failures: 2, cooldown: 200ms, cooldown_cap: 1s, outage_wait: 10m}
  dg:
    api: dg
    base_url: DG_URL
    auth: {scheme: basic, key: "${DG_API_KEY}", secret: "${DG_API_SECRET}"}
events: {topic: topic, body: payload}
sources:
  shop: {type: shopify, secret: "${SHOPIFY_SECRET}"}
  easypost: {type: generic, header: X-Hmac-Signature, prefix: hmac-sha256-hex=, secret: "${EASYPOST_WEBHOOK_SECRET}"}
mappings:
  - {mapping: shopify/order, topic: orders/create}
  - mapping: easypost/tracker
    match: "source == 'easypost'"
    targets: {fulfillment: {enabled: false}}   # DG alone
delivery:
  concurrency: 4
  timeout: 10s
  retry: {max_attempts: 4, backoff_base: 50ms, backoff_cap: 1s, jitter: full}
journal: {path: .shipmap/journal.db}
serve: {host: 127.0.0.1, port: 0, drain_timeout: 10s, resweep: RESWEEP, resweep_cap: 5m}
"""


def _two_destinations(config: Path, dg: Sandbox, resweep: str, journal: str | None = None) -> Path:
    """``TWO_DESTINATIONS`` written to ``config``: DG at ``dg``, a look at parked work every ``resweep``, and
    ``journal``, a PostgreSQL URL (shared, lease 10s), or the SQLite file."""
    text = TWO_DESTINATIONS.replace("DG_URL", dg.url).replace("RESWEEP", resweep)
    if journal is not None:
        assert "journal: {path: .shipmap/journal.db}\n" in text
        text = text.replace(
            "journal: {path: .shipmap/journal.db}\n", f"journal: {{url: '{journal}', lease: 10s}}\n"
        )
    config.write_text(text)
    return config


@pytest.mark.parametrize("resweep", ["30s", "200ms"])
def test_one_destination_down_holds_up_neither_the_others_nor_its_own_return(
    tmp_path: Path, resweep: str
) -> None:
    """Fenix down with a long outage_wait: its deliveries used to hold every sender, waiting for its breaker,
    so Digital Genius got nothing until Fenix came back (the soak: 0 DG requests in the minute Fenix was
    down). Now half the senders at most wait for Fenix, its other deliveries are parked, DG's go on; a look
    at parked work ends its run without waiting for the senders that wait (200ms: looks all through the
    outage; the PostgreSQL soak stalled there); and when Fenix's breaker closes, the parked ones are sent at
    once, not at the next look (30 s)."""
    tracker = json.loads((FIXTURES / "derived" / "easypost" / "event_delivered.json").read_text())
    with Sandbox(faults="5xx=1") as fenix, Sandbox() as dg:
        config = _two_destinations(tmp_path / "two.yaml", dg, resweep)
        serve = ServeProcess(tmp_path, fenix.url, config=config).start()
        try:
            with httpx.Client(timeout=10) as client:
                _post_orders(client, "down", 6, serve)
                serve.wait_until(
                    lambda: client.get(f"{serve.url}/readyz").json()["parked_deliveries"] > 0,
                    what="Fenix deliveries parked past the senders that wait for its breaker",
                )
                if resweep == "200ms":
                    serve.wait_until(
                        lambda: sum("looking again at parked work" in line for line in serve.errors) >= 3,
                        what="three looks at parked work while Fenix is down",
                    )
                for i in range(10):
                    doc = dict(tracker, id=f"evt_down{i}", result=dict(tracker["result"], id=f"trk_down{i}"))
                    body = json.dumps(doc).encode()
                    assert serve.post(client, "easypost", body, easypost_headers(body)).status_code == 200
                serve.wait_until(
                    lambda: len(dg.requests(endpoint="dg.execution")) == 10,
                    timeout=20,
                    what="DG's 10 executions while Fenix is down",
                )
                ready = client.get(f"{serve.url}/readyz").json()
                assert (
                    ready["breakers"]["fenix"] != "closed" and fenix.requests(endpoint="fenix.orders") == []
                )
                fenix.set_faults(None)
                serve.wait_until(
                    lambda: len(fenix.requests(endpoint="fenix.orders")) == 6,
                    timeout=20,
                    what="the 6 orders once Fenix is back, before the next sweep (30 s)",
                )
                assert _dead(client.get(f"{serve.url}/metrics").text) == 0
            assert serve.terminate() == 0
        finally:
            serve.kill()
    assert sorted(o.body["id"] for o in fenix.requests(endpoint="fenix.orders")) == [
        str(7_000_000 + i) for i in range(6)
    ]
    assert "dead-lettered" not in "".join(serve.output)


def test_looks_at_parked_work_count_the_down_connections_deliveries_and_send_each_once_when_it_is_back(
    tmp_path: Path,
) -> None:
    """Fenix down, its 40 orders parked, looks every few hundred ms: each look used to read, claim and park
    every one of them again (an hour's outage at 40 webhooks a second: 150,000 rows a look). Now a look reads
    the two that may wait for the breaker (half of concurrency 4; they probe it) and counts the rest, so
    /readyz's parked_deliveries says all of them but those two at once; DG's executions go meanwhile, and
    when Fenix is back every order arrives, once."""
    orders = 40
    tracker = json.loads((FIXTURES / "derived" / "easypost" / "event_delivered.json").read_text())
    with Sandbox(faults="5xx=1") as fenix, Sandbox() as dg:
        config = _two_destinations(tmp_path / "two.yaml", dg, "200ms")
        serve = ServeProcess(tmp_path, fenix.url, config=config).start()
        try:
            with httpx.Client(timeout=10) as client:
                _post_orders(client, "looks", orders, serve)

                def looks() -> int:
                    return sum("looking again at parked work" in line for line in serve.errors)

                serve.wait_until(lambda: looks() >= 3, what="three looks at parked work while Fenix is down")
                serve.wait_until(
                    lambda: client.get(f"{serve.url}/readyz").json()["parked_deliveries"] == orders - 2,
                    what="every Fenix order but the two waiting for its breaker counted parked",
                )
                ready = client.get(
                    f"{serve.url}/readyz"
                ).json()  # the journal's only process: all are its own
                assert ready["journal_parked_deliveries"] == ready["parked_deliveries"] >= orders - 2, ready
                for i in range(5):
                    doc = dict(
                        tracker, id=f"evt_looks{i}", result=dict(tracker["result"], id=f"trk_looks{i}")
                    )
                    body = json.dumps(doc).encode()
                    assert serve.post(client, "easypost", body, easypost_headers(body)).status_code == 200
                serve.wait_until(
                    lambda: len(dg.requests(endpoint="dg.execution")) == 5, what="DG's 5 executions meanwhile"
                )
                assert fenix.requests(endpoint="fenix.orders") == []
                fenix.set_faults(None)
                serve.wait_until(
                    lambda: len(fenix.requests(endpoint="fenix.orders")) == orders,
                    timeout=30,
                    what="the 40 orders once Fenix is back",
                )
                ready = client.get(f"{serve.url}/readyz").json()
                assert (
                    ready["breakers"]["fenix"] == "closed"
                    and _dead(client.get(f"{serve.url}/metrics").text) == 0
                )
                seen = looks()
            assert serve.terminate() == 0
        finally:
            serve.kill()
    ids = [o.body["id"] for o in fenix.requests(endpoint="fenix.orders")]
    assert sorted(ids) == sorted(str(7_000_000 + i) for i in range(orders))  # each once
    summary = "".join(serve.output)
    # Each look re-sent the two that wait for the breaker; the orders were read in full once, when it closed.
    recovered = int(re.search(r"recovered (\d+)", summary).group(1))  # type: ignore[union-attr]
    assert recovered <= orders + 2 * seen, (recovered, seen, summary)
    assert "left pending" not in summary and "dead-lettered" not in summary, summary


def _gauge(metrics: str, name: str) -> float:
    (family,) = [f for f in text_string_to_metric_families(metrics) if f.name == name]
    (sample,) = family.samples
    return sample.value


def _left_pending(output: list[str]) -> int:
    """What the summary at stop says this process left pending (0 when it says nothing)."""
    found = re.search(r"^(\d+) deliver(?:y|ies) left pending", "".join(output), re.MULTILINE)
    return int(found.group(1)) if found is not None else 0


def test_two_services_on_one_postgresql_journal_each_report_their_own_parked_and_the_same_journal_count(
    tmp_path: Path, postgres_url: str
) -> None:
    """Fenix down, 30 orders parked on a shared journal, two serve processes looking at parked work: each
    look counts the down connection's pending deliveries on the journal's index, and each process reported
    that count, every process's, as its own parked_deliveries, so a dashboard summing the processes counted
    them twice. Now parked_deliveries (and shipmap_parked_deliveries, and the summary at stop) is what this
    process read and left pending (the two that wait for the breaker, of concurrency 4), which sums across
    processes, and journal_parked_deliveries (shipmap_journal_parked_deliveries) is the journal's count, the
    same in each, said to be journal-wide. One stops during the outage; once Fenix is back the other sends
    every order, once."""
    orders = 30
    with Sandbox(faults="5xx=1") as fenix, Sandbox() as dg:
        config = _two_destinations(tmp_path / "two.yaml", dg, "200ms", postgres_url)
        a = ServeProcess(tmp_path, fenix.url, config=config).start()
        b = ServeProcess(tmp_path, fenix.url, config=config).start()
        try:
            with httpx.Client(timeout=10) as client:
                _post_orders(client, "two", orders, b, a)

                def figures(serve: ServeProcess) -> tuple[int, int, float, float]:
                    ready = client.get(f"{serve.url}/readyz").json()
                    metrics = client.get(f"{serve.url}/metrics").text
                    return (
                        ready["parked_deliveries"],
                        ready["journal_parked_deliveries"],
                        _gauge(metrics, "shipmap_parked_deliveries"),
                        _gauge(metrics, "shipmap_journal_parked_deliveries"),
                    )

                # A look after the last order counts them all (but the others' two it may not see yet).
                for serve in (a, b):
                    serve.wait_until(
                        lambda s=serve: figures(s)[1] >= orders - 2, what="a look that counts every order"
                    )
                seen = {name: figures(serve) for name, serve in (("a", a), ("b", b))}
                for own, journal_wide, own_gauge, journal_gauge in seen.values():
                    assert 0 <= own <= 2 and own_gauge == own, seen  # its probes, at most
                    assert orders - 2 <= journal_wide <= orders and journal_gauge == journal_wide, seen
                assert sum(figure[0] for figure in seen.values()) <= orders, seen
                # Its summary at stop says the same: what it left pending itself, and what the journal holds.
                assert b.terminate() == 0
                assert _left_pending(b.output) <= 2, b.output
                owed = f"owed at stop: {orders} deliveries pending in the journal"
                assert any(owed in line for line in b.errors), b.errors[-5:]
                assert fenix.requests(endpoint="fenix.orders") == []
                fenix.set_faults(None)
                a.wait_until(
                    lambda: len(fenix.requests(endpoint="fenix.orders")) == orders,
                    timeout=30,
                    what="the 30 orders once Fenix is back, all by the process left",
                )
                a.wait_until(lambda: figures(a) == (0, 0, 0.0, 0.0), what="nothing parked any more")
            assert a.terminate() == 0
        finally:
            a.kill()
            b.kill()
    ids = [o.body["id"] for o in fenix.requests(endpoint="fenix.orders")]
    assert sorted(ids) == sorted(str(7_000_000 + i) for i in range(orders))  # each once
    assert _left_pending(a.output) == 0


def test_the_parked_gauges_keep_the_last_looks_count_until_the_next_run_has_counted(
    tmp_path: Path, postgres_url: str
) -> None:
    """A look at parked work is a new run, whose own count starts at 0: from its start until its recovery had
    counted the parked deliveries again (it opens its shared breaker store first), /metrics and /readyz said 0
    parked while every row was still there, a false dip to 0 a Prometheus scrape could catch at any look (and
    the flaky two-services test did). The window is held open here: the next run waits to open its shared
    store, before its count; the figures stay the last look's meanwhile."""
    orders = 6
    with Sandbox(faults="5xx=1") as fenix, Sandbox() as dg:
        config = _two_destinations(tmp_path / "one.yaml", dg, "200ms", postgres_url)
        serve = ServeProcess(tmp_path, fenix.url, config=config).start()
        try:
            with httpx.Client(timeout=10) as client:
                _post_orders(client, "gauge", orders, serve)

                def figures() -> tuple[int, float]:
                    ready = client.get(f"{serve.url}/readyz").json()
                    metrics = client.get(f"{serve.url}/metrics").text
                    return ready["journal_parked_deliveries"], _gauge(
                        metrics, "shipmap_journal_parked_deliveries"
                    )

                serve.wait_until(lambda: figures()[0] >= orders - 2, what="a look that counts the orders")
                seen = []
                # One connection holds a row; another (autocommit: a fresh snapshot each time) watches.
                with (
                    psycopg.connect(postgres_url) as holder,
                    psycopg.connect(postgres_url, autocommit=True) as watcher,
                ):
                    # A write in progress on dg's row (closed, never written by the run in progress): the next
                    # run's store, inserting its rows as it opens, waits for it; the run in progress does not.
                    holder.execute("UPDATE connection_state SET name = name WHERE name = 'dg'")
                    waiting = 0
                    until = time.monotonic() + 30.0
                    while time.monotonic() < until and waiting < 10:  # ten looks while a new run waits
                        seen.append(figures())
                        row = watcher.execute(  # a new run's store waiting for the lock, as it opens
                            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                            " AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO connection_state%%'",
                            (APPLICATION_NAME,),
                        ).fetchone()
                        waiting += row is not None and row[0] > 0
                    holder.rollback()
                assert waiting == 10, "no run waited on the lock: the window was not held open"
                # Never the dip to 0. A look holds its probes' rows until it ends (4 of 6 counted meanwhile),
                # and /readyz and /metrics are two requests: a look may end between them, so each is bounded
                # alone rather than held equal to the other.
                assert all(
                    orders - 2 <= count <= orders and orders - 2 <= gauge <= orders for count, gauge in seen
                ), seen
            assert serve.terminate() == 0
        finally:
            serve.kill()
