"""Fixtures shared by every test folder: a real sandbox server on 127.0.0.1 (see docs/sandbox.md)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
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


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The URL of the PostgreSQL server `make test` starts (.ci/postgres), or of SHIPMAP_TEST_POSTGRES."""
    url = os.environ.get("SHIPMAP_TEST_POSTGRES")
    state = Path(__file__).resolve().parent.parent / ".postgres-url"
    if not url and state.is_file():
        url = state.read_text(encoding="utf-8").splitlines()[0]
    if not url:
        message = "no PostgreSQL server: `make postgres` starts one (make test does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the test server for one test, dropped after it."""
    import psycopg

    name = f"shipmap_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield postgres_server.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
