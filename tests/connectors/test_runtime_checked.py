"""A run validates with the checked generated code (``CompiledTarget.produce_checked``), and where that code
steps aside, with the full check: dead letters keep the reasons, byte for byte, that a run gave when it
validated every payload after encoding it (main at 150b23c, recorded below)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from shipmap.connectors import Runtime, Sandbox
from shipmap.connectors._cli import main
from shipmap.connectors._intake._pipeline import fork_available
from shipmap.connectors._store._journal import Journal
from shipmap.engine import read_documents
from test_runtime_support import FIXTURES, environ, order_event, shipment_event, write_config


def _order(index: int, **changes: Any) -> dict[str, Any]:
    event = order_event(index)
    for field, value in changes.items():
        if value is None:
            del event["payload"][field]
        else:
            event["payload"][field] = value
    return event


def _shipment(index: int, **changes: Any) -> dict[str, Any]:
    event = shipment_event(index)
    event["payload"].update(changes)
    return event


def scenario(directory: Path) -> Path:
    """Valid events first (the checked code is written at a target's second payload), then invalid ones
    among valid ones: each target's checked code refuses them and the full check words the reason."""
    address = {
        "first_name": 1,
        "last_name": "L",
        "address1": "1",
        "city": "c",
        "zip": "1",
        "country_code": "US",
    }
    events = [shipment_event(n) for n in range(3)]
    events += [
        _shipment(200, tracking=""),
        _shipment(201, items=[{"sku": "A", "qty": -2, "title": "T", "price": "1.00"}]),
        _shipment(202, carrier=5),
    ]
    events += [shipment_event(n) for n in range(3, 6)]
    events += [order_event(n) for n in range(3)]
    events += [_order(100, email=None), _order(101, email=42), _order(102, phone=55.5)]
    events += [order_event(n) for n in range(3, 8)]
    events += [
        _order(103, items=[]),
        _order(104, items=[{"sku": "S", "qty": -1, "title": "Tee", "price": "15.00"}]),
        _order(105, number=5),
        _order(106, currency=["USD"]),
        _order(107, address=address),
        _order(108, items=[{"sku": 7, "qty": "x", "title": None, "price": "15.00"}]),
        _order(109, shipping={"title": 3, "price": "5.00"}),
    ]
    events += [order_event(n) for n in range(8, 10)]
    path = directory / "events.ndjson"
    path.write_text("".join(json.dumps(event) + "\n" for event in events))
    return path


_ORDER = "invalid: target 'order' is not a valid fenix.order\n  - "
_FULFILLMENT = "invalid: target 'fulfillment' is not a valid fenix.fulfillment\n  - "
_NOTIFY = "invalid: target 'notify' is not a valid dg.execution\n  - "
# As main at 150b23c words them (events.ndjson line: reasons, sorted), before a run used the checked code.
BEFORE: dict[int, list[str]] = {
    4: [
        _FULFILLMENT + "shipment_info.tracking_number: got \"\": '' should be non-empty",
        _NOTIFY + "inputs.shipment_data.tracking_number: got \"\": '' should be non-empty",
    ],
    5: [
        _FULFILLMENT + "line_items[0].quantity: got -2: -2 is less than the minimum of 0",
        _NOTIFY + "inputs.shipment_data.items[0].quantity: got -2: -2 is less than the minimum of 0",
    ],
    6: [_FULFILLMENT + "shipment_info.tracking_company: got 5: 5 is not of type 'string'"],
    13: [_ORDER + "customer.email: is required but missing"],
    14: [_ORDER + "customer.email: got 42: 42 is not of type 'string'"],
    15: [_ORDER + "customer.phone: got 55.5: 55.5 is not of type 'string', 'integer'"],
    21: [_ORDER + "line_items: got []: [] should be non-empty"],
    22: [
        _ORDER + "item_quantity: got -1, expected one of ['integer', 'string']\n"
        "  - line_items[0].quantity: got -1: -1 is less than the minimum of 0"
    ],
    23: [_ORDER + "number: got 5: 5 is not of type 'string', 'null'"],
    24: [
        _ORDER + "currency: got [\"USD\"]: ['USD'] is not of type 'string'\n"
        "  - line_items[0].price.currency: got [\"USD\"]: ['USD'] is not of type 'string'\n"
        "  - shipping_info.price.currency: got [\"USD\"]: ['USD'] is not of type 'string'"
    ],
    25: [
        _ORDER + "customer.first_name: got 1: 1 is not of type 'string', 'null'\n"
        "  - shipping_address.first_name: got 1: 1 is not of type 'string', 'null'"
    ],
    26: [
        f"{FIXTURES / 'orders.yaml'}:12:22: error: sum(): expected an array of numbers or numeric text, found "
        'string "x" at index 0\n  target field: order.item_quantity\n  source: sum(items[].qty)\n'
        "  12 |       item_quantity: sum(items[].qty)\n     |                      ^"
    ],
    27: [_ORDER + "shipping_info.title: got 3: 3 is not of type 'string'"],
}


def dead_reasons(journal: Path) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    with Journal(journal, readonly=True) as opened:
        for entry in opened.dead_letters():
            assert entry.origin is not None and entry.reason is not None
            found.setdefault(int(entry.origin.rsplit(":", 1)[1]), []).append(entry.reason)
    return {line: sorted(reasons) for line, reasons in found.items()}


@pytest.mark.parametrize(
    "workers",
    ["0", pytest.param("1", marks=pytest.mark.skipif(not fork_available(), reason="needs os.fork"))],
)
def test_shipmap_run_dead_letters_invalid_payloads_with_the_reasons_of_before(
    tmp_path: Path, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    config = write_config(tmp_path, sandbox.url)
    events = scenario(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv = ["run", str(config), "--input", str(events), "--no-progress", "--workers", workers]
    assert main(argv) == 8  # some deliveries dead-lettered
    assert dead_reasons(tmp_path / "journal.db") == BEFORE
    # Every valid payload was delivered, once: of 9 shipments, 6 fulfillments and 7 notifications; 10 orders.
    assert len(sandbox.requests(endpoint="fenix.orders")) == 10
    assert len(sandbox.requests(endpoint="fenix.fulfillment")) == 6
    assert len(sandbox.requests(endpoint="dg.execution")) == 7


def test_the_run_uses_the_checked_code_and_sends_what_the_full_check_passes(
    tmp_path: Path, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the mapping is named in reasons as the path from here
    config = write_config(tmp_path, sandbox.url)
    runtime = Runtime.from_config(config, environ=environ(sandbox.url))
    summary = runtime.run(read_documents([scenario(tmp_path)]))
    assert summary.get("acme-orders.order").delivered == 10
    orders = runtime.mapper.routes[0].mapping
    target = orders.target("order")
    assert target._checked is not None  # the checked code was written, and vouched for the valid orders
    for request in sandbox.requests(endpoint="fenix.orders"):
        assert target.problems(request.body) == []
    # The DG target's checked code refuses every payload (the mapping leaves external_id to the runtime):
    # the runtime writes it in and validates the payload then.
    notify = sandbox.requests(endpoint="dg.execution")
    assert notify and all(r.body["external_id"] == r.body["inputs"]["external_id"] for r in notify)
    assert dead_reasons(tmp_path / "journal.db") == BEFORE


def test_the_worker_writes_each_targets_checked_code_before_its_first_event(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """``shipmap run``'s worker (``produce_packed``) writes every target's checked code at once: its very first
    payload is made and vouched for by that code, with the same request as a run in one process sends."""
    from shipmap.connectors._intake._producers import produce_packed
    from shipmap.connectors._map._steps import Job, unpack

    config = write_config(tmp_path, sandbox.url)
    runtime = Runtime.from_config(config, environ=environ(sandbox.url))
    writable = [
        route.mapping.target(name)
        for route in runtime.mapper.routes
        for name, planned in route.targets.items()
        if planned.enabled and route.mapping.target(name)._write_checked is not None
    ]
    assert writable and all(target._checked is None for target in writable)
    batches = list(produce_packed(runtime.mapper, [order_event(0)]))
    assert all(target._checked is not None for target in writable)
    (event,) = [unpack(packed) for batch in batches for packed in batch]
    sent = [step for step in getattr(event, "steps", ()) if isinstance(step, Job)]
    fresh = Runtime.from_config(config, environ=environ(sandbox.url))  # nothing written yet: the plain code
    (record,) = read_documents([_ndjson(tmp_path, order_event(0))])
    mapped = fresh.mapper.expand_event(record, None)
    expected = [step for step in getattr(mapped, "steps", ()) if isinstance(step, Job)]
    assert sent and [(j.key, j.text, j.request.url) for j in sent] == [
        (j.key, j.text, j.request.url) for j in expected
    ]


def _ndjson(directory: Path, event: dict[str, Any]) -> Path:
    path = directory / "one.ndjson"
    path.write_text(json.dumps(event) + "\n", encoding="utf-8")
    return path
