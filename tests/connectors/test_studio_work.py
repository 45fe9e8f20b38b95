"""The studio's mapping work has a budget, over real HTTP: a mapping still running at the request's deadline
is stopped (the next request is served, no thread is left mapping), one evaluation runs at a time (the others
wait their turn, within their own deadline, or are refused when too many wait), and a fan-out stops once the
answer's 200 cards are full, saying so."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from shipmap.connectors._studio import Studio
from shipmap.connectors._studio._work import MAX_WAITING
from test_studio_support import make_workspace

FAN = (
    "shipmap: 1\nname: fan\ntargets:\n  cancel:\n    kind: fenix.order_cancel\n    each: orders\n"
    "{when}    fields:\n      id: {{path: id, type: id, required: true}}\n      status: {{literal: CANCELLED}}\n"
    "      cancelled_at: {{literal: '2024-11-14T10:00:00Z'}}\n      cancel_reason: {{literal: customer}}\n"
)
# Each element's guard scans every element: 5,000 elements are 25 million comparisons, minutes of mapping.
SLOW = FAN.format(when='    when: "length($root.orders[?id == `0`]) > `0`"\n')
QUICK = FAN.format(when="")
SLOW_SAMPLE = json.dumps({"orders": [{"id": number} for number in range(1, 5001)]})
# One payload, no fan-out: its list of 5,000 notes is made of a field that scans every order, as slow as SLOW.
ONE_SLOW_PAYLOAD = (
    "shipmap: 1\nname: fan\ntargets:\n  cancel:\n    kind: fenix.order_cancel\n    fields:\n"
    "      id: {literal: '1'}\n      status: {literal: CANCELLED}\n"
    "      cancelled_at: {literal: '2024-11-14T10:00:00Z'}\n      cancel_reason: {literal: customer}\n"
    "      notes:\n        each: orders\n        fields:\n"
    '          seen: {path: "length($root.orders[?id == `0`])"}\n'
)
DEADLINE = 10.0  # the studio's deadline here: far shorter than the slow mapping, far longer than a quick one
WAIT_SECONDS = 60  # the test's own deadline for the studio to be idle again, not a measure of speed


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return make_workspace(tmp_path)


def body(mapping: str, sample: str) -> dict[str, object]:
    return {"mapping": mapping, "mapping_file": "fan.yaml", "sample": sample, "sample_name": "orders.json"}


async def post_all(studio: Studio, bodies: list[dict[str, object]]) -> list[httpx.Response]:
    headers = {"X-Shipmap-Token": studio.token}
    async with httpx.AsyncClient(base_url=studio.base_url, headers=headers, timeout=60) as client:
        return list(await asyncio.gather(*(client.post("/api/evaluate", json=b) for b in bodies)))


def mapping_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("shipmap-studio-map")]


def test_a_mapping_past_the_deadline_is_stopped_and_one_runs_at_a_time(workspace: Path) -> None:
    quick = body(QUICK, json.dumps({"orders": [{"id": 7}]}))
    with (
        Studio(workspace, deadline=DEADLINE) as studio,
        httpx.Client(
            base_url=studio.base_url, headers={"X-Shipmap-Token": studio.token}, timeout=60
        ) as client,
    ):
        assert client.post("/api/evaluate", json=quick).status_code == 200
        idle = threading.active_count()  # the studio, waiting, with the thread it maps in
        # Six slow evaluations at once: one maps, four wait their turn, the sixth is refused at once.
        answers = asyncio.run(post_all(studio, [body(SLOW, SLOW_SAMPLE)] * (MAX_WAITING + 2)))
        assert [answer.status_code for answer in answers] == [503] * (MAX_WAITING + 2)
        errors = [answer.json()["error"] for answer in answers]
        busy = f"the studio is busy: one evaluation runs and {MAX_WAITING} more wait; try again"
        assert errors.count(busy) == 1
        stopped = (
            f"no answer within {DEADLINE:g} s: the studio gave up on this request and stopped its mapping"
        )
        assert stopped in errors
        not_started = (
            f"no answer within {DEADLINE:g} s: another evaluation held the studio all that time, so this one "
            "was not started"
        )
        assert set(errors) <= {busy, stopped, not_started}
        # Stopped at its next element, not minutes later: no thread is left mapping, none piled up.
        until = time.monotonic() + WAIT_SECONDS
        while threading.active_count() != idle and time.monotonic() < until:
            time.sleep(0.1)
        assert threading.active_count() == idle, [thread.name for thread in threading.enumerate()]
        assert len(mapping_threads()) == 1
        # The next request is served: nothing is still mapping ahead of it.
        answer = client.post("/api/evaluate", json=quick)
        assert answer.status_code == 200, answer.text
        assert [card["name"] for card in answer.json()["targets"]] == ["cancel[0]"]


def test_one_payload_past_the_deadline_is_stopped_between_its_fields(workspace: Path) -> None:
    """A single payload (no fan-out, so no element to stop at) whose fields run for minutes is stopped at the
    deadline too, at its next field: the one mapping thread is free for the next request, which is served."""
    quick = body(QUICK, json.dumps({"orders": [{"id": 7}]}))
    with (
        Studio(workspace, deadline=DEADLINE) as studio,
        httpx.Client(
            base_url=studio.base_url, headers={"X-Shipmap-Token": studio.token}, timeout=60
        ) as client,
    ):
        slow = client.post("/api/evaluate", json=body(ONE_SLOW_PAYLOAD, SLOW_SAMPLE))
        assert slow.status_code == 503, slow.text
        assert slow.json()["error"] == (
            f"no answer within {DEADLINE:g} s: the studio gave up on this request and stopped its mapping"
        )
        # Not still mapping the slow payload's fields: the next request gets the thread within its deadline.
        answer = client.post("/api/evaluate", json=quick)
        assert answer.status_code == 200, answer.text
        assert [card["name"] for card in answer.json()["targets"]] == ["cancel[0]"]
        assert len(mapping_threads()) == 1


def test_a_fan_out_stops_once_the_answer_is_full_and_says_so(workspace: Path) -> None:
    # 100,000 elements, of which only the first 200 have an id: mapping any other one is a located error.
    orders = [{"id": number} for number in range(1, 201)] + [{}] * 99_800
    with (
        Studio(workspace) as studio,
        httpx.Client(
            base_url=studio.base_url, headers={"X-Shipmap-Token": studio.token}, timeout=60
        ) as client,
    ):
        answer = client.post("/api/evaluate", json=body(QUICK, json.dumps({"orders": orders})))
        assert answer.status_code == 200, answer.text
        result = answer.json()
    cards = result["targets"]
    assert [card["name"] for card in cards] == [f"cancel[{index}]" for index in range(200)]
    assert {card["status"] for card in cards} == {"ok"}
    assert cards[-1]["request"]["url"].endswith("/orders/200/created")
    # No element past the 200th was mapped: none of their 99,800 errors was met.
    assert result["diagnostics"] == []
    assert result["left_off"] == 0
    assert result["cut"] == {
        "cards": 200,
        "fan_outs": [{"target": "cancel", "mapped": 200, "not_mapped": 99_800}],
        "targets": [],
        "text": (
            "Cut after 200 cards: the answer was full, so the studio stopped mapping. It mapped 200 of the "
            "100,000 elements of cancel. Whether the rest would make payloads or errors is not known, and the "
            "unread fields below are those of the part mapped (shipmap preview maps them all)."
        ),
    }
