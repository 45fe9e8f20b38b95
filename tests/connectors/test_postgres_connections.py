"""Every PostgreSQL connection shipmap opens is bounded however the network fails: it opens within
``connect_timeout``, each statement ends on the server at its ``statement_timeout``, and its socket carries
TCP keepalives and ``TCP_USER_TIMEOUT``, so a read on a connection whose peer went silent (a partition) fails
within a stated bound instead of the kernel's (minutes, or never for a read with nothing outstanding).

Checked on the real sockets of a real server's connections: the journal's, the inbox's (intake's, the
gauges' reader's), the breaker and rate store's.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from shipmap.connectors import Journal
from shipmap.connectors._serve import PostgresInbox
from shipmap.connectors._serve._inbox_gauges import open_gauge_reader
from shipmap.connectors._store._breaker_pg import PostgresStateStore
from shipmap.connectors._store._journal_pg import (
    CONNECT_TIMEOUT_S,
    KEEPALIVE_COUNT,
    KEEPALIVE_IDLE_S,
    KEEPALIVE_INTERVAL_S,
    TCP_USER_TIMEOUT_MS,
)


def _bounds(connection: Any) -> dict[str, int]:
    """What the socket of a psycopg connection is set to, and the connect_timeout it was opened with."""
    sock = socket.socket(fileno=connection.fileno())
    try:
        found = {
            "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            "idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            "interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            "count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            "user_timeout": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
        }
    finally:
        sock.detach()  # the fd stays psycopg's
    found["connect_timeout"] = int(connection.info.get_parameters().get("connect_timeout", 0))
    return found


EXPECTED = {
    "keepalive": 1,
    "idle": KEEPALIVE_IDLE_S,
    "interval": KEEPALIVE_INTERVAL_S,
    "count": KEEPALIVE_COUNT,
    "user_timeout": TCP_USER_TIMEOUT_MS,
    "connect_timeout": CONNECT_TIMEOUT_S,
}


def test_the_journal_s_connections_are_bounded(postgres_url: str) -> None:
    assert (
        postgres_url.startswith("postgresql://") and "@127.0.0.1:" in postgres_url
    )  # TCP, not a unix socket
    with Journal(postgres_url) as journal:
        connection = journal._db._conn
        assert _bounds(connection) == EXPECTED
        assert connection.execute("SHOW statement_timeout").fetchone() == ("1min",)
    with Journal(postgres_url, readonly=True) as reader:
        assert _bounds(reader._db._conn) == EXPECTED


def test_the_inbox_s_connections_are_bounded(postgres_url: str) -> None:
    with PostgresInbox(postgres_url) as intake:
        assert _bounds(intake._conn) == EXPECTED
        assert intake._conn.execute("SHOW statement_timeout").fetchone() == ("30s",)
        gauges = open_gauge_reader(postgres_url)
        try:
            assert isinstance(gauges, PostgresInbox)
            assert _bounds(gauges._conn) == EXPECTED
            assert gauges._conn.execute("SHOW statement_timeout").fetchone() == ("3s",)
        finally:
            gauges.close()


def test_the_breaker_and_rate_store_s_connection_is_bounded(postgres_url: str) -> None:
    with Journal(postgres_url):  # its schema
        pass

    async def scenario() -> None:
        store = await PostgresStateStore.connect(postgres_url, {"fenix": "http://127.0.0.1:9/"}, lease=30.0)
        try:
            assert _bounds(store._conn) == EXPECTED
            cursor = await store._conn.execute("SHOW statement_timeout")
            assert await cursor.fetchone() == ("1min",)
        finally:
            await store.aclose()

    asyncio.run(scenario())
