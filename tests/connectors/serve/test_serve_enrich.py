"""BigCommerce skinny webhooks, enriched from the sandbox's fake store API, mapped and delivered."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
from shipmap.connectors import Sandbox

from .harness import BC_API_TOKEN, BC_HEADERS, SERVE_FIXTURES, WEBHOOKS, ServeProcess, bc_webhook, environment


def test_bigcommerce_skinny_webhooks_are_enriched_and_delivered(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    serve = ServeProcess(tmp_path, source_sandbox.url).start()
    try:
        with httpx.Client(timeout=10) as client:
            for order in (100, 101):
                body = (WEBHOOKS / f"bigcommerce_order_created_{order}.json").read_bytes()
                answer = serve.post(client, "bc", body, BC_HEADERS)
                assert answer.json()["status"] == "accepted", answer.text
            # An order the store API does not have: 404 is final; the event is recorded with the reason.
            missing = bc_webhook(999, "missing-order")
            assert serve.post(client, "bc", json.dumps(missing).encode(), BC_HEADERS).status_code == 200
            serve.wait_until(
                lambda: len(source_sandbox.requests(endpoint="fenix.orders")) >= 2, what="2 orders"
            )
        assert serve.terminate() == 0
    finally:
        serve.kill()
    orders = {r.body["id"]: r.body for r in source_sandbox.requests(endpoint="fenix.orders")}
    assert set(orders) == {"100", "101"}
    assert orders["100"]["fulfillment_status"] == "FULFILLED"  # from /shipments
    assert orders["101"]["fulfillment_status"] == "NOT_FILLED"  # /shipments answered 204
    assert [item["sku"] for item in orders["100"]["line_items"]] == ["SOCK-TR-M", "SHELL-PK-L"]  # /products
    assert orders["100"]["customer"]["email"] == "jane@example.com"  # /orders/100
    # The responses are kept with the webhook in the inbox (a restart maps the same data) and, as part of
    # the source document, in the journal (a replay maps the same data).
    with sqlite3.connect(tmp_path / ".shipmap" / "inbox.db") as inbox:
        documents = json.loads(
            inbox.execute("SELECT documents FROM inbox WHERE webhook_id LIKE '6f1b%'").fetchone()[0]
        )
    assert documents["order"]["id"] == 100 and len(documents["products"]) == 2
    dead = subprocess.run(
        [sys.executable, "-c", "from shipmap.connectors._cli import entry; entry()", "dead-letters", str(serve.config)],
        capture_output=True, text=True, env=environment(source_sandbox.url), check=False,
    )  # fmt: skip
    assert (
        "bc#3" in dead.stdout and "enrichment failed: GET /v2/orders/999 failed: HTTP 404" in dead.stdout
    ), dead.stdout
    # What to do next, on stderr: no dead letter to replay, one webhook to fetch again.
    assert dead.stderr == (
        f"once the cause is fixed, `shipmap replay {serve.config} --rejected` fetches the rejected webhooks'"
        f" documents again; `shipmap dead-letters {serve.config} --resolve KEY` closes one without sending\n"
    ), dead.stderr
    # Said once in the log, as the rejected input it is (the feed said it too: two warnings per webhook).
    said = [line for line in serve.errors if "GET /v2/orders/999 failed: HTTP 404" in line]
    assert len(said) == 1 and "WARNING" in said[0] and "bc#3: rejected input record: " in said[0], said


def test_shipmap_run_enriches_skinny_events_from_a_file(source_sandbox: Sandbox, tmp_path: Path) -> None:
    serve = ServeProcess(tmp_path, source_sandbox.url)  # only for its copy of the config files
    events = tmp_path / "skinny.ndjson"
    lines = []
    for order in (100, 101):
        payload = json.loads((WEBHOOKS / f"bigcommerce_order_created_{order}.json").read_text())
        lines.append({"source": "bc", "topic": "store/order/created", "payload": payload})
    lines.append({"source": "bc", "topic": "store/order/created", "payload": {"data": {"id": 999}}})
    events.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = subprocess.run(
        [sys.executable, "-c", "from shipmap.connectors._cli import entry; entry()",
         "run", str(serve.config), "--input", str(events), "--no-progress"],
        capture_output=True, text=True, env=environment(source_sandbox.url), cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 8, result.stderr  # the event whose order the store does not have is rejected
    assert (
        "skinny.ndjson:3: rejected input record: enrichment failed: GET /v2/orders/999 failed: HTTP 404"
        in result.stderr
    )
    orders = {r.body["id"]: r.body for r in source_sandbox.requests(endpoint="fenix.orders")}
    assert set(orders) == {"100", "101"}
    assert orders["100"]["item_quantity"] == 3  # from the fetched products


def test_replay_maps_the_stored_documents_and_refetch_fetches_them_again(tmp_path: Path) -> None:
    documents = tmp_path / "store_api"
    shutil.copytree(SERVE_FIXTURES / "source_api", documents)
    order_file = documents / "bigcommerce" / "stores" / "abc123" / "v2" / "orders" / "100.json"
    good = order_file.read_text()
    order_file.write_text(
        good.replace('"email": "jane@example.com"', '"email": null')
    )  # the store's data is wrong
    work = tmp_path / "work"
    work.mkdir()
    with Sandbox(source_documents=documents, source_token=BC_API_TOKEN) as sandbox:
        serve = ServeProcess(work, sandbox.url)  # only for its copy of the config files
        payload = bc_webhook(100)
        events = work / "skinny.ndjson"
        events.write_text(
            json.dumps({"source": "bc", "topic": "store/order/created", "payload": payload}) + "\n"
        )

        def shipmap(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-c", "from shipmap.connectors._cli import entry; entry()", *args, "--no-progress"],
                capture_output=True, text=True, env=environment(sandbox.url), cwd=work, check=False,
            )  # fmt: skip

        first = shipmap("run", str(serve.config), "--input", str(events))
        assert first.returncode == 8 and "customer.email" in first.stderr, first.stderr  # dead-lettered
        order_file.write_text(good)  # fixed in the store
        stored = shipmap("replay", str(serve.config))
        assert stored.returncode == 8  # a replay maps the documents stored with the event: still wrong
        assert sandbox.requests(endpoint="fenix.orders") == []
        fresh = shipmap("replay", str(serve.config), "--refetch")
        assert fresh.returncode == 0, fresh.stderr
        (order,) = sandbox.requests(endpoint="fenix.orders")
    assert order.body["customer"]["email"] == "jane@example.com"


def test_the_enriched_event_from_files_in_shipmap_test() -> None:
    """The responses the fake store API serves, given to `shipmap test` as the event's named documents."""
    result = subprocess.run(
        [sys.executable, "-c", "from shipmap.connectors._cli import entry; entry()",
         "test", str(SERVE_FIXTURES / "bigcommerce_order.cases.yaml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed, 0 failed" in result.stdout


READY = Path(__file__).resolve().parents[3] / "mappings" / "_fixtures"


def test_the_ready_bigcommerce_mappings_behind_serve_as_ready_mappings_md_configures_them(
    tmp_path: Path,
) -> None:
    """docs/ready-mappings.md's `enrich` for bigcommerce/order and bigcommerce/shipment, run as written: one
    skinny webhook of order 218 gives the order, with the shipping address its own response holds, and a
    fulfillment and a DG execution per shipment. serve.md's fetch list (no shipping_addresses) dead-letters
    every such order; the page said to fetch the documents by hand until serve did it."""
    page = (Path(__file__).resolve().parents[3] / "docs" / "ready-mappings.md").read_text(encoding="utf-8")
    section = page.split("## bigcommerce/order and bigcommerce/shipment", 1)[1]
    documented = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    orders = tmp_path / "api" / "bigcommerce" / "stores" / "abc123" / "v2" / "orders"
    (orders / "218").mkdir(parents=True)
    shutil.copy(READY / "real" / "bigcommerce" / "order_get.json", orders / "218.json")
    for name in ("products", "shipping_addresses", "shipments"):
        shutil.copy(
            READY / "derived" / "bigcommerce" / f"order_218_{name}.json", orders / "218" / f"{name}.json"
        )
    config = tmp_path / "shipmap.yaml"
    config.write_text(
        "version: 1\nenv_file: false\nconnections:\n"
        "  fenix:\n    api: fenix\n    base_url: ${SANDBOX_URL}\n    auth: {scheme: fenix_session, username:"
        " '${FENIX_USERNAME}', password: '${FENIX_PASSWORD}', api_key: '${FENIX_API_KEY}', store_name: demo-store}\n"
        "  dg:\n    api: dg\n    base_url: ${SANDBOX_URL}\n"
        "    auth: {scheme: basic, key: '${DG_API_KEY}', secret: '${DG_API_SECRET}'}\n"
        "  bc_store:\n    api: generic\n    base_url: ${SANDBOX_URL}/_source/bigcommerce/stores/abc123\n"
        "    auth: {scheme: api_key, header: X-Auth-Token, api_key: '${BC_API_TOKEN}'}\n"
        "events: {topic: topic, body: payload}\n"
        f"{documented}"
        "journal:\n  path: .shipmap/journal.db\n",
        encoding="utf-8",
    )
    with Sandbox(source_documents=tmp_path / "api", source_token=BC_API_TOKEN) as sandbox:
        serve = ServeProcess(tmp_path, sandbox.url, config=config).start()
        try:
            with httpx.Client(timeout=10) as client:
                body = json.dumps({"scope": "store/order/created", "hash": "h-218", "data": {"id": 218}})
                answer = serve.post(client, "bc", body.encode(), BC_HEADERS)
                assert answer.json()["status"] == "accepted", answer.text
                serve.wait_until(
                    lambda: (
                        len(sandbox.requests(endpoint="dg.execution")) >= 2
                        and len(sandbox.requests(endpoint="fenix.fulfillment")) >= 2
                        and len(sandbox.requests(endpoint="fenix.orders")) >= 1
                    ),
                    what="the order, 2 fulfillments and 2 DG executions",
                )
            assert serve.terminate() == 0
        finally:
            serve.kill()
        (order,) = [r.body for r in sandbox.requests(endpoint="fenix.orders")]
        tracking = sorted(
            r.body["shipment_info"]["tracking_number"] for r in sandbox.requests(endpoint="fenix.fulfillment")
        )
    assert order["id"] == "218" and order["shipping_address"]["address1"] == "123 MainStreet", order
    assert order["shipping_info"]["title"] == "Fixed Shipping", order
    assert tracking == ["1Z999AA10123456784", "EJ958083578US"]
    assert "dead letter" not in "".join(serve.errors), serve.errors
