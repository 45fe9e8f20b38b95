"""``journal.reconnect_deadline``: how long a worker on a PostgreSQL journal that lost its connection for the
shared breaker and max_rate state keeps delivering on its own copy before it stops with exit code 7. A real
``shipmap run`` against the sandbox, whose breaker store's backend is ended while the database refuses new
connections (the journal's own connection, already open, goes on): the run stops after the configured
deadline, not the default 2 minutes. ``serve``'s is ``serve/test_serve_reconnect_deadline.py``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from shipmap.connectors import Sandbox
from shipmap.connectors._errors import EXIT_JOURNAL
from shipmap.connectors._store._breaker_pg import APPLICATION_NAME
from test_runtime_support import order_event, write_config

CLI = [sys.executable, "-c", "import sys; from shipmap.connectors._cli import main; sys.exit(main())"]
EVENTS = 40
MAX_RATE = 10.0  # the run lasts EVENTS / MAX_RATE = 4 s: the loss comes well within it


def refuse_connections(admin_url: str, database: str, *, refused: bool) -> None:
    """New connections to ``database`` refused (or allowed again); the sessions already open go on."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS {'false' if refused else 'true'}")


def test_a_run_whose_breaker_store_stays_away_stops_after_journal_reconnect_deadline(
    tmp_path: Path, sandbox: Sandbox, postgres_server: str, postgres_url: str
) -> None:
    config = write_config(tmp_path, sandbox.url, journal={"url": postgres_url, "reconnect_deadline": "1s"})
    text = config.read_text()
    config.write_text(text.replace("  fenix:\n", f"  fenix:\n    max_rate: {MAX_RATE:g}\n", 1))
    events = tmp_path / "events.ndjson"
    events.write_text("".join(json.dumps(order_event(n)) + "\n" for n in range(EVENTS)))
    database = postgres_url.rsplit("/", 1)[1]
    process = subprocess.Popen(
        [*CLI, "run", str(config), "--input", str(events), "--no-progress", "--workers", "0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(sandbox.requests(endpoint="fenix.orders")) < 3:  # the run is delivering, store in use
            assert time.monotonic() < deadline and process.poll() is None, "the run did not start delivering"
            time.sleep(0.05)
        refuse_connections(postgres_server, database, refused=True)
        lost_at = time.monotonic()
        _terminate_in(postgres_server, database)
        _, err = process.communicate(timeout=60)
        took = time.monotonic() - lost_at
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        refuse_connections(postgres_server, database, refused=False)
    assert process.returncode == EXIT_JOURNAL, err[-3000:]
    assert (
        "lost the connection for breaker and rate state (terminating connection due to administrator command);"
        " this worker uses its own copy while it reconnects (for up to 1 s)"
    ) in err, err[-3000:]
    assert "breaker and rate state: no connection for 1 s (last attempt: " in err, err[-3000:]
    assert took < 30, f"stopped {took:.1f} s after the loss"  # 1 s and the run's end, not 120 s
    delivered = len(sandbox.requests(endpoint="fenix.orders"))
    assert 3 <= delivered < EVENTS, delivered  # it delivered on its own copy meanwhile, and stopped
    assert "Traceback" not in err


def _terminate_in(admin_url: str, database: str) -> None:
    """End the breaker store's backend on ``database``, from the server's admin database (a new connection to
    ``database`` is refused now)."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        ended = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
            (database, APPLICATION_NAME),
        ).fetchall()
    assert len(ended) == 1, ended  # this run's store
