"""A source API's HTTP client for enrichment, as built from its connection (``SourceConnections``), and whether a
reload replaced it.

The ``Enricher`` holds one :class:`SourceClient` per connection a source's ``enrich`` fetches over. A reload
that changes the connection (as ``Runtime.use_mapper`` took it: its auth object, base_url, headers,
timeout, breaker or max_rate, or delivery's it falls back on) gets a new one for the GETs that start after;
those in flight end on theirs, which the last of them closes. A connection the reload added is fetched over
as its file has it until delivery takes it; then with delivery's auth object, through a new client.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from .._config import Connection, Timeouts
from .._deliver._auth import ShipmapAuth
from .._deliver._breaker import BreakerSettings
from .._deliver._request import refusing_cookies
from .._runtime import Runtime


@dataclass
class SourceClient:
    """``client``, built from ``connection``, its ``auth`` and the ``timeout`` and ``breaker`` it runs with.
    ``uses``: the GETs in flight through it; ``retired``: a reload replaced it (the last GET closes it);
    ``moved``: for another endpoint or other credentials (``new_endpoint``)."""

    connection: Connection
    auth: ShipmapAuth
    timeout: Timeouts
    breaker: BreakerSettings
    client: httpx.AsyncClient
    uses: int = 0
    retired: bool = False
    moved: bool = False

    @classmethod
    def of(
        cls,
        runtime: Runtime,
        connection: Connection,
        auth: ShipmapAuth,
        transport: httpx.AsyncBaseTransport | None,
    ) -> SourceClient:
        """A client of ``connection`` with ``auth``, as enrichment has them now (``SourceConnections.of``)."""
        delivery = runtime.config.delivery
        timeout = connection.timeout or delivery.timeout
        client = httpx.AsyncClient(
            auth=auth,
            headers={"Accept": "application/json", **connection.headers},
            cookies=refusing_cookies(),
            timeout=timeout.httpx(),
            transport=transport,
            follow_redirects=False,
        )
        return cls(connection, auth, timeout, connection.breaker or delivery.breaker, client)

    def current(self, runtime: Runtime, connection: Connection, auth: ShipmapAuth) -> bool:
        """Whether it is built from ``connection`` and ``auth``, as the enricher has them now, with the
        delivery settings ``runtime`` runs with."""
        delivery = runtime.config.delivery
        return auth is self.auth and (
            connection is self.connection
            or (self.connection, self.timeout, self.breaker)
            == (connection, connection.timeout or delivery.timeout, connection.breaker or delivery.breaker)
        )


class SourceConnections:
    """The connections enrichment builds its clients from: the runtime's (delivery's), and those a reload added
    that delivery has not taken yet (it takes them at the end of its run in progress), each with an auth object
    of its own until then: a source's ``enrich`` over one fetches over it at once, as at start."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._added: dict[str, tuple[Connection, ShipmapAuth]] = {}

    def take(self, connections: Iterable[Connection]) -> None:
        """A reload's ``connections``: those the runtime does not have are kept, each with the auth object it
        was given while its settings stay (a second reload before delivery takes it)."""
        added: dict[str, tuple[Connection, ShipmapAuth]] = {}
        for connection in connections:
            if connection.name in self._runtime.connections:
                continue
            kept = self._added.get(connection.name)
            if kept is None or kept[0] != connection:
                kept = (connection, self._runtime.new_auth(connection))
            added[connection.name] = kept
        self._added = added

    def of(self, name: str) -> tuple[Connection, ShipmapAuth]:
        """Connection ``name`` and its auth as its next GET takes them: the runtime's, or the reload's that
        added it, until delivery takes it."""
        connection = self._runtime.connections.get(name)
        if connection is not None:
            return connection, self._runtime.auths[name]
        return self._added[name]
