"""A ``shipmap run`` worker whose input's deliveries are all held by another live worker (issue 16's open end):
it waits for them, bounded by ``journal.wait_for_others``, then names who holds them and exits 10, never 0
while they are still pending. The holder here is a real worker stuck on an open circuit breaker; once the
endpoint is back it delivers everything, each event once. Every wait is for an event, with a deadline."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from shipmap.connectors import EXIT_HELD, Journal, Sandbox
from shipmap.connectors._store._breaker_pg import breaker_row

sys.path.insert(0, str(Path(__file__).parents[1] / "connectors"))
from test_runtime_support import BASE_CONFIG, FIXTURES, order_event, write_config

CLI = [sys.executable, "-c", "import sys; from shipmap.connectors._cli import main; sys.exit(main())"]
EVENTS = 6


def wait_for(condition: Callable[[], bool], what: str, deadline: float = 90.0) -> None:
    give_up = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < give_up, f"no {what} within {deadline:.0f} s"
        time.sleep(0.05)


def worker(tmp_path: Path, name: str, *extra: str) -> subprocess.Popen[str]:
    command = [*CLI, "run", str(tmp_path / "shipmap.yaml"), "--input", str(tmp_path / "events.ndjson")]
    return subprocess.Popen(
        [*command, "--no-progress", "--workers", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=(tmp_path / f"{name}.log").open("w"),
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
        text=True,
    )


def test_a_worker_whose_deliveries_are_all_held_elsewhere_names_the_holder_and_exits_10(
    tmp_path: Path, sandbox_factory: Callable[..., Sandbox], postgres_url: str
) -> None:
    sandbox = sandbox_factory(faults="5xx=1")  # the endpoint is down: the first worker's breaker opens
    connections = copy.deepcopy(BASE_CONFIG["connections"])
    connections["fenix"]["breaker"] = {"failures": 1, "cooldown": "0.2s", "cooldown_cap": "0.5s",
                                       "outage_wait": "5m"}  # fmt: skip
    write_config(
        tmp_path,
        sandbox.url,
        connections=connections,
        mappings=[{"mapping": str(FIXTURES / "orders.yaml"), "topic": "orders/create"}],
        # A lease long enough that a loaded machine never lets the first worker's lapse (the second would
        # take its deliveries over); the second stops waiting after wait_for_others, long before three leases.
        journal={"url": postgres_url, "lease": "15s", "wait_for_others": "1s"},
    )
    (tmp_path / "events.ndjson").write_text("".join(json.dumps(order_event(n)) + "\n" for n in range(EVENTS)))
    holder = worker(tmp_path, "holder")
    try:

        def holder_holds_everything_with_its_breaker_open() -> bool:
            with psycopg.connect(postgres_url, autocommit=True) as db:
                try:
                    rows = db.execute("SELECT state, lease_owner FROM deliveries").fetchall()
                    phase = db.execute(
                        "SELECT phase FROM connection_state WHERE name = %s",
                        (breaker_row("fenix", sandbox.url),),
                    ).fetchone()
                except psycopg.errors.UndefinedTable:
                    return False
            owners = {owner.split(":")[1] for state, owner in rows if state == "pending" and owner}
            return len(rows) == EVENTS and owners == {str(holder.pid)} and phase == ("open",)

        wait_for(holder_holds_everything_with_its_breaker_open, "pending deliveries held by the first worker")
        late = worker(tmp_path, "late", "--summary-json", str(tmp_path / "late.json"))
        out, _ = late.communicate(timeout=120)
        # Its own part is done (nothing to send), but the input is not delivered: never 0.
        assert late.returncode == EXIT_HELD, (late.returncode, out, (tmp_path / "late.log").read_text())
        assert f"{EVENTS} deliveries still pending, held by other live workers: " in out, out
        assert f":{holder.pid}:" in out and f"holds {EVENTS} (lease until " in out, out
        said = (tmp_path / "late.log").read_text()
        assert "stopped waiting after" in said and "(journal.wait_for_others)" in said, said
        summary = json.loads((tmp_path / "late.json").read_text())
        assert summary["exit_code"] == EXIT_HELD
        ((held),) = summary["held_elsewhere"]
        assert f":{holder.pid}:" in held["worker"] and held["deliveries"] == EVENTS
        sandbox.set_faults(None)  # the endpoint is back: the holder's probe closes its breaker
        holder_out, _ = holder.communicate(timeout=120)
    finally:
        for process in (holder,):
            if process.poll() is None:
                process.kill()
                process.wait(10)
    assert holder.returncode == 0, (holder_out, (tmp_path / "holder.log").read_text()[-3000:])
    orders = sandbox.requests(endpoint="fenix.orders")
    assert sorted(int(r.order_id) for r in orders) == [1000 + n for n in range(EVENTS)]  # each once
    with Journal(postgres_url, readonly=True) as journal:
        assert journal.counts() == {"delivered": EVENTS}
