"""A 429's or 503's Retry-After holds the whole connection, against the real sandbox over HTTP: after the
answer no request of that connection arrives before the time it asked for, but those already in flight; then
every event is delivered, once. It was honoured by the retry of the one request that got it only, while the
connection's other senders kept firing and collected more 429s. A 503's Retry-After (in seconds, or as an
HTTP date) holds as a 429's does."""

from __future__ import annotations

import copy
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from shipmap.connectors import Runtime, Sandbox
from test_runtime_support import BASE_CONFIG, environ, order_event, write_config

RETRY_AFTER, CONCURRENCY, EVENTS = 2, 4, 40
# How the first order request is told to wait, and the status it gets.
TOLD = {
    "429": (f"schedule=429,retry-after={RETRY_AFTER}", 429),
    "503": (f"schedule=503:{RETRY_AFTER}", 503),
    "503-http-date": (f"schedule=503:{RETRY_AFTER},retry-after-date=true", 503),
}


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize("told", TOLD)
@pytest.mark.parametrize("max_rate", [None, 20.0], ids=["no-max-rate", "max-rate"])
def test_a_429_or_503_holds_every_request_of_its_connection_until_its_retry_after(
    tmp_path: Path, sandbox: Sandbox, max_rate: float | None, told: str
) -> None:
    # The first order request gets a 429 or a 503 asking for 2 s; every later answer takes 0.1 s, so the other
    # senders would still be sending for a second after it, were they not held.
    spec, status_told = TOLD[told]
    sandbox.set_faults(f"{spec},slow=1:0.1")
    changes: dict[str, Any] = {"delivery": {"concurrency": CONCURRENCY, "retry": {"retry_after_cap": "5s"}}}
    if max_rate is not None:
        changes["connections"] = copy.deepcopy(BASE_CONFIG["connections"])
        changes["connections"]["fenix"]["max_rate"] = max_rate
    config = write_config(tmp_path, sandbox.url, **changes)
    summary = Runtime.from_config(config, environ=environ(sandbox.url)).run(
        [order_event(n) for n in range(EVENTS)]
    )

    stats = summary.get("acme-orders.order")
    assert (stats.delivered, stats.dead) == (EVENTS, 0)  # nothing lost, none dead
    [(told_at, endpoint, status, _)] = sandbox.faulted()
    assert (endpoint, status) == (
        "fenix.orders",
        status_told,
    )  # told once: the others were held, not told again
    told_time = _seconds(told_at)
    accepted = sandbox.requests(endpoint="fenix.orders")
    # Each order delivered once, the one that was told to wait included.
    assert sorted(request.body["id"] for request in accepted) == sorted(str(1000 + n) for n in range(EVENTS))
    arrivals = sorted(_seconds(r.received_at) for r in accepted)
    # Only what was already in flight when the answer came (one request per other sender at most) arrives
    # within the hold, and just after it; the rest wait for the time asked (received_at is in ms).
    early = [t - told_time for t in arrivals if told_time <= t < told_time + RETRY_AFTER - 0.002]
    assert len(early) <= CONCURRENCY - 1, early
    assert all(delay < 0.5 for delay in early), early
    after = [t for t in arrivals if t >= told_time + RETRY_AFTER - 0.002]
    assert len(after) >= EVENTS - CONCURRENCY  # the told request's retry and the held ones
