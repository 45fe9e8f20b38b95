"""What a service left running says in its log: a line a minute of what it did (when it did anything), since
a line per delivery waits for ``-v``. An embedded service on a thread, real sandbox, real HTTP listener."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from shipmap.connectors import Runtime, Sandbox
from shipmap.connectors._serve import Service, _service

from .harness import (
    REAL_SHOPIFY,
    SERVE_FIXTURES,
    embedded,
    environment,
    shopify_headers,
    standard_webhooks_headers,
)

ORDER = json.loads((REAL_SHOPIFY / "orders_cancelled_webhook.json").read_text())


@contextlib.contextmanager
def _running(tmp_path: Path, sandbox: Sandbox, outcome: dict[str, Any]) -> Iterator[Service]:
    """The serve fixtures' service, embedded on a thread until the block ends (then stopped); its summary, or
    what it raised, in ``outcome``."""
    for item in SERVE_FIXTURES.glob("*.yaml"):
        (tmp_path / item.name).write_text(item.read_text())
    service = Service(Runtime.from_config(tmp_path / "serve.yaml", environ=environment(sandbox.url)))
    with embedded(service, outcome):
        yield service


def test_a_service_logs_what_it_did_in_each_period_in_which_it_did_anything(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_service, "ACTIVITY_EVERY_S", 0.5)
    outcome: dict[str, Any] = {}

    def activity() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("in the last 0.5 s: ")]

    with (
        caplog.at_level(logging.INFO, logger="shipmap.connectors"),
        _running(tmp_path, sandbox, outcome) as service,
    ):
        deadline = time.monotonic() + 30

        def wait_for_delivered(count: int) -> None:
            while sum(int(line.split(", ")[1].split()[0]) for line in activity()) < count:
                assert time.monotonic() < deadline, activity()
                time.sleep(0.05)

        with httpx.Client(base_url=service.url or "", timeout=10) as client:
            for index in range(3):
                body = json.dumps(dict(ORDER, id=6_300_000 + index)).encode()
                headers = shopify_headers(body, "orders/create", f"act-{index}")
                assert client.post("/hooks/shop", content=body, headers=headers).status_code == 200
                if index == 0:  # the first alone: the first line counts one webhook
                    wait_for_delivered(1)
        wait_for_delivered(3)
        quiet = len(activity())
        time.sleep(1.6)  # three quiet periods: no line for them
        assert len(activity()) == quiet, activity()
    lines = activity()
    assert sum(int(line.split()[5]) for line in lines) == 3  # webhooks accepted, across the periods
    # "1 webhook", "2 webhooks": each count with its noun in the number it takes.
    said = re.compile(
        r"in the last 0\.5 s: (1 webhook|(?!1 )\d+ webhooks) accepted, \d+ delivered, 0 dead letters;"
        r" \d+ waiting in the inbox"
    )
    assert all(said.fullmatch(line) for line in lines), lines
    assert lines[0].startswith("in the last 0.5 s: 1 webhook accepted, "), lines
    assert "error" not in outcome, outcome


def test_a_sender_that_keeps_being_refused_costs_a_line_a_period_not_a_line_a_request(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The soak: every refusal but a 401 was logged, one line each: a sender past its rate_limit, or posting
    through a drain, wrote a line per request (a flood that a log collector's rate limit drops along with the
    warnings). Now the first of each source and reason in a period is logged, with what to fix, and the
    activity line counts the rest; what is refused after the last activity line is said at stop."""
    monkeypatch.setattr(_service, "ACTIVITY_EVERY_S", 0.5)
    outcome: dict[str, Any] = {}
    statuses: list[int] = []
    with (
        caplog.at_level(logging.INFO, logger="shipmap.connectors"),
        _running(tmp_path, sandbox, outcome) as service,
        httpx.Client(base_url=service.url or "", timeout=10) as client,
    ):
        now = int(time.time())
        for index in range(40):  # the app source allows a burst of 3, then 0.01 a second
            body = json.dumps({"n": index}).encode()
            headers = standard_webhooks_headers(body, f"msg_{index}", now, "t")
            statuses.append(client.post("/hooks/app", content=body, headers=headers).status_code)
        for index in range(5):
            body = b'{"id": ' + str(index).encode()  # signed, but not JSON
            headers = shopify_headers(body, "orders/create", f"broken-{index}")
            statuses.append(client.post("/hooks/shop", content=body, headers=headers).status_code)
    assert "error" not in outcome, outcome
    assert statuses.count(429) == 37 and statuses.count(400) == 5, statuses
    messages = [r.getMessage() for r in caplog.records]
    refused_lines = [m for m in messages if m.startswith("POST /hooks/")]
    counted = [m for m in messages if " refused: " in m]
    for source, status, reason, total in (("app", 429, "rate_limited", 37), ("shop", 400, "not_json", 5)):
        found = [int(n) for m in counted for n in re.findall(rf"(\d+) {source} {status} {reason}\b", m)]
        assert sum(found) == total, counted  # every refusal is counted once, in a period's line or at stop
        logged = [m for m in refused_lines if m.startswith(f"POST /hooks/{source}: {status} ")]
        assert len(logged) == len(found) < total, refused_lines  # the first of each period, with its message
    assert any(m.startswith("POST /hooks/shop: 400 the body is not JSON") for m in refused_lines)
