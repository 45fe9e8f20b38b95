"""A source API's HTTP client for enrichment, as built from its connection, and whether a reload replaced it.

The ``Enricher`` holds one :class:`SourceClient` per connection a source's ``enrich`` fetches over. A reload
that changes the connection (as ``Runtime.use_mapper`` took it: its auth object, base_url, headers,
timeout, breaker or max_rate, or delivery's it falls back on) gets a new one for the GETs that start after;
those in flight end on theirs, which the last of them closes.
"""

from __future__ import annotations

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
    def of(cls, runtime: Runtime, name: str, transport: httpx.AsyncBaseTransport | None) -> SourceClient:
        """A client of connection ``name`` as ``runtime`` has it now (a reload's, once delivery took it)."""
        connection, auth = runtime.connections[name], runtime.auths[name]
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

    def current(self, runtime: Runtime) -> bool:
        """Whether it is built from what ``runtime`` runs its connection with now."""
        connection, delivery = runtime.connections[self.connection.name], runtime.config.delivery
        return runtime.auths[connection.name] is self.auth and (
            connection is self.connection
            or (self.connection, self.timeout, self.breaker)
            == (connection, connection.timeout or delivery.timeout, connection.breaker or delivery.breaker)
        )
