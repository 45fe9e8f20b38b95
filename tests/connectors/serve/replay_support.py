"""What the tests of ``shipmap replay`` through a running service share: ``shipmap serve`` with the packaged
Shopify order mapping broken (a number where Fenix wants text: every order is its own dead letter, with the
contract's reason, and no request), the fix, and the summary document a ``--format json`` replay prints."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from shipmap.connectors import Sandbox

from .harness import ServeProcess

PACKAGED = Path(__file__).resolve().parents[3] / "mappings" / "shopify" / "order.yaml"
LITERAL = "source: {literal: Shopify}"
MAPPING = "shopify_order.yaml"  # the broken copy, in the service's folder
KEYS = {
    "format_version", "ok", "exit_code", "events", "delivered", "retried", "dead", "skipped", "unrouted",
    "rejected", "recovered", "parked", "forgotten", "elapsed_seconds", "targets", "unknown", "held_elsewhere", "hints",
}  # fmt: skip


def summary_document(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The run summary document a ``--format json`` command printed, checked for what every one holds."""
    document: dict[str, Any] = json.loads(done.stdout)  # the report alone on stdout
    assert document.keys() >= KEYS and document["format_version"] == 1, document
    assert document["exit_code"] == done.returncode, document
    return document


def serve_a_broken_mapping(work: Path, sandbox: Sandbox) -> ServeProcess:
    """A started service in ``work`` whose config names a copy of the packaged mapping that sends the order's
    number where Fenix wants text; ``fix_the_mapping`` writes the packaged one over it (for a reload)."""
    packaged = PACKAGED.read_text()
    assert LITERAL in packaged
    (work / MAPPING).write_text(packaged.replace(LITERAL, "source: {path: id}"))
    serve = ServeProcess(work, sandbox.url)
    config = serve.config.read_text()
    assert "- mapping: shopify/order\n" in config
    serve.config.write_text(config.replace("- mapping: shopify/order\n", f"- mapping: ./{MAPPING}\n"))
    return serve.start()


def fix_the_mapping(work: Path) -> None:
    (work / MAPPING).write_text(PACKAGED.read_text())
