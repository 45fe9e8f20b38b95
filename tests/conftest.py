"""Fixtures shared by every test folder: a real sandbox server on 127.0.0.1 (see docs/sandbox.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from shipmap.connectors import Sandbox


@pytest.fixture(scope="session")
def _sandbox_server() -> Iterator[Sandbox]:
    with Sandbox() as server:
        yield server


@pytest.fixture
def sandbox(_sandbox_server: Sandbox) -> Sandbox:
    """The session's sandbox (demo credentials, 4 h tokens), fresh for each test: no records, tokens or faults."""
    _sandbox_server.set_faults(None)
    _sandbox_server.reset()
    return _sandbox_server


@pytest.fixture
def sandbox_factory() -> Iterator[Callable[..., Sandbox]]:
    """``sandbox_factory(token_ttl=1, faults="5xx=0.1")``: a started sandbox of its own, stopped after the test."""
    started: list[Sandbox] = []

    def make(**kwargs: Any) -> Sandbox:
        server = Sandbox(**kwargs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
