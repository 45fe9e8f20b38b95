"""A live ``shipmap serve`` on PostgreSQL (journal and inbox in one database) whose database restarts, as a
managed one does for a minor upgrade or a failover: every session ended, new ones accepted again soon after.
Webhooks keep arriving meanwhile (their sender retries what is not acknowledged, as Shopify does). The service
rides it out: intake answers 503 while it cannot commit and 200 again after, delivery reconnects and goes on,
and every webhook acknowledged, before or after, reaches the sandbox exactly once."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest
from shipmap.connectors import Sandbox

from .harness import REAL_SHOPIFY, RetryingSender, ServeProcess, on_postgres, shopify_headers

ORDER = json.loads((REAL_SHOPIFY / "orders_cancelled_webhook.json").read_text())
WEBHOOKS = 120
RESTART_AFTER = 30  # webhooks acknowledged before the database restarts


def _watch_readiness(url: str, answers: list[int], done: threading.Event) -> None:
    """``/readyz``'s status codes, every 0.2 s until ``done``."""
    with httpx.Client(timeout=10) as client:
        while not done.wait(0.2):
            with contextlib.suppress(httpx.HTTPError):
                answers.append(client.get(f"{url}/readyz").status_code)


def _restart(admin_url: str, database: str, away: float, meanwhile: Callable[[], None]) -> int:
    """End every session on ``database`` (a restart); with ``away``, refuse new ones for that long (the server
    coming back up), calling ``meanwhile`` once they are refused. The sessions ended at first."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        if away:
            admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
        ended = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
        if away:
            started = time.monotonic()
            meanwhile()
            time.sleep(max(0.0, away - (time.monotonic() - started)))
            admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")
    return len(ended)


@pytest.mark.parametrize("away", [0.0, 4.0], ids=["sessions-ended", "away-4s"])
def test_a_database_restart_within_the_deadline_loses_nothing_and_duplicates_nothing(
    away: float, source_sandbox: Sandbox, tmp_path: Path, postgres_server: str, postgres_url: str
) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    serve = ServeProcess(tmp_path, source_sandbox.url)
    serve.config.write_text(on_postgres(serve.config.read_text(), postgres_url))
    serve.start()
    bodies = [json.dumps(dict(ORDER, id=9_300_000 + i, name=f"#R{i}")).encode() for i in range(WEBHOOKS)]
    client = RetryingSender([serve.url], bodies, prefix="restart", threads=2)
    try:
        client.start()
        serve.wait_until(
            lambda: len(client.acked) >= RESTART_AFTER, what="acknowledgements before the restart"
        )
        looking = threading.Event()
        ready: list[int] = []  # /readyz's answers from the restart on
        watcher = threading.Thread(target=_watch_readiness, args=(serve.url, ready, looking), daemon=True)
        watcher.start()
        met_the_outage: list[int] = []

        def post_while_away() -> None:
            """A webhook already acknowledged, sent again while the database refuses sessions: intake cannot
            look it up nor commit it, and says so with a retryable 503 (the sender's threads may have finished
            before the outage began, so their answers cannot show it)."""
            body = bodies[0]
            headers = shopify_headers(body, "orders/create", "restart-0")
            with httpx.Client(timeout=10) as http:
                met_the_outage.append(serve.post(http, "shop", body, headers).status_code)

        ended = _restart(postgres_server, database, away, post_while_away)
        assert ended >= 2, ended  # intake's, delivery's at least
        assert serve.process is not None
        serve.wait_until(
            lambda: len(client.acked) == WEBHOOKS or serve.process.poll() is not None,
            timeout=240,
            what="every webhook acknowledged",
        )
        assert serve.process.poll() is None, "the service stopped:\n" + "".join(serve.errors[-30:])
        client.join(10)

        def all_arrived() -> bool:
            return len(source_sandbox.requests(endpoint="fenix.orders")) >= WEBHOOKS

        serve.wait_until(all_arrived, timeout=180, what="every acknowledged webhook delivered")
        looking.set()
        watcher.join(10)
        with httpx.Client(timeout=10) as http:
            after = http.get(f"{serve.url}/readyz")
        # Ready again, delivering: the gauges read the database anew.
        assert (after.status_code, after.json()["ready"], after.json()["delivering"]) == (200, True, True), (
            after.text
        )
        assert ready and set(ready) <= {200, 503}, ready
        assert serve.process.poll() is None, "".join(serve.errors[-30:])
        code = serve.terminate()
    finally:
        client.deadline = 0.0  # its threads stop at their next try
        serve.kill()
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")
    stderr = "".join(serve.errors)
    assert code == 0, stderr[-3000:]
    delivered = Counter(str(r.body["id"]) for r in source_sandbox.requests(endpoint="fenix.orders"))
    assert set(delivered) == {str(9_300_000 + i) for i in range(WEBHOOKS)}, stderr[-3000:]
    assert [key for key, n in delivered.items() if n > 1] == [], stderr[-3000:]  # exactly once
    # While the database was away intake refused (503, retryable), or could not be reached: nothing else.
    assert set(client.non_2xx) <= {"503"}, client.non_2xx
    assert met_the_outage == ([503] if away else []), met_the_outage
    with psycopg.connect(postgres_url) as db:
        assert db.execute("SELECT count(*) FROM inbox WHERE state = 'pending'").fetchone() == (0,)
        assert db.execute("SELECT state, count(*) FROM deliveries GROUP BY state").fetchall() == [
            ("delivered", WEBHOOKS)
        ]
    assert "Traceback" not in stderr
    print(
        f"\ndatabase restart (away {away:g}s): intake non-2xx {dict(client.non_2xx)}; /readyz {Counter(ready)}"
    )
    print("".join(line for line in serve.errors if "WARNING" in line or "ERROR" in line)[-4000:])
