"""Three ``shipmap run`` workers on one PostgreSQL journal share one max_rate and one circuit breaker per
connection (issue 16): the sandbox sees the configured rate, not three times it, and an endpoint that is down
gets one breaker opening and one probe at a time, not one per worker. Assertions are on counts and on the
times the sandbox recorded, never on how long anything took."""

from __future__ import annotations

import copy
import itertools
import json
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from shipmap.connectors import EXIT_HELD, EXIT_OUTAGE, Journal, Sandbox
from shipmap.connectors._store._breaker_pg import breaker_row

sys.path.insert(0, str(Path(__file__).parents[1] / "connectors"))
from test_runtime_support import BASE_CONFIG, FIXTURES, order_event, write_config

CLI = [sys.executable, "-c", "import sys; from shipmap.connectors._cli import main; sys.exit(main())"]
WORKERS = 3
CONCURRENCY = 2


def start_workers(tmp_path: Path, events: int, **config: Any) -> list[tuple[subprocess.Popen[bytes], Path]]:
    inputs = tmp_path / "events.ndjson"
    inputs.write_text("".join(json.dumps(order_event(n)) + "\n" for n in range(events)))
    started = []
    for number in range(WORKERS):
        log = tmp_path / f"worker{number}.log"
        command = [*CLI, "run", str(tmp_path / "shipmap.yaml"), "--input", str(inputs), "--no-progress"]
        process = subprocess.Popen(
            [*command, "--workers", "0", "-v"],
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
        )
        started.append((process, log))
    return started


def finish(workers: list[tuple[subprocess.Popen[bytes], Path]]) -> tuple[list[int], str]:
    try:
        codes = [process.wait(timeout=180) for process, _ in workers]
    finally:
        for process, _ in workers:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    return codes, "\n".join(log.read_text(encoding="utf-8", errors="replace") for _, log in workers)


def fenix_config(tmp_path: Path, url: str, postgres_url: str, lease: str = "10s", **fenix: Any) -> None:
    connections = copy.deepcopy(BASE_CONFIG["connections"])
    connections["fenix"].update(fenix)
    write_config(
        tmp_path,
        url,
        connections=connections,
        mappings=[{"mapping": str(FIXTURES / "orders.yaml"), "topic": "orders/create"}],
        delivery={"concurrency": CONCURRENCY},
        journal={"url": postgres_url, "lease": lease},
    )


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_three_workers_keep_to_one_shared_max_rate(
    tmp_path: Path, sandbox_factory: Callable[..., Sandbox], postgres_url: str
) -> None:
    rate, events = 20.0, 80
    # The limiter spaces request starts one interval apart, with no burst. What the sandbox records is when
    # each request arrived, which a loaded machine may delay: arrivals may bunch by up to ``slack`` slots (half
    # a second), which is still a third of what three unshared limiters would let through in any second.
    slack = rate / 2
    sandbox = sandbox_factory()
    fenix_config(tmp_path, sandbox.url, postgres_url, max_rate=rate)
    codes, logs = finish(start_workers(tmp_path, events))
    assert codes == [0] * WORKERS, logs[-3000:]
    orders = sandbox.requests(endpoint="fenix.orders")
    assert sorted(r.order_id for r in orders) == sorted(str(1000 + n) for n in range(events))  # each once
    times = [seconds(r.received_at) for r in orders]
    worst = max(
        j - i - rate * (times[j] - times[i]) for i in range(len(times)) for j in range(i + 1, len(times))
    )
    assert worst <= slack, f"{worst:.1f} requests more than {rate:g}/s allows in some window"
    span = times[-1] - times[0]
    assert events - 1 <= rate * span + slack  # the whole run: 80 requests took at least ~3.5 s of slots
    with Journal(postgres_url, readonly=True) as journal:
        assert journal.counts() == {"delivered": events}


def test_an_endpoint_down_opens_one_shared_breaker_and_probes_are_not_multiplied(
    tmp_path: Path, sandbox_factory: Callable[..., Sandbox], postgres_url: str
) -> None:
    failures, cooldown, cap, outage_wait, events = 3, 1.0, 2.0, 5.0, 12
    sandbox = sandbox_factory(faults="5xx=1")  # every order request is answered with a 5xx
    breaker = {"failures": failures, "cooldown": f"{cooldown}s", "cooldown_cap": f"{cap}s",
               "outage_wait": f"{outage_wait}s"}  # fmt: skip
    # A worker that gives up leaves its deliveries pending under its lease; the workers still running take
    # them over when it expires, and wait for the same breaker: more probes, still one at a time.
    fenix_config(tmp_path, sandbox.url, postgres_url, lease="3s", breaker=breaker)
    codes, logs = finish(start_workers(tmp_path, events))
    # A worker that parked deliveries exits 9; one whose input's deliveries the others held to the end of its
    # wait exits 10 (they were still pending); one that found nothing pending elsewhere has nothing owed.
    assert set(codes) <= {0, EXIT_OUTAGE, EXIT_HELD} and EXIT_OUTAGE in codes, (codes, logs[-3000:])
    assert logs.count("circuit breaker open after") == 1, logs[-3000:]  # opened once, by one worker
    with psycopg.connect(postgres_url) as db:
        row = db.execute(
            "SELECT opened, probes, opened_at FROM connection_state WHERE name = %s",
            (breaker_row("fenix", sandbox.url),),  # fenix's breaker at the base_url the workers send to
        ).fetchone()
    assert row is not None
    opened, probes, opened_at = row
    assert opened == 1
    hits = sorted(seconds(f.received_at) for f in sandbox.faulted() if f.endpoint == "fenix.orders")
    # Before it opened: the failures that opened it, and what the workers had in flight or had admitted
    # before they saw it open (at most two per concurrent sender).
    before = [t for t in hits if t <= opened_at + cooldown / 2]
    assert failures <= len(before) <= failures + 2 * WORKERS * CONCURRENCY
    # After: probes only, one at a time across the workers: the first a cooldown after it opened, each
    # other one the doubled cooldown (the cap) after the last, as one breaker's schedule, where three
    # unshared breakers would have probed three times as often.
    after = [t for t in hits if t > opened_at + cooldown / 2]
    assert len(after) == probes >= 1
    assert after[0] - opened_at >= cooldown - 0.01
    gaps = [b - a for a, b in itertools.pairwise(after)]
    assert all(gap >= cap - 0.01 for gap in gaps), gaps
    with Journal(postgres_url, readonly=True) as journal:
        assert journal.counts() == {"pending": events}  # nothing dead-lettered: left for the next run


@pytest.fixture(autouse=True)
def _posix_only() -> None:
    if sys.platform == "win32":
        pytest.skip("worker processes as in production: POSIX")
