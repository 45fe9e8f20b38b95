"""Helpers shared by the studio tests (no tests here): a workspace, a copy of examples/woocommerce_tutorial (the tutorial's mapping, samples,
cases and config) plus the ready Shopify order mapping and a real Shopify order, in a temporary folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "examples" / "woocommerce_tutorial"
SHOPIFY_ORDER = ROOT / "mappings" / "shopify" / "order.yaml"
MAPPING = "driftwood.yaml"  # the tutorial's mapping and sample, in the workspace
SAMPLE = "samples/order.json"
SHOPIFY_SAMPLE = ROOT / "tests" / "fixtures" / "real" / "shopify" / "order_rest_get_with_fulfillment.json"


def make_workspace(base: Path) -> Path:
    root = base / "workspace"
    shutil.copytree(TUTORIAL, root, ignore=shutil.ignore_patterns(".shipmap", ".env", "out"))
    (root / "shopify" / "samples").mkdir(parents=True)
    shutil.copy(SHOPIFY_ORDER, root / "shopify" / "order.yaml")
    shutil.copy(SHOPIFY_SAMPLE, root / "shopify" / "samples" / "order.json")
    return root


def evaluate(client: httpx.Client, workspace: Path, **changes: object) -> dict[str, object]:
    """POST /api/evaluate with the tutorial's mapping and sample, ``changes`` applied; the answer, 200 asserted."""
    body: dict[str, object] = {
        "mapping": (workspace / MAPPING).read_text(encoding="utf-8"),
        "mapping_file": MAPPING,
        "sample": (workspace / SAMPLE).read_text(encoding="utf-8"),
        "sample_name": SAMPLE,
    }
    body.update(changes)
    response = client.post("/api/evaluate", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result
