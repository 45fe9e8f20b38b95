"""A live ``shipmap serve`` whose PostgreSQL inbox is reached through a TCP forwarder (``pg_forwarder``) that is
partitioned: it forwards nothing and closes nothing, so the delivery side's statement waits until the
statement watchdog cuts it (its 30 s statement timeout and a 5 s grace). The delivery side treats the cut as an
ended session (``journal.reconnect_deadline``): a partition healed within the deadline is ridden out, every
webhook reaching the sandbox exactly once; one past it stops the service with exit code 7 and the cut's words,
as before. The journal is reached directly: only the inbox is cut off."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pg_forwarder import Forwarder
from shipmap.connectors import Sandbox
from shipmap.connectors._store._journal_pg import display_url

from .harness import REAL_SHOPIFY, RetryingSender, ServeProcess, on_postgres

ORDER = json.loads((REAL_SHOPIFY / "orders_cancelled_webhook.json").read_text())
WEBHOOKS = 40
BEFORE = 10  # webhooks acknowledged before the partition
CUT = "a statement had no answer 5s after its own 30s timeout"  # the watchdog's line for a 30 s statement
# What the test waits, at most, for the cut: the statement's 30 s timeout, the 5 s grace, a busy machine.
CUT_WITHIN_S = 120.0


@pytest.fixture
def forwarded(postgres_url: str) -> Iterator[tuple[Forwarder, str]]:
    """A forwarder to the test's database, and the database's URL through it."""
    forwarder, url = Forwarder.to(postgres_url)
    try:
        yield forwarder, url
    finally:
        forwarder.close()


def _serve(tmp_path: Path, sandbox: Sandbox, journal_url: str, inbox_url: str, deadline: str) -> ServeProcess:
    serve = ServeProcess(tmp_path, sandbox.url)
    config = on_postgres(serve.config.read_text(), journal_url)
    config = config.replace(
        f"  url: {journal_url}\n", f"  url: {journal_url}\n  reconnect_deadline: {deadline}\n", 1
    )
    serve.config.write_text(config.replace("serve:\n", f"serve:\n  inbox: {inbox_url}\n", 1))
    return serve


def _cut_lines(serve: ServeProcess, inbox_url: str) -> int:
    return serve.said(f"inbox {display_url(inbox_url)}: {CUT}")


def test_a_partition_healed_within_the_deadline_is_ridden_out_and_every_webhook_delivered_once(
    forwarded: tuple[Forwarder, str], source_sandbox: Sandbox, tmp_path: Path, postgres_url: str
) -> None:
    forwarder, inbox_url = forwarded
    serve = _serve(tmp_path, source_sandbox, postgres_url, inbox_url, "120s")
    serve.start()
    bodies = [json.dumps(dict(ORDER, id=9_400_000 + i, name=f"#P{i}")).encode() for i in range(WEBHOOKS)]
    client = RetryingSender([serve.url], bodies, prefix="partition", threads=2)
    try:
        client.start()
        serve.wait_until(lambda: len(client.acked) >= BEFORE, what="acknowledgements before the partition")
        forwarder.partition()
        # The idle feed looks at the inbox every second: its statement is in flight, and is cut.
        serve.wait_until(
            lambda: _cut_lines(serve, inbox_url) >= 1, timeout=CUT_WITHIN_S, what="a cut statement"
        )
        forwarder.heal()
        assert serve.process is not None
        serve.wait_until(
            lambda: len(client.acked) == WEBHOOKS or serve.process.poll() is not None,
            timeout=240,
            what="every webhook acknowledged",
        )
        assert serve.process.poll() is None, "the service stopped:\n" + "".join(serve.errors[-30:])
        client.join(10)
        serve.wait_until(
            lambda: (
                len(source_sandbox.requests(endpoint="fenix.orders")) >= WEBHOOKS
                or serve.process.poll() is not None
            ),
            timeout=180,
            what="every acknowledged webhook delivered",
        )
        assert serve.process.poll() is None, "the service stopped:\n" + "".join(serve.errors[-30:])
        code = serve.terminate()
    finally:
        client.deadline = 0.0  # its threads stop at their next try
        serve.kill()
    stderr = "".join(serve.errors)
    assert code == 0, stderr[-3000:]
    delivered = Counter(str(r.body["id"]) for r in source_sandbox.requests(endpoint="fenix.orders"))
    assert set(delivered) == {str(9_400_000 + i) for i in range(WEBHOOKS)}, stderr[-3000:]
    assert [key for key, n in delivered.items() if n > 1] == [], stderr[-3000:]  # exactly once
    assert set(client.non_2xx) <= {"503"}, (
        client.non_2xx
    )  # intake answered 503 while cut off: a sender retries
    assert f"inbox {display_url(inbox_url)}: connection opened again after " in stderr, stderr[-3000:]
    with psycopg.connect(postgres_url) as db:
        assert db.execute("SELECT count(*) FROM inbox WHERE state = 'pending'").fetchone() == (0,)
        assert db.execute("SELECT state, count(*) FROM deliveries GROUP BY state").fetchall() == [
            ("delivered", WEBHOOKS)
        ]
    assert "Traceback" not in stderr


def test_a_partition_past_the_deadline_stops_the_service_with_exit_code_7_and_the_cut_said(
    forwarded: tuple[Forwarder, str], source_sandbox: Sandbox, tmp_path: Path, postgres_url: str
) -> None:
    forwarder, inbox_url = forwarded
    serve = _serve(tmp_path, source_sandbox, postgres_url, inbox_url, "2s")
    serve.start()
    body = [json.dumps(dict(ORDER, id=9_410_000, name="#Q0")).encode()]
    client = RetryingSender([serve.url], body, prefix="past", threads=1)
    try:
        client.start()
        client.join(60)
        assert client.acked == {0}
        serve.wait_until(
            lambda: len(source_sandbox.requests(endpoint="fenix.orders")) == 1, what="the webhook delivered"
        )
        forwarder.partition()  # never healed
        assert serve.process is not None
        code = serve.process.wait(240)
    finally:
        serve.kill()
    serve.wait_until(lambda: any(line.startswith("error: ") for line in serve.errors), what="the error line")
    stderr = "".join(serve.errors)
    assert code == 7, stderr[-3000:]
    last = stderr.splitlines()[-1]
    cut = (
        f"error: inbox {display_url(inbox_url)}: no answer within 30s, nor 5s after; the connection was cut ("
    )
    assert last.startswith(cut), last
    stopping = (
        "ERROR shipmap.connectors.serve: stopping on an error: intake closed; nothing more will be delivered"
    )
    assert f"{stopping} ({last[7:]}); what was accepted" in stderr, stderr[-3000:]
    assert "Traceback" not in stderr
