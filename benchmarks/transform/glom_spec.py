"""mappings/shopify/order.yaml written as a glom spec.

glom walks Python data with a declarative spec and calls Python for anything else, so the conversions (ids,
money, date-times, the PARTIALLY_CANCELLED rule) are the hand-written version's own helpers: glom is timed on
its traversal, not on a second implementation of them. A value that is null or missing is left out with
``Coalesce(..., skip=None, default=SKIP)``, as shipmap leaves it out.
"""

from __future__ import annotations

from typing import Any

from glom import SKIP, A, Coalesce, S, Val, glom

from transform.hand import _FULFILLMENT, _address, _datetime, _first, _id, _money, _pairs, _status, _sum


def _opt(*specs: Any) -> Coalesce:
    """The first of ``specs`` that gives a value other than null; the key is left out when none does."""
    return Coalesce(*specs, skip=(None,), default=SKIP)


def _nonempty(value: dict[str, Any]) -> dict[str, Any] | None:
    return value or None


def _fulfillment(value: Any) -> str:
    return "NOT_FILLED" if value is None else _FULFILLMENT.get(str(value), "")


def _quantities(lines: Any) -> Any:
    return _sum([line.get("quantity") for line in lines if type(line) is dict]) if type(lines) is list else 0


def _first_line(lines: Any) -> Any:
    return lines[0] if type(lines) is list and lines else None


def _required(value: Any) -> Any:
    if value is None:
        raise ValueError("required field has no value")
    return value


def _gateway(order: dict[str, Any]) -> Any:
    names = order.get("payment_gateway_names")
    return _first(
        order.get("gateway"), None if names is None else ", ".join(n for n in names if n is not None)
    )


def _phone(order: dict[str, Any]) -> Any:
    customer = order.get("customer") or {}
    default = customer.get("default_address") or {}
    found = _first(
        customer.get("phone"),
        order.get("phone"),
        default.get("phone"),
        (order.get("billing_address") or {}).get("phone"),
        (order.get("shipping_address") or {}).get("phone"),
    )
    return "" if found is None else found


def _email(order: dict[str, Any]) -> Any:
    customer = order.get("customer") or {}
    return _required(_first(customer.get("email"), order.get("email"), order.get("contact_email")))


_CURRENCY = _opt(S["order"]["currency"])


def _amount(path: str, convert: Any = _money) -> Coalesce:
    return _opt(({"value": _opt((path, convert)), "currency": _CURRENCY}, _nonempty))


_LINE_ITEM = {
    "sku": Coalesce("sku", skip=(None,), default=""),
    "quantity": _opt("quantity"),
    "title": _opt("title"),
    "name": _opt("name"),
    "product_id": _opt(("product_id", _id)),
    "variant_id": _opt(("variant_id", _id)),
    "variant_title": _opt("variant_title"),
    "vendor": _opt("vendor"),
    "taxable": _opt("taxable"),
    "gift_card": _opt("gift_card"),
    "weight": {"value": _opt("grams"), "units": Val("grms")},
    "price": _amount("price"),
    "image_url": Val(""),
    "properties": _opt(("properties", _pairs)),
}

SPEC = (
    lambda document: document.get("order") or document,
    A.order,
    {
        "id": ("id", _id, _required),
        "number": _opt("name"),
        "status": _status,
        "fulfillment_status": (Coalesce("fulfillment_status", default=None), _fulfillment),
        "item_quantity": (Coalesce("line_items", default=None), _quantities),
        "total_weight": {"value": _opt("total_weight"), "units": Val("grms")},
        "shipping_info": _opt(
            (
                Coalesce("shipping_lines", default=None),
                _first_line,
                {
                    "code": _opt("code"),
                    "title": _opt("title"),
                    "price": _amount("price"),
                    "discount": {
                        "value": Coalesce(
                            ("discount_allocations", [Coalesce("amount", default=None)], _sum), default=0
                        ),
                        "currency": _CURRENCY,
                    },
                    "source": Val("Shopify"),
                },
            )
        ),
        "created_at": _opt(("created_at", _datetime)),
        "updated_at": _opt(("updated_at", _datetime)),
        "cancelled_at": Coalesce(("cancelled_at", _datetime), default=None),
        "cancel_reason": Coalesce("cancel_reason", default=None),
        "closed_at": Coalesce(("closed_at", _datetime), default=None),
        "currency": _CURRENCY,
        "shipping_address": _opt(("shipping_address", _address)),
        "billing_address": _opt(("billing_address", _address)),
        "line_items": _opt(("line_items", [_LINE_ITEM])),
        "financial_details": _opt(
            (
                {
                    "subtotal_price": _amount("subtotal_price"),
                    "total_tax": _amount("total_tax"),
                    "total_discounts": _amount("total_discounts"),
                    "total_price": _amount("total_price"),
                    "taxes_included": _opt("taxes_included"),
                    "financial_status": _opt("financial_status"),
                    "gateway": _opt(_gateway),
                },
                _nonempty,
            )
        ),
        "customer": {
            "first_name": _opt("customer.first_name"),
            "last_name": _opt("customer.last_name"),
            "email": _email,
            "phone": _phone,
            "tags": _opt("customer.tags"),
            "address": _opt(("customer.default_address", _address)),
        },
        "checkout_token": _opt("checkout_token"),
        "properties": _opt(("note_attributes", _pairs)),
    },
)


def shopify_order(document: dict[str, Any]) -> Any:
    return glom(document, SPEC)
