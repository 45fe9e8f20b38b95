"""A live ``shipmap serve`` on PostgreSQL (journal and inbox in one database) whose database goes away exactly
when a delivery run must open the journal anew: a reload (SIGHUP) ends the run in progress while the database
refuses new sessions, so the next run's open meets the refusal. The service has reached the database before:
an outage, not a misconfiguration, so that open waits within ``journal.reconnect_deadline`` as a reopen does,
and every webhook, before and after, is delivered exactly once. (A wrong database at start still fails at
once: ``test_a_journal_that_cannot_be_opened_at_start_fails_at_once``.)"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psycopg
from shipmap.connectors import Sandbox
from shipmap.connectors._errors import EXIT_JOURNAL

from .harness import NEXT_RUN, REAL_SHOPIFY, RetryingSender, ServeProcess, moving_nothing, on_postgres

ORDER = json.loads((REAL_SHOPIFY / "orders_cancelled_webhook.json").read_text())
BEFORE, AFTER = 10, 10
WAITING = "does not take a new session yet"


def _bodies(first: int, count: int) -> list[bytes]:
    return [
        json.dumps(dict(ORDER, id=9_400_000 + i, name=f"#O{i}")).encode() for i in range(first, first + count)
    ]


def _allow(admin_url: str, database: str, allowed: bool) -> None:
    """New sessions on ``database`` refused, or allowed again; the sessions open go on."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS {'true' if allowed else 'false'}")


def test_a_run_that_opens_the_journal_during_an_outage_waits_for_the_database(
    source_sandbox: Sandbox, tmp_path: Path, postgres_server: str, postgres_url: str
) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    serve = ServeProcess(tmp_path, source_sandbox.url)
    text = on_postgres(serve.config.read_text(), postgres_url)
    reloaded = moving_nothing(text)
    serve.config.write_text(text)
    serve.start()
    assert serve.process is not None
    early = RetryingSender([serve.url], _bodies(0, BEFORE), prefix="early", threads=1)
    late = RetryingSender([serve.url], _bodies(BEFORE, AFTER), prefix="late", threads=1)
    try:
        early.start()
        serve.wait_until(
            lambda: len(source_sandbox.requests(endpoint="fenix.orders")) >= BEFORE, what="the first webhooks"
        )
        early.join(10)
        _allow(postgres_server, database, False)  # the sessions open go on: the run in progress is unaware
        serve.config.write_text(reloaded)
        serve.process.send_signal(signal.SIGHUP)
        # The next run's open of the journal meets the refusal: it waits (the warning, at once), or, before
        # this change, gave up and the service stopped with exit 7.
        serve.wait_until(
            lambda: serve.said(WAITING) > 0 or serve.process.poll() is not None,
            timeout=60,
            what="the next run's open of the journal",
        )
        assert serve.process.poll() is None, "the service stopped:\n" + "".join(serve.errors[-30:])
        assert serve.said(NEXT_RUN) == 1, serve.errors[-10:]
        with psycopg.connect(postgres_server, autocommit=True) as admin:  # as a restart ends them
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,)
            )
        late.start()  # intake answers 503 meanwhile; the sender retries
        time.sleep(3)  # the database is away a few seconds
        _allow(postgres_server, database, True)
        late.join(120)
        serve.wait_until(
            lambda: (
                len(source_sandbox.requests(endpoint="fenix.orders")) >= BEFORE + AFTER
                or serve.process.poll() is not None
            ),
            timeout=120,
            what="every webhook delivered",
        )
        assert serve.process.poll() is None, "the service stopped:\n" + "".join(serve.errors[-30:])
        code = serve.terminate()
    finally:
        early.deadline = late.deadline = 0.0
        serve.kill()
        _allow(postgres_server, database, True)
    stderr = "".join(serve.errors)
    assert code == 0, stderr[-3000:]
    delivered = Counter(str(r.body["id"]) for r in source_sandbox.requests(endpoint="fenix.orders"))
    assert set(delivered) == {str(9_400_000 + i) for i in range(BEFORE + AFTER)}, stderr[-3000:]
    assert [key for key, n in delivered.items() if n > 1] == [], stderr[-3000:]  # exactly once
    assert "Traceback" not in stderr
    assert any("journal " in line and WAITING in line for line in serve.errors), stderr[-3000:]


def test_a_journal_that_cannot_be_opened_at_start_fails_at_once(
    source_sandbox: Sandbox, tmp_path: Path, postgres_url: str
) -> None:
    """A wrong database name (the test server trusts loopback, so a wrong password would connect): delivery's
    first open of the journal at start is not waited for, though reconnect_deadline is 10 minutes: the
    journal's error and exit 7 at once. (Intake's inbox, on the right database, opens.)"""
    serve = ServeProcess(tmp_path, source_sandbox.url)
    wrong = postgres_url + "_no_such_database"
    text = on_postgres(serve.config.read_text(), wrong)
    text = text.replace("journal:\n", "journal:\n  reconnect_deadline: 10m\n", 1)
    serve.config.write_text(text.replace("serve:\n", f"serve:\n  inbox: {postgres_url}\n", 1))
    command = [
        sys.executable,
        "-c",
        "from shipmap.connectors._cli import entry; entry()",
        "serve",
        str(serve.config),
    ]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=serve.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _, stderr = process.communicate(timeout=60)  # well within the 10 minutes a wait would take
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert process.returncode == EXIT_JOURNAL, stderr[-3000:]
    assert (
        "cannot open journal" in stderr and f'database "{wrong.rsplit("/", 1)[1]}" does not exist' in stderr
    ), stderr[-3000:]
    assert WAITING not in stderr, stderr[-3000:]
    assert "Traceback" not in stderr
