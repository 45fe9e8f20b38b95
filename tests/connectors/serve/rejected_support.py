"""What the ``shipmap replay --rejected`` tests share: the sandbox's fake BigCommerce store API without order
999 until the test adds it (an order the API does not show yet: 404), the skinny webhook of that order, a
service that rejects it, and the command line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
from shipmap.connectors import Sandbox
from shipmap.connectors._store._journal import open_readonly

from .harness import SERVE_FIXTURES, ServeProcess, environment

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


def rejected_in(work: Path) -> int:
    """The rejected records in the SQLite journal of a service in ``work``: 0 before the service's delivery
    side has made the journal's tables (it may listen before)."""
    journal = open_readonly(work / ".shipmap" / "journal.db")
    if journal is None:
        return 0
    with journal:
        return journal.rejected_count()


def accept_and_reject(serve: ServeProcess, rejected: Callable[[], int] | None = None) -> None:
    """``serve`` accepts the webhook of order 999 and rejects it (the store API's 404): until ``rejected()``,
    the count in its journal (by default its SQLite one), is 1."""
    with httpx.Client(timeout=10) as client:
        answer = serve.post(client, "bc", webhook_999(), SECRET_HEADER)
    assert answer.json()["status"] == "accepted", answer.text
    count = rejected or (lambda: rejected_in(serve.workdir))
    serve.wait_until(lambda: count() == 1, what="the rejected webhook")


def reject_and_stop(serve: ServeProcess, rejected: Callable[[], int] | None = None) -> None:
    """``accept_and_reject``, then ``serve`` stopped (SIGTERM, exit 0), or killed if that fails."""
    try:
        accept_and_reject(serve, rejected)
        assert serve.terminate() == 0
    finally:
        serve.kill()


def shipmap(work: Path, sandbox: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from shipmap.connectors._cli import entry; entry()", *args],
        capture_output=True, text=True, env=environment(sandbox.url), cwd=work, check=False, timeout=120,
    )  # fmt: skip
