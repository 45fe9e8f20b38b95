"""The built-in target kinds: the seeds' own examples pass, and violations are named per field."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shipmap.engine import builtin_kinds, get_kind
from shipmap.engine._kinds import SchemaCheck

SEEDS = Path(__file__).parent.parent / "fixtures" / "seeds"


def _seed(name: str) -> Any:
    return json.loads((SEEDS / name).read_text(encoding="utf-8"))


def test_the_kinds_and_their_routes() -> None:
    routes = {name: (kind.api, kind.route.method, kind.route.path) for name, kind in builtin_kinds().items()}
    assert routes == {
        "dg.execution": ("dg", "POST", "/execution"),
        "fenix.fulfillment": ("fenix", "POST", "/api/v1/order/{order_id}/fulfillment/{id}/created"),
        "fenix.order": ("fenix", "POST", "/api/v1/orders/{id}/created"),
        "fenix.order_cancel": ("fenix", "POST", "/api/v1/orders/{id}/created"),
        "fenix.order_partial_cancel": ("fenix", "POST", "/api/v1/orders/{id}/created"),
    }


@pytest.mark.parametrize(
    ("kind", "example"),
    [
        ("fenix.order", "fenix_order_example.json"),
        ("fenix.order_cancel", "fenix_cancel_example.json"),
        ("dg.execution", "dg_execution_example.json"),
    ],
)
def test_seed_examples_validate(kind: str, example: str) -> None:
    assert get_kind(kind).problems(_seed(example)) == []


def test_order_problems_are_named_per_field() -> None:
    order = _seed("fenix_order_example.json")
    del order["line_items"]
    order["status"] = "SHIPPED"
    order["created_at"] = "2020-01-23 10:14:15"
    order["shipping_info"]["price"]["value"] = "14.99"
    order["colour"] = "red"
    problems = dict(
        ((".".join(map(str, path)), message) for path, message in get_kind("fenix.order").problems(order))
    )
    assert problems["line_items"] == "is required but missing"
    assert "expected one of ['OPEN', 'CANCELLED', 'PARTIALLY_CANCELLED', 'NA']" in problems["status"]
    assert "zone offset" in problems["created_at"]
    assert problems["shipping_info.price.value"].startswith('got "14.99"')
    assert problems["colour"] == "is not a field of this kind"


def test_seed_choices_accept_what_the_examples_send() -> None:
    order = _seed("fenix_order_example.json")
    kind = get_kind("fenix.order")
    for status in ("OPEN", "NA"):
        assert kind.problems({**order, "status": status}) == []
    assert kind.problems({**order, "item_quantity": "2"}) == []
    assert kind.problems({**order, "item_quantity": 2}) == []
    customer = {**order["customer"], "phone": "+1 999 900 0000"}
    assert kind.problems({**order, "customer": customer}) == []
    assert order["financial_details"]["total_tax"]["value"] is None


def test_fulfillment_statuses_are_spelled_as_the_seed_spells_them() -> None:
    fulfillment = {
        "id": "F1",
        "order_id": "O1",
        "shipment_status": "OUT_FOR_DELIVERED",
        "shipment_info": {
            "tracking_number": "1Z999",
            "tracking_company": "UPS",
            "shipping_service": "Ground",
            "shipcost": {"value": 5, "currency": "USD"},
        },
        "line_items": [
            {
                "sku": "A",
                "quantity": 1,
                "title": "A",
                "price": {"value": 1, "currency": "USD"},
                "image_url": "",
            }
        ],
    }
    kind = get_kind("fenix.fulfillment")
    assert kind.problems(fulfillment) == []
    wrong = copy.deepcopy(fulfillment)
    wrong["shipment_status"] = "OUT_FOR_DELIVERY"
    assert [p for p, _ in kind.problems(wrong)] == [("shipment_status",)]


def test_partial_cancel_needs_something_cancelled() -> None:
    kind = get_kind("fenix.order_partial_cancel")
    payload = {
        "id": "1",
        "status": "PARTIALLY_CANCELLED",
        "cancelled_at": "2020-01-23T10:14:15-05:00",
        "line_items": [
            {"sku": "SKU1", "quantity": 3, "cancelled_quantity": 1},
            {"sku": "SKU2", "quantity": 2, "cancelled_quantity": 2},
            {"sku": "SKU3", "quantity": 1, "cancelled_quantity": 0},
        ],
    }
    assert kind.problems(payload) == []
    for line in payload["line_items"]:
        line["cancelled_quantity"] = 0
    assert [p for p, _ in kind.problems(payload)] == [("line_items",)]


def test_route_fills_and_quotes_payload_fields() -> None:
    route = get_kind("fenix.fulfillment").route
    assert (
        route.render({"order_id": "#1001", "id": "F/1"}) == "/api/v1/order/%231001/fulfillment/F%2F1/created"
    )
    with pytest.raises(KeyError):
        route.render({"id": "F1"})


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["id", "order_id", "other"]),
        st.none() | st.booleans() | st.integers() | st.text() | st.lists(st.integers(), max_size=2),
    ),
    st.sampled_from(["/api/v1/order/{order_id}/fulfillment/{id}/created", "{id}", "/plain", "/{id}{id}/x"]),
)
def test_route_paths_are_what_quoting_every_placeholder_gives(payload: dict[str, Any], path: str) -> None:
    # Route.render skips quote() for letters and digits; the path, or the KeyError, is quote()'s.
    def quoted(match: re.Match[str]) -> str:
        value = payload.get(match.group(1))
        if value is None or value == "":
            raise KeyError(match.group(1))
        return quote(str(value), safe="")

    route = get_kind("fenix.fulfillment").route
    try:
        expected: Any = re.sub(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", quoted, path)
    except KeyError as error:
        expected = ("missing", error.args)
    try:
        got: Any = route.render(payload, path=path)
    except KeyError as error:
        got = ("missing", error.args)
    assert got == expected


def test_fast_check_and_explanation_agree_on_every_mutation() -> None:
    """The compiled validator decides and jsonschema explains: they must agree on what is valid."""
    order = _seed("fenix_order_example.json")
    kind = get_kind("fenix.order")
    mutations: list[tuple[str, Any]] = [
        ("status", "SHIPPED"),
        ("item_quantity", "two"),
        ("item_quantity", -1),
        ("created_at", "2020-01-23T10:14:15"),
        ("created_at", "2020-01-23T10:14:15.123-05:00"),
        ("line_items", []),
        ("customer", {"email": "a@b.c"}),
        ("customer", {"email": "a@b.c", "phone": 1}),
        ("fulfillment_status", None),
        ("fulfillment_status", "DONE"),
        ("shipping_info", {"title": "t", "price": {"value": 1}, "source": "Shopify"}),
        ("shipping_info", {"title": "t", "price": {"currency": "USD"}, "source": "Shopify"}),
        ("id", ""),
        ("id", 18879048253891),
    ]
    for field, value in mutations:
        payload = {**copy.deepcopy(order), field: value}
        explained = kind.problems(payload)
        assert kind.is_valid(payload) == (explained == []), (field, value, explained)
    line = copy.deepcopy(order)
    del line["line_items"][0]["price"]["currency"]
    assert not kind.is_valid(line)
    assert [path for path, _ in kind.problems(line)] == [("line_items", 0, "price", "currency")]


def _mutations(example: dict[str, Any]) -> list[Any]:
    """The example, and for each top-level field: without it, null, text, a number, an empty object."""
    found: list[Any] = [example]
    for field in example:
        found.append({key: value for key, value in example.items() if key != field})
        found += [{**example, field: value} for value in (None, "x", 1, {}, [])]
    return found


@pytest.mark.parametrize(
    ("kind", "example"),
    [
        ("fenix.order", "fenix_order_example.json"),
        ("fenix.order_cancel", "fenix_cancel_example.json"),
        ("dg.execution", "dg_execution_example.json"),
    ],
)
def test_the_terse_and_the_detailed_compiled_checks_decide_alike(kind: str, example: str) -> None:
    """The deciding code may be terse (no details in its exceptions, for speed); the detailed code (behind
    first_problem) and jsonschema (behind problems) must reach the same verdict on every mutation."""
    checked = get_kind(kind)
    detailed = SchemaCheck(checked.inlined)
    verdicts = []
    for payload in _mutations(_seed(example)):
        valid = checked.is_valid(payload)
        assert (detailed.first_problem(payload) is None) == valid, payload
        assert (checked.problems(payload) == []) == valid, payload
        verdicts.append(valid)
    assert True in verdicts and False in verdicts


def test_the_first_problem_names_its_field() -> None:
    order = _seed("fenix_order_example.json")
    order["line_items"][0]["price"]["value"] = "14.99"
    found = SchemaCheck(get_kind("fenix.order").inlined).first_problem(order)
    assert found is not None
    path, message = found
    assert path[:3] == ("line_items", 0, "price") and "14.99" not in message
