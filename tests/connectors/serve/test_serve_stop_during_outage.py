"""A live ``shipmap serve`` on PostgreSQL, stopped (SIGTERM) while its database refuses new sessions and
delivery waits for it (``journal.reconnect_deadline``, 5 minutes here): the stop is not held by that wait.
The process ends within the drain's bound with exit 0 and says what is owed; nothing is lost: what was
pending stays pending, and a restart once the database is back delivers everything exactly once.

With an SQLite inbox, a webhook posted while the database is away is committed (intake does not need the
journal): delivery takes it and waits on the journal. With the inbox in the journal's database, intake refuses
it (503, its sender retries) and delivery waits on the inbox."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

import httpx
import psycopg
import pytest
from shipmap.connectors import Journal, JournalError, Sandbox

from .harness import REAL_SHOPIFY, ServeProcess, on_postgres, shopify_headers

ORDER = json.loads((REAL_SHOPIFY / "orders_cancelled_webhook.json").read_text())
BEFORE = 4  # webhooks delivered before the database goes
RECONNECT_DEADLINE = 300.0  # journal.reconnect_deadline: 5 minutes
DRAIN = 120.0  # serve.drain_timeout
# The stop's bound, with room to spare on a starved machine: a small fraction of the reconnect deadline (which
# held the stop, and with it the drain up to its deadline), and of the drain's deadline (nothing to wait for).
STOP_BOUND = 40.0


def _body(index: int) -> bytes:
    return json.dumps(dict(ORDER, id=9_400_000 + index, name=f"#S{index}")).encode()


def _post(serve: ServeProcess, client: httpx.Client, index: int) -> httpx.Response:
    body = _body(index)
    return serve.post(client, "shop", body, shopify_headers(body, "orders/create", f"outage-{index}"))


def _delivered(url: str) -> dict[str, int] | None:
    try:
        with Journal(url, readonly=True) as journal:
            return journal.counts()
    except JournalError:  # delivery has not created it yet
        return None


@pytest.mark.parametrize("inbox", ["sqlite", "the journal's database"])
def test_a_stop_while_the_database_is_away_ends_within_the_drain_and_loses_nothing(
    inbox: str, source_sandbox: Sandbox, tmp_path: Path, postgres_server: str, postgres_url: str
) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    serve = ServeProcess(tmp_path, source_sandbox.url)
    config = on_postgres(serve.config.read_text(), postgres_url).replace(
        f"  url: {postgres_url}\n", f"  url: {postgres_url}\n  reconnect_deadline: 5m\n", 1
    )
    assert "  drain_timeout: 30s\n" in config
    config = config.replace("  drain_timeout: 30s\n", f"  drain_timeout: {DRAIN:g}s\n", 1)
    if inbox == "sqlite":
        config = config.replace("serve:\n", "serve:\n  inbox: .shipmap/inbox.db\n", 1)
    serve.config.write_text(config)
    serve.start()
    waiting = re.compile(r"(journal|inbox) \S+: the database does not take a new session yet")
    try:
        with httpx.Client(timeout=10) as client:
            for index in range(BEFORE):
                answer = _post(serve, client, index)
                assert answer.status_code == 200, answer.text
            serve.wait_until(lambda: _delivered(postgres_url) == {"delivered": BEFORE}, what="settled")
            with psycopg.connect(postgres_server, autocommit=True) as admin:
                admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (database,),
                )
            answer = _post(serve, client, BEFORE)
            if inbox == "sqlite":  # committed: delivery takes it, and waits on the journal
                assert answer.status_code == 200, answer.text
            else:  # nothing acknowledged that cannot be kept
                assert answer.status_code == 503, answer.text
        # Delivery is waiting for the database (its reconnect's first line), well inside the deadline. A line
        # the delivery thread logs is written at its loop's next iteration, or with the next line another
        # thread writes (the service's activity line, every 60 s): the wait can take that long.
        serve.wait_until(
            lambda: any(waiting.search(line) for line in serve.errors),
            timeout=150,
            what="delivery waiting for the database",
        )
        assert serve.process is not None and serve.process.poll() is None, "".join(serve.errors[-30:])
        signalled = time.monotonic()
        serve.process.terminate()
        try:
            code = serve.process.wait(STOP_BOUND)
        except Exception:
            raise AssertionError(
                f"still running {STOP_BOUND:g} s after SIGTERM (the reconnect deadline is"
                f" {RECONNECT_DEADLINE:g} s):\n" + "".join(serve.errors[-30:])
            ) from None
        took = time.monotonic() - signalled
    finally:
        serve.kill()
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")
    stderr = "".join(serve.errors)
    assert code == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    assert "draining: intake closed; delivering what was accepted" in stderr, stderr[-3000:]
    # The delivery thread heard the stop: it gave up its wait, and the drain ended without its deadline.
    assert "the service is stopping: no longer waiting for the database" in stderr, stderr[-3000:]
    assert "drain deadline reached" not in stderr, stderr[-3000:]
    owed = [line for line in stderr.splitlines() if "owed at stop: " in line]
    assert len(owed) == 1, stderr[-3000:]
    if inbox == "sqlite":  # the webhook taken while the journal was away is owed, not lost
        assert "owed at stop: 1 webhook waiting in the inbox" in owed[0], owed[0]
    assert len(source_sandbox.requests(endpoint="fenix.orders")) == BEFORE

    # The database is back: a new start delivers what was owed, and nothing twice.
    again = ServeProcess(tmp_path, source_sandbox.url)
    again.start()
    total = BEFORE + 1
    try:
        if inbox != "sqlite":  # its sender retries the webhook intake refused
            with httpx.Client(timeout=10) as client:
                answer = _post(again, client, BEFORE)
                assert answer.status_code == 200, answer.text
        again.wait_until(
            lambda: _delivered(postgres_url) == {"delivered": total}, what="everything delivered"
        )
        code = again.terminate()
    finally:
        again.kill()
    assert code == 0, "".join(again.errors)[-3000:]
    sent = Counter(str(r.body["id"]) for r in source_sandbox.requests(endpoint="fenix.orders"))
    assert sent == {str(9_400_000 + i): 1 for i in range(total)}, sent
    print(f"\nstop during an outage ({inbox}): exit 0 {took:.1f} s after SIGTERM")
