"""A 429's Retry-After holds the whole connection, against the real sandbox over HTTP: after the 429 no
request of that connection arrives before the time it asked for, but those already in flight; then every
event is delivered. It was honoured by the retry of the one request that got it only, while the connection's
other senders kept firing and collected more 429s."""

from __future__ import annotations

import copy
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from shipmap.connectors import Runtime, Sandbox
from test_runtime_support import BASE_CONFIG, environ, order_event, write_config

RETRY_AFTER, CONCURRENCY, EVENTS = 2, 4, 40


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize("max_rate", [None, 20.0], ids=["no-max-rate", "max-rate"])
def test_a_429_holds_every_request_of_its_connection_until_its_retry_after(
    tmp_path: Path, sandbox: Sandbox, max_rate: float | None
) -> None:
    # The first order request gets a 429 asking for 2 s; every later answer takes 0.1 s, so the other senders
    # would still be sending for a second after it, were they not held.
    sandbox.set_faults(f"schedule=429,retry-after={RETRY_AFTER},slow=1:0.1")
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
    [(told_at, endpoint, status)] = sandbox.faulted()
    assert (endpoint, status) == ("fenix.orders", 429)  # one 429: the others were held, not told again
    told = _seconds(told_at)
    arrivals = sorted(_seconds(r.received_at) for r in sandbox.requests(endpoint="fenix.orders"))
    assert len(arrivals) == EVENTS
    # Only what was already in flight when the 429 came (one request per other sender at most) arrives
    # within the hold, and just after the 429; the rest wait for the time asked (received_at is in ms).
    early = [t - told for t in arrivals if told <= t < told + RETRY_AFTER - 0.002]
    assert len(early) <= CONCURRENCY - 1, early
    assert all(delay < 0.5 for delay in early), early
    after = [t for t in arrivals if t >= told + RETRY_AFTER - 0.002]
    assert len(after) >= EVENTS - CONCURRENCY  # the 429's own retry and the held ones
