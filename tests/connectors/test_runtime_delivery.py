"""The retry policy's arithmetic, bounded concurrency, and errors that stop a run."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from shipmap.connectors import (
    AuthSettings,
    Connection,
    DeliverySettings,
    JournalSettings,
    MappingRoute,
    RetryPolicy,
    Runtime,
    RuntimeConfig,
    Sandbox,
)
from shipmap.connectors._deliver._retry_timing import backoff_delay, parse_retry_after
from shipmap.connectors._store._journal import Journal
from shipmap.engine import SourceError, load_mapping
from test_runtime_support import FIXTURES, order_event, write_config


def test_backoff_is_exponential_capped_and_jittered() -> None:
    rng = random.Random(7)
    plain = RetryPolicy(backoff_base=0.5, backoff_cap=3.0, jitter="none")
    assert [backoff_delay(plain, n, rng) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    full = RetryPolicy(backoff_base=0.5, backoff_cap=3.0, jitter="full")
    draws = [backoff_delay(full, 3, rng) for _ in range(200)]
    assert all(0 <= d <= 2.0 for d in draws) and max(draws) > 1.5 and min(draws) < 0.5
    equal = RetryPolicy(backoff_base=0.5, backoff_cap=3.0, jitter="equal")
    assert all(1.0 <= backoff_delay(equal, 3, rng) <= 2.0 for _ in range(200))


def test_retry_after_wins_over_backoff_up_to_its_cap() -> None:
    policy = RetryPolicy(backoff_base=0.01, retry_after_cap=5.0)
    assert backoff_delay(policy, 1, random.Random(), retry_after=2.0) == 2.0
    assert backoff_delay(policy, 1, random.Random(), retry_after=120.0) == 5.0


def test_retry_after_parses_seconds_and_http_dates() -> None:
    assert parse_retry_after("7") == 7.0
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    parsed = parse_retry_after(date, now=now)
    assert parsed is not None and 29 <= parsed <= 31
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def mock_runtime(handler: Any, concurrency: int) -> Runtime:
    config = RuntimeConfig(
        connections=(Connection("fenix", "fenix", "http://fenix.invalid", AuthSettings()),),
        mappings=(MappingRoute(load_mapping(str(FIXTURES / "orders.yaml")), body="payload"),),
        delivery=DeliverySettings(concurrency=concurrency),
        journal=JournalSettings(path=None),
    )
    return Runtime(config, transport=httpx.MockTransport(handler))


def test_concurrency_bounds_the_requests_in_flight() -> None:
    in_flight = 0
    peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return httpx.Response(201)

    summary = mock_runtime(handler, 3).run([order_event(n) for n in range(30)])
    assert summary.delivered == 30
    assert peak == 3


def test_an_input_that_fails_midway_stops_the_run_with_its_own_error(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    def events() -> Iterator[Any]:
        yield order_event(1)
        yield order_event(2)
        raise SourceError("the disk went away")

    runtime = Runtime.from_config(
        write_config(tmp_path, sandbox.url),
        environ={
            "SANDBOX_URL": sandbox.url,
            "FENIX_USERNAME": "demo-user",
            "FENIX_PASSWORD": "demo-pass",
            "FENIX_API_KEY": "demo-api-key",
            "DG_API_KEY": "demo-key",
            "DG_API_SECRET": "demo-secret",
        },
    )
    with pytest.raises(SourceError, match="the disk went away"):
        runtime.run(events())
    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        assert journal.counts().get("dead", 0) == 0  # nothing was wrongly dead-lettered
    assert runtime.run([order_event(1), order_event(2)]).ok  # and the journal is usable again
    assert {r.order_id for r in sandbox.requests(endpoint="fenix.orders")} == {"1001", "1002"}


def test_a_redirect_is_not_followed_and_is_dead_lettered() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "http://elsewhere.invalid/"})

    summary = mock_runtime(handler, 1).run([order_event(1)])
    assert summary.dead == 1 and summary.get("acme-orders.order").attempts == 1
