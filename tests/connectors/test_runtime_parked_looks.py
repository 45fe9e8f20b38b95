"""Looks at parked work while a destination is down, as ``shipmap serve`` runs them (``park_when_down``: each
look is a run that starts by re-sending the journal's pending deliveries, and ends with the senders that wait
for an open breaker parked).

A look used to read, claim and park again every delivery an outage had parked (an hour of Fenix down at 40
webhooks a second: 150,000 rows a look, sending none). Now it reads as many of the down connection's as may
wait for its breaker (half the senders; one of them is the next probe) and counts the rest, still parked, in
the summary; the healthy connection's deliveries go meanwhile, and once the probe is answered the next look
sends every parked delivery, once. Over 127.0.0.1: Fenix and Digital Genius are one sandbox whose Fenix has a
fault plan of its own, and the journal is an SQLite file or a PostgreSQL database."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from shipmap.connectors import RunSummary, Runtime, Sandbox
from shipmap.connectors._store._claims import claim_pending, pending_counts
from shipmap.connectors._store._journal import Journal
from test_runtime_support import (
    BASE_CONFIG,
    FIXTURES,
    environ,
    order_event,
    recorded_statements,
    shipment_event,
    write_config,
)

ORDERS = 30  # Fenix orders parked by the outage
CONCURRENCY = 4
PROBES = CONCURRENCY // 2  # the senders that may wait for one open breaker: what a look reads of Fenix's
WAIT_DEADLINE = 30.0  # a bound on the test's own waits, so a broken look fails, never hangs


@pytest.fixture(params=["sqlite", "postgresql"])
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    if request.param == "sqlite":
        yield {"path": str(tmp_path / "journal.db")}
    else:
        yield {"url": request.getfixturevalue("postgres_url")}


def _runtime(
    tmp_path: Path, sandbox: Sandbox, journal: dict[str, str], *, failures: int = 2, backoff: str = "10ms"
) -> Runtime:
    connections = copy.deepcopy(BASE_CONFIG["connections"])
    connections["fenix"]["breaker"] = {"failures": failures, "cooldown": "200ms", "cooldown_cap": "200ms",
                                       "outage_wait": "10m"}  # fmt: skip
    connections["dg"]["base_url"] = sandbox.url  # Digital Genius stays up: the plan for both injects nothing
    mappings = [
        {"mapping": str(FIXTURES / "orders.yaml"), "topic": "orders/create"},
        {
            "mapping": str(FIXTURES / "shipments.yaml"),
            "topic": "shipments/create",
            "targets": {"fulfillment": {"enabled": False}},  # Digital Genius alone
        },
    ]
    config = write_config(
        tmp_path,
        sandbox.url,
        connections=connections,
        mappings=mappings,
        journal=journal,
        delivery={
            "concurrency": CONCURRENCY,
            "retry": dict(BASE_CONFIG["delivery"]["retry"], backoff_base=backoff, backoff_cap=backoff),
        },
    )
    return Runtime.from_config(config, environ=environ(sandbox.url))


def _look(
    runtime: Runtime, events: list[dict[str, Any]], until: Callable[[], bool] | None = None
) -> RunSummary:
    """One run as serve's delivery loop makes it: ``events``, then (once ``until`` holds) the epoch ends and
    the deliveries waiting for an open breaker are parked."""

    async def epoch() -> AsyncIterator[dict[str, Any]]:
        for event in events:
            yield event
        deadline = time.monotonic() + WAIT_DEADLINE
        while until is not None and not until():
            assert time.monotonic() < deadline, "gave up waiting for the look's condition"
            await asyncio.sleep(0.01)
        runtime.park_waiting()

    return asyncio.run(runtime.run_async(epoch(), park_when_down=True, wait_for_others=False))


def _fenix_orders(sandbox: Sandbox) -> list[str]:
    return sorted(str(request.order_id) for request in sandbox.requests(endpoint="fenix.orders"))


def test_looks_read_only_what_may_wait_for_the_open_breaker_and_every_parked_delivery_arrives_once(
    tmp_path: Path, journal: dict[str, str]
) -> None:
    with Sandbox(fenix_faults="5xx=1") as sandbox:  # Fenix down, Digital Genius up
        runtime = _runtime(tmp_path, sandbox, journal)
        first = _look(runtime, [order_event(n) for n in range(ORDERS)])
        assert (first.parked, first.delivered, first.dead) == (ORDERS, 0, 0)
        assert runtime.breaker_store.breaker("fenix").phase != "closed"

        for look in range(3):  # Fenix still down: each look reads its probes, counts the rest, and DG goes on
            shipments = [shipment_event(100 * (look + 1) + n) for n in range(5)]
            summary = _look(runtime, shipments)
            assert summary.recovered == PROBES, (look, summary.recovered)
            assert summary.parked == ORDERS, (look, summary.parked)  # the "left pending" count: all of them
            assert list(summary.outages) == ["fenix"] and "circuit breaker" in summary.outages["fenix"]
            assert (summary.get("acme-shipments.notify").delivered, summary.dead) == (5, 0)
        assert len(sandbox.requests(endpoint="dg.execution")) == 15
        assert _fenix_orders(sandbox) == []  # nothing got through the open breaker
        assert {f.endpoint for f in sandbox.faulted()} == {"fenix.orders"}  # DG was never down

        sandbox.set_faults(
            None, api="fenix"
        )  # Fenix is back: the look's probe is answered, the breaker closes
        probed = _look(runtime, [], until=lambda: len(sandbox.requests(endpoint="fenix.orders")) >= PROBES)
        assert runtime.breaker_store.breaker("fenix").phase == "closed"
        assert (probed.recovered, probed.delivered, probed.parked) == (PROBES, PROBES, ORDERS - PROBES)

        after = _look(runtime, [])  # serve's next look, at once: the breaker is closed, every row is read
        assert (after.recovered, after.delivered, after.parked, after.outages) == (
            ORDERS - PROBES, ORDERS - PROBES, 0, {}
        )  # fmt: skip
    assert _fenix_orders(sandbox) == sorted(str(1000 + n) for n in range(ORDERS))  # each once
    location = journal.get("path") or journal["url"]
    with Journal(location, readonly=True) as store:
        assert store.counts() == {"delivered": ORDERS + 15}


def test_a_look_that_ends_while_a_delivery_backs_off_behind_an_open_breaker_parks_it_as_an_outage(
    tmp_path: Path, journal: dict[str, str]
) -> None:
    """Two deliveries fail together (Fenix's login answers 5xx): the first failure, one of the breaker's two,
    sends its delivery into a 5 s backoff, and the second opens the breaker. The look's end cuts the backoff
    short and parks that delivery too, counted in the summary's outage with the other (its connection is down:
    it is not merely interrupted), and the next look sends both once the breaker closes."""
    with Sandbox(fenix_faults="5xx=1") as sandbox:
        runtime = _runtime(tmp_path, sandbox, journal, failures=2, backoff="5s")
        started = time.monotonic()
        summary = _look(
            runtime,
            [order_event(0), order_event(1)],
            until=lambda: runtime.breaker_store.breaker("fenix").phase != "closed",
        )
        assert time.monotonic() - started < 4.0  # the 5 s backoff was cut short
        assert (summary.parked, summary.delivered, summary.dead) == (2, 0, 0)
        assert list(summary.outages) == ["fenix"]
        sandbox.set_faults(None, api="fenix")
        time.sleep(0.3)  # past the breaker's cooldown: the next look's probe is the parked delivery
        after = _look(runtime, [], until=lambda: len(sandbox.requests(endpoint="fenix.orders")) == 2)
        assert (after.recovered, after.delivered, after.parked) == (2, 2, 0)
    assert _fenix_orders(sandbox) == ["1000", "1001"]  # each once


def test_the_pending_rows_of_one_connection_are_counted_and_claimed_on_their_index(
    tmp_path: Path, journal: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal side of a look: the count by connection and a claim of one connection's rows (oldest
    first on each backend), beside another connection's and a row without a connection."""
    location = journal.get("path") or journal["url"]
    with Journal(location) as store:
        rows = [(f"key-{n:03d}", "doc", "m", "t", "fenix" if n % 3 else "dg", None, "POST", "http://x/", "{}",
                 None) for n in range(30)] + [("key-none", "doc", "m", "t", None, None, "POST", "http://x/", "{}",
                                                None)]  # fmt: skip

        def write() -> None:
            store.put_sources([("doc", "{}")])
            store.mark_pending_many(rows)  # one row without a connection, as old ones may have

        store.run_transaction(write)
        store._db.execute("UPDATE deliveries SET lease_owner = NULL, lease_until = NULL")  # nobody holds them
        statements = recorded_statements(store, monkeypatch)
        assert pending_counts(store) == {"fenix": 20, "dg": 10, None: 1}
        # Nobody holds them: on a shared journal none is this worker's; on an exclusive one, all are this run's.
        assert pending_counts(store, ["fenix"], held_here=True) == ({} if store.shared else {"fenix": 20})
        assert pending_counts(store, ["dg", None]) == {"dg": 10, None: 1}
        assert pending_counts(store, []) == {}
        counted = list(statements)
        claimed = claim_pending(store, limit=4, connections=["fenix"])
        assert [entry.key for entry in claimed] == [f"key-{n:03d}" for n in range(30) if n % 3][:4]
        others = claim_pending(store, limit=100, connections=["dg", None])
        assert sorted(entry.key for entry in others) == [f"key-{n:03d}" for n in range(0, 30, 3)] + [
            "key-none"
        ]
        assert claim_pending(store, limit=100, connections=[]) == []
        plan = " ".join(
            str(row[-1])
            for row in store._db.execute(
                "EXPLAIN SELECT key FROM deliveries WHERE state = 'pending' AND (connection IN ('fenix'))"
                " ORDER BY created_at, key LIMIT 4"
                if store.shared
                else "EXPLAIN QUERY PLAN SELECT key FROM deliveries WHERE state = 'pending'"
                " AND (connection IN ('fenix')) AND (updated_at, key) > (0, '') ORDER BY updated_at, key LIMIT 4"
            )
        )
        assert "deliveries_pending" in plan, plan
        del statements[:]
        # A look at held-back rows: those this worker claimed above (an SQLite journal's: all of its rows).
        held = claim_pending(store, limit=4, connections=["fenix"], held_here=True)
        assert [entry.key for entry in held] == [entry.key for entry in claimed]
        looked = list(statements)
        # Each count and the look's page as the functions word them: off the index alone.
        if not store.shared:
            for sql, parameters in counted + looked:
                statement_plan = " ".join(
                    str(row[-1]) for row in store._db.execute(f"EXPLAIN QUERY PLAN {sql}", parameters)
                )
                assert "USING COVERING INDEX deliveries_pending" in statement_plan, (sql, statement_plan)


def test_a_look_at_held_back_deliveries_takes_only_what_this_run_may_send_and_its_marks_land(
    tmp_path: Path, journal: dict[str, str]
) -> None:
    """``held_here``: on an SQLite journal every pending row is this run's, including those an earlier run
    left under its own lease, which the look takes over (its delivered marks would be fenced off otherwise,
    and the rows sent again by the next run); on a shared journal only the rows this worker holds."""
    location = journal.get("path") or journal["url"]
    rows = [(f"key-{n}", "doc", "m", "t", "fenix", None, "POST", "http://x/", "{}", None) for n in range(3)]
    with Journal(location) as earlier:
        earlier.run_transaction(
            lambda: (earlier.put_sources([("doc", "{}")]), earlier.mark_pending_many(rows))
        )
        if earlier.shared:  # a worker still running beside this one, holding its rows
            with Journal(location) as other:
                assert claim_pending(other, connections=["fenix"], held_here=True) == []
                assert pending_counts(other, held_here=True) == {}
                assert pending_counts(other) == {"fenix": 3}
            looked = claim_pending(earlier, limit=2, connections=["fenix"], held_here=True)
            following = (looked[-1].updated_at, looked[-1].key)
            looked += claim_pending(earlier, limit=2, after=following, connections=["fenix"], held_here=True)
            assert [entry.key for entry in looked] == ["key-0", "key-1", "key-2"]
            assert earlier.mark_delivered_many([(entry.key, 200, 1) for entry in looked]) == 3
            return
    with Journal(location) as run:  # the next run on the SQLite file
        assert pending_counts(run, ["fenix"], held_here=True) == {"fenix": 3}
        looked = claim_pending(run, connections=["fenix"], held_here=True)
        assert sorted(entry.key for entry in looked) == ["key-0", "key-1", "key-2"]
        assert run.mark_delivered_many([(entry.key, 200, 1) for entry in looked]) == 3
        assert pending_counts(run) == {}
