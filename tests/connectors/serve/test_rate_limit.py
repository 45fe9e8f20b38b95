"""A source's token bucket, on a clock the test moves: its share when several serve processes take webhooks
into one PostgreSQL inbox (the processes themselves: ``test_serve_postgres.py``)."""

from __future__ import annotations

import pytest
from shipmap.connectors._serve._app import TokenBucket
from shipmap.connectors._serve._settings import RateLimit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def taken(bucket: TokenBucket, requests: int) -> int:
    return sum(bucket.take() == 0.0 for _ in range(requests))


@pytest.mark.parametrize(
    ("per_second", "burst", "processes", "at_once", "after_one_second"),
    [
        (10.0, 20, 1, 20, 10),
        (10.0, 20, 2, 10, 5),
        (10.0, 20, 4, 5, 2),  # 2.5 tokens a second: two whole requests
        (10.0, 3, 4, 1, 1),  # a share of the burst below one request is still one
    ],
)
def test_each_process_takes_its_share_of_rate_and_burst(
    per_second: float, burst: int, processes: int, at_once: int, after_one_second: int
) -> None:
    clock = Clock()
    bucket = TokenBucket(RateLimit(per_second, burst), clock)
    bucket.share(processes)
    assert taken(bucket, 100) == at_once
    clock.now += 1.0
    assert taken(bucket, 100) == after_one_second


def test_a_share_that_changes_keeps_the_time_already_passed_at_the_old_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(RateLimit(10.0, 20), clock)
    assert taken(bucket, 100) == 20  # empty
    clock.now += 1.0  # 10 tokens back at the whole rate
    bucket.share(2)  # then a second process comes: at most its half of the burst is kept
    assert taken(bucket, 100) == 10
    clock.now += 1.0
    assert taken(bucket, 100) == 5
    bucket.share(1)  # alone again: the whole rate, the burst fills up from where it is
    clock.now += 1.0
    assert taken(bucket, 100) == 10
    wait = bucket.take()
    assert wait == pytest.approx(0.1)  # one token at 10 a second
