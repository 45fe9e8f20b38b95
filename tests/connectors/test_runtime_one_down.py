"""One destination down in ``shipmap run``: the other destinations' deliveries go on meanwhile, and the down
one's are held back, sent once its breaker closes within outage_wait, or left pending past it (exit 9).

Fenix and Digital Genius are one sandbox on 127.0.0.1 whose Fenix has a fault plan of its own: every Fenix
request is answered 5xx while DG's are answered as the plan for both says (no faults)."""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from shipmap.connectors import EXIT_OUTAGE, RunSummary, Runtime, Sandbox
from shipmap.connectors._cli import main
from shipmap.connectors._store._journal import Journal
from test_runtime_support import BASE_CONFIG, WAIT_DEADLINE, environ, shipment_event, wait_until

QUICK_BREAKER = {"failures": 2, "cooldown": "50ms", "cooldown_cap": "200ms"}
# More shipments than a page of the journal (1,000): what was held back is read back a page at a time.
SHIPMENTS = 1050


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(fenix_faults="5xx=1") as server:  # Fenix down from the start: every request of it a 5xx
        yield server


def fenix_up(sandbox: Sandbox) -> None:
    """Fenix is up again: its plan of its own injects nothing."""
    sandbox.set_faults(None, api="fenix")


def two_destinations(
    directory: Path,
    sandbox: Sandbox,
    *,
    outage_wait: str,
    concurrency: int = 4,
    journal: Any = None,
) -> Path:
    """A config whose Fenix and DG connections are both ``sandbox``."""
    config = copy.deepcopy(BASE_CONFIG)
    config["connections"]["fenix"]["base_url"] = sandbox.url
    config["connections"]["dg"]["base_url"] = sandbox.url
    config["delivery"]["concurrency"] = concurrency
    config["delivery"]["breaker"] = dict(QUICK_BREAKER, outage_wait=outage_wait)
    if journal is not None:
        config["journal"] = journal
    path = directory / "shipmap.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    (directory / ".env").write_text("".join(f"{k}={v}\n" for k, v in environ(sandbox.url).items()))
    return path


def accepted(sandbox: Sandbox, endpoint: str) -> list[str]:
    """The ids of the requests ``sandbox`` accepted on ``endpoint``, in arrival order."""
    if endpoint == "dg.execution":
        return [r.body["inputs"]["shipment_data"]["shipment_id"] for r in sandbox.requests(endpoint=endpoint)]
    return [str(r.fulfillment_id) for r in sandbox.requests(endpoint=endpoint)]


def run_in_thread(runtime: Runtime, events: list[dict[str, Any]]) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["summary"] = runtime.run(events)
        except BaseException as error:  # reported by the test, not lost in the thread
            box["error"] = error

    thread = threading.Thread(target=target, name="test-run")
    thread.start()
    return thread, box


def finished(thread: threading.Thread, box: dict[str, Any]) -> RunSummary:
    thread.join(WAIT_DEADLINE)
    assert not thread.is_alive(), "the run did not end"
    assert "error" not in box, box.get("error")
    summary: RunSummary = box["summary"]
    return summary


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_dg_is_delivered_while_fenix_is_down_and_fenix_s_held_back_deliveries_go_once_it_is_up(
    tmp_path: Path, sandbox: Sandbox, backend: str, request: pytest.FixtureRequest
) -> None:
    """Every sender used to wait for Fenix's open breaker (up to outage_wait), so DG got nothing either."""
    journal = {"url": request.getfixturevalue("postgres_url")} if backend == "postgresql" else None
    config = two_destinations(tmp_path, sandbox, outage_wait="10m", journal=journal)
    runtime = Runtime.from_config(config, environ=environ(sandbox.url))
    shipments = [f"S-{n}" for n in range(1, SHIPMENTS + 1)]
    # The first ten again at the end (a webhook delivered twice): their Fenix rows are held back by then.
    numbers = [*range(1, SHIPMENTS + 1), *range(1, 11)]
    thread, box = run_in_thread(runtime, [shipment_event(n) for n in numbers])
    try:
        wait_until(
            lambda: len(sandbox.requests(endpoint="dg.execution")) >= SHIPMENTS or "error" in box, "DG's"
        )
        # Every DG delivery arrived while Fenix was still down: it had accepted nothing, the run was still on.
        assert sandbox.requests(endpoint="fenix.fulfillment") == []
        assert thread.is_alive() and "summary" not in box
        assert sandbox.faulted(), "Fenix was asked, and answered 5xx"
        # Only Fenix was down: its own plan answered every 5xx, DG's plan (the plan for both) none.
        assert {f.endpoint for f in sandbox.faulted()} == {"fenix.fulfillment"}
        assert sandbox.stats()["faults_by_plan"]["both"] == {}
    finally:
        fenix_up(sandbox)  # long within outage_wait
    summary = finished(thread, box)
    # Its held-back deliveries went in the same run, each once; DG's were not sent again.
    assert sorted(accepted(sandbox, "fenix.fulfillment")) == sorted(shipments)
    assert sorted(accepted(sandbox, "dg.execution")) == sorted(shipments)
    assert summary.parked == 0 and summary.dead == 0 and summary.outages == {} and summary.ok, summary
    assert runtime.breaker_store.breaker("fenix").phase == "closed"


def test_fenix_down_past_outage_wait_is_left_pending_with_exit_9_and_the_next_run_sends_it_once(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    config = two_destinations(tmp_path, sandbox, outage_wait="500ms")
    events = tmp_path / "events.ndjson"
    events.write_text("".join(json.dumps(shipment_event(n)) + "\n" for n in range(1, 41)))
    argv = ["run", str(config), "--input", str(events), "--no-progress"]
    assert main(argv) == EXIT_OUTAGE
    out = capsys.readouterr().out
    assert "40 deliveries left pending (circuit breaker open past outage_wait)" in out, out
    [down] = [line for line in out.splitlines() if "is down" in line]
    assert re.fullmatch(
        r"connection fenix is down: unavailable for \d+ s \(circuit breaker open: HTTP 50\d [^)]*\); left"
        r" pending for the next run",
        down,
    ), down
    assert sorted(accepted(sandbox, "dg.execution")) == sorted(f"S-{n}" for n in range(1, 41))
    assert sandbox.requests(endpoint="fenix.fulfillment") == []
    assert {f.endpoint for f in sandbox.faulted()} == {"fenix.fulfillment"}
    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        assert journal.counts() == {"pending": 40, "delivered": 40}

    fenix_up(sandbox)
    assert main(argv) == 0
    assert sorted(accepted(sandbox, "fenix.fulfillment")) == sorted(
        f"S-{n}" for n in range(1, 41)
    )  # each once
    assert len(sandbox.requests(endpoint="dg.execution")) == 40  # not sent again
    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        assert journal.counts() == {"delivered": 80}


def test_with_concurrency_1_each_destination_still_gets_its_deliveries_in_input_order(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """The documented order for ``concurrency: 1``: each delivery ends before the next one starts, outage or
    not. Its one sender waits for the open breaker (nothing is held back behind it)."""
    config = two_destinations(tmp_path, sandbox, outage_wait="10m", concurrency=1)
    runtime = Runtime.from_config(config, environ=environ(sandbox.url))
    thread, box = run_in_thread(runtime, [shipment_event(n) for n in range(1, 21)])
    try:
        wait_until(lambda: runtime.breaker_store.breaker("fenix").probes >= 2, "two probes of Fenix")
    finally:
        fenix_up(sandbox)
    summary = finished(thread, box)
    assert summary.parked == 0 and summary.dead == 0 and summary.ok, summary
    in_order = [f"S-{n}" for n in range(1, 21)]
    assert accepted(sandbox, "fenix.fulfillment") == in_order
    assert accepted(sandbox, "dg.execution") == in_order
