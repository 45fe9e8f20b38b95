"""A ``shipmap run`` worker on a PostgreSQL journal whose breaker store's own connection is ended mid-run by
the server (``pg_terminate_backend``, as an operator or a restart would): the worker says so once, runs on
its own breaker copy meanwhile, reconnects, and delivers everything, each event once.

The run reads its events from a pipe, so the test decides when each part is sent: the first part after the
backend is ended, the rest after the store has reconnected. Every wait is for an event, with a deadline."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from shipmap.connectors import Journal, Sandbox
from shipmap.connectors._store._breaker_pg import APPLICATION_NAME

sys.path.insert(0, str(Path(__file__).parents[1] / "connectors"))
from test_runtime_support import BASE_CONFIG, FIXTURES, order_event, write_config

CLI = [sys.executable, "-c", "import sys; from shipmap.connectors._cli import main; sys.exit(main())"]
PART = 256  # a run pulls stdin in chunks of this many lines (or until the input ends)


def store_backends(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as db:
        rows = db.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
            (APPLICATION_NAME,),
        ).fetchall()
    return [row[0] for row in rows]


def wait_for(condition: Callable[[], bool], what: str, worker: subprocess.Popen[bytes]) -> None:
    give_up = time.monotonic() + 90.0
    while not condition():
        assert worker.poll() is None, f"the worker ended (exit {worker.returncode}) before {what}"
        assert time.monotonic() < give_up, f"no {what} within 90 s"
        time.sleep(0.05)


def test_a_run_whose_breaker_store_connection_is_ended_delivers_everything(
    tmp_path: Path, sandbox_factory: Callable[..., Sandbox], postgres_url: str
) -> None:
    sandbox = sandbox_factory()
    connections = copy.deepcopy(BASE_CONFIG["connections"])
    connections["fenix"]["max_rate"] = 5000  # every request claims its slot in the store: it meets the loss
    write_config(
        tmp_path,
        sandbox.url,
        connections=connections,
        mappings=[{"mapping": str(FIXTURES / "orders.yaml"), "topic": "orders/create"}],
        journal={"url": postgres_url, "lease": "10s"},
    )
    log = tmp_path / "worker.log"
    worker = subprocess.Popen(
        [
            *CLI,
            "run",
            str(tmp_path / "shipmap.yaml"),
            "--input",
            "-",
            "--no-progress",
            "--workers",
            "0",
            "-v",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        cwd=tmp_path,
    )
    assert worker.stdin is not None

    def send(numbers: range) -> None:
        assert worker.stdin is not None
        worker.stdin.write("".join(json.dumps(order_event(n)) + "\n" for n in numbers).encode())
        worker.stdin.flush()

    def delivered() -> int:
        return len(sandbox.requests(endpoint="fenix.orders"))

    try:
        wait_for(lambda: len(store_backends(postgres_url)) == 1, "breaker store connection", worker)
        (first,) = store_backends(postgres_url)
        with psycopg.connect(postgres_url, autocommit=True) as db:
            db.execute("SELECT pg_terminate_backend(%s)", (first,))
        send(range(PART))  # sent while the store is away: on the worker's own breaker copy
        wait_for(lambda: delivered() >= PART, "deliveries while the store was away", worker)
        wait_for(lambda: store_backends(postgres_url) not in ([], [first]), "reconnection", worker)
        send(range(PART, 2 * PART))  # sent with the shared store back
        worker.stdin.close()
        code = worker.wait(timeout=180)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    said = log.read_text(encoding="utf-8", errors="replace")
    assert code == 0, said[-3000:]
    orders = sandbox.requests(endpoint="fenix.orders")
    assert sorted(int(r.order_id) for r in orders) == [1000 + n for n in range(2 * PART)]  # each once
    with Journal(postgres_url, readonly=True) as journal:
        assert journal.counts() == {"delivered": 2 * PART}
    assert said.count("lost the connection for breaker and rate state") == 1, said[-3000:]
    assert said.count("breaker and rate state reconnected after") == 1, said[-3000:]
