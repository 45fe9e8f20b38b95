"""The sandbox under the kill -9 runs: a client that dies mid-request is an ordinary event for a server."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable

import pytest
from shipmap.connectors import Sandbox


def test_a_client_dying_mid_body_is_not_an_application_error(
    sandbox_factory: Callable[..., Sandbox], caplog: pytest.LogCaptureFixture
) -> None:
    sandbox = sandbox_factory()
    caplog.set_level(logging.WARNING)
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=5) as client:
        client.sendall(
            b"POST /execution HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Authorization: Basic ZGVtby1rZXk6ZGVtby1zZWNyZXQ=\r\nContent-Length: 1000\r\n\r\n"
            b'{"action_id": "a", '
        )
        time.sleep(0.2)  # the server is now waiting for the rest of the body
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(r.name.startswith("uvicorn") for r in caplog.records):
        time.sleep(0.05)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    assert sandbox.stats()["accepted"] == 0
