"""Delivery: one pooled ``httpx.AsyncClient`` per connection, and the retry policy.

Retried: network errors, timeouts, 429 and 5xx (and a login that failed that way), with exponential backoff
and jitter; a ``Retry-After`` header is honoured up to a cap. A 401 on a session connection is retried too:
the auth flow already logged in again and retried once, so a second 401 means the new token was revoked in
the meantime. Not retried: every other non-2xx status, a refused login. What is not delivered comes back as an Outcome with a redacted, truncated response excerpt.
"""

from __future__ import annotations

import asyncio
import email.utils
import http.cookiejar
import json
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from ._auth import ShipmapAuth
from ._config import Connection, DeliverySettings, RetryPolicy
from ._errors import AuthError
from ._redact import Redactor, get_logger
from ._transport import AiohttpTransport, Sender

Sleep = Callable[[float], Awaitable[None]]


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

    def body(self) -> bytes:
        if self.content is not None:
            return self.content
        return encode_payload(self.payload).encode("utf-8")


def encode_payload(payload: Any) -> str:
    """A payload's JSON text as it goes on the wire (and into the journal): compact, UTF-8 kept, strict
    (ValueError for NaN or an infinity, which no JSON parser takes)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True, slots=True)
class Outcome:
    delivered: bool
    status: int | None
    attempts: int
    latency: float  # seconds from the first attempt to the final answer, backoff included
    reason: str | None = None
    response_excerpt: str | None = None


def backoff_delay(
    policy: RetryPolicy, attempt: int, rng: random.Random, retry_after: float | None = None
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    Exponential (base * 2**(attempt-1), capped), then jittered: ``full`` draws from [0, d], ``equal`` from
    [d/2, d], ``none`` waits d. A Retry-After from the server replaces it, capped at ``retry_after_cap``.
    """
    if retry_after is not None:
        return max(0.0, min(retry_after, policy.retry_after_cap))
    delay = min(policy.backoff_cap, policy.backoff_base * (2.0 ** (attempt - 1)))
    if policy.jitter == "full":
        return rng.uniform(0.0, delay)
    if policy.jitter == "equal":
        return delay / 2 + rng.uniform(0.0, delay / 2)
    return delay


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date. None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Deliverer:
    """Sends OutboundRequests with retries. Use as ``async with Deliverer(...) as deliverer``."""

    def __init__(
        self,
        connections: Mapping[str, Connection],
        auths: Mapping[str, ShipmapAuth],
        settings: DeliverySettings,
        redactor: Redactor,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
        on_retry: Callable[[OutboundRequest, int, str, float], None] | None = None,
    ) -> None:
        self.connections = connections
        self.auths = auths
        self.settings = settings
        self.redactor = redactor
        self._transport = transport
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._on_retry = on_retry
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._senders: dict[str, Sender] = {}
        self._log = get_logger("delivery", redactor)

    async def __aenter__(self) -> Deliverer:
        limit = self.settings.concurrency
        for name, connection in self.connections.items():
            timeout = (connection.timeout or self.settings.timeout).httpx()
            limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
            # httpx's client over aiohttp's pool and parser, which cost half the CPU (see _transport.py).
            transport = self._transport or AiohttpTransport(limits=limits)
            client = httpx.AsyncClient(
                auth=self.auths[name],
                headers=dict(connection.headers),
                # The APIs authenticate with headers: a cookie a server sets is never sent back, on any path.
                cookies=http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[])),
                timeout=timeout,
                limits=limits,
                transport=transport,
                follow_redirects=False,
            )
            self._clients[name] = client
            self._senders[name] = Sender(client, self.auths[name], transport)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        clients, self._clients = self._clients, {}
        self._senders = {}
        for client in clients.values():
            await client.aclose()

    async def send(self, request: OutboundRequest) -> Outcome:
        sender = self._senders[request.connection]
        policy = self.settings.retry
        limit = self.settings.response_excerpt_chars
        body = request.body()
        started = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            status: int | None = None
            excerpt: str | None = None
            try:
                response = await sender.send(request.method, request.url, body, request.headers)
                try:
                    await response.aread()
                finally:
                    await response.aclose()
            except AuthError as error:
                status, retryable = error.status, error.retryable
                reason = self.redactor.redact(error.message)
            except httpx.HTTPError as error:
                # Connect/read/write errors, timeouts, protocol errors: the request may have landed or not.
                retryable = isinstance(error, httpx.TransportError)
                reason = f"{type(error).__name__}: {self.redactor.redact(str(error)) or 'no detail'}"
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return Outcome(True, status, attempt, time.perf_counter() - started)
                retryable = status == 429 or status >= 500
                retryable = retryable or (status == 401 and self.auths[request.connection].retry_unauthorized)
                reason = f"HTTP {status} {response.reason_phrase}".rstrip()
                excerpt = self.redactor.excerpt(response.text, limit) if limit else None
                if retryable:
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if not retryable or attempt >= policy.max_attempts:
                if retryable:
                    reason = f"gave up after {attempt} attempts; last: {reason}"
                return Outcome(False, status, attempt, time.perf_counter() - started, reason, excerpt)
            delay = backoff_delay(policy, attempt, self._rng, retry_after)
            self._log.info(
                "%s: attempt %d failed (%s); retrying in %.2fs",
                request.label,
                attempt,
                reason,
                delay,
                extra={"key": request.key, "target": request.label.split(" ")[0], "attempt": attempt},
            )
            if self._on_retry is not None:
                self._on_retry(request, attempt, reason, delay)
            await self._sleep(delay)
