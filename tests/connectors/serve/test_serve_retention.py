"""A service left running forgets delivered rows after ``journal.keep``, inside its long-lived run: the journal
stays small, /metrics counts what went, and a webhook whose delivery was forgotten is delivered again."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from shipmap.connectors import Sandbox

from .harness import REAL_SHOPIFY, SQLITE_JOURNAL, ServeProcess, shopify_headers, with_added

ORDER = json.loads((REAL_SHOPIFY / "orders_cancelled_webhook.json").read_text())


def _forgotten(metrics: str) -> dict[str, float]:
    (family,) = [f for f in text_string_to_metric_families(metrics) if f.name == "shipmap_journal_forgotten"]
    return {
        sample.labels["kind"]: sample.value for sample in family.samples if sample.name.endswith("_total")
    }


def _journal_rows(journal: Path) -> tuple[int, int]:
    db = sqlite3.connect(f"{journal.resolve().as_uri()}?mode=ro", uri=True)
    try:
        deliveries = db.execute("SELECT count(*) FROM deliveries").fetchone()[0]
        sources = db.execute("SELECT count(*) FROM sources").fetchone()[0]
    finally:
        db.close()
    return deliveries, sources


def test_a_running_service_forgets_delivered_rows_after_keep(tmp_path: Path) -> None:
    with Sandbox() as sandbox:
        serve = ServeProcess(tmp_path, sandbox.url)
        serve.config.write_text(with_added(serve.config.read_text(), SQLITE_JOURNAL, "  keep: 2s\n"))
        serve.start()
        bodies = [json.dumps(dict(ORDER, id=7_100_000 + i, name=f"#KEEP{i}")).encode() for i in range(3)]
        try:
            with httpx.Client(timeout=10) as client:
                for i, body in enumerate(bodies):
                    assert (
                        serve.post(
                            client, "shop", body, shopify_headers(body, "orders/create", f"keep-{i}")
                        ).status_code
                        == 200
                    )
                serve.wait_until(lambda: len(sandbox.requests(endpoint="fenix.orders")) == 3, what="3 orders")
                # Kept 2 s, looked at every second by the service's one long run: gone within a few seconds.
                serve.wait_until(
                    lambda: _forgotten(client.get(f"{serve.url}/metrics").text).get("deliveries") == 3,
                    what="3 deliveries forgotten",
                )
                assert _forgotten(client.get(f"{serve.url}/metrics").text) == {
                    "deliveries": 3.0, "sources": 3.0, "unrouted": 0.0, "rejected": 0.0
                }  # fmt: skip
                assert _journal_rows(tmp_path / ".shipmap" / "journal.db") == (0, 0)
                status = subprocess.run(
                    [sys.executable, "-c", "from shipmap.connectors._cli import entry; entry()",
                     "status", str(serve.config), "--url", serve.url, "--json"],
                    capture_output=True, text=True, env=serve.env, check=True, timeout=60,
                )  # fmt: skip
                report = json.loads(status.stdout)
                assert (report["keep_seconds"], report["oldest_delivered_seconds"]) == (2.0, None)
                # The same order under a new webhook id: its delivery was forgotten, so it is delivered again.
                again = shopify_headers(bodies[0], "orders/create", "keep-again")
                assert serve.post(client, "shop", bodies[0], again).status_code == 200
                serve.wait_until(
                    lambda: len(sandbox.requests(endpoint="fenix.orders")) == 4, what="the 4th order"
                )
            assert serve.terminate() == 0
        finally:
            serve.kill()
        orders = sorted(str(o.body["id"]) for o in sandbox.requests(endpoint="fenix.orders"))
    assert orders == ["7100000", "7100000", "7100001", "7100002"]
    assert any(
        "journal: forgot what is older than 2s: 3 deliveries, 3 source documents" in line
        for line in serve.errors
    ), serve.errors[-20:]
