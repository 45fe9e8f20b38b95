"""What the ``shipmap replay --rejected`` tests share: the sandbox's fake BigCommerce store API without order
999 until the test adds it (an order the API does not show yet: 404), the skinny webhook of that order, and
the command line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from shipmap.connectors import Sandbox

from .harness import SERVE_FIXTURES, environment

WEBHOOKS = SERVE_FIXTURES / "webhooks"
SECRET_HEADER = {"Content-Type": "application/json", "X-Shipmap-Secret": "bc-webhook-secret-value"}
NOT_FOUND = "bc#1: enrichment failed: GET /v2/orders/999 failed: HTTP 404"


class Store:
    """The sandbox's fake BigCommerce store API over a copy of the fixture documents, without order 999 until
    ``add_order_999`` (an order the API does not show yet: 404)."""

    def __init__(self, tmp_path: Path) -> None:
        self.documents = tmp_path / "store_api"
        shutil.copytree(SERVE_FIXTURES / "source_api", self.documents)
        self.orders = self.documents / "bigcommerce" / "stores" / "abc123" / "v2" / "orders"

    def add_order_999(self) -> None:
        order = json.loads((self.orders / "100.json").read_text())
        order["id"] = 999
        (self.orders / "999.json").write_text(json.dumps(order))
        shutil.copytree(self.orders / "100", self.orders / "999")


def webhook_999() -> bytes:
    webhook = json.loads((WEBHOOKS / "bigcommerce_order_created_100.json").read_text())
    webhook.update(hash="order-999-created", data={"type": "order", "id": 999})
    return json.dumps(webhook).encode()


def shipmap(work: Path, sandbox: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from shipmap.connectors._cli import entry; entry()", *args],
        capture_output=True, text=True, env=environment(sandbox.url), cwd=work, check=False, timeout=120,
    )  # fmt: skip
