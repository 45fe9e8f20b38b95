"""What one delivery sends and what it ends with: :class:`OutboundRequest`, its payload's wire text
(:func:`encode_payload`, the journal's text too) and :class:`Outcome`; and the cookie jar a client keeps
(none)."""

from __future__ import annotations

import http.cookiejar
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shipmap.engine import _jsontext


@dataclass(frozen=True, slots=True)
class OutboundRequest:
    """A request to send: the connection's own headers and auth are added by its client."""

    connection: str
    method: str
    url: str
    payload: Any
    headers: Mapping[str, str]
    label: str = ""  # for logs: mapping.target and key
    content: bytes | None = None  # the payload already encoded (the runtime encodes each payload once)
    key: str = ""  # the delivery's idempotency key, for the log's event fields
    tried: int = 0  # attempts earlier runs made that count towards max_attempts (the journal row's)

    def body(self) -> bytes:
        if self.content is not None:
            return self.content
        return encode_payload(self.payload).encode("utf-8")


def refusing_cookies() -> http.cookiejar.CookieJar:
    """A client's cookie jar that keeps none. The APIs authenticate with headers: a cookie a server sets is
    never sent back, on any path, and a long-running client's jar does not grow with the URLs it visits."""
    return http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


def encode_payload(payload: Any, *, plain: bool = False) -> str:
    """A payload's JSON text as it goes on the wire (and into the journal): compact, UTF-8 kept, strict
    (ValueError for NaN or an infinity, which no JSON parser takes). The same text whichever encoder writes
    it (``engine._jsontext``; ``plain``: the caller knows the payload holds JSON's own types only, numbers
    finite)."""
    data = _jsontext.dumps(payload, plain=plain)
    if data is not None:
        return data.decode("utf-8")
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True, slots=True)
class Outcome:
    delivered: bool
    status: int | None
    attempts: int
    latency: float  # seconds from the first attempt to the final answer, backoff included
    reason: str | None = None
    response_excerpt: str | None = None
    parked: bool = False  # the breaker stayed open past outage_wait: left pending, not dead
    # The run ended while it waited out a backoff or a Retry-After: left pending, the next run goes on with it.
    interrupted: bool = False
    # Of ``attempts``, those that count towards max_attempts: an interrupted or a parked one's are kept.
    counted: int = 0
    # An interrupted one's: when the wait it was cut short in ends (epoch seconds); and the failure it retries
    # (a parked one's too: its last failure before the outage).
    not_before: float | None = None
    failed: str = ""
