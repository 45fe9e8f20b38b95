"""Verifying a webhook: is it from the source it claims, and what are its id (the duplicate key) and topic.

Each source type checks its own signature scheme; every comparison is constant-time (``hmac.compare_digest``)
and every configured secret is tried, so two secrets are accepted while one rotates. A request that fails is
a :class:`Rejection` (401 and a reason), never an exception that escapes.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .._redact import is_sensitive_name
from ._settings import SourceSettings

# Headers kept with an accepted webhook, per source type, in their documented spelling (the mapping config reads
# them as headers."X-Shopify-Topic"). Signatures and secrets are never kept.
_KEPT = {
    "shopify": (
        "X-Shopify-Topic",
        "X-Shopify-Webhook-Id",
        "X-Shopify-Shop-Domain",
        "X-Shopify-API-Version",
        "X-Shopify-Triggered-At",
        "X-Shopify-Event-Id",
    ),
    "woocommerce": (
        "X-WC-Webhook-Topic",
        "X-WC-Webhook-Delivery-ID",
        "X-WC-Webhook-ID",
        "X-WC-Webhook-Source",
        "X-WC-Webhook-Resource",
        "X-WC-Webhook-Event",
    ),
    "bigcommerce": (),
    "generic": ("webhook-id", "webhook-timestamp"),
}
_WOO_PING = re.compile(rb"^webhook_id=[0-9]+$")


class Rejection(Exception):
    """Why a request is refused: the HTTP status, a metric label and a sentence for the sender; ``cause``:
    what the log adds for the operator, never sent (the inbox's own words: its database, what it said)."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        retry_after: float | None = None,
        *,
        close: bool = False,
        cause: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after
        # The body was left unread: the connection's framing is lost, so the answer ends it.
        self.close = close
        self.cause = cause


@dataclass(frozen=True, slots=True)
class Verified:
    webhook_id: str  # the duplicate key, unique per source
    topic: str | None
    headers: Mapping[str, str] = field(default_factory=dict)
    ping: bool = False  # WooCommerce's unsigned hello when a webhook is created: answered 200, not stored


Headers = Mapping[str, str]  # a case-insensitive view (starlette's Headers)


def verify(source: SourceSettings, headers: Headers, body: bytes, now: float) -> Verified:
    """Check one request against its source; raise :class:`Rejection` (401) when it is not authentic."""
    verifier = _VERIFIERS[source.type]
    return verifier(source, headers, body, now)


def kept_headers(source: SourceSettings, headers: Headers) -> dict[str, str]:
    names = _kept_names(
        source.type, source.keep_headers, source.id_header, source.topic_header, source.header
    )
    return {name: headers[name] for name in names if name in headers}


@functools.lru_cache(maxsize=256)
def _kept_names(
    kind: str, keep: tuple[str, ...], id_header: str | None, topic_header: str | None, secret: str | None
) -> tuple[str, ...]:
    """The headers a source keeps, decided once per source, not per request."""
    names = [*_KEPT[kind], *keep, *(name for name in (id_header, topic_header) if name)]
    return tuple(name for name in names if not is_sensitive_name(name) and name != secret)


def body_digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _hmac(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, body, hashlib.sha256).digest()


def _unsigned(header: str) -> Rejection:
    return Rejection(401, "unsigned", f"the request has no {header} header")


def _forged(header: str) -> Rejection:
    return Rejection(401, "bad_signature", f"the {header} signature does not match the body")


def _matches_base64(source: SourceSettings, given: str, message: bytes) -> bool:
    try:
        decoded = base64.b64decode(given.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    found = False
    for secret in source.secrets:  # every secret, always: the time taken says nothing about which matched
        found |= hmac.compare_digest(_hmac(secret, message), decoded)
    return found


def _shopify(source: SourceSettings, headers: Headers, body: bytes, now: float) -> Verified:
    header = "X-Shopify-Hmac-Sha256"
    given = headers.get(header)
    if not given:
        raise _unsigned(header)
    if not _matches_base64(source, given, body):
        raise _forged(header)
    webhook_id = headers.get("X-Shopify-Webhook-Id") or headers.get("X-Shopify-Event-Id") or body_digest(body)
    return Verified(webhook_id, headers.get("X-Shopify-Topic"), kept_headers(source, headers))


def _woocommerce(source: SourceSettings, headers: Headers, body: bytes, now: float) -> Verified:
    header = "X-WC-Webhook-Signature"
    given = headers.get(header)
    if not given:
        if _WOO_PING.match(body.strip()):
            return Verified(body_digest(body), None, ping=True)
        raise _unsigned(header)
    if not _matches_base64(source, given, body):
        raise _forged(header)
    webhook_id = headers.get("X-WC-Webhook-Delivery-ID") or body_digest(body)
    return Verified(webhook_id, headers.get("X-WC-Webhook-Topic"), kept_headers(source, headers))


def _bigcommerce(source: SourceSettings, headers: Headers, body: bytes, now: float) -> Verified:
    header = source.header or ""
    given = headers.get(header)
    if not given:
        raise _unsigned(header)
    found = False
    for secret in source.secrets:
        found |= hmac.compare_digest(secret, given.encode("utf-8"))
    if not found:
        raise Rejection(401, "bad_secret", f"the {header} header does not hold the configured secret")
    # BigCommerce puts the scope (topic) and a unique hash of the event in the body itself.
    scope = event_hash = None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested past Python's limit: the app refuses it next
        document = None
    if isinstance(document, dict):
        scope = document.get("scope") if isinstance(document.get("scope"), str) else None
        event_hash = document.get("hash") if isinstance(document.get("hash"), str) else None
    return Verified(event_hash or body_digest(body), scope, kept_headers(source, headers))


def _generic(source: SourceSettings, headers: Headers, body: bytes, now: float) -> Verified:
    if source.signature == "standard-webhooks":
        return _standard_webhooks(source, headers, body, now)
    header = source.header or "X-Signature"
    given = headers.get(header)
    if not given:
        raise _unsigned(header)
    if source.prefix:
        if not given.startswith(source.prefix):
            raise _forged(header)
        given = given[len(source.prefix) :]
    if source.signature == "hmac-sha256-base64":
        ok = _matches_base64(source, given, body)
    else:
        try:
            decoded = bytes.fromhex(given.strip())
        except ValueError:
            decoded = b""
        ok = False
        for secret in source.secrets:
            ok |= hmac.compare_digest(_hmac(secret, body), decoded)
    if not ok:
        raise _forged(header)
    webhook_id = (headers.get(source.id_header) if source.id_header else None) or body_digest(body)
    topic = headers.get(source.topic_header) if source.topic_header else None
    return Verified(webhook_id, topic, kept_headers(source, headers))


def standard_webhooks_key(secret: bytes) -> bytes:
    """A Standard Webhooks secret is ``whsec_`` and base64; anything else is used as raw bytes."""
    if secret.startswith(b"whsec_"):
        try:
            return base64.b64decode(secret[6:], validate=True)
        except (binascii.Error, ValueError):
            pass
    return secret


def _standard_webhooks(source: SourceSettings, headers: Headers, body: bytes, now: float) -> Verified:
    webhook_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not webhook_id or not timestamp or not signatures:
        raise Rejection(
            401, "unsigned", "Standard Webhooks need webhook-id, webhook-timestamp and webhook-signature"
        )
    if not timestamp.isdigit() or abs(now - int(timestamp)) > source.tolerance:
        raise Rejection(
            401,
            "stale_timestamp",
            f"webhook-timestamp is not within {source.tolerance:g} s of this server's clock",
        )
    message = f"{webhook_id}.{timestamp}.".encode() + body
    expected = [_hmac(standard_webhooks_key(secret), message) for secret in source.secrets]
    found = False
    for item in signatures.split():
        version, _, value = item.partition(",")
        if version != "v1":
            continue
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        for digest in expected:
            found |= hmac.compare_digest(digest, decoded)
    if not found:
        raise _forged("webhook-signature")
    topic = headers.get(source.topic_header) if source.topic_header else None
    return Verified(webhook_id, topic, kept_headers(source, headers))


_VERIFIERS: dict[str, Callable[[SourceSettings, Headers, bytes, float], Verified]] = {
    "shopify": _shopify,
    "woocommerce": _woocommerce,
    "bigcommerce": _bigcommerce,
    "generic": _generic,
}
