"""A live ``shipmap serve`` whose PostgreSQL journal goes away (its sessions ended by the server, new ones
refused, as a database taken offline is) for longer than ``journal.reconnect_deadline`` (2 s here, so the test
takes seconds; a database back within it is ridden out: ``test_serve_database_restart``): delivery stops with
the journal's error, and the process still says what it did before it stops with that error's exit code.

The service delivers some webhooks and settles (every delivery marked in the journal) before the database
goes, so the summary's count of deliveries is exactly the sandbox's. With an SQLite inbox, a webhook posted
after is committed (intake does not need the journal) and is what delivery fails on: it is still owed, and
the stop report counts it, and says that the journal's pending deliveries cannot be read rather than a number.
With the inbox in the journal's database (the default), intake refuses that webhook (503, its sender retries)
and neither part of what is owed can be read: the report says so of both."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from shipmap.connectors import Journal, JournalError, Sandbox

from .harness import REAL_SHOPIFY, ServeProcess, on_postgres, shopify_headers

ORDER = json.loads((REAL_SHOPIFY / "orders_cancelled_webhook.json").read_text())
PASSWORD = "serve-journal-pw-8c1f"  # the server trusts loopback: any password is accepted, and must not show
BEFORE = 5  # webhooks delivered before the database goes


def _body(index: int) -> bytes:
    return json.dumps(dict(ORDER, id=9_100_000 + index, name=f"#L{index}")).encode()


def _take_offline(admin_url: str, database: str) -> None:
    """End every session on ``database`` and refuse new ones: what a reconnect finds is a refusal."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        )


def _serve_until_the_journal_goes(
    inbox: str, sandbox: Sandbox, tmp_path: Path, postgres_server: str, postgres_url: str, *options: str
) -> tuple[ServeProcess, int]:
    """A live serve that delivers ``BEFORE`` webhooks, loses its journal's database, and is sent one more;
    the process once it has ended by itself, and its exit code."""
    database = postgres_url.rsplit("/", 1)[1]
    url = postgres_url.replace("postgres@", f"postgres:{PASSWORD}@", 1)
    serve = ServeProcess(tmp_path, sandbox.url, options=options)
    # A database away for journal.reconnect_deadline stops the service: 2 s here, 2 minutes by default.
    config = on_postgres(serve.config.read_text(), url).replace(
        f"  url: {url}\n", f"  url: {url}\n  reconnect_deadline: 2s\n", 1
    )
    if inbox == "sqlite":
        config = config.replace("serve:\n", "serve:\n  inbox: .shipmap/inbox.db\n", 1)
    serve.config.write_text(config)
    serve.start()
    try:
        with httpx.Client(timeout=10) as client:
            for index in range(BEFORE):
                body = _body(index)
                answer = serve.post(
                    client, "shop", body, shopify_headers(body, "orders/create", f"lost-{index}")
                )
                assert answer.status_code == 200, answer.text

            def settled() -> bool:
                try:
                    with Journal(url, readonly=True) as journal:
                        return journal.counts() == {"delivered": BEFORE}
                except JournalError:  # delivery has not created it yet
                    return False

            serve.wait_until(settled, what="every webhook delivered and marked in the journal")
            _take_offline(postgres_server, database)
            body = _body(BEFORE)
            answer = serve.post(
                client, "shop", body, shopify_headers(body, "orders/create", f"lost-{BEFORE}")
            )
            if inbox == "sqlite":  # intake commits it: the journal is delivery's
                assert answer.status_code == 200, answer.text
            else:  # nothing acknowledged that cannot be kept
                assert (answer.status_code, answer.json()["error"]) == (503, "inbox_unavailable"), answer.text
        assert serve.process is not None
        code = serve.process.wait(90)
    finally:
        serve.kill()
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")
    return serve, code


def _names(postgres_url: str) -> tuple[str, str]:
    """The journal's URL as every line shows it, and the stop report's clause of its unread pending deliveries."""
    database = postgres_url.rsplit("/", 1)[1]
    port = urlsplit(postgres_url).port
    shown = f"postgresql://postgres@127.0.0.1:{port}/{database}"
    unread = (
        f"cannot read the journal's pending deliveries (JournalError: cannot open journal {shown}: connection"
        f' failed: connection to server at "127.0.0.1", port {port} failed: FATAL:  database'
        f' "{database}" is not currently accepting connections)'
    )
    return shown, unread


# The error stop's first line: delivery has ended, so no drain is promised (a SIGTERM's line promises one).
STOPPING = (
    "stopping on an error: intake closed; nothing more will be delivered ({error}); what was accepted and not"
    " delivered stays in the inbox and the journal for the next start"
)


def _stop_error(shown: str) -> re.Pattern[str]:
    """The error that stops delivery: the journal's, or the inbox's (the same database) when delivery's read
    of the inbox meets it first."""
    return re.compile(rf"(journal write failed|inbox) {re.escape(shown)}: PostgreSQL says: ")


@pytest.mark.parametrize("inbox", ["sqlite", "the journal's database"])
def test_a_serve_whose_journal_goes_away_prints_what_it_did_and_exits_7(
    inbox: str, source_sandbox: Sandbox, tmp_path: Path, postgres_server: str, postgres_url: str
) -> None:
    shown, journal_unread = _names(postgres_url)
    serve, code = _serve_until_the_journal_goes(
        inbox, source_sandbox, tmp_path, postgres_server, postgres_url
    )
    # The error line is the last the process writes: once it is read, so is everything before it.
    serve.wait_until(lambda: any(line.startswith("error: ") for line in serve.errors), what="the error line")
    stderr, stdout = "".join(serve.errors), "".join(serve.output)
    lines = stderr.splitlines()
    assert code == 7, stderr[-3000:]  # JournalError's exit code, not 0 nor serve's own
    assert lines[-1].startswith("error: ") and _stop_error(shown).match(lines[-1][7:]), lines[-1]
    # The summary, on stderr before the error: the table's deliveries are the sandbox's, one by one.
    headers = [i for i, line in enumerate(lines) if re.match(r"target +delivered +retried +dead", line)]
    totals = [i for i, line in enumerate(lines) if line.startswith("events ")]
    assert len(headers) == len(totals) == 1, stderr[-3000:]
    header, end = headers[0], totals[0]
    assert header < end < len(lines) - 1, stderr[-3000:]
    delivered = sum(int(line.split()[1]) for line in lines[header + 1 : end])
    assert delivered == len(source_sandbox.requests(endpoint="fenix.orders")) == BEFORE, stderr[-3000:]
    assert "target" not in stdout  # a summary printed once, beside the error
    # What is owed: the inbox's webhook counted; the journal's pending deliveries said to be unread, not 0.
    found = [i for i, line in enumerate(lines) if "owed at stop: " in line]
    assert len(found) == 1 and found[0] < header, stderr[-3000:]
    owed = lines[found[0]]
    if inbox == "sqlite":
        assert f"owed at stop: 1 webhook waiting in the inbox; {journal_unread}; the next start" in owed, owed
    else:
        assert f"owed at stop: {journal_unread} nor the inbox's waiting webhooks (InboxError: " in owed, owed
    # The stop says what happens: no drain, nothing more delivered; never the SIGTERM's "delivering" line.
    stopping = [line for line in lines if " shipmap.connectors.serve: stopping on an error: " in line]
    assert len(stopping) == 1 and "ERROR shipmap.connectors.serve: stopping" in stopping[0], stderr[-3000:]
    error = stopping[0].split("nothing more will be delivered (", 1)[1].split("); what was accepted", 1)[0]
    assert f"error: {error}" == lines[-1], stopping[0]  # the error the process exits on
    assert stopping[0].endswith(STOPPING.format(error=error)), stopping[0]
    assert lines.index(stopping[0]) < found[0]
    assert "draining: intake closed" not in stderr and "delivering what was accepted" not in stderr
    assert "Traceback" not in stderr
    assert PASSWORD not in stderr + stdout


def test_with_json_logs_the_stop_is_json_records_the_summary_one_of_them(
    source_sandbox: Sandbox, tmp_path: Path, postgres_server: str, postgres_url: str
) -> None:
    """``--log-format json``: every line on stderr is a JSON record, the summary one of them (its numbers as
    fields), and the error line the last; the exit code is the journal's, as with text logs."""
    shown, journal_unread = _names(postgres_url)
    serve, code = _serve_until_the_journal_goes(
        "sqlite", source_sandbox, tmp_path, postgres_server, postgres_url, "--log-format", "json"
    )
    serve.wait_until(lambda: any('"exit_code": 7' in line for line in serve.errors), what="the error record")
    stderr = "".join(serve.errors)
    assert code == 7, stderr[-3000:]
    records = [json.loads(line) for line in stderr.splitlines()]  # every line parses
    assert all({"time", "level", "logger", "message"} <= record.keys() for record in records), stderr[-3000:]
    *_, summary, error = records
    assert (error["level"], error["logger"], error["exit_code"]) == ("ERROR", "shipmap.cli", 7), error
    assert error["message"].startswith("error: ") and _stop_error(shown).match(error["message"][7:]), error
    assert (summary["level"], summary["logger"], summary["message"]) == (
        "INFO",
        "shipmap.connectors.serve",
        "summary at stop",
    ), summary
    fields = summary["summary"]
    sent = len(source_sandbox.requests(endpoint="fenix.orders"))
    assert (fields["delivered"], fields["dead"], sent) == (BEFORE, 0, BEFORE), fields
    # The webhook posted after is an event of the summary when delivery took it before its journal write failed.
    assert fields["events"] in (BEFORE, BEFORE + 1), fields
    assert fields["exit_code"] == 7 and fields["format_version"] == 1, fields
    assert [(t["mapping"], t["target"], t["delivered"]) for t in fields["targets"]] == [
        ("shopify-order", "order", BEFORE)
    ], fields
    assert fields["replays"] is None and fields["dead_letters_now"] is None, fields  # the journal: unread
    assert fields["parked"] == 0 and fields["outages"] == {}, fields
    messages = [record["message"] for record in records]
    stopping = [m for m in messages if m.startswith("stopping on an error: ")]
    assert stopping == [STOPPING.format(error=error["message"][7:])], messages[-8:]
    assert any(
        m.startswith(f"owed at stop: 1 webhook waiting in the inbox; {journal_unread}") for m in messages
    ), messages[-8:]
    assert not any(m.startswith("draining: ") for m in messages)
    assert "".join(serve.output).count("\n") == 1  # stdout: only the listening line
    assert "Traceback" not in stderr and PASSWORD not in stderr
