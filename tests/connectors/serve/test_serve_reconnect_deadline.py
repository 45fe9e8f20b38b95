"""``journal.reconnect_deadline`` in ``shipmap serve``: a live service on a PostgreSQL journal whose breaker
store's backend is ended while the database refuses new connections (the journal's own session goes on)
delivers on its own copy for the configured deadline, then stops with exit code 7, saying that it stops on
that error. ``shipmap run``'s is ``tests/connectors/test_reconnect_deadline.py``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import psycopg
from shipmap.connectors import Journal, JournalError, Sandbox
from shipmap.connectors._store._breaker_pg import APPLICATION_NAME

from .harness import REAL_SHOPIFY, ServeProcess, on_postgres, shopify_headers

ORDER = json.loads((REAL_SHOPIFY / "orders_cancelled_webhook.json").read_text())


def _allow_connections(admin_url: str, database: str, allowed: bool) -> None:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS {str(allowed).lower()}")


def test_a_serve_whose_breaker_store_stays_away_stops_after_journal_reconnect_deadline(
    sandbox: Sandbox, tmp_path: Path, postgres_server: str, postgres_url: str
) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    serve = ServeProcess(tmp_path, sandbox.url)
    config = on_postgres(serve.config.read_text(), postgres_url)
    config = config.replace(f"  url: {postgres_url}\n", f"  url: {postgres_url}\n  reconnect_deadline: 1s\n")
    # The inbox apart from the journal's database: intake goes on accepting while the store is away.
    serve.config.write_text(config.replace("serve:\n", "serve:\n  inbox: .shipmap/inbox.db\n", 1))
    serve.start()
    sent = 0

    def post(client: httpx.Client) -> int:
        """The answer's status, or 0 when nothing listens any more (the service has stopped)."""
        nonlocal sent
        body = json.dumps(dict(ORDER, id=9_300_000 + sent)).encode()
        headers = shopify_headers(body, "orders/create", f"reconnect-{sent}")
        sent += 1
        try:
            return serve.post(client, "shop", body, headers).status_code
        except httpx.ConnectError:
            return 0

    try:
        with httpx.Client(timeout=10) as client:
            assert post(client) == 200

            def delivered() -> bool:
                try:
                    with Journal(postgres_url, readonly=True) as journal:
                        return journal.counts() == {"delivered": 1}
                except JournalError:
                    return False

            serve.wait_until(delivered, what="the first webhook delivered")
            _allow_connections(postgres_server, database, False)
            with psycopg.connect(postgres_server, autocommit=True) as admin:
                ended = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND application_name = %s",
                    (database, APPLICATION_NAME),
                ).fetchall()
            assert len(ended) == 1, ended  # the delivery's store
            lost_at = time.monotonic()
            # A webhook every 0.2 s: each delivery asks the store, which falls back, then gives up after 1 s;
            # intake then closes (503 draining, or nothing listens).
            answers: list[int] = []
            while time.monotonic() - lost_at < 30 and (not answers or answers[-1] == 200):
                answers.append(post(client))
                time.sleep(0.2)
            assert answers[-1] in (0, 503) and set(answers[:-1]) <= {200}, answers
        assert serve.process is not None
        code = serve.process.wait(60)
        took = time.monotonic() - lost_at
    finally:
        serve.kill()
        _allow_connections(postgres_server, database, True)
    serve.wait_until(lambda: any(line.startswith("error: ") for line in serve.errors), what="the error line")
    stderr = "".join(serve.errors)
    assert code == 7, stderr[-3000:]
    assert took < 30, stderr[-3000:]  # the configured second, not the default 2 minutes
    assert "while it reconnects (for up to 1 s)" in stderr, stderr[-3000:]
    last = stderr.splitlines()[-1]
    gave_up = "breaker and rate state: no connection for 1 s (last attempt: "
    assert last.startswith("error: journal postgresql://postgres@127.0.0.1:") and gave_up in last, last
    stopping = "ERROR shipmap.connectors.serve: stopping on an error: intake closed; nothing more will be"
    assert f"{stopping} delivered ({last[7:]}); what was accepted" in stderr, stderr[-3000:]
    assert "Traceback" not in stderr
