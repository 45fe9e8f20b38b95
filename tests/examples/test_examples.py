"""The examples run for real: subprocesses, each with its own sandbox on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ACME = REPO / "examples" / "acme_outfitters"
DEMO_SECRETS = ("demo-pass", "demo-api-key", "demo-key", "demo-secret", "demo-user")


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_make_run_delivers_the_day_exactly_once(tmp_path: Path) -> None:
    result = run(str(ACME / "run_day.py"), "--out", str(tmp_path / "out"), "--state", str(tmp_path / "state"))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "111 webhook events" in out
    assert "aftership/tracking_update 42, fulfillments/create 9, fulfillments/update 13" in out
    assert "check: 104 requests planned from 111 events, 104 arrived: each exactly once. OK" in out
    assert "delivered 104, retried 0, dead 0; events 111, unrouted 0, rejected 0" in out
    assert (
        "fenix.orders         47  fenix.order 42, fenix.order_cancel 4, fenix.order_partial_cancel 1" in out
    )
    assert "dg.execution         35" in out
    assert "DG external_ids         0" in out
    assert "0 retries the server saw twice" in out
    assert out.rstrip().endswith("OK: every event arrived")
    # What arrived is on disk, every credential masked, and the run printed none.
    arrived = [json.loads(line) for line in (tmp_path / "out" / "arrived.jsonl").read_text().splitlines()]
    assert len(arrived) == 105
    assert sum(1 for r in arrived if r["endpoint"] == "fenix.login") == 1
    partial = [r for r in arrived if r["kind"] == "fenix.order_partial_cancel"]
    assert [line["cancelled_quantity"] for line in partial[0]["body"]["line_items"]] == [1, 0]
    assert {r["body"]["action_id"] for r in arrived if r["endpoint"] == "dg.execution"} == {
        "flow_acme_shipment_update",
        "flow_acme_delivered",
        "flow_acme_delay_alert",
    }
    text = result.stdout + result.stderr + (tmp_path / "out" / "arrived.jsonl").read_text()
    for secret in DEMO_SECRETS:
        assert secret not in text
    assert (tmp_path / "state" / "journal.db").is_file()


def test_the_day_survives_server_errors_and_rate_limits(tmp_path: Path) -> None:
    result = run(
        str(ACME / "run_day.py"),
        "--faults",
        "5xx=0.2,429=0.05,retry-after=0,seed=11",
        "--out",
        str(tmp_path / "out"),
        "--state",
        str(tmp_path / "state"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "each exactly once. OK" in result.stdout
    retried = next(line for line in result.stdout.splitlines() if line.startswith("delivered 104, retried "))
    assert int(retried.split("retried ")[1].split(",")[0]) > 0
    assert '"503"' in result.stdout or '"500"' in result.stdout


def test_a_run_that_loses_an_event_fails(tmp_path: Path) -> None:
    # One order with no e-mail anywhere: Fenix requires one, so it is dead-lettered and the check fails.
    lines = (ACME / "events.ndjson").read_text().splitlines()
    event = json.loads(next(line for line in lines if '"topic":"orders/create"' in line))
    for key in ("email", "contact_email"):
        event["payload"][key] = None
    event["payload"]["customer"]["email"] = None
    events = tmp_path / "events.ndjson"
    events.write_text(json.dumps(event) + "\n" + lines[0] + "\n")
    result = run(
        str(ACME / "run_day.py"),
        "--events",
        str(events),
        "--out",
        str(tmp_path / "out"),
        "--state",
        str(tmp_path / "state"),
    )
    assert result.returncode == 1
    assert "  not sent: " in result.stdout
    # shopify/order serves two entries of the config (create, updated), so its deliveries carry the position.
    assert "shopify-order#1 (mapping): dead: " in result.stdout
    assert "required field has no value" in result.stdout
    assert "dead 1;" in result.stdout
    assert result.stdout.rstrip().endswith("FAILED: see above")


def test_the_events_are_made_deterministically_from_the_real_fixtures(tmp_path: Path) -> None:
    result = run(str(ACME / "make_events.py"), str(tmp_path / "events.ndjson"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "events.ndjson").read_bytes() == (ACME / "events.ndjson").read_bytes()
    events = [json.loads(line) for line in (ACME / "events.ndjson").read_text().splitlines()]
    times = [event["received_at"] for event in events]
    assert times == sorted(times)
    day = [datetime.fromisoformat(t).astimezone(timezone(timedelta(hours=-5))).date() for t in times]
    assert set(day) == {date(2024, 11, 14)}  # one US Eastern day
    assert len({event["id"] for event in events}) == 111
    # Keys and their order are the real payloads'.
    real = json.loads((REPO / "tests/fixtures/real/shopify/orders_cancelled_webhook.json").read_text())
    order = next(e["payload"] for e in events if e["topic"] == "orders/create")
    assert list(order) == list(real)


def test_library_embed() -> None:
    result = run(str(REPO / "examples" / "library_embed" / "main.py"))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "transform: Shopify order #1001 -> fenix.order id 450789469, status OPEN, 3 items" in out
    assert "    target field: order.customer.email" in out
    assert "  orders/create        -> shopify-order.order delivered" in out
    assert (
        "  fulfillments/create  -> shopify-fulfillment.fulfillment skipped, shopify-fulfillment.shipment skipped"
        in out
    )
    assert "  orders/cancelled     -> shopify-order-cancelled.cancel delivered" in out
    assert "  orders/create        -> shopify-order (mapping) dead" in out
    assert "  customers/update     -> unrouted" in out
    assert "POST /api/v1/order/820982911946154500/fulfillment/123456/created" in out
    assert out.rstrip().endswith("OK")
    for secret in DEMO_SECRETS:
        assert secret not in out + result.stderr


def test_serve_day_delivers_the_signed_webhooks_exactly_once(tmp_path: Path) -> None:
    result = run(str(ACME / "serve_day.py"), "--state", str(tmp_path / "state"), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "69 Shopify webhooks" in out
    assert (
        "the client's answers: 200 accepted x69, 200 duplicate (a repeat) x3, 401 bad_signature (forged) x1"
        in out
    )
    assert "check: 91 requests planned from 69 webhooks, 91 arrived: each exactly once. OK" in out
    assert 'shipmap_webhooks_rejected_total{reason="bad_signature",source="shopify"} 1.0' in out
    assert "events 69  unrouted 0  rejected input records 0" in out
    for secret in (*DEMO_SECRETS, "demo-shopify-webhook-secret"):
        assert secret not in result.stdout + result.stderr
