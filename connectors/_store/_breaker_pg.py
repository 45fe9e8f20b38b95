"""Breaker and ``max_rate`` state shared by every worker on one PostgreSQL journal (the ``connection_state``
table of the journal's schema, version 3).

Times are on the database's clock (``clock_timestamp()``), so workers on hosts whose clocks disagree still
agree on when the next probe or the next request slot is due; a worker turns them into waits on its own clock.
What each operation costs:

- a request on a closed breaker: nothing, from a copy of the record at most ``refresh`` seconds old (one
  read per connection per ``refresh``, shared by the requests that find it stale);
- a transition (a failure, a close, a probe claimed): one short transaction on the row (``FOR UPDATE``), so
  two workers never both open the breaker, nor both probe;
- with ``max_rate``: one ``UPDATE ... RETURNING`` per request, which claims the next free slot atomically.

One connection per worker process, opened for one run: its statements are serialised by a lock, and a
transaction never waits on anything but the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from .._deliver._breaker import BreakerState, RateState
from .._errors import JournalError
from ._journal_pg import CONNECT_TIMEOUT_S, STATEMENT_TIMEOUT_MS, display_url, first_line

_log = logging.getLogger("shipmap.connectors.breaker")

_NOW = "EXTRACT(EPOCH FROM clock_timestamp())::double precision"
_FIELDS = tuple(field.name for field in dataclasses.fields(BreakerState))
_SELECT = f"SELECT {', '.join(_FIELDS)}, {_NOW} FROM connection_state WHERE name = %s"
_UPDATE = f"UPDATE connection_state SET {', '.join(f'{f} = %s' for f in _FIELDS)} WHERE name = %s"
# The next slot is one interval after the last one claimed, or now if that is past: one statement, so two
# workers claiming at once get two slots. Returns the wait, in seconds, until the claimed slot.
_CLAIM = f"""WITH clock AS (SELECT {_NOW} AS now)
             UPDATE connection_state SET next_free = GREATEST(next_free, clock.now) + %(interval)s FROM clock
             WHERE name = %(name)s RETURNING next_free - %(interval)s - clock.now"""


class PostgresStateStore:
    """The :class:`~shipmap.connectors._breaker.SharedStore` of a PostgreSQL journal. Open it with
    ``await PostgresStateStore.connect(url, names)`` inside the event loop that uses it; ``aclose()`` it."""

    def __init__(self, connection: Any, name: str, *, refresh: float, probe_lease: float) -> None:
        self._conn = connection
        self._name = name
        self.refresh_seconds = refresh
        self.poll = refresh
        self.probe_lease = probe_lease
        self._lock = asyncio.Lock()
        self._records: dict[str, BreakerState] = {}
        self._read_at: dict[str, float] = {}
        self._reading: dict[str, asyncio.Future[None]] = {}
        self._offset = 0.0  # the database's clock minus this process's monotonic clock, at the last read

    @classmethod
    async def connect(
        cls, url: str, names: Iterable[str], *, lease: float, refresh: float = 0.25
    ) -> PostgresStateStore:
        """``lease``: the journal's lease, which bounds a probe whose worker died and an idle transaction."""
        try:
            import psycopg
        except ImportError:  # pragma: no cover - the journal needed it first
            raise JournalError(
                "a postgresql:// journal needs psycopg 3: pip install 'shipmap[postgresql]'"
            ) from None
        idle = max(1000, int(lease * 1000))
        options = f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c idle_in_transaction_session_timeout={idle}"
        try:
            connection = await psycopg.AsyncConnection.connect(
                url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, options=options
            )
        except psycopg.Error as error:
            raise JournalError(f"cannot open journal {display_url(url)}: {first_line(error)}") from None
        store = cls(connection, display_url(url), refresh=refresh, probe_lease=lease)
        async with store._statement():
            for name in names:
                await connection.execute(
                    "INSERT INTO connection_state (name) VALUES (%s) ON CONFLICT DO NOTHING", (name,)
                )
        return store

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self._conn.close()

    # --- the SharedStore protocol --------------------------------------------------------------------------

    def breaker(self, name: str) -> BreakerState:
        return self._records.setdefault(name, BreakerState())

    def rate(self, name: str) -> RateState:  # the slots live in the database only
        return RateState()

    def stale(self, name: str) -> bool:
        return time.monotonic() - self._read_at.get(name, -1e9) > self.refresh_seconds

    def now(self) -> float:
        return time.monotonic() + self._offset

    async def refresh(self, name: str) -> None:
        """Read the record again; the callers that find it stale meanwhile wait for this one read."""
        reading = self._reading.get(name)
        if reading is None:
            reading = self._reading[name] = asyncio.ensure_future(self._read(name))
            reading.add_done_callback(lambda _: self._reading.pop(name, None))
        await asyncio.shield(reading)

    async def _read(self, name: str) -> None:
        async with self._statement():
            row = await (await self._conn.execute(_SELECT, (name,))).fetchone()
        if row is not None:
            before = self.breaker(name).phase
            record = self._keep(name, row)
            if before == "closed" and record.phase != "closed":
                _log.warning(
                    "connection %s: circuit breaker open (opened by another worker after %s); deliveries wait",
                    name,
                    record.reason,
                )

    @contextlib.asynccontextmanager
    async def locked(self, name: str) -> AsyncIterator[tuple[BreakerState, float]]:
        async with self._statement(), self._conn.transaction():
            row = await (await self._conn.execute(_SELECT + " FOR UPDATE", (name,))).fetchone()
            if row is None:
                raise JournalError(f"journal {self._name} has no breaker record for connection {name}")
            record = self._keep(name, row)
            before = dataclasses.replace(record)
            yield record, float(row[-1])
            if record != before:
                values = [getattr(record, field) for field in _FIELDS]
                await self._conn.execute(_UPDATE, (*values, name))

    async def claim_rate(self, name: str, interval: float) -> float:
        async with self._statement():
            row = await (await self._conn.execute(_CLAIM, {"name": name, "interval": interval})).fetchone()
        return max(0.0, float(row[0])) if row is not None else 0.0

    # --- helpers -------------------------------------------------------------------------------------------

    def _keep(self, name: str, row: tuple[Any, ...]) -> BreakerState:
        record = BreakerState(*row[: len(_FIELDS)])
        self._records[name] = record
        self._read_at[name] = time.monotonic()
        self._offset = float(row[-1]) - time.monotonic()
        return record

    @contextlib.asynccontextmanager
    async def _statement(self) -> AsyncIterator[None]:
        """One operation at a time on the connection; a database failure is a JournalError, which ends the run
        (exit 7) like any journal failure: nothing is lost, pending deliveries are sent by the next run."""
        import psycopg

        async with self._lock:
            try:
                yield
            except psycopg.Error as error:
                raise JournalError(
                    f"journal {self._name}: breaker and rate state: PostgreSQL says: {first_line(error)}"
                ) from None


__all__ = ["PostgresStateStore"]
