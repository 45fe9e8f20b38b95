"""Guessing which source key holds a target field: synonym tables, object contexts and the score of a leaf."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shipmap.engine import TargetKind
from shipmap.engine._paths import IDENTIFIER as _IDENTIFIER

from ._model import ScaffoldError
from ._sample import _dict_nodes, _Leaf

# Source key names that may hold a target field, best first. A dotted entry matches the last keys of a path
# ("image.src"). Fields not listed match their own name only.
SYNONYMS: Mapping[str, tuple[str, ...]] = {
    "id": ("id",),
    "number": ("name", "order_name", "order_number", "number", "order_no", "increment_id"),
    "order_id": ("order_id", "order_key", "order_number", "order.id"),
    "shipment_id": ("shipment_id", "fulfillment_id", "id"),
    "email": ("email", "contact_email", "customer_email", "email_address", "buyer_email"),
    "phone": ("phone", "phone_number", "telephone", "mobile", "contact_phone"),
    "first_name": ("first_name", "firstname", "given_name"),
    "last_name": ("last_name", "lastname", "surname", "family_name"),
    "name": ("name", "full_name"),
    "company": ("company", "company_name"),
    "address1": ("address1", "address_1", "street1", "address_line1", "line1", "street"),
    "address2": ("address2", "address_2", "street2", "address_line2", "line2"),
    "city": ("city", "town", "locality"),
    "province": ("province", "state", "region", "county"),
    "province_code": ("province_code", "state_code", "region_code"),
    "country": ("country", "country_name"),
    "country_code": ("country_code", "country_iso2", "country"),
    "zip": ("zip", "postal_code", "postcode", "zip_code", "zipcode"),
    "sku": ("sku", "product_sku", "variant_sku", "item_sku", "seller_sku", "sku_code"),
    "quantity": ("quantity", "qty", "quantity_ordered", "qty_ordered", "quantity_shipped"),
    "title": ("title", "name", "product_name", "item_name", "product_title", "description"),
    "price": ("price", "unit_price", "item_price", "price_per_unit", "amount"),
    "image_url": ("image_url", "image_src", "image.src", "image", "thumbnail_url", "image_link"),
    "product_id": ("product_id", "productid"),
    "variant_id": ("variant_id", "variation_id"),
    "currency": ("currency", "currency_code", "order_currency_code", "presentment_currency"),
    "created_at": ("created_at", "create_date", "date_created", "created", "creation_date", "order_date"),
    "updated_at": ("updated_at", "modify_date", "date_modified", "modified_at", "last_updated_at", "updated"),
    "cancelled_at": ("cancelled_at", "canceled_at", "cancel_date", "date_cancelled", "cancelled_date"),
    "cancel_reason": ("cancel_reason", "cancellation_reason", "cancel_note"),
    "closed_at": ("closed_at", "completed_at", "date_completed"),
    "promised_delivery_date": (
        "promised_delivery_date",
        "order_promised_delivery_date",
        "promised_date",
        "delivery_date",
        "expected_delivery_date",
    ),
    "tracking_number": ("tracking_number", "tracking_code", "tracking_no", "tracking_numbers", "tracking_id"),
    "tracking_company": (
        "tracking_company",
        "carrier",
        "carrier_name",
        "carrier_code",
        "slug",
        "courier",
        "courier_name",
        "shipping_carrier",
    ),
    "carrier_code": (
        "carrier_code",
        "carrier",
        "slug",
        "courier_code",
        "courier",
        "tracking_company",
        "carrier_name",
    ),
    "tracking_url": (
        "tracking_url",
        "tracking_urls",
        "tracking_link",
        "courier_tracking_link",
        "tracking_page",
    ),
    "shipping_service": ("shipping_service", "service_code", "service", "service_level", "shipping_method"),
    "shipcost": ("shipcost", "shipment_cost", "shipping_cost", "label_cost", "postage"),
    "total_weight": ("total_weight", "weight.value", "weight", "total_grams", "shipment_weight"),
    "weight": ("weight.value", "weight", "grams"),
    "units": ("units", "unit", "weight_unit", "weight_units"),
    "code": ("code", "method_id", "service_code"),
    "source": ("source",),
    "subtotal_price": ("subtotal_price", "subtotal"),
    "total_tax": ("total_tax", "tax_total", "tax_amount"),
    "total_discounts": ("total_discounts", "discount_total", "total_discount"),
    "total_price": ("total_price", "total", "order_total", "grand_total"),
    "taxes_included": ("taxes_included", "prices_include_tax", "tax_included"),
    "financial_status": ("financial_status", "payment_status"),
    "gateway": ("gateway", "payment_method_title", "payment_method", "payment_gateway_names"),
    "line_items": (
        "line_items",
        "items",
        "order_items",
        "lines",
        "shipment_items",
        "products",
        "fulfillment_line_items",
    ),
    "items": ("items", "line_items", "shipment_items", "order_items", "lines", "products"),
    "properties": ("properties", "note_attributes"),
}
# Per kind and top-level field, where the general table would mislead.
KIND_SYNONYMS: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("fenix.order", "id"): ("id", "order_id", "entity_id", "object_id"),
    ("fenix.order_cancel", "id"): ("id", "order_id", "entity_id", "object_id"),
    ("fenix.order_partial_cancel", "id"): ("id", "order_id", "entity_id", "object_id"),
    ("fenix.fulfillment", "id"): ("id", "shipment_id", "fulfillment_id", "entity_id", "object_id"),
}
# Inside one target object, some fields go by other names: a shipping line's amount is its price.
CONTEXT_SYNONYMS: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("shipping_info", "title"): ("title", "method_title", "name", "service_name", "shipping_method"),
    ("shipping_info", "code"): ("code", "method_id", "service_code", "carrier_identifier"),
    ("shipping_info", "price"): ("price", "total", "cost", "amount", "shipping_total", "shipping_cost"),
}


# Single-word synonyms that may also end a longer key (SellerSKU, order_currency): most single words may not
# (customer_id is not the order's id).
_SUFFIX_WORDS = frozenset({"sku", "currency"})
# Key names of objects that are never the document itself, however many target fields they hold.
_NOT_A_ROOT = re.compile(
    r"(address|addr|ship_?from|ship_?to|origin|destination|sender|recipient|billing|return_to)$"
)
# Arrays of what happened to a parcel or an order, not what is in it.
_EVENT_ARRAY = re.compile(
    r"(checkpoints?|events?|history|histories|activities|activity|scans?|logs?|notes?|timeline|status_?updates?|"
    r"tracking_?details|movements?|comments?)$"
)
# Keys that make a line item the child of another line (a bundle's part, a configurable's simple product).
PARENT_KEYS = (
    "parent_item_id",
    "parent_order_product_id",
    "parent_line_item_id",
    "parent_item",
    "bundle_parent_id",
    "parent_id",
)
# A key counting money in minor units (cents): amount_cents, total_in_cents, orderAmountAsInteger.
MINOR_UNITS = re.compile(r"(cents|in_cents|minor|minor_units|as_integer)$")
# UTC twins of a local time: date_created_gmt beside date_created.
UTC_SUFFIXES = ("_gmt", "_utc", "Gmt", "Utc", "GMT", "UTC")
_PAGE_KEYS = frozenset(
    {
        "total",
        "count",
        "page",
        "pages",
        "per_page",
        "limit",
        "offset",
        "next",
        "previous",
        "has_more",
        "cursor",
    }
)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def words(name: str) -> list[str]:
    """A key's words, whatever its case: order_id, orderId, OrderId and ORDER_ID are all [order, id]."""
    return [w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", name)]


def snake(name: str) -> str:
    return "_".join(words(name))


def not_a_root(key: str) -> bool:
    return _NOT_A_ROOT.search(snake(key)) is not None


def event_array(key: str) -> bool:
    return _EVENT_ARRAY.search(snake(key)) is not None


def thin(node: dict[str, Any]) -> bool:
    """An envelope ({"order": {...}}, {"shipments": [...], "total": 2}): a few scalars besides its content."""
    scalars = [
        k for k, v in node.items() if not isinstance(v, dict | list) and snake(str(k)) not in _PAGE_KEYS
    ]
    return len(scalars) <= 3


@dataclass(frozen=True, slots=True)
class _Context:
    """Source object names that hold a target object's fields; ``strict``: only keys under one of them."""

    name: str
    names: frozenset[str]
    strict: bool


def _context(name: str, *names: str, strict: bool) -> _Context:
    return _Context(name, frozenset(_norm(n) for n in (name, *names)), strict)


_CONTEXTS: Mapping[str, _Context] = {
    c.name: c
    for c in (
        _context(
            "shipping_address",
            "shipping",
            "ship_to",
            "destination",
            "delivery_address",
            "recipient",
            strict=True,
        ),
        _context("billing_address", "billing", "bill_to", strict=True),
        _context("address", "default_address", "customer_address", strict=True),
        _context("customer", "buyer", "billing", "bill_to", "contact", strict=False),
        _context(
            "shipping_info", "shipping_lines", "shipping_line", "shipping", "shipping_method", strict=False
        ),
    )
}


# --- schema helpers -----------------------------------------------------------------------------------------


def _types(schema: Mapping[str, Any]) -> set[str]:
    found: set[str] = set()
    kind = schema.get("type")
    if isinstance(kind, str):
        found.add(kind)
    elif isinstance(kind, list):
        found.update(str(k) for k in kind)
    for option in schema.get("anyOf", ()):
        found |= _types(option)
    return found


def _is_datetime(schema: Mapping[str, Any]) -> bool:
    pattern = schema.get("pattern")
    if isinstance(pattern, str) and "T" in pattern and "\\d{4}" in pattern:
        return True
    return any(_is_datetime(option) for option in schema.get("anyOf", ()))


def _shape(schema: Mapping[str, Any]) -> str:
    props = schema.get("properties")
    items = schema.get("items")
    if isinstance(items, Mapping) and isinstance(items.get("properties"), Mapping):
        return "array"
    if isinstance(props, Mapping):
        if "value" in props and "currency" in props:
            return "money"
        if "value" in props and ("units" in props or "unit" in props):
            return "measure"
        return "object"
    return "leaf"


def _ordered(schema: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any], bool]]:
    """The properties of an object schema, required ones first (in the schema's required order)."""
    props: Mapping[str, Any] = schema.get("properties", {})
    required = [r for r in schema.get("required", ()) if r in props]
    rest = [p for p in props if p not in required]
    return [(p, props[p], True) for p in required] + [(p, props[p], False) for p in rest]


def _field_names(schema: Mapping[str, Any]) -> set[str]:
    """A kind's field names, nested objects included, array items not: what a source root should hold."""
    names: set[str] = set()
    for prop, sub, _ in _ordered(schema):
        names.add(prop)
        if _shape(sub) in ("object", "money", "measure"):
            names |= _field_names(sub)
    return names


def _synonyms(name: str, kind: str, *, top: bool) -> tuple[str, ...]:
    if top and (kind, name) in KIND_SYNONYMS:
        return KIND_SYNONYMS[(kind, name)]
    return SYNONYMS.get(name, (name,))


def _score(leaf: _Leaf, names: Sequence[str], context: _Context | None) -> int | None:
    keys = leaf.names
    if not keys:
        return None
    index: int | None = None
    width = 1
    suffix = False
    for position, name in enumerate(names):
        segments = [_norm(s) for s in name.split(".")]
        if [_norm(k) for k in keys[-len(segments) :]] == segments:
            index, width = position, len(segments)
            break
    if index is None:
        # A longer key that ends with the synonym's words: AmazonOrderId, order_currency_code, SellerSKU.
        last = words(keys[-1])
        for position, name in enumerate(names):
            wanted = words(name.rsplit(".", 1)[-1])
            if (
                (len(wanted) > 1 or name in _SUFFIX_WORDS)
                and len(last) > len(wanted)
                and last[-len(wanted) :] == wanted
            ):
                index, width, suffix = position, 1, True
                break
    if index is None:
        return None
    parents = keys[:-width]
    score = 100 - 5 * index - (25 if suffix else 0)
    inside = context is not None and any(_norm(p) in context.names for p in parents)
    if context is not None and context.strict and not inside:
        return None
    if inside:
        score += 40
    outside = [p for p in parents if context is None or _norm(p) not in context.names]
    score -= 15 * len(outside)
    # A value inside an array of objects is one element's: right for shipping_info from shipping_lines[0],
    # wrong for most else (a subtotal from line_items[0]), so only an array the context names is entered.
    for position, part in enumerate(leaf.parts):
        if isinstance(part, int) and position < len(leaf.parts) - 1:
            owner = leaf.parts[position - 1]
            if not (context is not None and isinstance(owner, str) and _norm(owner) in context.names):
                return None
    if leaf.value is None:
        score -= 5
    return score


def _is_amount(value: Any) -> bool:
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return True
    return isinstance(value, str) and re.fullmatch(r"\s*-?\d+(\.\d+)?\s*", value) is not None


def _sum(elements: list[Any], parts: tuple[str | int, ...]) -> Any:
    total = 0
    for element in elements:
        value: Any = element
        for part in parts:
            value = value.get(part) if isinstance(value, dict) and isinstance(part, str) else None
        if isinstance(value, int) and not isinstance(value, bool):
            total += value
    return total


# --- choosing the document inside the sample ----------------------------------------------------------------


def _pick_document(document: Any, kinds: Sequence[TargetKind]) -> tuple[str | None, Any]:
    """The part of the sample one event would be. A list (top level, or one array beside page counters) whose
    elements look more like the target than anything else is a batch: a case selects its first element."""
    wanted: set[str] = set()
    for kind in kinds:
        for name in _field_names(kind.inlined):
            wanted |= {_norm(s.rsplit(".", 1)[-1]) for s in _synonyms(name, kind.name, top=False)}

    def score(node: Any) -> int:
        return sum(1 for key in node if _norm(str(key)) in wanted) if isinstance(node, dict) else 0

    if isinstance(document, list):
        first = next((e for e in document if isinstance(e, dict)), None)
        if first is None:
            raise ScaffoldError("the sample is a list without objects: nothing to map")
        return "[0]", first
    if not thin(document):
        return None, document  # a single object stays one, whatever arrays it holds
    best_dict = max(_dict_nodes(document), key=lambda item: (score(item[1]), -len(item[0])))
    lists = [
        (key, value)
        for key, value in document.items()
        if isinstance(value, list) and value and isinstance(value[0], dict)
    ]
    for key, value in sorted(lists, key=lambda item: -score(item[1][0])):
        if score(value[0]) > score(best_dict[1]) and score(value[0]) >= 3 and _IDENTIFIER.match(key):
            return f"{key}[0]", value[0]
    return None, document
