"""``kill -HUP`` of a live ``shipmap serve`` applies the connection a source's ``enrich`` fetches over: a store
API key rotated in the env file goes with the next skinny webhook's GETs, and a moved ``base_url`` takes the
webhooks its open breaker parked to the new endpoint, without a restart."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
from shipmap.connectors import Sandbox
from shipmap.connectors._store._journal import open_readonly

from .harness import (
    BC_API_TOKEN,
    BC_HEADERS,
    SOURCE_DOCUMENTS,
    WEBHOOKS,
    ServeProcess,
    on_postgres,
    retries_reach_the_breaker,
)
from .rejected_support import shipmap
from .test_serve_reload_moves import OldEndpoint

STORE = "    base_url: ${SANDBOX_URL}/_source/bigcommerce/stores/abc123\n"
KEY = "      api_key: ${BC_API_TOKEN}\n"
ROTATED = "bc-api-token-rotated-2"
NOT_APPLIED = "but a reload does not apply it"
SLOW = 5  # seconds each of the first webhook's GETs takes: in flight across the reload
PRODUCTS = "        products: /v2/orders/{payload.data.id}/products\n"
SHIPMENTS = "        shipments: /v2/orders/{payload.data.id}/shipments\n"
OPENED = "connection bc_store: circuit breaker open after"


def _post(serve: ServeProcess, client: httpx.Client, order: int) -> None:
    body = (WEBHOOKS / f"bigcommerce_order_created_{order}.json").read_bytes()
    answer = serve.post(client, "bc", body, BC_HEADERS)
    assert answer.json()["status"] == "accepted", answer.text


def _reload(serve: ServeProcess, change: str) -> None:
    """SIGHUP, then wait until the reload named ``change`` and delivery took the new connections (the
    webhooks posted after it are fetched with them)."""
    assert serve.process is not None
    serve.process.send_signal(signal.SIGHUP)
    serve.wait_until(
        lambda: any("reloaded " in line and line.rstrip().endswith(change) for line in serve.errors)
        and any("the last reload's mappings, connections and delivery settings in use" in line
                for line in serve.errors),
        timeout=30,
        what=f"the reload's log line ({change}) and delivery taking it",
    )  # fmt: skip


def _order_101_fetched_whole(after: list[dict[str, Any]]) -> None:
    """Order 101's three GETs after the reload, each answered (none refused with the old key or at a dead
    endpoint)."""
    assert sorted(r["path"].rsplit("/101", 1)[1] for r in after) == ["", "/products", "/shipments"], after
    assert {r["status"] for r in after} == {200, 204}, after


def _orders(sandbox: Sandbox) -> list[str]:
    return sorted(str(r.body["id"]) for r in sandbox.requests(endpoint="fenix.orders"))


def test_a_store_api_key_rotated_in_the_env_file_goes_with_the_next_get_after_a_reload(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    serve = ServeProcess(tmp_path, source_sandbox.url)
    text = serve.config.read_text()
    assert KEY in text and "env_file: false\n" in text
    serve.config.write_text(
        text.replace(KEY, "      api_key: ${BC_STORE_KEY}\n").replace(
            "env_file: false\n", "env_file: store.env\n"
        )
    )
    env_file = tmp_path / "store.env"
    env_file.write_text(f"BC_STORE_KEY={BC_API_TOKEN}\n")
    serve.start()
    try:
        with httpx.Client(timeout=10) as client:
            _post(serve, client, 100)
            serve.wait_until(lambda: _orders(source_sandbox) == ["100"], what="order 100")
            # The store rotates the key: the old one is refused from now on.
            source_sandbox.set_source_token(ROTATED)
            env_file.write_text(f"BC_STORE_KEY={ROTATED}\n")
            _reload(serve, "connections.bc_store: auth.api_key")
            before = len(source_sandbox.source_requests())
            _post(serve, client, 101)
            serve.wait_until(lambda: _orders(source_sandbox) == ["100", "101"], what="order 101")
        assert serve.terminate() == 0
    finally:
        serve.kill()
    # Its first GET carried the new key: none was refused (before, the first went with the old key, got a 401,
    # and only the auth's read of the env file after it found the new one).
    _order_101_fetched_whole(source_sandbox.source_requests()[before:])
    assert _orders(source_sandbox) == ["100", "101"]  # each delivered once
    log = "".join(serve.errors + serve.output)
    assert NOT_APPLIED not in log and ROTATED not in log and BC_API_TOKEN not in log


def test_a_moved_store_api_takes_the_webhooks_its_open_breaker_parked_after_a_reload(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    _moved_store_api(source_sandbox, ServeProcess(tmp_path, source_sandbox.url))


def test_on_postgresql_a_moved_store_api_starts_with_the_closed_breaker_of_its_new_base_url(
    source_sandbox: Sandbox, tmp_path: Path, postgres_url: str
) -> None:
    """The breaker is the journal's shared row of the connection at its ``base_url``: after the move, the
    new endpoint's row (closed), not the old one's, which stays open for any process still fetching there."""
    serve = ServeProcess(tmp_path, source_sandbox.url)
    serve.config.write_text(on_postgres(serve.config.read_text(), postgres_url))
    _moved_store_api(source_sandbox, serve)
    with psycopg.connect(postgres_url) as db:
        rows = dict(db.execute("SELECT name, phase FROM connection_state WHERE name LIKE 'enrichment %'"))
    assert rows == {
        "enrichment bc_store http://127.0.0.1:9/stores/abc123": "open",
        f"enrichment bc_store {source_sandbox.url}/_source/bigcommerce/stores/abc123": "closed",
    }, rows


def _moved_store_api(source_sandbox: Sandbox, serve: ServeProcess) -> None:
    """``serve`` started with its store API at a port nobody listens on: the webhook's GETs fail until its
    breaker opens and parks it; moved back to the sandbox by a reload, it and the next are delivered."""
    retries_reach_the_breaker(serve.config)  # 5 failed GETs open the breaker: the webhook is parked
    text = serve.config.read_text()
    assert STORE in text
    serve.config.write_text(text.replace(STORE, "    base_url: http://127.0.0.1:9/stores/abc123\n"))
    serve.start()
    try:
        with httpx.Client(timeout=10) as client:
            _post(serve, client, 100)
            serve.wait_until(
                lambda: any(
                    "connection bc_store: circuit breaker open after" in line for line in serve.errors
                ),
                what="the source API's breaker open",
            )
            assert source_sandbox.source_requests() == []
            serve.config.write_text(text)
            _reload(serve, "connections.bc_store: base_url")
            serve.wait_until(
                lambda: _orders(source_sandbox) == ["100"], what="order 100 from the new endpoint"
            )
            _post(serve, client, 101)
            serve.wait_until(lambda: _orders(source_sandbox) == ["100", "101"], what="order 101")
        assert serve.terminate() == 0
    finally:
        serve.kill()
    fetched = source_sandbox.source_requests()
    assert len(fetched) == 6 and {r["status"] for r in fetched} == {200, 204}, fetched
    assert _orders(source_sandbox) == ["100", "101"]
    assert not any(NOT_APPLIED in line for line in serve.errors), serve.errors
    dead = json.dumps([line for line in serve.errors if "rejected input" in line])
    assert dead == "[]", dead


def test_a_get_in_flight_to_the_old_store_api_at_the_reload_goes_no_more_there_and_its_webhook_follows(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """The reload moves the store API while one of the webhook's GETs is held open by the old endpoint. That
    GET ends on the old client, and its 503 then neither retries there nor counts towards the new endpoint's
    breaker: the webhook is fetched again at once from the new one, and delivered once."""
    _held_across_the_move(source_sandbox, tmp_path)


def test_a_get_in_flight_at_the_reload_fetches_its_webhook_again_at_once_though_the_others_found_the_old_breaker_open(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """The webhook's second GET (products) is the one held at the old endpoint; the first (order) and the third
    each got a 503 there, which opened the old breaker (``failures: 1``), and so gave up "later" before the
    reload. The held GET's "now, with the reload's settings" outranks their "later": the webhook is not
    parked for the old breaker's cooldown (as it was when the order GET's "later", first in declaration
    order, was the reason given)."""
    _held_across_the_move(source_sandbox, tmp_path, held="/v2/orders/100/products ", breaker="{failures: 1}")


def _held_across_the_move(
    source_sandbox: Sandbox, tmp_path: Path, held: str = "", breaker: str | None = None
) -> None:
    """Hold the webhook's first GET to reach the old endpoint whose request line holds ``held``; with the
    ``breaker`` given (on the store connection), the reload waits for the other two GETs' 503s to open the old
    breaker and their clients to hang up (each gave up there at once)."""
    serve = ServeProcess(tmp_path, source_sandbox.url)
    retries_reach_the_breaker(serve.config)
    # The held GET must outlast the reload, however slow a loaded machine makes it: the fixture's 10 s timeout
    # could end it first, and its timeout then charges the old endpoint's breaker, as it should.
    settings = "    timeout: 120s\n" + (f"    breaker: {breaker}\n" if breaker is not None else "")
    text = serve.config.read_text().replace(STORE, STORE + settings)
    with OldEndpoint() as old:
        serve.config.write_text(text.replace(STORE, f"    base_url: {old.url}/stores/abc123\n"))
        serve.start()
        try:
            with httpx.Client(timeout=10) as client:
                old.hold(held)
                _post(serve, client, 100)
                assert old.held.wait(30), "the old endpoint got no GET"
                if breaker is not None:
                    serve.wait_until(
                        lambda: old.hung_up == 2
                        and any("connection bc_store: circuit breaker open after" in line for line in serve.errors),
                        what="the other GETs' 503s, and the old breaker open",
                    )  # fmt: skip
                serve.config.write_text(text)
                _reload(serve, "connections.bc_store: base_url")
                reloaded_at = len(serve.errors)
                sent_there = old.requests
                old.release()
                serve.wait_until(
                    lambda: _orders(source_sandbox) == ["100"], what="order 100 from the new endpoint"
                )
            assert serve.terminate() == 0
        finally:
            serve.kill()
    assert old.requests == sent_there  # nothing more to the old endpoint once the held GET ended
    after = "".join(serve.errors[reloaded_at:])
    assert "circuit breaker open" not in after and "rejected input" not in after, after
    assert "its settings were replaced by a reload during the GET" in after, after
    fetched = source_sandbox.source_requests()
    assert len(fetched) == 3 and {r["status"] for r in fetched} == {200}, fetched
    assert _orders(source_sandbox) == ["100"]


def test_a_get_in_flight_when_a_reload_changes_only_the_breaker_charges_the_breaker_in_force(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """The store API holds the webhook's one GET open while a reload lowers ``bc_store``'s breaker from 20
    failures to 1 (its endpoint and key stay). The 503 it then answers speaks of the same API: it charges the
    breaker in force, which opens and parks the webhook (before, it charged the old breaker, whose 4 attempts
    ended in a rejected input)."""
    serve = ServeProcess(tmp_path, source_sandbox.url)
    one_get = serve.config.read_text().replace(PRODUCTS, "").replace(SHIPMENTS, "")
    assert one_get.count("/v2/orders/") == 1, one_get
    with OldEndpoint() as store:
        at_store = f"    base_url: {store.url}/stores/abc123\n    timeout: 120s\n"  # the held GET outlasts the reload
        serve.config.write_text(one_get.replace(STORE, at_store + "    breaker: {failures: 20}\n"))
        serve.start()
        try:
            with httpx.Client(timeout=10) as client:
                store.hold()
                _post(serve, client, 100)
                assert store.held.wait(30), "the store API got no GET"
                serve.config.write_text(one_get.replace(STORE, at_store + "    breaker: {failures: 1}\n"))
                _reload(serve, "connections.bc_store: breaker")
                store.release()
                serve.wait_until(
                    lambda: any(OPENED in line or "rejected input" in line for line in serve.errors),
                    what="the breaker open, or the webhook rejected",
                )
            assert serve.terminate() == 0
        finally:
            serve.kill()
    log = "".join(serve.errors)
    assert "rejected input" not in log, log
    assert f"{OPENED} GET /v2/orders/100: HTTP 503 Service Unavailable" in log, log
    assert _orders(source_sandbox) == []


def test_a_fetch_path_fixed_in_the_enrich_section_applies_to_the_next_webhook_and_to_replay_rejected(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """The source's ``enrich`` fetches its products from a wrong path (the store API's 404): the webhook is a
    rejected input. The path fixed in the file and SIGHUP: the next webhook is fetched with the fixed section
    and delivered complete, once, and ``replay --rejected`` brings the earlier one back, fetched with it too."""
    serve = ServeProcess(tmp_path, source_sandbox.url)
    text = serve.config.read_text()
    assert PRODUCTS in text
    serve.config.write_text(text.replace(PRODUCTS, PRODUCTS.replace("/products", "/product")))
    serve.start()
    try:
        with httpx.Client(timeout=10) as client:
            _post(serve, client, 100)
            serve.wait_until(lambda: _rejected(tmp_path) == 1, what="order 100's webhook rejected")
            serve.config.write_text(text)
            assert serve.process is not None
            serve.process.send_signal(signal.SIGHUP)
            serve.wait_until(
                lambda: any(line.rstrip().endswith("reloaded " + str(serve.config) + ": bc: enrich.fetch")
                            for line in serve.errors)
                and any("the last reload's enrich sections in use" in line for line in serve.errors),
                timeout=30,
                what="the reload and delivery taking the enrich section",
            )  # fmt: skip
            _post(serve, client, 101)
            serve.wait_until(lambda: _orders(source_sandbox) == ["101"], what="order 101")
            replayed = shipmap(tmp_path, source_sandbox, "replay", str(serve.config), "--rejected")
            assert replayed.returncode == 0, replayed.stdout + replayed.stderr
            serve.wait_until(lambda: _orders(source_sandbox) == ["100", "101"], what="order 100 replayed")
        assert serve.terminate() == 0
    finally:
        serve.kill()
    orders = {r.body["id"]: r.body for r in source_sandbox.requests(endpoint="fenix.orders")}
    for order in ("100", "101"):  # complete: with the products the fixed path fetched
        assert [item["sku"] for item in orders[order]["line_items"]] == ["SOCK-TR-M", "SHELL-PK-L"], orders
    assert _orders(source_sandbox) == ["100", "101"]  # each delivered once
    assert _rejected(tmp_path) == 0
    fetched = [r["path"].rsplit("/v2/orders/", 1)[1] for r in source_sandbox.source_requests()]
    assert sorted(p for p in fetched if p.startswith("101")) == ["101", "101/products", "101/shipments"]
    assert not any(NOT_APPLIED in line or "restart" in line for line in serve.errors), serve.errors


def _rejected(work: Path) -> int:
    journal = open_readonly(work / ".shipmap" / "journal.db")
    if journal is None:  # the delivery side has not made the journal's tables yet
        return 0
    with journal:
        return journal.rejected_count()


def test_a_webhook_whose_fetches_are_in_flight_at_the_reload_finishes_with_the_section_it_started_with(
    tmp_path: Path,
) -> None:
    """Order 100's GETs are slow (the store API's fault plan) and in flight when the reload fixes the products
    path: they end with the section they started with (its 404: a rejected input), and order 101, fetched
    after, with the fixed one."""
    faults = f"schedule=slow:{SLOW},slow:{SLOW},slow:{SLOW}"
    with Sandbox(
        source_documents=SOURCE_DOCUMENTS, source_token=BC_API_TOKEN, source_faults=faults
    ) as sandbox:
        serve = ServeProcess(tmp_path, sandbox.url)
        text = serve.config.read_text()
        serve.config.write_text(text.replace(PRODUCTS, PRODUCTS.replace("/products", "/product")))
        serve.start()
        try:
            with httpx.Client(timeout=10) as client:
                _post(serve, client, 100)
                serve.wait_until(
                    lambda: (
                        'shipmap_enrich_fetching{source="bc"} 1.0' in client.get(f"{serve.url}/metrics").text
                    ),
                    what="order 100's GETs in flight",
                )
                serve.config.write_text(text)
                assert serve.process is not None
                serve.process.send_signal(signal.SIGHUP)
                serve.wait_until(
                    lambda: any("the last reload's enrich sections in use" in line for line in serve.errors),
                    timeout=30,
                    what="delivery taking the enrich section",
                )
                _post(serve, client, 101)
                serve.wait_until(lambda: _orders(sandbox) == ["101"], what="order 101")
                serve.wait_until(lambda: _rejected(tmp_path) == 1, what="order 100's webhook rejected")
            assert serve.terminate() == 0
        finally:
            serve.kill()
        paths = sorted(r["path"].rsplit("/v2/orders/", 1)[1] for r in sandbox.source_requests())
    assert paths == ["100", "100/product", "100/shipments", "101", "101/products", "101/shipments"], paths
    assert _orders(sandbox) == ["101"]
    rejected = [line for line in serve.errors if "rejected input" in line]
    assert len(rejected) == 1 and "GET /v2/orders/100/product failed: HTTP 404" in rejected[0], rejected


STORE_2 = (
    "  bc_store_2:\n    api: generic\n    base_url: ${SANDBOX_URL}/_source/bigcommerce/stores/abc123\n"
    "    auth:\n      scheme: api_key\n      header: X-Auth-Token\n      api_key: ${BC_STORE_2_KEY}\n"
)
LET_GO = "source API bc_store: no enrich fetches over it any more; its client closed"


def test_a_source_switched_by_a_reload_to_a_store_connection_new_to_enrichment_fetches_over_it(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    _switched_to_a_second_store_connection(source_sandbox, ServeProcess(tmp_path, source_sandbox.url))


def test_on_postgresql_a_store_connection_new_to_enrichment_gets_its_shared_breaker_row_at_the_reload(
    source_sandbox: Sandbox, tmp_path: Path, postgres_url: str
) -> None:
    """The connection no enrich fetched over at start gets its shared enrichment breaker row (at its base_url)
    in the journal when a reload's enrich first fetches over it, as those set up at start do."""
    serve = ServeProcess(tmp_path, source_sandbox.url)
    serve.config.write_text(on_postgres(serve.config.read_text(), postgres_url))
    _switched_to_a_second_store_connection(source_sandbox, serve)
    store = f"{source_sandbox.url}/_source/bigcommerce/stores/abc123"
    with psycopg.connect(postgres_url) as db:
        rows = dict(db.execute("SELECT name, phase FROM connection_state WHERE name LIKE 'enrichment %'"))
    assert rows == {
        f"enrichment bc_store {store}": "closed",
        f"enrichment bc_store_2 {store}": "closed",
    }, rows


def _switched_to_a_second_store_connection(source_sandbox: Sandbox, serve: ServeProcess) -> None:
    """``bc`` enriches over ``bc_store`` at start; ``bc_store_2`` (the same store, with the key it rotates to)
    is configured, and no enrich fetches over it. The store rotates its key and a reload switches ``bc`` to
    ``bc_store_2``: the next webhook's GETs go over it (none refused: ``bc_store``'s key would be), it is
    delivered once, and ``bc_store``'s client is closed."""
    text = serve.config.read_text()
    assert "  bc_store:\n" in text and "env_file: false\n" in text
    text = text.replace("  bc_store:\n", STORE_2 + "  bc_store:\n").replace(
        "env_file: false\n", "env_file: store.env\n"
    )
    serve.config.write_text(text)
    (serve.config.parent / "store.env").write_text(f"BC_STORE_2_KEY={ROTATED}\n")
    serve.start()
    try:
        with httpx.Client(timeout=10) as client:
            _post(serve, client, 100)
            serve.wait_until(lambda: _orders(source_sandbox) == ["100"], what="order 100")
            source_sandbox.set_source_token(ROTATED)
            switched = text.replace("connection: bc_store\n", "connection: bc_store_2\n")
            assert switched != text
            serve.config.write_text(switched)
            assert serve.process is not None
            serve.process.send_signal(signal.SIGHUP)
            serve.wait_until(
                lambda: any(line.rstrip().endswith(f"reloaded {serve.config}: bc: enrich.connection")
                            for line in serve.errors)
                and any(LET_GO in line for line in serve.errors),
                timeout=30,
                what="the reload, and bc_store's client closed",
            )  # fmt: skip
            before = len(source_sandbox.source_requests())
            _post(serve, client, 101)
            serve.wait_until(lambda: _orders(source_sandbox) == ["100", "101"], what="order 101")
        assert serve.terminate() == 0
    finally:
        serve.kill()
    _order_101_fetched_whole(source_sandbox.source_requests()[before:])
    assert _orders(source_sandbox) == ["100", "101"]  # each delivered once
    log = "".join(serve.errors + serve.output)
    assert "reload refused" not in log and NOT_APPLIED not in log and ROTATED not in log, serve.errors
    assert sum(LET_GO in line for line in serve.errors) == 1, serve.errors
    dead = json.dumps([line for line in serve.errors if "rejected input" in line])
    assert dead == "[]", dead


BC_STORE = (
    "  bc_store:\n    api: generic\n"
    + STORE
    + "    auth:\n      scheme: api_key\n      header: X-Auth-Token\n"
    + KEY
)
ENRICH = (
    "    enrich:\n      connection: bc_store\n      topics: store/order/created\n      fetch:\n"
    "        order: /v2/orders/{payload.data.id}\n" + PRODUCTS + SHIPMENTS
)


def test_a_reload_that_adds_a_store_connection_and_an_enrich_over_it_fetches_over_it_at_once(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    _added_with_the_enrich_over_it(source_sandbox, ServeProcess(tmp_path, source_sandbox.url))


def test_on_postgresql_a_store_connection_added_with_the_enrich_over_it_has_its_shared_row_before_its_first_get(
    source_sandbox: Sandbox, tmp_path: Path, postgres_url: str
) -> None:
    """The connection the reload adds gets its shared enrichment breaker row (at its base_url) in the journal
    once its enrich is set up, before the webhook that first fetches over it is posted."""
    serve = ServeProcess(tmp_path, source_sandbox.url)
    serve.config.write_text(on_postgres(serve.config.read_text(), postgres_url))
    store = f"enrichment bc_store {source_sandbox.url}/_source/bigcommerce/stores/abc123"

    def rows() -> dict[str, str]:
        with psycopg.connect(postgres_url) as db:
            found = db.execute("SELECT name, phase FROM connection_state WHERE name LIKE 'enrichment %'")
            return dict(found)

    def row_made_before_the_first_get() -> None:
        serve.wait_until(lambda: store in rows(), timeout=30, what="bc_store's shared breaker row")
        assert source_sandbox.source_requests() == []

    _added_with_the_enrich_over_it(source_sandbox, serve, row_made_before_the_first_get)
    assert rows() == {store: "closed"}


def _added_with_the_enrich_over_it(
    source_sandbox: Sandbox, serve: ServeProcess, before_the_first_get: Callable[[], None] = lambda: None
) -> None:
    """``bc`` starts as a skinny webhook source with no enrich, and no store connection is configured. One
    write adds both ``bc_store`` and ``bc``'s enrich over it, and one SIGHUP applies both (as a start would):
    the next webhook's GETs go over the new connection with its key, and it is delivered."""
    text = serve.config.read_text()
    assert BC_STORE in text and ENRICH in text
    serve.config.write_text(text.replace(BC_STORE, "").replace(ENRICH, ""))
    serve.start()
    try:
        with httpx.Client(timeout=10) as client:
            serve.config.write_text(text)
            assert serve.process is not None
            serve.process.send_signal(signal.SIGHUP)
            serve.wait_until(
                lambda: any(line.rstrip().endswith(f"reloaded {serve.config}: bc: enrich; connections.bc_store: added")
                            for line in serve.errors)
                and any("the last reload's enrich sections in use" in line for line in serve.errors),
                timeout=30,
                what="the reload, and its enrich section in use",
            )  # fmt: skip
            before_the_first_get()
            _post(serve, client, 101)
            serve.wait_until(lambda: _orders(source_sandbox) == ["101"], what="order 101")
        assert serve.terminate() == 0
    finally:
        serve.kill()
    _order_101_fetched_whole(source_sandbox.source_requests())
    assert _orders(source_sandbox) == ["101"]  # delivered once
    log = "".join(serve.errors + serve.output)
    assert "reload refused" not in log and NOT_APPLIED not in log and BC_API_TOKEN not in log, serve.errors
    dead = json.dumps([line for line in serve.errors if "rejected input" in line])
    assert dead == "[]", dead
