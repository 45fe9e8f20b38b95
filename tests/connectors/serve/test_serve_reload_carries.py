"""``kill -HUP`` of a live ``shipmap serve`` carries what a connection holds: /readyz lists the enrichment
breaker of a connection the reload added from the reload on (before delivery takes it), a Retry-After the store
API asked for holds the GETs after a reload that replaced the connection's limiter, and the GETs of a webhook
that got "later" from a breaker a reload replaced are tried again at once when a GET of theirs succeeds.

The store API and Fenix are real HTTP servers on 127.0.0.1 (the sandbox, or ``OldEndpoint``, which holds a
request open while the reload lands)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
from shipmap.connectors import Sandbox

from .harness import BC_API_TOKEN, SOURCE_DOCUMENTS, ServeProcess, shopify_headers
from .test_serve_reload import ORDER
from .test_serve_reload_enrich import BC_STORE, ENRICH, STORE, _orders, _post
from .test_serve_reload_moves import FENIX, FIXTURE_RETRY, OldEndpoint

ADDED = "bc: enrich; connections.bc_store: added"
DELIVERY_TOOK = "the last reload's mappings, connections and delivery settings in use"
ENRICH_TOOK = "the last reload's enrich sections in use"
OPENED = "connection bc_store: circuit breaker open after"
PARKED = "the webhook waits in the inbox"


def _hangup(serve: ServeProcess, change: str, *also: str) -> None:
    """SIGHUP, then wait for the reload's line that ends with ``change`` and the lines ``also``."""
    assert serve.process is not None
    serve.process.send_signal(signal.SIGHUP)
    serve.wait_until(
        lambda: (
            any("reloaded " in line and line.rstrip().endswith(change) for line in serve.errors)
            and all(any(text in line for line in serve.errors) for text in also)
        ),
        timeout=30,
        what=f"the reload ({change})",
    )


def test_readyz_lists_the_breaker_of_a_store_connection_a_reload_added_before_delivery_takes_it(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """Fenix holds a delivery's request open, so the run in progress cannot end and delivery does not take the
    reload that adds ``bc_store`` and ``bc``'s enrich over it. Enrichment takes it at once; so does /readyz
    (and /metrics' breaker gauge): ``bc_store`` closed. Before, it listed ``bc_store`` only once delivery
    took the reload, and an operator who added a source saw nothing of its store API meanwhile."""
    serve = ServeProcess(tmp_path, source_sandbox.url)
    text = serve.config.read_text()
    assert BC_STORE in text and ENRICH in text and FENIX in text
    with OldEndpoint(retry_after=1) as fenix:
        held = text.replace(FENIX, FENIX.replace("${SANDBOX_URL}", fenix.url))
        serve.config.write_text(held.replace(BC_STORE, "").replace(ENRICH, ""))
        serve.start()
        try:
            with httpx.Client(timeout=10) as client:
                fenix.hold()
                body = json.dumps({**json.loads(ORDER), "id": 7_400_001}).encode()
                answer = serve.post(client, "shop", body, shopify_headers(body, "orders/create", "carry1"))
                assert answer.status_code == 200, answer.text
                assert fenix.held.wait(30), "Fenix got no delivery"
                before = client.get(f"{serve.url}/readyz").json()
                assert "bc_store" not in before["breakers"], before
                serve.config.write_text(held)
                _hangup(serve, ADDED, ENRICH_TOOK)
                ready = client.get(f"{serve.url}/readyz").json()
                metrics = client.get(f"{serve.url}/metrics").text
                # The delivery is still held: delivery has not taken the reload, so /readyz did not get
                # bc_store from there.
                assert not any(DELIVERY_TOOK in line for line in serve.errors), serve.errors[-10:]
                fenix.release()
        finally:
            serve.kill()
    assert ready["breakers"].get("bc_store") == "closed", ready
    assert ready["outages"] == {}, ready
    assert 'shipmap_breaker_state{connection="bc_store",state="closed"} 1.0' in metrics, metrics[-2000:]


HOLD = 20  # seconds the store API's 429 asks for: well past the reload and the next webhook's post


def test_a_retry_after_the_store_api_asked_for_holds_the_gets_after_a_reload_that_sets_max_rate(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """Order 100's first GET gets a 429 that says to come back in 20 s (BigCommerce's
    ``X-Rate-Limit-Time-Reset-Ms``; its other two GETs went beside it). A reload then sets ``bc_store``'s
    ``max_rate``, which gives the connection a new rate limiter. Order 101, posted once delivery took the
    reload, waits for the rest of the 20 s (/readyz counts its GETs waiting for the rate) and reaches the
    store API only after it. Before, the new limiter knew nothing of the 429, and order 101's GETs went at
    once, into the store's exhausted quota."""
    serve = ServeProcess(tmp_path, source_sandbox.url)
    text = serve.config.read_text()
    assert FIXTURE_RETRY in text and STORE in text
    text = text.replace(FIXTURE_RETRY, FIXTURE_RETRY.replace("retry_after_cap: 2s", "retry_after_cap: 60s"))
    lanes = "      connection: bc_store\n"
    assert lanes in text
    text = text.replace(lanes, lanes + "      concurrency: 4\n")  # order 101 fetched beside order 100
    serve.config.write_text(text)
    source_sandbox.set_source_faults(f"retry-after={HOLD},schedule=429")
    serve.start()
    try:
        with httpx.Client(timeout=10) as client:
            _post(serve, client, 100)
            serve.wait_until(lambda: source_sandbox.source_requests() != [], what="order 100's 429")
            told = source_sandbox.source_requests()[0]
            assert told["status"] == 429, told  # the other two went beside it
            serve.config.write_text(text.replace(STORE, STORE + "    max_rate: 100\n"))
            _hangup(serve, "connections.bc_store: max_rate", DELIVERY_TOOK)
            _post(serve, client, 101)

            def waiting() -> int:
                ready = client.get(f"{serve.url}/readyz").json()
                return int(ready["enrichment"]["waiting_for_rate"].get("bc_store", 0))

            def gets_of_101() -> list[dict[str, object]]:
                return [r for r in source_sandbox.source_requests() if "/orders/101" in str(r["path"])]

            serve.wait_until(
                lambda: waiting() > 0 or gets_of_101(), timeout=30, what="order 101's GET, waiting or sent"
            )
            assert gets_of_101() == [], source_sandbox.source_requests()  # held, not sent into the 429's wait
            serve.wait_until(
                lambda: _orders(source_sandbox) == ["100", "101"], timeout=HOLD + 30, what="both orders"
            )
        assert serve.terminate() == 0
    finally:
        serve.kill()
    gets = source_sandbox.source_requests()
    assert [r["status"] for r in gets].count(429) == 1, gets  # only the first: none into the wait
    assert sorted(str(r["path"]).split("/orders/", 1)[1] for r in gets if r["status"] != 429) == [
        "100",
        "100/products",
        "100/shipments",
        "101",
        "101/products",
        "101/shipments",
    ], gets


SLOW = 10  # seconds the store API holds the webhook's second GET: it outlasts the reload
REPLACED = "was answered; its circuit breaker, opened under the replaced settings, closes"


def test_the_gets_that_got_later_from_a_breaker_a_reload_replaced_go_again_at_once_when_their_sibling_is_answered(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """Order 100's three GETs go at once. The store API answers the first and the third 503, which opens
    ``bc_store``'s breaker (``failures: 1``, a 5-minute cooldown), and they give up "later"; it holds the second
    for 10 s. Meanwhile a reload replaces the breaker's settings (``failures: 5``), and then the held GET is
    answered 200. The breaker, opened under the replaced settings, closes, and its two siblings are fetched
    again at once, on the breaker in force: order 100 is delivered, each GET of it answered once. Before, the
    webhook was parked for the replaced breaker's 5-minute cooldown."""
    serve = ServeProcess(tmp_path, source_sandbox.url)
    text = serve.config.read_text()
    assert STORE in text
    settings = "    timeout: 120s\n    breaker: {failures: %d, cooldown: 5m, cooldown_cap: 10m}\n"
    serve.config.write_text(text.replace(STORE, STORE + settings % 1))
    source_sandbox.set_source_faults(f"schedule=503,slow:{SLOW},503")
    serve.start()
    try:
        with httpx.Client(timeout=10) as client:
            _post(serve, client, 100)
            serve.wait_until(
                lambda: (
                    len(source_sandbox.source_requests()) == 2
                    and source_sandbox.stats()["source_api"]["received"] == 3
                    and any(OPENED in line for line in serve.errors)
                ),
                timeout=30,
                what="two 503s, the breaker open, and the third GET held",
            )
            serve.config.write_text(text.replace(STORE, STORE + settings % 5))
            _hangup(serve, "connections.bc_store: breaker", DELIVERY_TOOK)
            held = source_sandbox.source_requests()
            assert len(held) == 2, held  # the held GET was not answered before the reload was taken
            serve.wait_until(
                lambda: _orders(source_sandbox) == ["100"] or any(PARKED in line for line in serve.errors),
                timeout=SLOW + 30,
                what="order 100 delivered, or parked",
            )
            ready = client.get(f"{serve.url}/readyz").json()
        assert serve.terminate() == 0
    finally:
        serve.kill()
    log = "".join(serve.errors)
    assert PARKED not in log and "rejected input" not in log, log
    assert sum(REPLACED in line for line in serve.errors) == 1, log
    assert _orders(source_sandbox) == ["100"]
    gets = source_sandbox.source_requests()
    assert [r["status"] for r in gets].count(503) == 2, gets
    answered = sorted(str(r["path"]).split("/orders/", 1)[1] for r in gets if r["status"] != 503)
    assert answered == ["100", "100/products", "100/shipments"], gets  # each once: the held one not again
    assert ready["breakers"]["bc_store"] == "closed", ready


def test_a_store_api_moved_to_another_host_by_a_reload_is_not_held_by_the_old_hosts_retry_after(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """Order 100's first GET gets a 429 that asks for 60 s. A reload moves ``bc_store`` to another server (a
    second sandbox, on another port) whose quota nobody used: order 101's GETs go there at once, not after the
    old server's 60 s, and the old server gets no GET more. Before, with ``max_rate`` unchanged, the limiter
    and its hold were kept, and order 101's GETs waited for the old server's 60 s. (Another path or credentials on the same host keep
    the wait, as the test above shows for another max_rate.)"""
    serve = ServeProcess(tmp_path, source_sandbox.url)
    text = serve.config.read_text()
    assert FIXTURE_RETRY in text and STORE in text
    text = text.replace(FIXTURE_RETRY, FIXTURE_RETRY.replace("retry_after_cap: 2s", "retry_after_cap: 60s"))
    lanes = "      connection: bc_store\n"
    text = text.replace(lanes, lanes + "      concurrency: 4\n")
    serve.config.write_text(text)
    source_sandbox.set_source_faults("retry-after=60,schedule=429")
    with Sandbox(source_documents=SOURCE_DOCUMENTS, source_token=BC_API_TOKEN) as other:
        serve.start()
        try:
            with httpx.Client(timeout=10) as client:
                _post(serve, client, 100)
                serve.wait_until(lambda: source_sandbox.source_requests() != [], what="order 100's 429")
                assert source_sandbox.source_requests()[0]["status"] == 429
                serve.config.write_text(text.replace(STORE, STORE.replace("${SANDBOX_URL}", other.url)))
                _hangup(serve, "connections.bc_store: base_url", DELIVERY_TOOK)
                sent_there = len(source_sandbox.source_requests())
                _post(serve, client, 101)
                # Well within the old server's 60 s: a deadline, not a measure. (Order 101 is delivered after
                # order 100, whose own retry waits out the 429 it got: its source's events go in order.)
                serve.wait_until(
                    lambda: len(other.source_requests()) == 3, timeout=30, what="order 101's GETs there"
                )
                assert len(source_sandbox.source_requests()) == sent_there, source_sandbox.source_requests()
        finally:
            serve.kill()
    fetched = sorted(str(r["path"]).split("/orders/", 1)[1] for r in other.source_requests())
    assert fetched == ["101", "101/products", "101/shipments"], fetched
    assert {r["status"] for r in other.source_requests()} <= {200, 204}, other.source_requests()
