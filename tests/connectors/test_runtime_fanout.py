"""A fan-out mapping (each: on a target) through the runtime, over real HTTP to the sandbox: one delivery per
element, each with its own route ids, journal key, idempotency key and external_id, keyed by the element."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from shipmap.connectors import Runtime, Sandbox
from shipmap.connectors._store._journal import Journal
from shipmap.connectors._store._keys import delivery_key, source_hash
from shipmap.engine import resolve_mapping_path
from test_runtime_support import environ, write_config

FIXTURES = Path(__file__).parents[1] / "fixtures"

MAPPING = """\
shipmap: 1
name: acme-shipments-fanout
targets:
  fulfillment:
    kind: fenix.fulfillment
    each: shipments
    key: id
    let:
      first_line: "find($root.order.line_items, 'id', items[0].line_item_id)"
    fields:
      id: {path: id, type: string}
      order_id: {path: $root.order.id, type: string}
      shipment_info:
        tracking_number: tracking
        tracking_company: carrier
        shipping_service: {literal: Ground}
        shipcost: {value: {literal: 0}, currency: $root.order.currency}
      line_items:
        each: items
        let: {line: "find($root.order.line_items, 'id', line_item_id)"}
        fields:
          sku: $line.sku
          quantity: quantity
          title: $line.title
          price: {value: "money($line.price)", currency: $root.order.currency}
          image_url: {literal: ""}
  notify:
    kind: dg.execution
    each: shipments
    key: id
    fields:
      action_id: {literal: flow-shipment-update}
      inputs:
        shipment_data:
          order_id: {path: $root.order.id, type: string}
          shipment_id: {path: id, type: string}
          tracking_number: tracking
          carrier_code: carrier
          items:
            each: items
            fields: {sku: "find($root.order.line_items, 'id', line_item_id).sku", quantity: quantity}
"""


def event(*shipment_ids: int) -> dict[str, Any]:
    return {
        "topic": "orders/shipped",
        "payload": {
            "order": {
                "id": 1001,
                "currency": "USD",
                "line_items": [
                    {"id": 1, "sku": "TEE-S", "title": "Tee", "price": "15.00"},
                    {"id": 2, "sku": "MUG", "title": "Mug", "price": "8.50"},
                ],
            },
            "shipments": [
                {
                    "id": n,
                    "tracking": f"1Z{n:04d}",
                    "carrier": "UPS",
                    "items": [{"line_item_id": 1 + n % 2, "quantity": 1}],
                }
                for n in shipment_ids
            ],
        },
    }


def runtime(tmp_path: Path, sandbox: Sandbox) -> Runtime:
    (tmp_path / "fanout.yaml").write_text(MAPPING, encoding="utf-8")
    mappings = [{"mapping": "./fanout.yaml", "topic": "orders/shipped"}]
    config = write_config(tmp_path, sandbox.url, mappings=mappings)
    return Runtime.from_config(config, environ=environ(sandbox.url))


def test_each_element_is_its_own_delivery(tmp_path: Path, sandbox: Sandbox) -> None:
    summary = runtime(tmp_path, sandbox).run([event(7, 8)])
    assert summary.delivered == 4 and summary.dead == 0
    fulfillments = sorted(sandbox.requests(endpoint="fenix.fulfillment"), key=lambda r: str(r.fulfillment_id))
    assert [(r.order_id, r.fulfillment_id) for r in fulfillments] == [("1001", "7"), ("1001", "8")]
    assert [line["sku"] for r in fulfillments for line in r.body["line_items"]] == ["MUG", "TEE-S"]
    executions = sandbox.requests(endpoint="dg.execution")
    external_ids = {r.external_id for r in executions}
    assert len(external_ids) == 2  # one per element, never shared
    assert sorted(r.body["inputs"]["shipment_data"]["shipment_id"] for r in executions) == ["7", "8"]


def test_an_element_seen_before_is_not_sent_again_wherever_it_sits(tmp_path: Path, sandbox: Sandbox) -> None:
    first = runtime(tmp_path, sandbox)
    first.run([event(7, 8)])
    sent = len(sandbox.requests())
    # The platform sends the order again with a new shipment first: 7 and 8 are unchanged, only 9 is new.
    again = runtime(tmp_path, sandbox).run([event(9, 7, 8)])
    new = [r for r in sandbox.requests()[sent:] if r.endpoint != "fenix.login"]
    shipped = sorted(
        (r.endpoint, r.fulfillment_id or r.body["inputs"]["shipment_data"]["shipment_id"]) for r in new
    )
    assert shipped == [("dg.execution", "9"), ("fenix.fulfillment", "9")]
    assert again.delivered == 2 and again.skipped == 4


def test_a_changed_element_is_sent_again(tmp_path: Path, sandbox: Sandbox) -> None:
    runtime(tmp_path, sandbox).run([event(7)])
    changed = copy.deepcopy(event(7))
    changed["payload"]["shipments"][0]["tracking"] = "1Z-NEW"
    summary = runtime(tmp_path, sandbox).run([changed])
    assert summary.delivered == 2
    trackings = [
        r.body["shipment_info"]["tracking_number"] for r in sandbox.requests(endpoint="fenix.fulfillment")
    ]
    assert trackings == ["1Z0007", "1Z-NEW"]


def untracked(*shipment_ids: int, missing: tuple[int, ...]) -> dict[str, Any]:
    """``event`` whose shipments in ``missing`` have no tracking number yet: their fulfillments are invalid."""
    shipped = event(*shipment_ids)
    for shipment in shipped["payload"]["shipments"]:
        if shipment["id"] in missing:
            del shipment["tracking"]
    return shipped


def test_replaying_one_element_s_dead_letter_leaves_its_dead_siblings_for_their_own_replay(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    first = runtime(tmp_path, sandbox).run([untracked(7, 8, 9, missing=(8, 9))])
    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        letters = journal.dead_letters()
    dead = {entry.key: entry for entry in letters if entry.target == "fulfillment"}
    assert first.get("acme-shipments-fanout.fulfillment").dead == 2 and len(dead) == 2
    assert [r.fulfillment_id for r in sandbox.requests(endpoint="fenix.fulfillment")] == ["7"]

    # The mapping is fixed; the integrator replays one of the two dead fulfillments: only that one is sent.
    fixed = MAPPING.replace(
        "tracking_number: tracking", "tracking_number: {path: tracking, default: PENDING}"
    )
    (tmp_path / "fanout.yaml").write_text(fixed, encoding="utf-8")
    config = write_config(
        tmp_path, sandbox.url, mappings=[{"mapping": "./fanout.yaml", "topic": "orders/shipped"}]
    )
    asked = sorted(dead)[0]
    replayed = Runtime.from_config(config, environ=environ(sandbox.url)).replay([asked[:16]])
    assert replayed.delivered == 1
    sent = sandbox.requests(endpoint="fenix.fulfillment")
    assert (
        len(sent) == 2
        and sent[-1].fulfillment_id in ("8", "9")
        and sent[-1].body["shipment_info"]["tracking_number"] == "PENDING"
    )
    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        assert journal.state(asked) == "delivered"
        (sibling,) = set(dead) - {asked}
        assert journal.state(sibling) == "dead"  # not asked for: still a dead letter, not sent

    # Replaying the rest sends the sibling, once; every shipment arrived exactly once.
    rest = Runtime.from_config(config, environ=environ(sandbox.url)).replay()
    assert rest.delivered == len(letters) - 1  # the sibling, and the notifications if any died too
    assert sorted(r.fulfillment_id for r in sandbox.requests(endpoint="fenix.fulfillment")) == ["7", "8", "9"]


def shopify_runtime(tmp_path: Path, sandbox: Sandbox, mapping: str) -> Runtime:
    config = write_config(
        tmp_path, sandbox.url, mappings=[{"mapping": mapping, "topic": "fulfillments/create"}]
    )
    return Runtime.from_config(config, environ=environ(sandbox.url))


def test_the_parcels_of_shopify_fulfillments_delivered_before_are_not_sent_again(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """The ready shopify/fulfillment sends each further parcel as parcel_* targets and keeps the first parcel
    in the targets it always had: a journal written before the parcels were mapped skips what it delivered."""
    ready = resolve_mapping_path("shopify/fulfillment")
    # The mapping as it was: the same name and the same first-parcel targets, without the parcel ones.
    before = yaml.safe_load(ready.read_text(encoding="utf-8"))
    assert sorted(before["targets"]) == ["fulfillment", "parcel_fulfillment", "parcel_shipment", "shipment"]
    del before["targets"]["parcel_fulfillment"], before["targets"]["parcel_shipment"]
    (tmp_path / "before.yaml").write_text(yaml.safe_dump(before, sort_keys=False), encoding="utf-8")
    one = json.loads((FIXTURES / "real/shopify/fulfillments_create_webhook.json").read_text(encoding="utf-8"))
    two = json.loads((FIXTURES / "derived/shopify/fulfillments_create_two_parcels.json").read_text("utf-8"))
    history = [{"topic": "fulfillments/create", "payload": payload} for payload in (one, two)]
    assert shopify_runtime(tmp_path, sandbox, "./before.yaml").run(history).delivered == 4
    sent = len(sandbox.requests())

    again = shopify_runtime(tmp_path, sandbox, "shopify/fulfillment").run(history)
    new = [r for r in sandbox.requests()[sent:] if r.endpoint != "fenix.login"]
    assert again.delivered == 2 and again.skipped == 4 and again.dead == 0
    assert sorted(r.endpoint for r in new) == ["dg.execution", "fenix.fulfillment"]
    fulfillment, execution = sorted(new, key=lambda r: r.endpoint, reverse=True)
    assert (fulfillment.order_id, fulfillment.fulfillment_id) == ("820982911946154500", "123456-1z827wk74631")
    assert fulfillment.body["shipment_info"]["tracking_number"] == "1z827wk74631"
    assert execution.body["inputs"]["shipment_data"]["tracking_number"] == "1z827wk74631"
    assert execution.external_id == "820982911946154500-123456-1z827wk74631-pending"
    # The first parcel's keys are what they always were: mapping, target name, the whole document.
    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        for payload in (one, two):
            for target in ("fulfillment", "shipment"):
                key = delivery_key("shopify-fulfillment", target, source_hash(payload))
                assert journal.state(key) == "delivered"

    # A later update of the fulfillment (in transit) reaches every parcel, the first and the second.
    moving = copy.deepcopy(two)
    moving.update(status="success", shipment_status="in_transit")
    update = shopify_runtime(tmp_path, sandbox, "shopify/fulfillment").run(
        [{"topic": "fulfillments/create", "payload": moving}]
    )
    assert update.delivered == 4
    statuses = [r.body["shipment_status"] for r in sandbox.requests(endpoint="fenix.fulfillment")[-2:]]
    assert statuses == ["PICKED_BY_CARRIER", "PICKED_BY_CARRIER"]
