"""``shipmap run``, ``shipmap dead-letters`` and ``shipmap replay`` in-process, against the sandbox."""

from __future__ import annotations

import io
import json
import os
import re
import threading
from pathlib import Path

import pytest
from shipmap.connectors import EXIT_DEAD_LETTERS, Journal, Sandbox
from shipmap.connectors._cli import main
from shipmap.connectors._cli.run import ProgressBar, run_with_progress
from shipmap.connectors._runtime import Progress, RunSummary
from test_runtime_support import FIXTURES, SECRETS, order_event, shipment_event, write_config


def ndjson(path: Path, events: list[object]) -> Path:
    path.write_text("".join(json.dumps(event) + "\n" for event in events))
    return path


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_run_delivers_and_prints_a_summary_per_target(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, sandbox.url)
    events = ndjson(
        tmp_path / "e.ndjson", [order_event(1), shipment_event(1), {"topic": "other", "payload": {}}]
    )
    assert main(["run", str(config), "--input", str(events)]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header == ["target", "delivered", "retried", "dead", "skipped", "p50", "p95", "p99"]
    assert re.search(r"acme-orders\.order\s+1\s+0\s+0\s+0\s+\d+ ms\s+\d+ ms\s+\d+ ms", out)
    assert re.search(r"acme-shipments\.notify\s+1\s+0\s+0\s+0", out)
    assert "events 3  unrouted 1  rejected input records 0  recovered 0" in out
    assert main(["run", str(config), "--input", str(events)]) == 0
    assert re.search(r"acme-orders\.order\s+0\s+0\s+0\s+1\s", capsys.readouterr().out)


def test_run_reads_stdin_by_default(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, sandbox.url)
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps([order_event(1), order_event(2)])))
    assert main(["run", str(config)]) == 0
    assert re.search(r"acme-orders\.order\s+2\s", capsys.readouterr().out)


def test_dead_letters_make_a_dedicated_exit_code_then_list_and_replay(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = [
        {
            "mapping": str(FIXTURES / "orders.yaml"),
            "topic": "orders/create",
            "targets": {"order": {"path": "/api/v1/orders/{number}/created"}},
        }
    ]
    config = write_config(tmp_path, sandbox.url, mappings=broken)
    events = ndjson(tmp_path / "e.ndjson", [order_event(1), order_event(2)])
    assert main(["run", str(config), "-i", str(events)]) == EXIT_DEAD_LETTERS == 8
    out = capsys.readouterr().out
    assert "2 dead-lettered, 0 rejected" in out
    # A re-run meets them again: skipped, not new dead letters (its exit says what it did), yet still owed.
    assert main(["run", str(config), "-i", str(events)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"acme-orders\.order\s+0\s+0\s+0\s+2 \(2 dead\)", out), out
    assert "dead-lettered" not in out, out
    assert (
        "2 dead letters of earlier runs skipped, not sent again: see `shipmap dead-letters`; fix and"
        " `shipmap replay`\n" in out
    ), out

    assert main(["dead-letters", str(config)]) == 0
    listing = capsys.readouterr().out
    assert "acme-orders.order  HTTP 400  attempts 1" in listing
    assert "reason: HTTP 400 Bad Request" in listing
    assert "the URL names order '#1001'" in listing
    assert "2 dead letters, 0 rejected input records" in listing
    keys = re.findall(r"^([0-9a-f]{32})  ", listing, re.MULTILINE)
    assert len(keys) == 2

    assert main(["dead-letters", "--journal", str(tmp_path / "journal.db"), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(r["key"] for r in records) == sorted(keys)
    assert records[0]["status"] == 400 and records[0]["target"] == "order"

    # Replay with the config still broken: still dead (the same dead letter, not a new one), still exit 8.
    assert main(["replay", str(config), "--key", keys[0][:8]]) == EXIT_DEAD_LETTERS
    out = capsys.readouterr().out
    assert "replayed: delivered 0, still dead 1, left pending 0, skipped 0\n" in out, out
    assert (
        "1 dead letter failed again (still dead, not new ones): see `shipmap dead-letters`; fix and"
        " `shipmap replay` again\n" in out
    ), out
    assert "dead-lettered" not in out, out
    write_config(tmp_path, sandbox.url)  # the fix: the kind's own path
    assert main(["replay", str(config), "--key", keys[0][:8]]) == 0
    out = capsys.readouterr().out
    assert re.search(r"acme-orders\.order\s+1\s", out)
    assert "replayed: delivered 1, still dead 0, left pending 0, skipped 0\n" in out, out
    assert "failed again" not in out, out
    assert main(["replay", str(config)]) == 0
    capsys.readouterr()
    assert main(["dead-letters", str(config)]) == 0
    assert capsys.readouterr().out.strip() == "no dead letters"
    assert main(["replay", str(config)]) == 0
    assert capsys.readouterr().out.strip() == "no dead letters to replay"
    assert sorted(r.order_id or "" for r in sandbox.requests(endpoint="fenix.orders")) == ["1001", "1002"]


def test_a_dead_letter_and_a_rejected_record_resolved_by_hand_are_owed_no_more(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    """An operator closes what should never be sent (a test order) without replaying it: it leaves the
    listing, keeps both reasons, is not sent by a replay or a run of the same input, and the other dead letter
    stays a to-do."""
    broken = [
        {
            "mapping": str(FIXTURES / "orders.yaml"),
            "topic": "orders/create",
            "targets": {"order": {"path": "/api/v1/orders/{number}/created"}},
        }
    ]
    config = write_config(tmp_path, sandbox.url, mappings=broken)
    events = tmp_path / "e.ndjson"
    events.write_text(json.dumps(order_event(1)) + "\n{not json\n" + json.dumps(order_event(2)) + "\n")
    assert main(["run", str(config), "-i", str(events)]) == EXIT_DEAD_LETTERS
    capsys.readouterr()
    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        by_order = {entry.origin: entry.key for entry in journal.dead_letters()}
    test_order, other = by_order[f"{events}:1"], by_order[f"{events}:3"]

    argv = ["dead-letters", str(config), "--resolve", test_order[:8], "--resolve", f"{events}:2"]
    assert main([*argv, "--reason", "a test order"]) == 0
    assert capsys.readouterr().out == (
        f"resolved 1 dead letter starting {test_order[:8]}: {test_order}\nresolved rejected input {events}:2\n"
    )
    assert main(["dead-letters", str(config)]) == 0
    listing = capsys.readouterr().out
    assert other in listing and test_order not in listing
    assert listing.endswith("1 dead letter, 0 rejected input records\n")
    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        closed = journal.get(test_order)
    assert closed is not None and closed.state == "resolved"
    assert closed.reason is not None and closed.reason.startswith(
        "resolved by hand: a test order; its dead letter's reason: HTTP 400 Bad Request"
    )

    # Again, or a name that matches nothing open: said, exit 1, nothing changed.
    assert main(["dead-letters", str(config), "--resolve", test_order[:8], "--resolve", "ab"]) == 1
    assert capsys.readouterr().out == (
        f"nothing open matches {test_order[:8]}: no dead letter key starts with it, no rejected input is it\n"
        "nothing open matches ab: no dead letter key starts with it, no rejected input is it (a key needs at "
        "least 6 characters)\n"
    )
    assert main(["dead-letters", str(config), "--reason", "why"]) == 2
    assert "--reason goes with --resolve" in capsys.readouterr().err

    # The fix, then a replay and a run of the same input: the resolved order is never sent, the other is.
    write_config(tmp_path, sandbox.url)
    assert main(["replay", str(config)]) == 0
    assert main(["run", str(config), "-i", str(events)]) == EXIT_DEAD_LETTERS  # the line still is not JSON
    assert [r.order_id for r in sandbox.requests(endpoint="fenix.orders")] == ["1002"]


def test_dead_letters_lists_more_than_a_page_each_once_with_the_totals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The listing reads the journal a thousand rows at a time: 2,501 dead letters and 1,001 rejected records
    cross pages of both, and each is printed once."""
    path = tmp_path / "journal.db"
    with Journal(path) as journal, journal.transaction():
        journal.put_source("d" * 64, '{"id":1}')
        for number in range(2501):
            key = f"{number:032x}"
            journal.mark_pending(
                key, source_digest="d" * 64, mapping="m", target="t", connection="fenix", method="POST",
                url="http://127.0.0.1/x", payload={"id": "1"}, idempotency_key=None, origin=f"in.ndjson:{number}",
            )  # fmt: skip
            journal.mark_dead(
                key, source_digest="d" * 64, mapping="m", target="t", reason="HTTP 400", status=400
            )
        for line in range(1001):
            journal.record_rejected(f"in.ndjson:{line}", "not JSON", "{broken")
    assert main(["dead-letters", "--journal", str(path)]) == 0
    listing = capsys.readouterr().out
    keys = re.findall(r"^([0-9a-f]{32})  m\.t  HTTP 400", listing, re.MULTILINE)
    assert sorted(keys) == [f"{number:032x}" for number in range(2501)]
    assert listing.count("rejected input in.ndjson:") == 1001
    assert listing.endswith("2501 dead letters, 1001 rejected input records\n")
    assert main(["dead-letters", "--journal", str(path), "--json", "--key", f"{0xA0:032x}"[:31]]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # with --key, no rejected
    assert [r["key"] for r in records] == [f"{number:032x}" for number in range(0xA0, 0xB0)]


def test_dead_letters_says_one_of_each_in_the_singular(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "journal.db"
    with Journal(path) as journal, journal.transaction():
        journal.put_source("d" * 64, '{"id":1}')
        journal.mark_pending(
            "0" * 32, source_digest="d" * 64, mapping="m", target="t", connection="fenix", method="POST",
            url="http://127.0.0.1/x", payload={"id": "1"}, idempotency_key=None, origin="in.ndjson:1",
        )  # fmt: skip
        journal.mark_dead(
            "0" * 32, source_digest="d" * 64, mapping="m", target="t", reason="HTTP 400", status=400
        )
        journal.record_rejected("in.ndjson:2", "not JSON", "{broken")
    assert main(["dead-letters", "--journal", str(path)]) == 0
    assert capsys.readouterr().out.endswith("1 dead letter, 1 rejected input record\n")


def test_a_pipe_as_input_is_delivered_like_a_file(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    """``shipmap run CONFIG --input <(zcat day.ndjson.gz)``: a pipe, read once by the run's worker process."""
    config = write_config(tmp_path, sandbox.url)
    fifo = tmp_path / "events.ndjson"
    os.mkfifo(fifo)

    def write() -> None:
        with fifo.open("w") as pipe:
            pipe.write("".join(json.dumps(order_event(n)) + "\n" for n in (1, 2, 3)))

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    assert main(["run", str(config), "-i", str(fifo), "--no-progress", "--workers", "1"]) == 0
    writer.join(timeout=10)
    assert "events 3  unrouted 0  rejected input records 0" in capsys.readouterr().out
    assert sorted(r.order_id or "" for r in sandbox.requests(endpoint="fenix.orders")) == [
        "1001",
        "1002",
        "1003",
    ]
    assert main(["run", str(config), "-i", os.devnull, "--dry-run"]) == 0
    assert "# dry run: 0 entries; nothing was sent" in capsys.readouterr().out


def test_the_dry_run_prints_requests_with_no_secret_and_sends_nothing(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, sandbox.url)
    events = ndjson(tmp_path / "e.ndjson", [order_event(1), shipment_event(1), {"topic": "x", "payload": {}}])
    assert main(["run", "-v", str(config), "-i", str(events), "--dry-run"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert f"POST {sandbox.url}/api/v1/orders/1001/created\n" in out
    assert f"POST {sandbox.url}/api/v1/order/1001/fulfillment/S-1/created\n" in out
    assert f"POST {sandbox.url}/execution\n" in out
    assert "authToken: ***\nx-api-key: ***\nx-identity: ***\n" in out
    assert "Authorization: Basic ***\n" in out
    assert '"carrier_code": "ups"' in out
    assert "UNROUTED: no mappings entry matches this event" in out
    assert "# dry run: 4 entries; nothing was sent" in out
    for secret in SECRETS:
        assert secret not in out and secret not in captured.err
    assert sandbox.stats()["accepted"] == 0 and sandbox.stats()["rejected"] == {}  # no login either
    assert not (tmp_path / "journal.db").exists()


def test_the_dry_run_masks_a_secret_filled_into_a_routes_path(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    """A reference in a path is allowed before its query string (an account id); one that holds a credential
    the config uses elsewhere is masked in the printed URL as it is in headers."""
    mappings = [
        {"mapping": str(FIXTURES / "shipments.yaml"), "topic": "shipments/create",
         "targets": {"notify": {"path": "/execution/${DG_API_SECRET}"}}},
    ]  # fmt: skip
    config = write_config(tmp_path, sandbox.url, mappings=mappings)
    events = ndjson(tmp_path / "e.ndjson", [shipment_event(1)])
    assert main(["run", str(config), "-i", str(events), "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert f"POST {sandbox.url}/execution/***\n" in captured.out
    for secret in SECRETS:
        assert secret not in captured.out and secret not in captured.err


def test_an_unrouted_event_is_named_by_its_topic_escaped_and_cut_short(
    tmp_path: Path,
    sandbox: Sandbox,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The topic is the sender's text: in the warning it is quoted, its control characters escaped (a forged log
    line or a terminal escape stays visible as such) and its length bounded."""
    config = write_config(tmp_path, sandbox.url)
    hostile = "orders/paid\x1b[2J\n2026-01-01 INFO forged line " + "x" * 500
    events = ndjson(tmp_path / "e.ndjson", [{"topic": hostile, "payload": {}}, {"payload": {}}])
    assert main(["run", str(config), "-i", str(events)]) == 0
    warnings = [r.getMessage() for r in caplog.records if ": unrouted: " in r.getMessage()]
    shown = "'orders/paid\\x1b[2J\\n2026-01-01 INFO forged line " + "x" * 55 + "…'"  # 100 characters
    assert warnings == [
        f"{events}:1: unrouted: no mappings entry matches this event (topic {shown})",
        f"{events}:2: unrouted: no mappings entry matches this event",  # no topic: none named
    ]
    assert main(["run", str(config), "-i", str(events), "--dry-run"]) == 0
    assert f"UNROUTED: no mappings entry matches this event (topic {shown})\n" in capsys.readouterr().out


def test_config_and_input_errors_exit_with_their_codes(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, sandbox.url)
    assert main(["run", str(config), "-i", str(tmp_path / "missing.ndjson")]) == 3
    assert "missing.ndjson does not exist" in capsys.readouterr().err
    (tmp_path / ".env").write_text("")  # the secrets are gone
    assert main(["run", str(config), "-i", "-"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"{config}:5:15: error: connections.fenix.base_url: environment variable SANDBOX_URL is not set (nor in"
        " the env file)\n"
    )


def test_a_bad_input_line_is_reported_and_makes_the_run_fail(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, sandbox.url)
    events = tmp_path / "e.ndjson"
    events.write_text(json.dumps(order_event(1)) + "\nnot json at all\n" + json.dumps(order_event(2)) + "\n")
    assert main(["run", str(config), "-i", str(events)]) == EXIT_DEAD_LETTERS
    assert "rejected input records 1" in capsys.readouterr().out
    assert main(["dead-letters", str(config)]) == 0
    listing = capsys.readouterr().out
    assert f"rejected input {events}:2: not JSON" in listing and "text: not json at all" in listing


def test_the_progress_bar_draws_on_a_terminal_and_ends_its_line() -> None:
    terminal = FakeTerminal()

    def execute(progress: object) -> RunSummary:
        assert callable(progress)
        for n in range(1, 4):
            progress(Progress(events=n, delivered=n, dead=0, skipped=0, unrouted=0, rejected=0,
                              in_flight=1, elapsed=n / 10, total=4))  # fmt: skip
        return RunSummary()

    run_with_progress(execute, no_progress=False, verbose=0, stream=terminal)
    text = terminal.getvalue()
    assert text.startswith("\r\x1b[K[######------------------] 1/4 events")
    assert text.endswith("3/4 events  delivered 3  dead 0  skipped 0  unrouted 0  in flight 1  10/s\n")


def test_the_progress_line_without_a_total() -> None:
    bar = ProgressBar(io.StringIO())
    bar.last = Progress(
        events=7, delivered=5, dead=1, skipped=1, unrouted=0, rejected=0, in_flight=2, elapsed=1.0
    )
    assert bar.line() == "7 events  delivered 5  dead 1  skipped 1  unrouted 0  in flight 2  7/s"
    bar.last = Progress(
        events=1, delivered=1, dead=0, skipped=0, unrouted=0, rejected=0, in_flight=0, elapsed=1.0
    )
    assert bar.line() == "1 event  delivered 1  dead 0  skipped 0  unrouted 0  in flight 0  1/s"


def test_an_event_without_a_body_is_dead_lettered_naming_the_body_path(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    """A webhook whose JSON body is null (or an event without the key events.body names) was dead-lettered
    'at the configured body path': the reason now names the key and its expression, so the operator knows
    where to look. The events around it are delivered."""
    config = write_config(tmp_path, sandbox.url)
    events = ndjson(
        tmp_path / "e.ndjson",
        [
            order_event(1),
            {"topic": "orders/create", "payload": None},
            {"topic": "orders/create"},
            order_event(3),
        ],
    )
    assert main(["run", str(config), "-i", str(events)]) == EXIT_DEAD_LETTERS
    capsys.readouterr()
    assert sorted(r.order_id or "" for r in sandbox.requests(endpoint="fenix.orders")) == ["1001", "1003"]
    assert main(["dead-letters", str(config)]) == 0
    listing = capsys.readouterr().out
    reason = (
        "reason: the event has no source document: events.body `payload` finds nothing in it (null or absent)"
    )
    # Null and absent are the same source document (nothing): one dead letter for both.
    assert listing.count(reason) == 1 and listing.endswith("1 dead letter, 0 rejected input records\n"), (
        listing
    )


def test_an_event_with_a_number_too_large_to_map_is_dead_lettered_alone(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    """round() of a 400-digit weight raised decimal.InvalidOperation; now that event is a dead letter whose
    reason is the located field error, and the events around it are delivered."""
    mapping = tmp_path / "orders.yaml"
    text = (FIXTURES / "orders.yaml").read_text(encoding="utf-8")
    mapping.write_text(
        text.replace("value: {literal: 0}, units", "value: 'round(coalesce(weight, `0`))', units"),
        encoding="utf-8",
    )
    config = write_config(
        tmp_path, sandbox.url, mappings=[{"mapping": str(mapping), "topic": "orders/create"}]
    )
    huge = int("9" * 400)
    events = ndjson(tmp_path / "e.ndjson", [order_event(1), order_event(2, weight=huge), order_event(3)])
    assert main(["run", str(config), "-i", str(events)]) == EXIT_DEAD_LETTERS
    out = capsys.readouterr().out
    assert re.search(r"acme-orders \(mapping\)\s+0\s+0\s+1\s", out), out
    assert re.search(r"acme-orders\.order\s+2\s+0\s+0\s", out), out
    assert sorted(r.order_id or "" for r in sandbox.requests(endpoint="fenix.orders")) == ["1001", "1003"]
    assert main(["dead-letters", str(config)]) == 0
    listing, hint = capsys.readouterr()
    assert hint == (
        f"once the cause is fixed, `shipmap replay {config}` sends the dead letters again;"
        f" `shipmap dead-letters {config} --resolve KEY` closes one without sending\n"
    )
    assert "round(): a number of 400 digits is too large (at most 309 digits)" in listing, listing
    # The located error keeps its lines under "reason:", the caret under the column it names.
    assert "\n      target field: order.total_weight.value\n" in listing, listing
    lines = listing.splitlines()
    caret = next(i for i, line in enumerate(lines) if line.endswith("^"))
    code, under = lines[caret - 1], lines[caret]
    assert code.index("|") == under.index("|") and code[under.index("^")] not in " |", listing
    assert "internal error" not in listing and "Traceback" not in listing, listing
