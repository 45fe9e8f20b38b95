"""preview and test on fan-out, named documents, arrays and NDJSON: the two tools read inputs the same way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

MAPPING = """\
shipmap: 1
targets:
  fulfillment:
    kind: fenix.fulfillment
    each: $root.shipments
    key: id
    when: tracking
    fields:
      id: {path: id, type: string}
      order_id: {path: $root.order.id, type: string}
      created_at: {path: shipped_at, required: true, type: datetime}
      shipment_info:
        tracking_number: tracking
        tracking_company: {literal: UPS}
        shipping_service: {literal: Ground}
        shipcost: {value: 0, currency: {literal: USD}}
      line_items:
        each: items
        let: {product: "find($root.products, 'id', order_product_id)"}
        fields:
          sku: {path: $product.sku, required: true}
          quantity: quantity
          title: $product.name
          price: {value: "money($product.price)", currency: {literal: USD}}
          image_url: {literal: ""}
  cancel:
    kind: fenix.order_cancel
    from: order
    when: cancelled_at
    fields: {id: {path: id, type: string}, status: {literal: CANCELLED}, cancelled_at: cancelled_at}
"""


def shipmap(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from shipmap.connectors._cli import entry; entry()", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def write_event(tmp_path: Path, *, broken: bool = False) -> None:
    (tmp_path / "fanout.yaml").write_text(MAPPING, encoding="utf-8")
    (tmp_path / "order.json").write_text(json.dumps({"id": 100, "cancelled_at": None}), encoding="utf-8")
    products = [
        {"id": 1, "sku": "TEE", "name": "Tee", "price": "15.00"},
        {"id": 2, "sku": "MUG", "name": "Mug", "price": "8.5"},
    ]
    (tmp_path / "products.json").write_text(json.dumps(products), encoding="utf-8")
    shipments = [
        {"id": 7, "shipped_at": "2024-05-01T10:00:00Z", "tracking": "1Z7", "items": [{"order_product_id": 2, "quantity": 1}]},
        {"id": 8, "shipped_at": None if broken else "2024-05-02T10:00:00Z", "tracking": "1Z8",
         "items": [{"order_product_id": 9 if broken else 1, "quantity": 2}]},
        {"id": 9, "shipped_at": "2024-05-03T10:00:00Z", "tracking": None, "items": []},
    ]  # fmt: skip
    (tmp_path / "shipments.ndjson").write_text(
        "".join(json.dumps(s) + "\n" for s in shipments), encoding="utf-8"
    )


def test_preview_reads_named_documents_and_fans_out(tmp_path: Path) -> None:
    write_event(tmp_path)
    docs = [
        "--doc",
        "order=order.json",
        "--doc",
        "products=products.json",
        "--doc",
        "shipments=shipments.ndjson",
    ]
    result = shipmap("preview", "fanout.yaml", *docs, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert sorted(out) == ["fulfillment[7]", "fulfillment[8]"]
    assert out["fulfillment[7]"]["line_items"][0] == {
        "sku": "MUG", "quantity": 1, "title": "Mug", "price": {"value": 8.5, "currency": "USD"}, "image_url": ""
    }  # fmt: skip
    assert out["fulfillment[8]"]["order_id"] == "100"
    # The skipped target says why, with the line of its guard.
    assert "cancel: skipped (when is false (line 29))" in result.stderr


def test_preview_reports_every_problem_at_once_and_prints_nothing_for_a_failed_element(
    tmp_path: Path,
) -> None:
    write_event(tmp_path, broken=True)
    docs = [
        "--doc",
        "order=order.json",
        "--doc",
        "products=products.json",
        "--doc",
        "shipments=shipments.ndjson",
    ]
    result = shipmap("preview", "fanout.yaml", *docs, cwd=tmp_path)
    assert result.returncode == 4
    assert sorted(json.loads(result.stdout)) == ["fulfillment[7]"]  # the failed element is not printed
    assert "target field: fulfillment[1].created_at" in result.stderr
    assert "target field: fulfillment[1].line_items[0].sku" in result.stderr
    assert "source: shipments[1].shipped_at = null" in result.stderr
    assert "source: $product.sku = null" in result.stderr


def test_test_cases_read_documents_ndjson_and_arrays_like_preview(tmp_path: Path) -> None:
    write_event(tmp_path)
    (tmp_path / "orders.json").write_text(
        json.dumps([{"order": {"id": 1}}, {"order": {"id": 2, "cancelled_at": "2024-05-01T10:00:00Z"}}])
    )
    (tmp_path / "fanout.cases.yaml").write_text(
        """\
cases:
  - name: named documents, one payload per shipment
    documents: {order: order.json, products: products.json, shipments: shipments.ndjson}
    expect:
      "fulfillment[7]": {id: "7", line_items: [{sku: MUG}]}
      "fulfillment[8]": {line_items: [{sku: TEE, quantity: 2}]}
    skipped: [cancel]
  - name: a JSON array file is several documents; select picks one
    source: orders.json
    select: "[1]"
    expect: {cancel: {id: "2", status: CANCELLED}}
    skipped: [fulfillment]
  - name: a shipment from an NDJSON file
    source: shipments.ndjson
    select: "[0]"
    skipped: [fulfillment, cancel]
""",
        encoding="utf-8",
    )
    result = shipmap("test", "fanout.cases.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "3 passed, 0 failed"


REPO = Path(__file__).parents[2]


def test_the_real_shipstation_list_response_maps_directly_without_splitting(tmp_path: Path) -> None:
    """The ready ShipStation mapping says "split that list and feed each element": with each: on its targets
    the real SHIP_NOTIFY list response maps as it is, one payload per shipment, keyed by shipmentId."""
    text = (REPO / "mappings" / "shipstation" / "shipment.yaml").read_text(encoding="utf-8")
    for target, kind in (("fulfillment", "fenix.fulfillment"), ("shipment", "dg.execution")):
        head = f"  {target}:\n    kind: {kind}\n"
        assert head in text
        text = text.replace(head, f'{head}    each: "shipments || [@]"\n    key: shipmentId\n')
    (tmp_path / "shipment.yaml").write_text(text, encoding="utf-8")
    listing = (
        REPO / "tests" / "fixtures" / "real" / "shipstation" / "shipments_list_ship_notify_resource.json"
    )
    result = shipmap("preview", "shipment.yaml", str(listing), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    payloads = json.loads(result.stdout)
    assert sorted(payloads) == [
        "fulfillment[33974373]", "fulfillment[33974374]", "shipment[33974373]", "shipment[33974374]"
    ]  # fmt: skip
    assert payloads["fulfillment[33974374]"]["order_id"] == "43945660"
    assert payloads["fulfillment[33974373]"]["shipment_info"]["tracking_number"] == "9400111899561704681196"
    # A single shipment (what the mapping took before) still maps: "|| [@]" makes it a list of one.
    single = tmp_path / "one.json"
    single.write_text(json.dumps(json.loads(listing.read_text(encoding="utf-8"))["shipments"][0]))
    one = json.loads(shipmap("preview", "shipment.yaml", str(single), cwd=tmp_path).stdout)
    assert sorted(one) == ["fulfillment[33974374]", "shipment[33974374]"]
