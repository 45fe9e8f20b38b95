"""The circuit breaker's lines go through the runtime's redactor, as every other runtime line does.

A breaker's reason is what the destination said: the reason phrase of its status line, which a server writes
as it likes (a gateway that echoes the request's token back, a proxy that names a URL with credentials). The
breaker logged it through plain ``logging``, so any handler but the command line's (an embedding program's,
pytest's, journald's through a library user) got the secret; and the record kept it, for the shared store
and ``/readyz``."""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from shipmap.connectors import EXIT_OUTAGE, Journal, Redactor, Runtime
from shipmap.connectors._deliver._breaker import BreakerSettings, CircuitBreaker
from shipmap.connectors._store._breaker_pg import PostgresStateStore, breaker_row
from test_runtime_support import FIXTURES, order_event

SECRET = "sk-live-4f9a2c7e1b"  # the connection's bearer token: a secret the runtime knows


class _EchoingOutage(http.server.BaseHTTPRequestHandler):
    """A destination down for maintenance whose gateway echoes the caller's credentials back: in the reason
    phrase of its status line, in a header and in the body."""

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        body = json.dumps({"error": "maintenance", "caller": token}).encode()
        self.send_response(503, f"Unavailable for {token}")
        self.send_header("X-Debug", f"token={token}")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT = do_PATCH = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echoing_outage() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoingOutage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(10)


def _config(directory: Path, url: str) -> Path:
    config = {
        "version": 1,
        "connections": {
            "api": {
                "api": "fenix",
                "base_url": url,
                "auth": {"scheme": "bearer", "token": "${API_TOKEN}"},
                # Opens at the first 503, probes twice, then leaves the delivery pending.
                "breaker": {
                    "failures": 1,
                    "cooldown": "50ms",
                    "cooldown_cap": "100ms",
                    "outage_wait": "400ms",
                },
            }
        },
        "events": {"body": "payload"},
        "mappings": [{"mapping": str(FIXTURES / "orders.yaml")}],
        "delivery": {"retry": {"max_attempts": 3, "backoff_base": "10ms"}},
        "journal": {"path": "journal.db"},
    }
    path = directory / "shipmap.yaml"
    path.write_text(yaml.safe_dump(config))
    (directory / ".env").write_text(f"API_TOKEN={SECRET}\n")
    return path


def test_a_503_whose_reason_holds_a_secret_is_logged_and_kept_masked(
    tmp_path: Path, echoing_outage: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(tmp_path, echoing_outage)
    runtime = Runtime.from_config(config)
    with caplog.at_level(logging.DEBUG, logger="shipmap"):
        summary = runtime.run([order_event(1)])
    assert summary.parked == 1 and summary.dead == 0  # the outage left it pending: nothing lost
    lines = [record.getMessage() for record in caplog.records if record.name == "shipmap.connectors.breaker"]
    assert any("circuit breaker open after HTTP 503 Unavailable for ***" in line for line in lines), (
        lines
    )  # the reason is there, its secret masked
    assert any("probe failed (HTTP 503 Unavailable for ***)" in line for line in lines), lines
    assert SECRET not in caplog.text
    assert all(SECRET not in record.getMessage() for record in caplog.records)
    # What the record keeps (the shared store writes it, /readyz shows it) is masked too.
    reason = runtime.breaker_store.breaker("api").reason
    assert reason == "HTTP 503 Unavailable for ***"


def test_the_command_line_exits_9_and_stderr_never_shows_the_secret(
    tmp_path: Path, echoing_outage: str
) -> None:
    config = _config(tmp_path, echoing_outage)
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(order_event(1)) + "\n")
    entry = "from shipmap.connectors._cli import entry; entry()"
    ran = subprocess.run(
        [sys.executable, "-c", entry, "-v", "run", str(config), "--input", str(events)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert ran.returncode == EXIT_OUTAGE, ran.stderr
    assert "circuit breaker open after HTTP 503 Unavailable for ***" in ran.stderr
    assert SECRET not in ran.stdout and SECRET not in ran.stderr


def test_the_shared_stores_lines_are_masked_with_the_runtimes_secrets(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A record another worker wrote with the secret in its reason (one that did not know the secret, or an
    earlier version, which kept reasons as the destination said them): this worker's line about it masks it."""
    endpoints = {"api": "https://api.example.com"}

    async def scenario() -> str:
        with Journal(postgres_url):  # the schema, as a worker's journal creates it
            pass
        other = await PostgresStateStore.connect(postgres_url, endpoints, lease=30.0, refresh=0.05)
        breaker = CircuitBreaker("api", BreakerSettings(failures=1), store=other)
        await breaker.failure(f"HTTP 503 Unavailable for {SECRET}", await breaker.admit(float("inf")))
        await other.aclose()
        this = await PostgresStateStore.connect(
            postgres_url, endpoints, lease=30.0, refresh=0.05, redactor=Redactor([SECRET])
        )
        caplog.clear()  # the other worker's own line: it did not know the secret
        try:
            with caplog.at_level(logging.INFO, logger="shipmap"):
                await this.refresh("api")
            return this.breaker("api").reason
        finally:
            await this.aclose()

    kept = asyncio.run(scenario())
    with psycopg.connect(postgres_url) as db:
        row = db.execute(
            "SELECT reason FROM connection_state WHERE name = %s",
            (breaker_row("api", "https://api.example.com"),),
        ).fetchone()
    assert row is not None and SECRET in row[0] and SECRET in kept  # the other worker's record, as written
    [line] = [r.getMessage() for r in caplog.records if r.name == "shipmap.connectors.breaker"]
    assert line == (
        "connection api: circuit breaker open (found so in the journal, opened by an earlier run or another"
        " worker after HTTP 503 Unavailable for ***); deliveries wait"
    )
    assert SECRET not in caplog.text
