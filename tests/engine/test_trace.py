"""Coverage tracing: defaults used and source fields never read, on a real Shopify order."""

from __future__ import annotations

import json
from pathlib import Path

from shipmap.engine import load_mapping

FIXTURES = Path(__file__).parent.parent / "fixtures"
ORDER = json.loads(
    (FIXTURES / "real/shopify/order_rest_get_with_fulfillment.json").read_text(encoding="utf-8")
)


def test_trace_reports_defaults_and_unread_fields() -> None:
    mapping = load_mapping(FIXTURES / "engine/shopify_order_min.yaml")
    trace = mapping.trace(ORDER)
    assert trace.payloads == mapping.transform(ORDER, validate=False)
    # The fixture's customer has no phone, so that field fell back to its default.
    assert "order.customer.phone" in trace.defaulted
    assert "order.line_items[0].sku" not in trace.defaulted
    assert {
        "order.id",
        "order.line_items[].sku",
        "order.shipping_address.city",
        "order.customer.email",
    } <= trace.read
    # Read through a fragment at one site but not the other: the fields the fragment does not list are unread.
    assert "order.shipping_address.phone" in trace.unread
    assert "order.shipping_address.city" not in trace.unread
    assert "order.fulfillments[].tracking_number" in trace.unread
    assert "order.line_items[].sku" not in trace.unread


def test_tracing_does_not_change_transform() -> None:
    mapping = load_mapping(FIXTURES / "engine/shopify_order_min.yaml")
    before = mapping.transform(ORDER)
    mapping.trace(ORDER)
    assert mapping.transform(ORDER) == before


def test_default_zone_overrides_the_mapping_timezone() -> None:
    # The fixture mapping says America/New_York; Shopify's created_at carries its own offset, so compare a
    # naive date through the function set the override builds.
    mapping = load_mapping(FIXTURES / "engine/shopify_order_min.yaml", default_zone="Europe/Paris")
    assert str(mapping.timezone) == "Europe/Paris"
    assert mapping.functions.call("datetime", "2020-01-23 10:14:15") == "2020-01-23T10:14:15+01:00"
    assert str(load_mapping(FIXTURES / "engine/shopify_order_min.yaml").timezone) == "America/New_York"


def test_a_bare_order_through_order_or_current_is_read_at_the_top() -> None:
    mapping = load_mapping(FIXTURES / "engine/shopify_order_min.yaml")
    bare = ORDER["order"]
    trace = mapping.trace(bare)
    assert "id" in trace.read and "line_items[].sku" in trace.read
    assert "id" not in trace.unread and "line_items[].sku" not in trace.unread
    wrapped = mapping.trace(ORDER)
    assert "order.id" in wrapped.read
