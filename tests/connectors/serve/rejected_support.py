"""What the ``shipmap replay --rejected`` tests share: the sandbox's fake BigCommerce store API without order
999 until the test adds it (an order the API does not show yet: 404), the skinny webhook of that order, a
service that rejects it, and the command line."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
from shipmap.connectors import Sandbox
from shipmap.connectors._store._journal import open_readonly

from .harness import BC_API_TOKEN, BC_HEADERS, SERVE_FIXTURES, ServeProcess, bc_webhook, environment

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


@contextlib.contextmanager
def served_store(tmp_path: Path) -> Iterator[tuple[Store, Path, Sandbox]]:
    """A ``Store`` in ``tmp_path`` served by a sandbox of its own, and the folder of the test's services,
    ``tmp_path / "work"`` (made here)."""
    store = Store(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    with Sandbox(source_documents=store.documents, source_token=BC_API_TOKEN) as sandbox:
        yield store, work, sandbox


def webhook_999() -> bytes:
    return json.dumps(bc_webhook(999, "order-999-created")).encode()


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
        answer = serve.post(client, "bc", webhook_999(), BC_HEADERS)
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
