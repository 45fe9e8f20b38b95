"""Many workers on one PostgreSQL journal: a worker stopped (SIGSTOP) past its lease, whose deliveries another
worker takes over, wakes up and answers late; the journal stays exactly as the other worker left it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from shipmap.connectors import Journal, Sandbox
from test_runtime_support import order_event, write_config

CLI = [sys.executable, "-c", "import sys; from shipmap.connectors._cli import main; sys.exit(main())"]
ORDERS = 160
CONCURRENCY = 4
LEASE = 1.0


def worker(config: Path, events: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*CLI, "run", str(config), "--input", str(events), "--no-progress", "--workers", "0"],
        stdout=subprocess.PIPE,
        stderr=log.open("ab"),
        stdin=subprocess.DEVNULL,
        cwd=config.parent,
    )


def snapshot(url: str) -> dict[str, tuple[object, ...]]:
    with Journal(url, readonly=True) as journal:
        return {
            e.key: (e.state, e.status, e.attempts, e.idempotency_key, e.reason, e.updated_at)
            for e in journal.entries()
        }


@pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP")
def test_a_worker_stopped_past_its_lease_does_not_corrupt_the_state(
    tmp_path: Path, sandbox_factory: Callable[..., Sandbox], postgres_url: str
) -> None:
    # Every answer is held back 50 ms after the request was handled, so the stopped worker has requests in
    # flight that the server has accepted: its late answers are the ones that must change nothing.
    server = sandbox_factory(faults="slow=1:0.05")
    journal = {"url": postgres_url, "lease": f"{LEASE}s"}
    config = write_config(tmp_path, server.url, delivery={"concurrency": CONCURRENCY}, journal=journal)
    events = tmp_path / "events.ndjson"
    events.write_text("".join(json.dumps(order_event(n)) + "\n" for n in range(ORDERS)))
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"

    a = worker(config, events, log_a)
    try:
        deadline = time.monotonic() + 60
        while len(server.requests()) < 30:
            assert a.poll() is None, log_a.read_text()
            assert time.monotonic() < deadline, "worker A did not get going"
            time.sleep(0.005)
        a.send_signal(signal.SIGSTOP)
        stopped_at = len(server.requests())
        with Journal(postgres_url, readonly=True) as reader:  # what A held: in flight, queued or unmarked
            held_by_a = {str(entry.payload["id"]) for entry in reader.entries("pending")}
        time.sleep(LEASE * 1.5)  # past A's lease: its deliveries are anyone's

        b = worker(config, events, log_b)
        out, _ = b.communicate(timeout=120)
        assert b.returncode == 0, log_b.read_text()[-3000:]
        after_b = snapshot(postgres_url)
        assert Counter(state for state, *_ in after_b.values()) == {"delivered": ORDERS}
        assert "recovered" in out.decode()

        a.send_signal(signal.SIGCONT)
        a.communicate(timeout=120)
    finally:
        for process in (a,):
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                process.communicate(timeout=10)
    # A's late answers, marks, dead letters and renewals changed nothing B recorded.
    assert snapshot(postgres_url) == after_b
    log = log_a.read_text()
    if a.returncode == 0:
        assert "lease" in log  # it saw that its deliveries were taken over
    else:  # it was stopped inside a transaction: the server ended its session after one lease
        assert a.returncode == 7 and "idle-in-transaction" in log, log[-2000:]

    # Every order arrived. Every copy is explained: a delivery A held when it was stopped (in flight, whose
    # answer came late, or whose client timed out while A was stopped and retried once on waking; or answered
    # with its delivered mark not yet committed), sent again by B; each copy the very same request under
    # the same idempotency key.
    arrived = Counter(r.order_id for r in server.requests(endpoint="fenix.orders"))
    assert set(arrived) == {str(1000 + n) for n in range(ORDERS)}
    copied = {order for order, count in arrived.items() if count > 1}
    assert copied <= held_by_a, (copied - held_by_a, held_by_a)
    assert all(arrived[order] <= 3 for order in copied), arrived
    assert len(held_by_a) <= CONCURRENCY * 4 + CONCURRENCY + 2 * 16 + 16  # the bound of docs/guarantees.md
    keys: dict[str, set[str]] = {}
    for record in server.requests(endpoint="fenix.orders"):
        keys.setdefault(record.order_id, set()).add(record.headers.get("idempotency-key", ""))
    assert all(len(found) == 1 for found in keys.values())
    assert stopped_at < ORDERS + 1  # A really was stopped mid-run (the login counts as one request)
