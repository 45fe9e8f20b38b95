"""A source API that answers what no store should: a document nested thousands deep, a body of gigabytes, an
answer dripped a byte at a time. Each is that webhook's rejection, with the reason, within the connection's
``timeout.total`` and the 8 MiB cap; never a crash of the service, nor a delivery loop held for good."""

from __future__ import annotations

import asyncio
import json
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from shipmap.connectors import Runtime, Sandbox
from shipmap.connectors._serve import Enricher, enrichments
from shipmap.connectors._serve._enrich_errors import EnrichmentError

from .harness import BC_HEADERS, REAL_SHOPIFY, ServeProcess, bc_webhook, environment, shopify_headers

CAP = 8 * 1024 * 1024
ORDER = b'{"id": 100, "status": "Awaiting Fulfillment"}'


class HostileAPI:
    """A real HTTP server on 127.0.0.1 whose answer to ``/v2/orders/{id}`` is ``answer(sock)``; products and
    shipments are answered ``[]``. ``sent`` counts the bytes the order answers wrote before the client left."""

    def __init__(self, answer: Callable[[HostileAPI, socket.socket], None]) -> None:
        self.answer = answer
        self.sent = 0
        api = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = self.request.recv(65536)
                    if not chunk:
                        return
                    request += chunk
                path = request.split(b" ")[1]
                try:
                    if path.endswith((b"/products", b"/shipments")):
                        self.request.sendall(_response(b"[]"))
                    else:
                        api.answer(api, self.request)
                except OSError:
                    pass  # the client went away: what it did not read was never sent

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> HostileAPI:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _response(body: bytes, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % size + body


def _nested(depth: int) -> Callable[[HostileAPI, socket.socket], None]:
    def answer(api: HostileAPI, sock: socket.socket) -> None:
        sock.sendall(_response(b'{"id": 100, "notes": ' + b"[" * depth + b"]" * depth + b"}"))

    return answer


def _declared_gigabyte(api: HostileAPI, sock: socket.socket) -> None:
    """Declares 1 GiB, sends 1 MiB of it, then nothing until the client leaves (or 30 s)."""
    sock.sendall(_response(b" " * (1024 * 1024), length=1024**3))
    sock.settimeout(30)
    sock.recv(1)


def _endless(api: HostileAPI, sock: socket.socket) -> None:
    """A chunked body of spaces, 64 MiB of it, as fast as the client reads."""
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
    for _ in range(1024):
        sock.sendall(chunk)
        api.sent += 0x10000
    sock.sendall(b"0\r\n\r\n")


def _drip(api: HostileAPI, sock: socket.socket) -> None:
    """The order, a byte every 50 ms (each well within the read timeout): 2.5 s for 50 bytes."""
    sock.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(ORDER)
    )
    for byte in ORDER:
        sock.sendall(bytes([byte]))
        time.sleep(0.05)


def _runtime(tmp_path: Path, api: str, timeout: str = "{read: 5s, total: 10s}") -> Runtime:
    serve = ServeProcess(tmp_path, "http://127.0.0.1:9")  # only for its copy of the config files
    text = serve.config.read_text().replace(
        "    base_url: ${SANDBOX_URL}/_source/bigcommerce/stores/abc123\n",
        f"    base_url: {api}\n    timeout: {timeout}\n    breaker: {{failures: 100}}\n",
    )
    text = text.replace("retry: {max_attempts: 4,", "retry: {max_attempts: 2,")
    serve.config.write_text(text)
    return Runtime.from_config(serve.config, environ=environment("http://127.0.0.1:9"))


def _skinny() -> dict[str, Any]:
    return {"source": "bc", "topic": "store/order/created", "payload": bc_webhook(100)}


def _fetch(runtime: Runtime) -> Any:
    async def fetch() -> Any:
        async with Enricher(runtime, enrichments(runtime.config), wait=False) as enricher:
            return await enricher.documents(_skinny())

    return asyncio.run(fetch())


@pytest.mark.parametrize("depth", [100_000, 980, 201])
def test_a_document_nested_too_deeply_is_the_events_failure_with_the_reason(
    tmp_path: Path, depth: int
) -> None:
    """100,000 levels defeat the parser; 980 pass it but not the encoder that writes the document to the inbox,
    on a deeper stack; 201 would pass both today. All three are refused alike, by one limit."""
    with HostileAPI(_nested(depth)) as api, pytest.raises(EnrichmentError) as refused:
        _fetch(_runtime(tmp_path, api.url))
    assert refused.value.message == "GET /v2/orders/100: the response is nested more than 200 levels deep"


def test_a_document_nested_to_the_limit_is_taken(tmp_path: Path) -> None:
    with HostileAPI(_nested(198)) as api:  # the order object, its notes array, and 198 levels in it: 200
        documents = _fetch(_runtime(tmp_path, api.url))
    assert documents["order"]["id"] == 100 and documents["products"] == []


def test_a_declared_length_over_the_cap_is_refused_unread(tmp_path: Path) -> None:
    """Read to the end, the gigabyte would be held in memory before the cap was looked at; here the API never
    sends it, so a client that waits for it gets a read timeout instead of the reason."""
    with HostileAPI(_declared_gigabyte) as api, pytest.raises(EnrichmentError) as refused:
        _fetch(_runtime(tmp_path, api.url, timeout="{read: 20s, total: 25s}"))
    assert refused.value.message == f"GET /v2/orders/100: the response is larger than {CAP} bytes"


def test_a_body_past_the_cap_is_read_no_further_than_the_cap(tmp_path: Path) -> None:
    with HostileAPI(_endless) as api:
        with pytest.raises(EnrichmentError) as refused:
            _fetch(_runtime(tmp_path, api.url))
        sent = api.sent
    assert refused.value.message == f"GET /v2/orders/100: the response is larger than {CAP} bytes"
    # The cap, plus what the sockets' buffers held when the client stopped reading; not the 64 MiB.
    assert sent < 4 * CAP, sent


def test_an_answer_dripped_past_timeout_total_fails_at_the_deadline(tmp_path: Path) -> None:
    """Each byte comes within the read timeout, so only the deadline of the whole attempt ends it."""
    with HostileAPI(_drip) as api, pytest.raises(EnrichmentError) as refused:
        _fetch(_runtime(tmp_path, api.url, timeout="{read: 5s, total: 1s}"))
    assert refused.value.message == (
        "GET /v2/orders/100 failed after 2 attempts: Timeout: no answer within the 1 s deadline (timeout.total)"
    )


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as server:
        yield server


def test_serve_survives_a_source_document_nested_too_deeply(sandbox: Sandbox, tmp_path: Path) -> None:
    """Such a document once took ``shipmap serve`` down (exit 70), and again at every restart, since its
    webhook stayed pending in the inbox. Now it is that webhook's rejected input, and the next is delivered."""
    with HostileAPI(_nested(980)) as api:
        serve = ServeProcess(tmp_path, sandbox.url)
        text = serve.config.read_text().replace("${SANDBOX_URL}/_source/bigcommerce/stores/abc123", api.url)
        serve.config.write_text(text)
        serve.start()
        try:
            with httpx.Client(timeout=10) as client:
                skinny = json.dumps(_skinny()["payload"]).encode()
                assert serve.post(client, "bc", skinny, BC_HEADERS).json()["status"] == "accepted"
                order = (REAL_SHOPIFY / "orders_cancelled_webhook.json").read_bytes()
                answer = serve.post(client, "shop", order, shopify_headers(order, "orders/create", "after-1"))
                assert answer.json()["status"] == "accepted"
                serve.wait_until(lambda: sandbox.requests(endpoint="fenix.orders"), what="the order after it")
            assert serve.terminate() == 0, "".join(serve.errors)
        finally:
            serve.kill()
    dead = subprocess.run(
        [sys.executable, "-c", "from shipmap.connectors._cli import entry; entry()", "dead-letters", str(serve.config)],
        capture_output=True, text=True, env=serve.env, check=False,
    )  # fmt: skip
    assert (
        "rejected input bc#1: enrichment failed: GET /v2/orders/100: the response is nested more than 200 levels"
        " deep" in dead.stdout
    ), dead.stdout
