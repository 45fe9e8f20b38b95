"""A bug in the send path while ``shipmap serve`` runs: delivery stalls, intake does not.

A program embeds the service (``Service(runtime)``) with a custom transport that raises for every order
request, as a broken one would. The run stops at ten raising sends in a row; the service keeps accepting
webhooks, ``/readyz`` and ``/metrics`` say delivery is stalled, nothing becomes a dead letter, and once the
transport works again the next run delivers every webhook exactly once. Real sandbox, real HTTP listener.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from shipmap.connectors import Journal, RunSummary, Runtime, Sandbox
from shipmap.connectors._cli import main
from shipmap.connectors._errors import EXIT_JOURNAL
from shipmap.connectors._serve import Service
from shipmap.connectors._store._journal import open_readonly

from .harness import REAL_SHOPIFY, SERVE_FIXTURES, embedded, environment, outcome_counters, shopify_headers

ORDER = json.loads((REAL_SHOPIFY / "orders_cancelled_webhook.json").read_text())
TARGET = "shopify-order.order"


class OrdersBroken(httpx.AsyncHTTPTransport):
    """Raises instead of sending the orders ``failing`` picks by id (every one at first); logins go through."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: Callable[[int], bool] = lambda order: True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if "/orders/" in path and self.failing(int(path.split("/")[-2])):
            raise RuntimeError("custom transport bug; password demo-pass")
        return await super().handle_async_request(request)


def _order(index: int) -> bytes:
    return json.dumps(dict(ORDER, id=8_000_000 + index, name=f"#BUG{index}")).encode()


def _wait(found: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """``found()``'s first truthy value. (Delivery runs again between two stalls, briefly: what reports the
    stall is asked until it does.)"""
    deadline = time.monotonic() + timeout
    while not (value := found()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def _stalled_gauge(metrics: str) -> float:
    (family,) = [f for f in text_string_to_metric_families(metrics) if f.name == "shipmap_delivery_stalled"]
    return family.samples[0].value


@dataclass
class Embedded:
    service: Service
    config: Path
    client: httpx.Client  # to the service's URL
    outcome: dict[str, Any]  # its summary (or error), once it has stopped: when the block ends


@contextlib.contextmanager
def _embedded_service(
    directory: Path,
    sandbox: Sandbox,
    transport: httpx.AsyncBaseTransport,
    monkeypatch: pytest.MonkeyPatch,
    *,
    resweep: str,
    cap: str,
    concurrency: int = 8,
) -> Iterator[Embedded]:
    """``Service(runtime)`` on a thread, as a program embeds it, with the test config, these sweeps and
    ``delivery.concurrency``; the config's variables are in this process's environment too, for the CLI
    commands a test runs."""
    for name, value in environment(sandbox.url).items():
        monkeypatch.setenv(name, value)
    for item in SERVE_FIXTURES.glob("*.yaml"):
        (directory / item.name).write_text(item.read_text())
    config = directory / "serve.yaml"
    sweeps = f"  drain_timeout: 30s\n  resweep: {resweep}\n  resweep_cap: {cap}\n"
    text = config.read_text()
    assert "  concurrency: 8\n" in text
    text = text.replace("  drain_timeout: 30s\n", sweeps, 1).replace(
        "  concurrency: 8\n", f"  concurrency: {concurrency}\n", 1
    )
    config.write_text(text)
    runtime = Runtime.from_config(config, environ=environment(sandbox.url), transport=transport)
    outcome: dict[str, Any] = {}
    with (
        embedded(Service(runtime), outcome) as service,
        httpx.Client(base_url=service.url or "", timeout=10) as client,
    ):
        yield Embedded(service, config, client, outcome)


def _post(client: httpx.Client, index: int) -> None:
    body = _order(index)
    answer = client.post(
        "/hooks/shop", content=body, headers=shopify_headers(body, "orders/create", f"bug-{index}")
    )
    assert (answer.status_code, answer.json()["status"]) == (200, "accepted"), answer.text


def _stalled(client: httpx.Client) -> httpx.Response | None:
    answer = client.get("/readyz")
    return answer if answer.json()["delivery_stalled"] is not None else None


def test_a_send_bug_stalls_delivery_while_intake_accepts_and_nothing_is_dead(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    transport = OrdersBroken()
    with _embedded_service(tmp_path, sandbox, transport, monkeypatch, resweep="300ms", cap="1s") as embedded:
        config, client, outcome = embedded.config, embedded.client, embedded.outcome
        for index in range(12):
            _post(client, index)

        def stall_in_status() -> str | None:
            assert main(["status", str(config), "--url", embedded.service.url or ""]) == 0
            shown: str = capsys.readouterr().out
            return shown if "\ndelivery    STALLED for " in shown else None

        readiness = _wait(lambda: _stalled(client), "a stalled delivery")
        body = readiness.json()
        # Degraded, not unready: a load balancer keeps sending webhooks, and they are kept.
        assert readiness.status_code == 200 and body["ready"] is True and body["degraded"] is True
        stalled = body["delivery_stalled"]
        assert stalled["reason"].startswith("sending stopped: 10 requests in a row raised RuntimeError at")
        assert "demo-pass" not in readiness.text
        assert 0 <= stalled["next_run_in_seconds"] <= 1.0  # resweep_cap
        _wait(lambda: _stalled_gauge(client.get("/metrics").text) == 1.0, "the stalled gauge at 1")
        assert ": sending stopped: 10 requests in a row" in _wait(stall_in_status, "shipmap status")
        for index in range(12, 15):  # intake goes on while delivery waits
            _post(client, index)
        assert sandbox.requests(endpoint="fenix.orders") == []
        with Journal(tmp_path / ".shipmap" / "journal.db", readonly=True) as journal:
            counts = journal.counts()
        assert counts.get("dead", 0) == 0 and counts["pending"] >= 10, counts

        # The bug is fixed (here: the transport's dependency came back).
        transport.failing = lambda order: False
        _wait(lambda: len(sandbox.requests(endpoint="fenix.orders")) >= 15, "15 orders delivered")
        _wait(lambda: client.get("/readyz").json()["delivery_stalled"] is None, "delivery running again")
        assert _stalled_gauge(client.get("/metrics").text) == 0.0
    assert "error" not in outcome, outcome
    summary: RunSummary = outcome["summary"]
    assert summary.dead == 0 and summary.delivered == 15
    orders = sorted(r.order_id or "" for r in sandbox.requests(endpoint="fenix.orders"))
    assert orders == sorted(str(8_000_000 + index) for index in range(15))  # each exactly once
    with Journal(tmp_path / ".shipmap" / "journal.db", readonly=True) as journal:
        assert journal.counts() == {"delivered": 15}


def test_a_replay_asked_while_delivery_is_stalled_is_carried_out_at_once(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stall's wait (20 s here, up to `resweep_cap` in production) does not hold a `shipmap replay` back,
    which waits only `--wait` for the service; the run after the replay delivers what the stall held."""
    transport = OrdersBroken()
    transport.failing = lambda order: order == 8_000_000  # one poison request among answers
    with _embedded_service(tmp_path, sandbox, transport, monkeypatch, resweep="20s", cap="40s") as embedded:
        config, client, outcome = embedded.config, embedded.client, embedded.outcome
        for index in range(5):
            _post(client, index)
        _wait(lambda: len(sandbox.requests(endpoint="fenix.orders")) == 4, "the 4 good orders delivered")
        journal = tmp_path / ".shipmap" / "journal.db"

        def dead_letters() -> int:
            with Journal(journal, readonly=True) as reader:
                return reader.counts().get("dead", 0)

        _wait(lambda: dead_letters() == 1, "the poison request's dead letter")
        transport.failing = lambda order: True  # now a bug breaks every send
        for index in range(5, 17):
            _post(client, index)
        _wait(lambda: _stalled(client), "a stalled delivery")

        transport.failing = lambda order: False
        asked = time.monotonic()
        assert main(["replay", str(config), "--wait", "10"]) == 0  # before the 20 s wait is over
        assert time.monotonic() - asked < 10
        # The replay's run re-sends what the journal holds pending first (the stalled sends), then the letter.
        replayed = re.search(
            r"replayed by shipmap serve: delivered (\d+), still dead 0,", capsys.readouterr().out
        )
        assert replayed is not None and int(replayed.group(1)) >= 1
        # The run after the replay sends what the stall held, without waiting out the stall either.
        _wait(lambda: len(sandbox.requests(endpoint="fenix.orders")) >= 17, "17 orders", timeout=15)
    assert "error" not in outcome, outcome
    orders = sorted(r.order_id or "" for r in sandbox.requests(endpoint="fenix.orders"))
    assert orders == sorted(str(8_000_000 + index) for index in range(17))  # each exactly once
    with Journal(tmp_path / ".shipmap" / "journal.db", readonly=True) as reader:
        assert reader.counts() == {"delivered": 17}


def _in_turn(*answers: bool) -> Callable[[int], bool]:
    """``OrdersBroken.failing`` that fails (True) or passes (False) the order requests in turn, as ``answers``
    say, and fails every one after them."""
    upcoming = iter(answers)
    return lambda order: next(upcoming, True)


def test_a_replay_or_run_stopped_by_a_send_bug_counts_what_it_did_before(
    tmp_path: Path,
    sandbox: Sandbox,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A replay that a send bug stops after it delivered some dead letters, and a run stopped so after it
    delivered some of what the replay left pending: /metrics counts what each delivered before it stopped
    (the journal's count: the replay's in ``shipmap_replays_total``, the run's in
    ``shipmap_deliveries_total``), never twice, and it stays counted after the next run begins; the summary
    at stop says so too. One sender, so the sends follow each other in the order the transport answers."""
    transport = OrdersBroken()
    transport.failing = lambda order: order % 2 == 0  # every other order raises: alone, each is a dead letter
    journal = tmp_path / ".shipmap" / "journal.db"

    def in_journal() -> dict[str, int]:
        reader = open_readonly(journal)  # None until the service's first run has created it
        if reader is None:
            return {}
        with reader:
            return reader.counts()

    with _embedded_service(
        tmp_path, sandbox, transport, monkeypatch, resweep="300ms", cap="1s", concurrency=1
    ) as embedded:
        config, client, outcome = embedded.config, embedded.client, embedded.outcome

        def scrape() -> tuple[tuple[float, float], tuple[float, float]]:
            """(delivered, dead) of the service's deliveries, and of its replays."""
            text = client.get("/metrics").text
            found = [
                outcome_counters(text, family, TARGET) for family in ("shipmap_deliveries", "shipmap_replays")
            ]
            return (found[0].get("delivered", 0), found[0].get("dead", 0)), (
                found[1].get("delivered", 0),
                found[1].get("dead", 0),
            )

        for index in range(24):
            _post(client, index)
        _wait(lambda: in_journal() == {"delivered": 12, "dead": 12}, "12 delivered and 12 dead letters")
        _wait(lambda: scrape() == ((12, 12), (0, 0)), "the 12 and 12 counted")

        # The replay delivers 2 dead letters, then 10 sends raise in a row and stop it: 10 left pending.
        # The run after it re-sends those first: it delivers 3, and 7 raise; with 3 new orders that raise too,
        # the streak reaches 10 and stops it as well: delivery stalls.
        transport.failing = _in_turn(*[False] * 2, *[True] * 10, *[False] * 3)
        assert main(["replay", str(config), "--wait", "30"]) == EXIT_JOURNAL
        error = capsys.readouterr().err
        assert error.startswith(
            "error: shipmap serve could not replay: sending stopped: 10 requests in a row raised RuntimeError at "
        ), error
        said = " (before it stopped: delivered 2, still dead 0, left pending 0, skipped 0)"
        assert error.endswith(f"{said}\n") and "demo-pass" not in error, error
        failed = [r.getMessage() for r in caplog.records if "replay request 1 failed: " in r.getMessage()]
        assert len(failed) == 1 and failed[0].endswith(said), failed
        for index in range(24, 27):
            _post(client, index)
        _wait(lambda: _stalled(client), "a stalled delivery")
        assert in_journal() == {"delivered": 12 + 2 + 3, "pending": 7 + 3}
        # What the replay and the run delivered before they stopped is counted, each once.
        assert scrape() == ((12 + 3, 12), (2, 0))

        # Fixed: the next run delivers the 10 pending; the journal's deliveries are the two counters' sum.
        transport.failing = lambda order: False
        _wait(lambda: in_journal() == {"delivered": 27}, "the 27 orders delivered")
        _wait(lambda: scrape()[0][0] == 25, "25 deliveries counted")
        assert scrape() == ((25, 12), (2, 0))
    assert "error" not in outcome, outcome
    summary: RunSummary = outcome["summary"]
    assert (summary.delivered, summary.dead) == (25, 12)
    assert summary.replays is not None and (summary.replays.delivered, summary.replays.dead) == (2, 0)
    orders = sorted(r.order_id or "" for r in sandbox.requests(endpoint="fenix.orders"))
    assert orders == sorted(str(8_000_000 + index) for index in range(27))  # each exactly once
