"""`shipmap init` guesses on real samples from platforms without a ready mapping, and on small hand-written
shapes of documented APIs (Amazon SP-API, Magento, Shippo, Stripe-style cents): each wrong guess the issue
reports, and what init does instead."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from shipmap.connectors._scaffold import Scaffold, plan_scaffold

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real"


def found(scaffold: Scaffold) -> dict[str, tuple[str | None, Any, str]]:
    return {s.field: (s.source, s.sample, s.confidence) for s in scaffold.suggestions}


def sample(tmp_path: Path, document: Any, name: str = "sample.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def test_bigcommerce_order_keeps_its_root_and_its_currency_code(tmp_path: Path) -> None:
    scaffold = plan_scaffold(
        REAL / "bigcommerce/order_get.json", name="bc", kinds=["fenix.order"], directory=tmp_path
    )
    text = scaffold.files[0].text
    assert "from:" not in text  # billing_address held more order fields than the order's top level did
    guesses = found(scaffold)
    assert guesses["order.id"] == ("id", 218, "sure")
    assert guesses["order.currency"] == ("currency_code", "USD", "likely")
    # the country's name and its ISO code go to their own fields
    assert guesses["order.billing_address.country"][:2] == ("billing_address.country", "United States")
    assert guesses["order.billing_address.country_code"][:2] == ("billing_address.country_iso2", "US")
    # products and shipments are links in a V2 order: no line array is invented
    assert "order.line_items[].sku" in {t.field for t in scaffold.todos}


def test_woocommerce_prefers_the_utc_twin_and_keeps_a_code_out_of_country(tmp_path: Path) -> None:
    scaffold = plan_scaffold(
        REAL / "woocommerce/order_rest_get.json",
        name="woo",
        kinds=["fenix.order"],
        directory=tmp_path,
        timezone="America/New_York",
    )
    guesses = found(scaffold)
    expression = "date_created_gmt && join('', [date_created_gmt, 'Z'])"
    assert guesses["order.created_at"][:2] == (expression, "2017-03-22T19:28:02")
    text = scaffold.files[0].text
    assert "the UTC twin of date_created (a local time)" in text
    # a code where Fenix wants a name goes through the ISO 3166 table; the code keeps its own field
    assert guesses["order.shipping_address.country"][:2] == ("country_name(shipping.country)", "US")
    assert "a code: country_name() gives the name Fenix wants" in text
    assert guesses["order.shipping_address.country_code"][:2] == ("shipping.country", "US")
    # The twin reads as UTC whatever the mapping's timezone: 19:28 UTC, not 19:28 New York time.
    from shipmap.engine import parse_mapping

    mapping = parse_mapping(text.replace("{path: TODO, required: true}", "{literal: x}"))
    document = json.loads((REAL / "woocommerce/order_rest_get.json").read_text())
    order = mapping.target("order").produce(document)
    assert order["created_at"] == "2017-03-22T19:28:02+00:00"
    assert order["shipping_address"]["country"] == "United States"


def test_tracking_checkpoints_are_not_line_items(tmp_path: Path) -> None:
    scaffold = plan_scaffold(
        REAL / "aftership/tracking_get_response.json", name="as", kinds=["fenix.order"], directory=tmp_path
    )
    assert "each: checkpoints" not in scaffold.files[0].text
    assert "order.line_items" in {t.field for t in scaffold.todos}


def test_every_guess_shows_value_and_confidence_and_all_todos_are_listed_first(tmp_path: Path) -> None:
    scaffold = plan_scaffold(
        REAL / "bigcommerce/order_shipments_get_element.json",
        name="bcs",
        kinds=["fenix.fulfillment", "dg.execution"],
        directory=tmp_path,
    )
    text = scaffold.files[0].text
    lines = text.splitlines()
    assert 'tracking_number: tracking_number   # <- "EJ958083578US" (sure)' in text
    for matched in scaffold.matched:
        if matched.source != "a literal" and matched.sample is not None:
            assert matched.confidence in ("sure", "likely", "a guess"), matched
    todos = scaffold.todos
    assert todos
    header = lines[: lines.index("shipmap: 1")]
    assert f"# {len(todos)} TODOs (line: field):" in header
    for todo in todos:
        assert f"#   {todo.line}: {todo.field}" in header
        if todo.target:
            assert "TODO" in lines[todo.line - 1], (todo, lines[todo.line - 1])


def test_pascal_case_keys_and_a_single_object(tmp_path: Path) -> None:
    # The documented shape of an Amazon SP-API order with its items (hand-written, not a copy).
    document = {
        "AmazonOrderId": "902-3159896-1390916",
        "PurchaseDate": "2017-01-20T19:49:35Z",
        "OrderStatus": "Unshipped",
        "OrderTotal": {"CurrencyCode": "USD", "Amount": "25.00"},
        "OrderItems": [
            {
                "ASIN": "B00551Q3CS",
                "SellerSKU": "NABetaASINB00551Q3CS",
                "OrderItemId": "05015851154158",
                "Title": "B00551Q3CS [Card Book]",
                "QuantityOrdered": 2,
                "ItemPrice": {"CurrencyCode": "USD", "Amount": "25.00"},
            },
        ],
    }
    scaffold = plan_scaffold(
        sample(tmp_path, document), name="amz", kinds=["fenix.order"], directory=tmp_path
    )
    guesses = found(scaffold)
    assert scaffold.select is None  # one order holding an array is not a batch of items
    assert guesses["order.id"][:2] == ("AmazonOrderId", "902-3159896-1390916")
    assert guesses["order.line_items"][:2] == ("OrderItems", 1)
    assert guesses["order.line_items[].sku"][:2] == ("SellerSKU", "NABetaASINB00551Q3CS")
    assert guesses["order.line_items[].quantity"][:2] == ("QuantityOrdered", 2)
    assert guesses["order.item_quantity"][:2] == ("sum(OrderItems[].QuantityOrdered)", 2)


def test_magento_parent_items_currency_code_and_entity_id(tmp_path: Path) -> None:
    # The documented shape of a Magento 2 order (hand-written): a configurable line and its simple child.
    document = {
        "entity_id": 12,
        "increment_id": "000000012",
        "order_currency_code": "EUR",
        "base_currency_code": "USD",
        "created_at": "2024-05-02 10:11:12",
        "items": [
            {
                "item_id": 30,
                "sku": "MH01-XS-Black",
                "name": "Chaz Kangeroo Hoodie",
                "qty_ordered": 2,
                "price": 52,
                "parent_item_id": None,
                "product_type": "configurable",
            },
            {
                "item_id": 31,
                "sku": "MH01-XS-Black",
                "name": "Chaz Kangeroo Hoodie-XS-Black",
                "qty_ordered": 2,
                "price": 0,
                "parent_item_id": 30,
                "product_type": "simple",
            },
        ],
        "status_histories": [
            {"comment": "Order placed", "created_at": "2024-05-02 10:11:12", "status": "pending"}
        ],
    }
    scaffold = plan_scaffold(
        sample(tmp_path, document), name="mag", kinds=["fenix.order"], directory=tmp_path
    )
    guesses = found(scaffold)
    assert guesses["order.id"][:2] == ("entity_id", 12)
    assert guesses["order.number"][:2] == ("increment_id", "000000012")
    assert guesses["order.currency"][:2] == ("order_currency_code", "EUR")
    assert guesses["order.line_items"][:2] == ("items[?!parent_item_id]", 1)
    assert guesses["order.item_quantity"][:2] == ("sum(items[?!parent_item_id][].qty_ordered)", 2)
    assert guesses["order.line_items[].price.currency"][:2] == ("$parent.order_currency_code", "EUR")


def test_a_label_is_never_rooted_at_its_addresses(tmp_path: Path) -> None:
    # The documented shape of a Shippo transaction with its addresses (hand-written).
    address = {
        "name": "Mr Hippo",
        "street1": "215 Clayton St.",
        "city": "San Francisco",
        "state": "CA",
        "zip": "94117",
        "country": "US",
        "phone": "+1 555 341 9393",
        "email": "hippo@example.com",
    }
    document = {
        "object_id": "70ae8117ee1749e393f249d5b77c45e0",
        "tracking_number": "9499907123456123456781",
        "carrier": "usps",
        "address_from": address,
        "to_address": {**address, "name": "Mrs Hippo"},
        "ship_from": address,
        "line_items": [{"sku": "HM-123", "quantity": 1, "title": "Hippo mug"}],
    }
    scaffold = plan_scaffold(
        sample(tmp_path, document), name="label", kinds=["fenix.fulfillment"], directory=tmp_path
    )
    assert "from:" not in scaffold.files[0].text
    assert found(scaffold)["fulfillment.id"][:2] == ("object_id", "70ae8117ee1749e393f249d5b77c45e0")


def test_money_in_minor_units_is_not_taken_for_units(tmp_path: Path) -> None:
    document = {
        "id": "ord_1",
        "currency": "JPY",
        "line_items": [{"sku": "A", "quantity": 1, "amount_cents": 1999}],
    }
    scaffold = plan_scaffold(
        sample(tmp_path, document), name="cents", kinds=["fenix.order"], directory=tmp_path
    )
    text = scaffold.files[0].text
    assert "money(amount_cents)" not in text
    price = next(line for line in text.splitlines() if "amount_cents" in line)
    assert "from_minor(amount_cents, $parent.currency)" in price
    assert "minor units (cents)" in price
    from shipmap.engine import parse_mapping

    mapping = parse_mapping(text.replace("{path: TODO, required: true}", "{literal: x}"))
    line = mapping.target("order").produce(json.loads(sample(tmp_path, document).read_text()))["line_items"][
        0
    ]
    assert line["price"] == {"value": 1999, "currency": "JPY"}  # yen have no minor unit


@pytest.mark.parametrize("suffix", [".json", ".ndjson"])
def test_a_batch_sample_gets_a_case_that_selects_one_document(tmp_path: Path, suffix: str) -> None:
    events = [
        {
            "id": 1,
            "order_id": 5,
            "tracking_number": "1Z",
            "carrier_code": "ups",
            "items": [{"sku": "A", "quantity": 2}],
        },
        {
            "id": 2,
            "order_id": 6,
            "tracking_number": "1Y",
            "carrier_code": "ups",
            "items": [{"sku": "B", "quantity": 1}],
        },
    ]
    text = json.dumps(events) if suffix == ".json" else "".join(json.dumps(e) + "\n" for e in events)
    path = tmp_path / f"events{suffix}"
    path.write_text(text)
    scaffold = plan_scaffold(path, name="b", kinds=["dg.execution"], directory=tmp_path / "b")
    assert scaffold.select == "[0]"
    cases = next(f.text for f in scaffold.files if f.role == "cases")
    assert 'select: "[0]"' in cases
    assert 'order_id: "5"' in cases
