"""A bug in the send path while ``shipmap serve`` runs: delivery stalls, intake does not.

A program embeds the service (``Service(runtime)``) with a custom transport that raises for every order
request, as a broken one would. The run stops at ten raising sends in a row; the service keeps accepting
webhooks, ``/readyz`` and ``/metrics`` say delivery is stalled, nothing becomes a dead letter, and once the
transport works again the next run delivers every webhook exactly once. Real sandbox, real HTTP listener.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from shipmap.connectors import Journal, RunSummary, Runtime, Sandbox
from shipmap.connectors._cli import main
from shipmap.connectors._serve import Service

from .harness import REAL_SHOPIFY, SERVE_FIXTURES, environment, shopify_headers

ORDER = json.loads((REAL_SHOPIFY / "orders_cancelled_webhook.json").read_text())


class OrdersBroken(httpx.AsyncHTTPTransport):
    """Raises instead of sending an order while ``broken`` (logins go through)."""

    broken = True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.broken and "/orders/" in request.url.path:
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


def test_a_send_bug_stalls_delivery_while_intake_accepts_and_nothing_is_dead(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in environment(sandbox.url).items():
        monkeypatch.setenv(name, value)  # for `shipmap status`, which reads the config
    for item in SERVE_FIXTURES.glob("*.yaml"):
        (tmp_path / item.name).write_text(item.read_text())
    config = tmp_path / "serve.yaml"
    quick = "  drain_timeout: 30s\n  resweep: 300ms\n  resweep_cap: 1s\n"
    config.write_text(config.read_text().replace("  drain_timeout: 30s\n", quick, 1))
    transport = OrdersBroken()
    runtime = Runtime.from_config(config, environ=environment(sandbox.url), transport=transport)
    service = Service(runtime)
    ready = threading.Event()
    outcome: dict[str, Any] = {}

    def serve() -> None:
        try:
            outcome["summary"] = asyncio.run(service.serve(on_ready=lambda _: ready.set()))
        except BaseException as error:  # reported by the assertions below
            outcome["error"] = error

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(30), outcome
    try:
        with httpx.Client(base_url=service.url or "", timeout=10) as client:

            def post(index: int) -> None:
                body = _order(index)
                answer = client.post(
                    "/hooks/shop",
                    content=body,
                    headers=shopify_headers(body, "orders/create", f"bug-{index}"),
                )
                assert (answer.status_code, answer.json()["status"]) == (200, "accepted"), answer.text

            for index in range(12):
                post(index)

            def stalled_readiness() -> httpx.Response | None:
                answer = client.get("/readyz")
                return answer if answer.json()["delivery_stalled"] is not None else None

            def stall_in_status() -> str | None:
                assert main(["status", str(config), "--url", service.url or ""]) == 0
                shown: str = capsys.readouterr().out
                return shown if "\ndelivery    STALLED for " in shown else None

            readiness = _wait(stalled_readiness, "a stalled delivery")
            body = readiness.json()
            # Degraded, not unready: a load balancer keeps sending webhooks, and they are kept.
            assert readiness.status_code == 200 and body["ready"] is True and body["degraded"] is True
            stalled = body["delivery_stalled"]
            assert stalled["reason"].startswith(
                "sending stopped: 10 requests in a row raised RuntimeError at"
            )
            assert "demo-pass" not in readiness.text
            assert 0 <= stalled["next_run_in_seconds"] <= 1.0  # resweep_cap
            _wait(lambda: _stalled_gauge(client.get("/metrics").text) == 1.0, "the stalled gauge at 1")
            assert ": sending stopped: 10 requests in a row" in _wait(stall_in_status, "shipmap status")
            for index in range(12, 15):  # intake goes on while delivery waits
                post(index)
            assert sandbox.requests(endpoint="fenix.orders") == []
            with Journal(tmp_path / ".shipmap" / "journal.db", readonly=True) as journal:
                counts = journal.counts()
            assert counts.get("dead", 0) == 0 and counts["pending"] >= 10, counts

            transport.broken = False  # the bug is fixed (here: the transport's dependency came back)
            _wait(lambda: len(sandbox.requests(endpoint="fenix.orders")) >= 15, "15 orders delivered")
            _wait(lambda: client.get("/readyz").json()["delivery_stalled"] is None, "delivery running again")
            assert _stalled_gauge(client.get("/metrics").text) == 0.0
    finally:
        service.stop()
        thread.join(60)
    assert "error" not in outcome, outcome
    summary: RunSummary = outcome["summary"]
    assert summary.dead == 0 and summary.delivered == 15
    orders = sorted(r.order_id or "" for r in sandbox.requests(endpoint="fenix.orders"))
    assert orders == sorted(str(8_000_000 + index) for index in range(15))  # each exactly once
    with Journal(tmp_path / ".shipmap" / "journal.db", readonly=True) as journal:
        assert journal.counts() == {"delivered": 15}
