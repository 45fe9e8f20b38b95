"""Crash safety: a real ``shipmap run`` subprocess killed with SIGKILL mid-run, then run again."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from shipmap.connectors import Journal, Sandbox
from test_runtime_support import order_event, shipment_event, write_config

CLI = [sys.executable, "-c", "import sys; from shipmap.connectors._cli import main; sys.exit(main())"]
ORDERS = 50
SHIPMENTS = 50  # each one a Fenix fulfillment and a DG execution
DELIVERIES = ORDERS + 2 * SHIPMENTS
CONCURRENCY = 4
# Delivered marks are committed in batches of at most this many (shipmap.connectors._store._outbox._FLUSH_MARKS).
MARKS = 16
# Journaled pending at a kill: in flight, queued (4 per sender), one settled batch (16 events, 2 deliveries
# each at most) waiting for the queue, and delivered marks not yet committed.
PENDING_BOUND = CONCURRENCY + 4 * CONCURRENCY + 2 * 16 + MARKS


def shipmap_run(config: Path, events: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*CLI, "run", str(config), "--input", str(events), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=log.open("ab"),
        cwd=config.parent,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same guarantees on both journal backends: an SQLite file, and a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "journal.db")
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_kill_minus_9_mid_run_loses_nothing_and_resends_only_what_was_in_flight_or_unmarked(
    tmp_path: Path, sandbox_factory: Callable[..., Sandbox], journal_location: str
) -> None:
    # Every response is held back 30 ms after the request was handled: a kill leaves requests in flight that
    # the server has already accepted, the case that produces duplicates.
    server = sandbox_factory(faults="slow=1:0.03")
    journal = {"url": journal_location} if "://" in journal_location else {"path": journal_location}
    config = write_config(tmp_path, server.url, delivery={"concurrency": CONCURRENCY}, journal=journal)
    events = tmp_path / "events.ndjson"
    lines = [order_event(n) for n in range(ORDERS)] + [shipment_event(n) for n in range(SHIPMENTS)]
    events.write_text("".join(json.dumps(line) + "\n" for line in lines))
    log = tmp_path / "run.log"

    first = shipmap_run(config, events, log)
    deadline = time.monotonic() + 30
    while len(server.requests()) < 40:  # the login and some dozens of deliveries
        assert first.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.005)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL

    with Journal(journal_location, readonly=True) as journal:
        at_kill = journal.counts()
    assert at_kill.get("delivered", 0) < DELIVERIES  # it really was killed mid-run
    pending = at_kill.get("pending", 0)
    assert pending <= PENDING_BOUND

    second = shipmap_run(config, events, log)
    out, _ = second.communicate(timeout=60)
    summary = out.decode()
    assert second.returncode == 0, log.read_text()[-3000:]
    assert f"recovered {pending}" in summary

    with Journal(journal_location, readonly=True) as journal:
        assert journal.counts() == {"delivered": DELIVERIES}
        keys = {e.idempotency_key for e in journal.entries("delivered")}
    assert len(keys) == DELIVERIES

    # Every event reached the server.
    orders = [r.order_id for r in server.requests(endpoint="fenix.orders")]
    fulfillments = [r.fulfillment_id for r in server.requests(endpoint="fenix.fulfillment")]
    executions = server.requests(endpoint="dg.execution")
    assert set(orders) == {str(1000 + n) for n in range(ORDERS)}
    assert set(fulfillments) == {f"S-{n}" for n in range(SHIPMENTS)}
    assert {r.body["inputs"]["shipment_data"]["shipment_id"] for r in executions} == {
        f"S-{n}" for n in range(SHIPMENTS)
    }
    # Duplicates only for what was in flight at the kill or answered but not yet marked delivered (journaled
    # pending, so re-sent), each the same payload with the same key.
    duplicates = [entry for entries in server.duplicates().values() for entry in entries]
    resent = len(orders) + len(fulfillments) + len(executions) - DELIVERIES
    assert resent == sum(entry["count"] - 1 for entry in duplicates)
    assert resent <= min(pending, CONCURRENCY + MARKS)
    assert all(entry["distinct_bodies"] == 1 for entry in duplicates)
    for record in server.requests(api="fenix", since=0):
        if record.endpoint != "fenix.login":
            assert record.headers["idempotency-key"] in keys
    assert {r.external_id for r in executions} <= keys

    # And a third run has nothing left to do.
    third = shipmap_run(config, events, log)
    out, _ = third.communicate(timeout=60)
    assert third.returncode == 0
    assert re.search(r"acme-orders\.order\s+0\s+0\s+0\s+50", out.decode())
