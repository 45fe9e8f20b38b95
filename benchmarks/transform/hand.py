"""The floor: mappings/shopify/order.yaml written by hand in plain Python.

This is what a careful engineer writes for this one mapping when speed is all that matters: the same payload
(fields with no value left out, ids as exact text, money as exact numbers, ISO date-times normalised, the
same PARTIALLY_CANCELLED rule), ordinary Python checks, none of shipmap's error locations or validation.
The benchmark asserts that its output equals shipmap's on every fixture before anything is timed.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

_ZONE = ZoneInfo("America/New_York")  # the mapping's timezone, for date-times without an offset
_FULFILLMENT = {
    "fulfilled": "FULFILLED",
    "partial": "PARTIALLY_FILLED",
    "unfulfilled": "NOT_FILLED",
    "restocked": "NOT_FILLED",
}
_ADDRESS_KEYS = (
    "first_name",
    "last_name",
    "name",
    "company",
    "phone",
    "address1",
    "address2",
    "city",
    "province",
    "province_code",
    "country",
    "country_code",
    "country_name",
    "zip",
    "latitude",
    "longitude",
)


def _money(value: Any) -> Any:
    if value is None:
        return None
    if type(value) is str:
        number = Decimal(value.replace(",", ""))
        return int(number) if number == number.to_integral_value() else float(number)
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def _sum(values: Any) -> Any:
    whole = 0
    fraction = None
    for value in values:
        if value is None:
            continue
        if type(value) is int:
            whole += value
            continue
        number = Decimal(value.replace(",", "")) if type(value) is str else Decimal(repr(value))
        fraction = number if fraction is None else fraction + number
    if fraction is None:
        return whole
    total = fraction + whole
    return int(total) if total == total.to_integral_value() else float(total)


def _id(value: Any) -> str | None:
    if value is None:
        return None
    if type(value) is int:
        return str(value)
    if type(value) is float:
        return str(int(value))
    return str(value).strip()


def _datetime(value: Any) -> str | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_ZONE).astimezone(_ZONE)
    text = moment.isoformat()
    if moment.microsecond:
        text = text[:20] + text[20:26].rstrip("0") + text[26:]
    return text


def _first(*values: Any) -> Any:
    for value in values:
        if value is not None and value != "":
            return value
    return None


def _address(address: Any) -> dict[str, Any] | None:
    if type(address) is not dict:
        return None
    out = {key: address[key] for key in _ADDRESS_KEYS if address.get(key) is not None}
    return out or None


def _pairs(items: Any) -> list[dict[str, Any]] | None:
    if not items:
        return None
    out = []
    for item in items:
        pair = {key: item[key] for key in ("name", "value") if item.get(key) is not None}
        if pair:
            out.append(pair)
    return out


def _line_item(line: dict[str, Any], currency: Any) -> dict[str, Any]:
    sku = line.get("sku")
    out: dict[str, Any] = {"sku": "" if sku is None else sku}
    for key in ("quantity", "title", "name"):
        if line.get(key) is not None:
            out[key] = line[key]
    for key in ("product_id", "variant_id"):
        if line.get(key) is not None:
            out[key] = _id(line[key])
    for key in ("variant_title", "vendor", "taxable", "gift_card"):
        if line.get(key) is not None:
            out[key] = line[key]
    grams = line.get("grams")
    out["weight"] = {"value": grams, "units": "grms"} if grams is not None else {"units": "grms"}
    price = {"value": _money(line.get("price")), "currency": currency}
    price = {key: value for key, value in price.items() if value is not None}
    if price:
        out["price"] = price
    out["image_url"] = ""
    properties = _pairs(line.get("properties"))
    if properties is not None:
        out["properties"] = properties
    return out


def _shipped(order: dict[str, Any], line: dict[str, Any]) -> Any:
    """Units of ``line`` shipped: the whole line when it says fulfilled, else its units in the fulfillments
    that were not cancelled, failed or errored (the larger of the two)."""
    whole = (line.get("quantity") or 0) if line.get("fulfillment_status") == "fulfilled" else 0
    in_fulfillments = sum(
        item.get("quantity") or 0
        for fulfillment in order.get("fulfillments") or []
        if fulfillment.get("status") not in ("cancelled", "failure", "error")
        for item in fulfillment.get("line_items") or []
        if item.get("id") == line.get("id")
    )
    return max(whole, in_fulfillments)


def _status(order: dict[str, Any]) -> str:
    if _first(order.get("cancelled_at")):
        lines = [line for line in order["line_items"] if isinstance(line, dict)]
        if not any(_shipped(order, line) > 0 for line in lines):
            return "CANCELLED"
        left = any((line.get("quantity") or 0) > _shipped(order, line) for line in lines)
        return "PARTIALLY_CANCELLED" if left else "OPEN"
    refunded = [
        refund_line
        for refund in order.get("refunds") or []
        for refund_line in refund.get("refund_line_items") or []
    ]
    for line in order["line_items"]:
        mine = [refund_line for refund_line in refunded if refund_line.get("line_item_id") == line.get("id")]
        by_refund = sum(r["quantity"] for r in mine if r.get("restock_type") == "cancel")
        current = line.get("current_quantity")
        by_edit = 0
        if isinstance(current, (int, float)):
            by_edit = max(0, line["quantity"] - current - sum(r["quantity"] for r in mine))
        if by_refund + by_edit > 0:
            return "PARTIALLY_CANCELLED"
    return "OPEN"


def _money_field(value: Any, currency: Any) -> dict[str, Any] | None:
    out = {"value": _money(value), "currency": currency}
    out = {key: item for key, item in out.items() if item is not None}
    return out or None


def shopify_order(document: dict[str, Any]) -> dict[str, Any]:
    """The fenix.order payload for a Shopify order (REST ``{"order": …}`` or a bare webhook body)."""
    order = document.get("order") or document
    get = order.get
    currency = get("currency")
    out: dict[str, Any] = {}
    out["id"] = _id(order["id"])
    if get("name") is not None:
        out["number"] = order["name"]
    out["status"] = _status(order)
    status = get("fulfillment_status")
    out["fulfillment_status"] = "NOT_FILLED" if status is None else _FULFILLMENT.get(str(status), "")
    lines = get("line_items")
    out["item_quantity"] = (
        _sum([line.get("quantity") for line in lines if type(line) is dict]) if type(lines) is list else 0
    )
    weight = get("total_weight")
    out["total_weight"] = {"value": weight, "units": "grms"} if weight is not None else {"units": "grms"}
    shipping_lines = get("shipping_lines")
    shipping = shipping_lines[0] if type(shipping_lines) is list and shipping_lines else None
    if shipping is not None:
        info: dict[str, Any] = {}
        for key in ("code", "title"):
            if shipping.get(key) is not None:
                info[key] = shipping[key]
        price = _money_field(shipping.get("price"), currency)
        if price is not None:
            info["price"] = price
        allocations = shipping.get("discount_allocations")
        discount = _sum([a.get("amount") for a in allocations]) if type(allocations) is list else 0
        info["discount"] = (
            {"value": discount, "currency": currency} if currency is not None else {"value": discount}
        )
        info["source"] = "Shopify"
        out["shipping_info"] = info
    for key in ("created_at", "updated_at"):
        if get(key) is not None:
            out[key] = _datetime(order[key])
    out["cancelled_at"] = _datetime(get("cancelled_at"))
    out["cancel_reason"] = get("cancel_reason")
    out["closed_at"] = _datetime(get("closed_at"))
    if currency is not None:
        out["currency"] = currency
    for key in ("shipping_address", "billing_address"):
        address = _address(get(key))
        if address is not None:
            out[key] = address
    if lines is not None:
        out["line_items"] = [_line_item(line, currency) for line in lines]
    financial: dict[str, Any] = {}
    for key in ("subtotal_price", "total_tax", "total_discounts", "total_price"):
        money = _money_field(get(key), currency)
        if money is not None:
            financial[key] = money
    for key in ("taxes_included", "financial_status"):
        if get(key) is not None:
            financial[key] = order[key]
    names = get("payment_gateway_names")
    gateway = _first(get("gateway"), None if names is None else ", ".join(n for n in names if n is not None))
    if gateway is not None:
        financial["gateway"] = gateway
    if financial:
        out["financial_details"] = financial
    customer = get("customer")
    if type(customer) is not dict:
        customer = {}
    shipping_address = get("shipping_address") or {}
    billing_address = get("billing_address") or {}
    default_address = customer.get("default_address")
    person: dict[str, Any] = {}
    for key in ("first_name", "last_name"):
        if customer.get(key) is not None:
            person[key] = customer[key]
    email = _first(customer.get("email"), get("email"), get("contact_email"))
    if email is None:
        raise ValueError("order.customer.email: required field has no value")
    person["email"] = email
    phone = _first(
        customer.get("phone"),
        get("phone"),
        default_address.get("phone") if type(default_address) is dict else None,
        billing_address.get("phone"),
        shipping_address.get("phone"),
    )
    person["phone"] = "" if phone is None else phone
    if customer.get("tags") is not None:
        person["tags"] = customer["tags"]
    address = _address(default_address)
    if address is not None:
        person["address"] = address
    out["customer"] = person
    if get("checkout_token") is not None:
        out["checkout_token"] = order["checkout_token"]
    properties = _pairs(get("note_attributes"))
    if properties is not None:
        out["properties"] = properties
    return out
