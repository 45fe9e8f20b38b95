"""Signature schemes, case by case (no server: ``verify`` is a pure function of settings, headers and body)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from shipmap.connectors._serve import Rejection, SourceSettings, verify
from starlette.datastructures import Headers

BODY = b'{"id": 1}'
NOW = 1_700_000_000.0


def _hmac(secret: bytes, message: bytes) -> bytes:
    return hmac.new(secret, message, hashlib.sha256).digest()


def _source(kind: str, **changes: object) -> SourceSettings:
    fields: dict[str, object] = {"name": "s", "type": kind, "secrets": (b"new-secret", b"old-secret")}
    fields.update(changes)
    return SourceSettings(**fields)  # type: ignore[arg-type]


def _check(source: SourceSettings, headers: dict[str, str], body: bytes = BODY) -> str:
    try:
        return "ok:" + verify(source, Headers(headers), body, NOW).webhook_id
    except Rejection as rejection:
        return f"{rejection.status}:{rejection.reason}"


GENERIC_HEX = _source("generic", header="X-Hub-Signature-256", prefix="sha256=", id_header="X-Delivery")
GENERIC_B64 = _source("generic", header="X-Signature", signature="hmac-sha256-base64")
STANDARD = _source("generic", signature="standard-webhooks", secrets=(b"whsec_" + base64.b64encode(b"k1"),))


@pytest.mark.parametrize(
    ("source", "headers", "expected"),
    [
        (
            GENERIC_HEX,
            {"X-Hub-Signature-256": "sha256=" + _hmac(b"new-secret", BODY).hex(), "X-Delivery": "d1"},
            "ok:d1",
        ),
        (GENERIC_HEX, {"X-Hub-Signature-256": "sha256=" + _hmac(b"old-secret", BODY).hex()}, "ok:sha256:"),
        (
            GENERIC_HEX,
            {"X-Hub-Signature-256": _hmac(b"new-secret", BODY).hex()},
            "401:bad_signature",
        ),  # no prefix
        (GENERIC_HEX, {"X-Hub-Signature-256": "sha256=zz"}, "401:bad_signature"),  # not hex
        (GENERIC_HEX, {}, "401:unsigned"),
        (GENERIC_B64, {"X-Signature": base64.b64encode(_hmac(b"new-secret", BODY)).decode()}, "ok:sha256:"),
        (GENERIC_B64, {"X-Signature": base64.b64encode(_hmac(b"third", BODY)).decode()}, "401:bad_signature"),
        (GENERIC_B64, {"X-Signature": "%%%"}, "401:bad_signature"),
        (
            STANDARD,
            {
                "webhook-id": "msg_1",
                "webhook-timestamp": str(int(NOW)),
                "webhook-signature": "v1,bad v1,"
                + base64.b64encode(_hmac(b"k1", f"msg_1.{int(NOW)}.".encode() + BODY)).decode(),
            },
            "ok:msg_1",
        ),
        (
            STANDARD,
            {
                "webhook-id": "msg_1",
                "webhook-timestamp": str(int(NOW) - 301),
                "webhook-signature": "v1,"
                + base64.b64encode(_hmac(b"k1", f"msg_1.{int(NOW) - 301}.".encode() + BODY)).decode(),
            },
            "401:stale_timestamp",
        ),
        (
            STANDARD,  # signed for another id: the id is part of what is signed
            {
                "webhook-id": "msg_2",
                "webhook-timestamp": str(int(NOW)),
                "webhook-signature": "v1,"
                + base64.b64encode(_hmac(b"k1", f"msg_1.{int(NOW)}.".encode() + BODY)).decode(),
            },
            "401:bad_signature",
        ),
        (STANDARD, {"webhook-id": "msg_1"}, "401:unsigned"),
    ],
)
def test_generic_signatures(source: SourceSettings, headers: dict[str, str], expected: str) -> None:
    assert _check(source, headers).startswith(expected)


def test_shopify_takes_either_secret_during_a_rotation_and_keeps_no_signature() -> None:
    source = _source("shopify")
    for secret in (b"new-secret", b"old-secret"):
        headers = Headers({"X-Shopify-Hmac-Sha256": base64.b64encode(_hmac(secret, BODY)).decode(),
                           "X-Shopify-Topic": "orders/create", "X-Shopify-Webhook-Id": "w1"})  # fmt: skip
        verified = verify(source, headers, BODY, NOW)
        assert (verified.webhook_id, verified.topic) == ("w1", "orders/create")
        assert verified.headers == {"X-Shopify-Topic": "orders/create", "X-Shopify-Webhook-Id": "w1"}


def test_bigcommerce_secret_header_and_the_topic_and_id_from_the_body() -> None:
    source = _source("bigcommerce", header="X-Shipmap-Secret")
    body = b'{"scope": "store/order/created", "hash": "abc", "data": {"id": 1}}'
    verified = verify(source, Headers({"X-Shipmap-Secret": "old-secret"}), body, NOW)
    assert (verified.webhook_id, verified.topic, verified.headers) == ("abc", "store/order/created", {})
    assert _check(source, {"X-Shipmap-Secret": "new-secreT"}, body) == "401:bad_secret"
