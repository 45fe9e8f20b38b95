"""The ready mappings in mappings/: they lint clean, their cases pass, and on the real payloads they produce
valid payloads with the values the sources hold (ids digit for digit, dates with offsets, exact money)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from shipmap.connectors._cli import main
from shipmap.engine import (
    PayloadValidationError,
    TransformError,
    load_mapping,
    packaged_mapping_names,
    resolve_mapping_path,
)

ROOT = Path(__file__).resolve().parent.parent.parent
MAPPINGS = ROOT / "mappings"
REAL = ROOT / "tests/fixtures/real"
DERIVED = ROOT / "tests/fixtures/derived"

READY = sorted(path for path in MAPPINGS.rglob("*.yaml") if not path.name.endswith(".cases.yaml"))
NAMES = [str(path.relative_to(MAPPINGS).with_suffix("")) for path in READY]


def real(name: str) -> Any:
    return json.loads((REAL / name).read_text(encoding="utf-8"))


def derived(name: str) -> Any:
    return json.loads((DERIVED / name).read_text(encoding="utf-8"))


def test_the_ready_mappings() -> None:
    assert NAMES == [
        "aftership/tracking",
        "bigcommerce/order",
        "bigcommerce/shipment",
        "easypost/tracker",
        "magento/order",
        "magento/order_cancelled",
        "magento/shipment",
        "shipstation/shipment",
        "shopify/fulfillment",
        "shopify/order",
        "shopify/order_cancelled",
        "shopify/out_of_stock",
        "shopify/return",
        "woocommerce/fulfillment",
        "woocommerce/order",
    ]


def test_the_public_list_names_each_ready_mapping_as_load_mapping_and_the_docs_do() -> None:
    """What a program embedding shipmap lists (a picker of ready mappings): the files, by the names
    load_mapping takes, each with its cases beside it, and the rows of docs/ready-mappings.md."""
    names = packaged_mapping_names()
    assert names == NAMES
    for name in names:
        path = resolve_mapping_path(name)
        assert path.resolve() == (MAPPINGS / f"{name}.yaml").resolve()
        assert path.with_name(f"{path.stem}.cases.yaml").is_file()
        assert load_mapping(name).name
    documented = (ROOT / "docs" / "ready-mappings.md").read_text(encoding="utf-8")
    table = documented.split("| mapping | takes | targets |")[1].split("\n\n")[0]  # the page's first table
    rows = [line.split("`")[1] for line in table.splitlines() if line.startswith("| `")]
    assert sorted(rows) == names


@pytest.mark.parametrize("name", NAMES)
def test_validate_reports_nothing(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--strict", name]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("ok ") and f"{name}.yaml" in out
    assert err == ""
    assert load_mapping(name).lint() == []


@pytest.mark.parametrize("name", NAMES)
def test_every_mapping_starts_with_its_header(name: str) -> None:
    text = (MAPPINGS / f"{name}.yaml").read_text(encoding="utf-8")
    header = text.split("shipmap: 1", 1)[0]
    assert header.startswith("# ")
    for word in ("Takes:", "Produces:", "Change before use:"):
        assert word in header, f"{name}: header lacks {word!r}"


@pytest.mark.parametrize("name", NAMES)
def test_every_case_passes(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    cases = yaml.safe_load((MAPPINGS / f"{name}.cases.yaml").read_text(encoding="utf-8"))["cases"]
    assert main(["test", name]) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines()[-1] == f"{len(cases)} passed, 0 failed"
    # Every mapping is tested on real payloads, not only on made-up ones.
    assert any("_fixtures/real/" in str(case.get("source", case.get("documents"))) for case in cases)


def case_documents() -> list[tuple[str, str, Any]]:
    """(mapping, case name, source) for every case that expects no error."""
    found = []
    for name in NAMES:
        cases_file = MAPPINGS / f"{name}.cases.yaml"
        for case in yaml.safe_load(cases_file.read_text(encoding="utf-8"))["cases"]:
            if "error" in case:
                continue
            if "documents" in case:  # named documents: the event is {name: document}
                source = {
                    key: json.loads((cases_file.parent / value).read_text(encoding="utf-8"))
                    if isinstance(value, str)
                    else value
                    for key, value in case["documents"].items()
                }
            else:
                source = case["source"]
            if isinstance(source, str):
                source = json.loads((cases_file.parent / source).read_text(encoding="utf-8"))
            if "select" in case:
                import jmespath

                source = jmespath.search(case["select"], source)
            found.append((name, case["name"], source))
    return found


@pytest.mark.parametrize(("name", "case", "source"), case_documents(), ids=lambda value: str(value)[:40])
def test_every_payload_validates_against_its_kind(name: str, case: str, source: Any) -> None:
    # transform() validates each payload against its kind's schema and raises on the first problem.
    load_mapping(name).transform(source)


# ------------------------------------------------------------------------------------------------------------
# Concrete values from the real payloads


def test_woocommerce_order_reads_utc_twins_and_codes() -> None:
    order = load_mapping("woocommerce/order").transform(real("woocommerce/order_rest_get.json"))["order"]
    # date_created is 16:28:02 shop time; its _gmt twin is the same instant in UTC.
    assert order["created_at"] == "2017-03-22T19:28:02+00:00"
    assert order["shipping_address"]["country_code"] == "US"
    assert order["shipping_address"]["country"] == "United States"  # the code's name (ISO 3166)
    assert "province" not in order["shipping_address"]  # WooCommerce has the state's code only
    assert order["financial_details"]["total_price"] == {"value": 29.35, "currency": "USD"}
    assert [(line["sku"], line["quantity"]) for line in order["line_items"]] == [("", 2), ("Bar3", 1)]


def test_woocommerce_fulfillment_from_the_tracking_meta() -> None:
    mapping = load_mapping("woocommerce/fulfillment")
    assert mapping.transform(real("woocommerce/order_rest_get.json")) == {}
    payloads = mapping.transform(derived("woocommerce/order_completed_two_trackings.json"))
    assert sorted(payloads) == [
        "fulfillment[9400111899560000000000]",
        "fulfillment[EC123456789]",
        "shipment[9400111899560000000000]",
        "shipment[EC123456789]",
    ]
    assert payloads["fulfillment[9400111899560000000000]"]["shipment_info"]["tracking_company"] == "USPS"
    assert payloads["shipment[EC123456789]"]["inputs"]["shipment_data"]["carrier_code"] == "examplecourier"


def test_bigcommerce_shipments_fan_out_with_items_joined_from_products() -> None:
    event = derived("bigcommerce/order_218_event.json")
    payloads = load_mapping("bigcommerce/shipment").transform(event)
    assert sorted(payloads) == ["fulfillment[11]", "fulfillment[12]", "shipment[11]", "shipment[12]"]
    lines = payloads["fulfillment[11]"]["line_items"]
    assert [(line["sku"], line["title"], line["quantity"]) for line in lines] == [
        ("DUST1", "Dustpan & Brush", 1),
        ("BRUSH1", "Replacement Brush", 1),
    ]
    assert payloads["shipment[12]"]["inputs"]["shipment_data"]["carrier_code"] == "ups"
    order = load_mapping("bigcommerce/order").transform(event)["order"]
    assert order["item_quantity"] == 3  # the bundle's child is not a line
    assert order["total_weight"] == {"value": 3, "units": "oz"}
    assert (order["shipping_address"]["country"], order["shipping_address"]["country_code"]) == (
        "United States",
        "US",
    )


def test_dg_out_of_stock_and_return_without_a_shipment() -> None:
    out_of_stock = load_mapping("shopify/out_of_stock")
    assert (
        out_of_stock.transform(real("shopify/orders_cancelled_webhook.json")) == {}
    )  # the customer's cancel
    assert out_of_stock.transform(real("shopify/refunds_create_webhook.json")) == {}  # damaged, no restock
    alert = out_of_stock.transform(derived("shopify/refunds_create_out_of_stock.json"))["line_out_of_stock"]
    data = alert["inputs"]["shipment_data"]
    assert (data["tracking_number"], data["carrier_code"]) == ("NOT_SHIPPED", "none")
    assert data["items"] == [{"sku": "SKU2006-001", "quantity": 1}]
    returns = load_mapping("shopify/return")
    update = returns.transform(real("shopify/returns_approve_webhook.json"))["return_status"]
    assert update["external_id"] == "4783296544821-123134564567890-open"
    assert update["inputs"]["shipment_data"]["tracking_number"] == "NO_RETURN_TRACKING"
    assert returns.transform(real("shopify/refunds_create_webhook.json")) == {}


def test_shopify_rest_order() -> None:
    order = load_mapping("shopify/order").transform(real("shopify/order_rest_get_with_fulfillment.json"))[
        "order"
    ]
    assert order["id"] == "450789469"
    assert order["number"] == "#1001"
    assert order["status"] == "OPEN"
    assert order["created_at"] == "2008-01-10T11:00:00-05:00"
    assert order["item_quantity"] == 3
    assert [line["sku"] for line in order["line_items"]] == ["IPOD2008GREEN", "IPOD2008RED", "IPOD2008BLACK"]
    assert order["line_items"][0]["price"] == {"value": 199, "currency": "USD"}
    assert order["financial_details"]["total_tax"] == {"value": 11.94, "currency": "USD"}
    assert order["financial_details"]["total_price"] == {"value": 409.94, "currency": "USD"}
    assert order["customer"]["email"] == "bob.norman@hostmail.com"
    assert order["shipping_address"]["latitude"] == "45.41634"


def test_shopify_order_wrapped_and_bare_map_the_same() -> None:
    mapping = load_mapping("shopify/order")
    wrapped = real("shopify/order_rest_get_with_fulfillment.json")
    assert mapping.transform(wrapped) == mapping.transform(wrapped["order"])


def test_shopify_64_bit_ids_are_kept_as_sent() -> None:
    source = real("shopify/orders_cancelled_webhook.json")
    order = load_mapping("shopify/order").transform(source)["order"]
    # The published sample printed its ids as JavaScript numbers and lost the last digits on the way
    # (admin_graphql_api_id says ...508); shipmap keeps exactly what the JSON holds and guesses nothing.
    assert source["admin_graphql_api_id"].endswith("/820982911946154508")
    assert order["id"] == "820982911946154500"
    assert order["line_items"][0]["product_id"] == "788032119674292900"
    assert order["cancelled_at"] == "2021-12-31T19:00:00-05:00"
    assert order["status"] == "CANCELLED"


def test_shopify_cancel_and_partial_cancel() -> None:
    mapping = load_mapping("shopify/order_cancelled")
    assert mapping.transform(real("shopify/orders_cancelled_webhook.json")) == {
        "cancel": {
            "id": "820982911946154500",
            "status": "CANCELLED",
            "cancelled_at": "2021-12-31T19:00:00-05:00",
            "cancel_reason": "customer",
        }
    }
    partial = mapping.transform(derived("shopify/orders_updated_partial_cancel.json"))
    assert list(partial) == ["partial_cancel"]
    lines = {
        line["sku"]: (line["quantity"], line["cancelled_quantity"])
        for line in partial["partial_cancel"]["line_items"]
    }
    assert lines == {
        "SKU2006-001": (3, 1),
        "LENS-PROTECT-2YR": (1, 0),
        "CASE-LEATHER-PREM": (1, 1),
        "SKU2006-020": (1, 0),
        "SKU2006-035": (1, 0),
    }
    assert mapping.transform(real("shopify/order_rest_get_with_fulfillment.json")) == {}
    order = load_mapping("shopify/order").transform(derived("shopify/orders_updated_partial_cancel.json"))
    assert order["order"]["status"] == "PARTIALLY_CANCELLED"


def test_shopify_fulfillment_to_fenix_and_dg() -> None:
    payloads = load_mapping("shopify/fulfillment").transform(real("shopify/fulfillments_create_webhook.json"))
    fulfillment, shipment = payloads["fulfillment"], payloads["shipment"]
    assert fulfillment["id"] == "123456"
    assert fulfillment["order_id"] == "820982911946154500"
    assert fulfillment["shipment_info"]["tracking_number"] == "1z827wk74630"
    assert fulfillment["shipment_info"]["tracking_company"] == "UPS"
    assert fulfillment["updated_at"] == "2021-12-31T19:00:00-05:00"
    assert shipment["inputs"]["shipment_data"]["carrier_code"] == "ups"
    assert shipment["external_id"] == shipment["inputs"]["external_id"] == "820982911946154500-123456-pending"
    assert [item["sku"] for item in shipment["inputs"]["shipment_data"]["items"]] == [
        "SKU2006-001",
        "LENS-PROTECT-2YR",
        "CASE-LEATHER-PREM",
        "SKU2006-020",
        "SKU2006-035",
    ]


def test_shipstation_each_shipment_of_the_list() -> None:
    mapping = load_mapping("shipstation/shipment")
    listing = real("shipstation/shipments_list_ship_notify_resource.json")
    results = [mapping.transform(shipment) for shipment in listing["shipments"]]
    assert [r["fulfillment"]["id"] for r in results] == ["33974374", "33974373"]
    assert [r["fulfillment"]["order_id"] for r in results] == ["43945660", "43337328"]
    # "2014-10-03T06:51:33.6270000": no zone (read as US Pacific, summer time), seven digits cut to three.
    assert results[0]["fulfillment"]["created_at"] == "2014-10-03T06:51:33.627-07:00"
    assert results[0]["fulfillment"]["shipment_info"]["shipcost"] == {"value": 1.93, "currency": "USD"}
    assert results[0]["shipment"]["inputs"]["shipment_data"] == {
        "order_id": "43945660",
        "shipment_id": "33974374",
        "tracking_number": "9400111899561704681189",
        "carrier_code": "usps",
        "items": [{"sku": "SQ3785739", "quantity": 1}],
    }
    with pytest.raises(TransformError) as caught:
        mapping.transform(listing)  # the list itself is not a shipment
    assert caught.value.field == "fulfillment.id"


def test_aftership_real_tracking_without_an_order_fails_loudly() -> None:
    mapping = load_mapping("aftership/tracking")
    source = real("aftership/tracking_get_response.json")
    with pytest.raises(PayloadValidationError) as caught:
        mapping.transform(source)
    assert caught.value.target == "delivered"
    assert [problem.field for problem in caught.value.problems] == ["delivered.inputs.shipment_data.order_id"]
    unvalidated = mapping.transform(source, validate=False)
    assert list(unvalidated) == ["delivered"]
    assert unvalidated["delivered"]["inputs"]["shipment_data"]["carrier_code"] == "fedex"


def test_aftership_delivered_and_delayed() -> None:
    mapping = load_mapping("aftership/tracking")
    delivered = mapping.transform(derived("aftership/tracking_with_order.json"))
    assert sorted(delivered) == ["delivered", "fulfillment"]
    assert delivered["fulfillment"]["shipment_status"] == "DELIVERED"
    assert delivered["fulfillment"]["created_at"] == "2018-08-17T05:10:38+00:00"
    exception = mapping.transform(derived("aftership/webhook_exception.json"))
    assert sorted(exception) == ["delayed", "fulfillment"]
    assert exception["delayed"]["external_id"] == "5b7658cec7c33c0e007de3c5-Exception_004-delayed"
    assert exception["fulfillment"]["shipment_status"] == "SHIPMENT_EXCEPTION"
    assert "delayed" in mapping.transform(derived("aftership/webhook_in_transit_late.json"))
    assert "delayed" not in mapping.transform(derived("aftership/webhook_in_transit_on_time.json"))


def test_magento_order_one_line_per_thing_ordered() -> None:
    source = real("magento/order_get.json")
    order = load_mapping("magento/order").transform(source)["order"]
    assert (order["id"], order["number"]) == ("3", "000000003")  # entity_id; increment_id with its zeros
    assert order["created_at"] == "2017-08-21T22:22:19+00:00"  # "2017-08-21 22:22:19" is UTC in Magento
    # 9 items: the bundle's 4 children and the configurable's child belong to their parents' lines.
    assert len(source["items"]) == 9
    assert [(line["sku"], line["quantity"], line["price"]["value"]) for line in order["line_items"]] == [
        ("WS12-M-Orange", 1, 22),
        ("240-LV08", 1, 18),
        ("24-WG080-24-WG084-24-WG088-24-WG082-blue-24-WG086", 1, 68),
        ("MH01-S-Gray", 1, 52),
    ]
    assert order["item_quantity"] == source["total_qty_ordered"] == 4
    hoodie = order["line_items"][3]
    assert (hoodie["product_id"], hoodie["variant_id"], hoodie["name"]) == (
        "67",
        "56",
        "Chaz Kangeroo Hoodie-S-Gray",
    )
    assert [prop["value"] for prop in order["line_items"][2]["properties"]] == [
        "24-WG082-blue",
        "24-WG084",
        "24-WG086",
        "24-WG088",
    ]
    assert order["total_weight"] == {"value": 32, "units": "oz"}  # 2 lbs
    assert order["financial_details"]["total_price"] == {"value": 165, "currency": "USD"}
    assert order["shipping_address"]["province_code"] == "NY"
    assert order["shipping_address"]["country"] == "United States"


def test_magento_order_state_and_shipped_quantities() -> None:
    mapping = load_mapping("magento/order")
    found = {
        name: (order["status"], order["fulfillment_status"], order.get("cancelled_at"))
        for name in (
            "order_shipped_in_part",
            "order_complete",
            "order_canceled",
            "order_canceled_in_part",
        )
        for order in [mapping.transform(derived(f"magento/{name}.json"))["order"]]
    }
    assert found == {
        "order_shipped_in_part": ("OPEN", "PARTIALLY_FILLED", None),
        "order_complete": ("OPEN", "FULFILLED", None),
        "order_canceled": ("CANCELLED", "NOT_FILLED", "2017-08-22T09:15:40+00:00"),
        "order_canceled_in_part": ("PARTIALLY_CANCELLED", "FULFILLED", None),
    }
    listing = derived("magento/orders_search_result.json")
    assert mapping.transform(listing["items"][0]) == mapping.transform(real("magento/order_get.json"))
    with pytest.raises(TransformError) as caught:
        mapping.transform(listing)  # the search result itself is not an order
    assert caught.value.field == "order.id"


def test_magento_order_and_order_cancelled_agree() -> None:
    """Fenix hears of a Magento order from two mappings fed the same document: magento/order's status and the
    payload magento/order_cancelled makes (if any) say the same thing, for the same id, on every state."""
    order_mapping, cancel_mapping = load_mapping("magento/order"), load_mapping("magento/order_cancelled")
    sources = {"order_get": real("magento/order_get.json")} | {
        path.stem: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted((DERIVED / "magento").glob("order_*.json"))
    }
    found = {}
    for name, source in sources.items():
        order = order_mapping.transform(source)["order"]
        cancels = cancel_mapping.transform(source)
        assert all(payload["id"] == order["id"] for payload in cancels.values())
        if "cancel" in cancels:
            assert cancels["cancel"]["cancelled_at"] == order["cancelled_at"]
        if "partial_cancel" in cancels:  # the same lines, in the same order, as the order sent
            lines = cancels["partial_cancel"]["line_items"]
            assert [(line["sku"], line["quantity"]) for line in lines] == [
                (line["sku"], line["quantity"]) for line in order["line_items"]
            ]
        found[name] = (order["status"], sorted(cancels))
    assert found == {
        "order_get": ("OPEN", []),
        "order_canceled": ("CANCELLED", ["cancel"]),
        "order_canceled_in_part": ("PARTIALLY_CANCELLED", ["partial_cancel"]),
        "order_complete": ("OPEN", []),
        "order_kit_canceled": ("PARTIALLY_CANCELLED", ["partial_cancel"]),
        "order_kit_components_canceled": ("OPEN", []),
        "order_shipped_in_part": ("OPEN", []),
    }


def test_magento_shipment_one_payload_per_track_with_its_order() -> None:
    mapping = load_mapping("magento/shipment")
    event = {
        "shipment": derived("magento/shipment_3.json"),
        "order": real("magento/order_get.json"),
        "dg_action_id": "flow-1",
    }
    payloads = mapping.transform(event)
    assert sorted(payloads) == ["fulfillment[1Y-9876543210]", "shipment[1Y-9876543210]"]
    fulfillment = payloads["fulfillment[1Y-9876543210]"]
    assert (fulfillment["id"], fulfillment["order_id"]) == ("3-1", "3")
    assert fulfillment["created_at"] == "2017-08-21T22:41:23+00:00"
    assert fulfillment["shipment_info"]["tracking_company"] == "UPS"
    assert fulfillment["shipment_info"]["shipping_service"] == "Best Way - Table Rate"
    assert payloads["shipment[1Y-9876543210]"]["action_id"] == "flow-1"
    assert payloads["shipment[1Y-9876543210]"]["inputs"]["shipment_data"] == {
        "order_id": "3",
        "shipment_id": "3-1",
        "tracking_number": "1Y-9876543210",
        "carrier_code": "ups",
        "items": [
            {"sku": "WS12-M-Orange", "quantity": 1},
            {"sku": "24-WG080-24-WG084-24-WG088-24-WG082-blue-24-WG086", "quantity": 1},
        ],
    }
    # A bare shipment is not the event: the mapping finds no `shipment` document and gives nothing.
    assert mapping.transform(derived("magento/shipment_3.json")) == {}


def test_easypost_real_tracker_names_no_order_and_the_event_reads_like_the_bare_tracker() -> None:
    mapping = load_mapping("easypost/tracker")
    tracker = real("easypost/trackers_retrieve.json")
    assert mapping.transform(tracker) == {}  # pre_transit, no estimate slip, and nothing names its order
    order = {"order_id": "450789469", "fulfillment_id": "255858046", "items": [{"sku": "A-1", "quantity": 2}]}
    fulfillment = mapping.transform({**tracker, **order})["fulfillment"]
    assert fulfillment["shipment_status"] == "READY_TO_SHIP"
    info = fulfillment["shipment_info"]
    assert (info["tracking_number"], info["tracking_company"]) == (tracker["tracking_code"], "USPS")
    assert info["shipping_service"] == tracker["carrier_detail"]["service"] == "First-Class Package Service"
    assert info["tracking_url"] == tracker["public_url"]
    assert fulfillment["created_at"] == "2025-05-09T20:40:17+00:00"  # "…Z": UTC, with its offset
    # The same tracker as the `result` of a tracker.created Event maps to the same payloads.
    event = real("easypost/events_retrieve.json")
    assert event["description"] == "tracker.created"
    assert mapping.transform({**event, "result": tracker, **order}) == {"fulfillment": fulfillment}


def test_easypost_delivered_and_delayed() -> None:
    mapping = load_mapping("easypost/tracker")
    event = derived("easypost/event_delivered.json")
    delivered = mapping.transform(event)
    assert sorted(delivered) == ["delivered", "fulfillment"]
    data = delivered["delivered"]["inputs"]["shipment_data"]
    assert (data["order_id"], data["shipment_id"]) == ("450789469", "255858046")
    assert (data["tracking_number"], data["carrier_code"]) == (event["result"]["tracking_code"], "usps")
    assert delivered["fulfillment"]["updated_at"] == "2025-05-12T15:20:00+00:00"
    # The next update of the same tracker changed no status: nothing again.
    assert mapping.transform(derived("easypost/event_delivered_again.json")) == {}
    late = mapping.transform(derived("easypost/event_in_transit_late.json"))
    assert late["delayed"]["external_id"] == "trk_9135862729734d96ad2f9ed0f0565a27-late-2025-05-12-delayed"
    failure = mapping.transform(derived("easypost/event_failure.json"))
    assert sorted(failure) == ["delayed", "fulfillment"]
    assert failure["fulfillment"]["shipment_status"] == "DELIVERY_EXCEPTION"
    returned = mapping.transform(derived("easypost/event_return_to_sender.json"))
    assert returned["delayed"]["external_id"].endswith("-return_to_sender-return-delayed")


# ------------------------------------------------------------------------------------------------------------
# The fixtures themselves

REAL_SHA256 = {
    "aftership/tracking_get_response.json": "1a9a3526a2cf9126d3fe1bb7222f97cfb01f63c16fd8624f382825ba8f6f072a",
    "shipstation/fulfillments_list.json": "290d9b91659ee6640ad3759e8e4974fffe000599424250794b205039d60f265a",
    "shipstation/shipments_list_ship_notify_resource.json": "1f6950f350e6193e55f48f0825bd6b6a2e985f94402e72150e750f9609210acc",
    "shopify/fulfillments_create_webhook.json": "54794af063ae09a50083e3ad35511a774b72164183f71f4e1c502fef986857be",
    "shopify/order_rest_get_with_fulfillment.json": "a5177a37ed98a4f9a63531c1601ab6d42b1f7b0e77e8f3ca86f256700cd30513",
    "shopify/orders_cancelled_webhook.json": "075193385bb3fa277db54a6072859698ced5037d23b7a845c192e1eb878aa1b6",
    "woocommerce/order_rest_get.json": "d06a1b6ae26dbbf3f4e95aabd10d65fc0fdddf3d3be0b88c6515903825593a8a",
    "bigcommerce/order_get.json": "320b6d4a89fcadb7f4f5f617d61a6eb21acb330cb59118393b1f4321f2453f23",
    "bigcommerce/order_products_get_element.json": "683cece0041a896baf451aa63053680ca4242b087bebf5647e94d0fb46a6cf9e",
    "bigcommerce/order_shipments_get_element.json": "c7c4b08f94eb3da2088f4d3338c6af2be6cc8fd8e144aae53330793cef040310",
    "bigcommerce/order_shipping_addresses_get_element.json": "2f9b3093768be7cda8c7ff3d4de6eac81ac720ec6991e04958674fe4754822fc",
    "shopify/refunds_create_webhook.json": "aa7ca320b1f4aef498840f7456ebeaa02bf0448b3e23d190ac6a48e654346c56",
    "shopify/orders_edited_webhook.json": "7b9d1b153a354341d0a78b616d0477e4c0ce221df280953760062aec5ce999ae",
    "shopify/returns_approve_webhook.json": "a6827817c5e50069c84018cc23efd34cb818311ee35b1b314095a382f63b38df",
    "magento/order_get.json": "bebb9855955b2cf7d529286258d428d99131c74eb38231d7af0fe5ea1543d81a",
    "easypost/trackers_retrieve.json": "32557cb44823d75c07208a198ae5626b0e150f3eba49ca92906647b474a4c7c4",
    "easypost/trackers_create.json": "99f7378b8b48d81b9604eee89769ef498fd723435055abe2cd5929d0ba7d77f0",
    "easypost/events_retrieve.json": "db423ce3c5c5282d52358bf4ef759cf838fc33577e8ea4679ad4ca4354610c0e",
}


@pytest.mark.parametrize("name", sorted(REAL_SHA256))
def test_real_fixtures_are_unchanged_copies(name: str) -> None:
    assert hashlib.sha256((REAL / name).read_bytes()).hexdigest() == REAL_SHA256[name]
    assert f"`{name}`" in (REAL / "SOURCES.md").read_text(encoding="utf-8")


def test_derived_fixtures_are_what_derive_py_makes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("derive", DERIVED / "derive.py")
    assert spec is not None and spec.loader is not None
    derive = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(derive)
    monkeypatch.setattr(derive, "HERE", tmp_path)
    derive.shopify()
    derive.shipstation()
    derive.aftership()
    derive.woocommerce()
    derive.shopify_dg()
    derive.bigcommerce()
    derive.magento()
    derive.easypost()
    made = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*.json"))
    assert made == sorted(str(path.relative_to(DERIVED)) for path in DERIVED.rglob("*.json"))
    readme = (DERIVED / "README.md").read_text(encoding="utf-8")
    for name in made:
        assert (tmp_path / name).read_bytes() == (DERIVED / name).read_bytes(), name
        assert f"`{Path(name).name}`" in readme, f"{name} is not described in README.md"


def test_every_ready_mappings_dg_carrier_codes_are_shipmaps_carrier_codes() -> None:
    """Each mapping's own `carriers` table (platform carrier -> DG code) says the codes carrier_code() says,
    so one carrier reaches DG under one code whichever platform sent it (Australia Post was `auspost` in the
    mappings and `australiapost` in the engine's table)."""
    table = json.loads((ROOT / "engine/tables/carriers.json").read_text(encoding="utf-8"))
    codes = {carrier["code"] for carrier in table["carriers"]}
    checked = {}
    for name, path in zip(NAMES, READY, strict=True):
        lookup = (yaml.safe_load(path.read_text(encoding="utf-8")).get("lookups") or {}).get("carriers")
        if lookup is not None:
            checked[name] = sorted(set(lookup["map"].values()) - codes)
    assert checked and all(not unknown for unknown in checked.values()), checked
    assert len(checked) >= 7  # every mapping that sends DG a carrier code has such a table
