"""How long a retry waits: the backoff policy's delay and a server's ``Retry-After``."""

from __future__ import annotations

import email.utils
import random
import re
import time

from .._config import RetryPolicy

_DELTA_SECONDS = re.compile(r"[0-9]{1,10}")


def backoff_delay(
    policy: RetryPolicy, attempt: int, rng: random.Random, retry_after: float | None = None
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    Exponential (base * 2**(attempt-1), capped), then jittered: ``full`` draws from [0, d], ``equal`` from
    [d/2, d], ``none`` waits d. A Retry-After from the server replaces it, capped at ``retry_after_cap``.
    """
    if retry_after is not None:
        return max(0.0, min(retry_after, policy.retry_after_cap))
    delay = min(policy.backoff_cap, policy.first_backoff * (2.0 ** (attempt - 1)))
    if policy.jitter == "full":
        return rng.uniform(0.0, delay)
    if policy.jitter == "equal":
        return delay / 2 + rng.uniform(0.0, delay / 2)
    return delay


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds (RFC 9110 10.2.3): ASCII delta-seconds or an HTTP date. None when absent or
    anything else (``²`` is a digit to ``str.isdigit``, not to HTTP); the backoff then decides."""
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
