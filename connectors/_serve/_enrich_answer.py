"""What a source API's answer to an enrichment GET says: the document it holds (at most ``MAX_RESPONSE``
bytes of JSON, nested at most ``_MAX_NESTING`` deep: :func:`document`), or how long it asks the GETs to wait
(:func:`asked_wait`). The ``Enricher`` (``_enrich``) sends the GETs and reads the answers up to the cap."""

from __future__ import annotations

import json
from typing import Any

import httpx

from .._deliver._retry_timing import parse_retry_after
from ._enrich_errors import EnrichmentError

MAX_RESPONSE = 8 * 1024 * 1024
_MAX_NESTING = 200  # arrays and objects in one another, at most, in a fetched document
_RESET_MS = "X-Rate-Limit-Time-Reset-Ms"  # BigCommerce: milliseconds until the store's quota refreshes
_MS_DIGITS = 10


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest in ``value`` more than ``limit`` deep (without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def asked_wait(status: int, headers: httpx.Headers) -> float | None:
    """The seconds the API asked us to wait: ``Retry-After``, else, on a 429, BigCommerce's
    ``X-Rate-Limit-Time-Reset-Ms`` (milliseconds until the store's quota refreshes; on a 2xx it is only
    news). None when it said nothing we read (the backoff then decides)."""
    asked = parse_retry_after(headers.get("Retry-After"))
    if asked is not None or status != 429:
        return asked
    reset = headers.get(_RESET_MS, "").strip()
    if reset.isascii() and reset.isdigit() and len(reset) <= _MS_DIGITS:
        return int(reset) / 1000
    return None


def document(content: bytes | None, status: int, path: str) -> Any:
    """The document of a 2xx answer to ``GET path`` (``content``: its body read up to one byte past the cap,
    None when refused unread), None for none (a 204). EnrichmentError when it is too large, not JSON or nested
    too deep."""
    if content is None or len(content) > MAX_RESPONSE:
        raise EnrichmentError(f"GET {path}: the response is larger than {MAX_RESPONSE} bytes")
    if status == 204 or not content:
        return None  # BigCommerce answers 204 for an order without shipments
    try:
        decoded = json.loads(content)
    except ValueError as error:
        raise EnrichmentError(f"GET {path}: the response is not JSON ({error})") from None
    except RecursionError:  # arrays or objects nested past the parser's depth
        too_deep = True
    else:
        too_deep = _deeper_than(decoded, _MAX_NESTING)
    if too_deep:
        # No order looks like that, and the service writes each document back (to the inbox, to the
        # journal) on stacks the parser's did not measure: refused here, with the reason, not a crash.
        raise EnrichmentError(f"GET {path}: the response is nested more than {_MAX_NESTING} levels deep")
    return decoded
