"""Breaker and ``max_rate`` state shared by every worker on one PostgreSQL journal (the ``connection_state``
table of the journal's schema, version 3).

Times are on the database's clock (``clock_timestamp()``), so workers on hosts whose clocks disagree still
agree on when the next probe or the next request slot is due; a worker turns them into waits on its own clock.
What each operation costs:

- a request on a closed breaker: nothing, from a copy of the record at most ``refresh`` seconds old (one
  read per connection per ``refresh``, shared by the requests that find it stale, in a transaction of its own
  whose ``statement_timeout`` is ``REREAD_TIMEOUT_MS``: a read that waits longer, on a locked or overloaded
  table, leaves the copy as it was, said once in the log until a read answers again);
- a transition (a failure, a close, a probe claimed): one short transaction on the row (``FOR UPDATE``), so
  two workers never both open the breaker, nor both probe;
- with ``max_rate``: one ``UPDATE ... RETURNING`` per request, which claims the next free slot atomically;
  and one ``UPDATE`` per 429 or 503 with a Retry-After, which pushes the next free slot past it (a hold: the
  next slot any worker claims starts after it). Without ``max_rate`` a worker asks nothing per request, so a
  hold is its own: each worker holds on the 429 it gets.

One connection per worker process, opened for one run: its statements are serialised by a lock, and a
transaction never waits on anything but the database.

A breaker's record is per connection *and* ``base_url`` (the row ``"NAME BASE_URL"``): what it saw of one
endpoint says nothing of another, so a connection moved to a new ``base_url`` starts closed there, while the
workers still on the old config (a rollout) keep the old endpoint's. ``max_rate``'s slots stay per connection
(the row ``NAME``): the vendor's limit holds whichever endpoint each worker is configured with.

Enrichment GETs (``_serve/_enrich``: ``serve``'s, ``run``'s and ``replay --refetch``'s) keep a store of their own
(``enrichment=True``): its connection is named apart in ``pg_stat_activity``, and its breakers are the rows
``"enrichment NAME BASE_URL"``, so every process shares one breaker per source API, apart from a delivery
breaker of the same connection (a row of one
word is a connection's slots, of two a delivery breaker, of three an enrichment breaker: a connection's name and
a URL hold no whitespace, so none can be taken for another). Their ``max_rate`` slots are the connection's row,
shared with any delivery to it: the API's limit is one.

Losing that connection (the server ended its backend, a restart, a network cut) does not end the run: the
store says so once in the log, reconnects in the background with a backoff (0.1 s doubling to 5 s) for up to
``journal.reconnect_deadline`` (2 minutes by default), and meanwhile this worker runs on its own copy of each
breaker record (its transitions stay local, as with one worker) and spaces ``max_rate`` requests on its own
clock, at the rate divided by the number of workers that were sharing it (counted with each read of a record:
the store connections in ``pg_stat_activity``), so N workers that lose the database together still keep to
the rate.
Once back, the shared records are read again and win. Past the deadline the next operation raises
JournalError (exit 7): nothing is lost, what is pending is sent by the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from .._deliver._breaker import BreakerState, RateState
from .._errors import JournalError
from .._redact import Redactor, get_logger
from ._journal_pg import (
    CONNECT_TIMEOUT_S,
    COUNT_SESSIONS,
    STATEMENT_TIMEOUT_MS,
    connect_arguments,
    display_url,
    first_line,
)
from ._pg_watchdog import ANSWER_GRACE_S, StatementWatchdog
from ._reconnect import RECONNECT_DEADLINE_S, pauses

APPLICATION_NAME = "shipmap breaker store"  # in pg_stat_activity: the backend an operator may look for
# serve's enrichment GETs share their breakers, max_rate slots and holds on a store of their own (its enricher
# outlives the runs): named apart, so that neither kind counts the other's connections as workers sharing its state.
ENRICHMENT_APPLICATION_NAME = "shipmap enrichment breaker and rate store"
# A plain reread (a stale copy, an idle process's look) waits this long for the record, not the session's
# statement_timeout: a locked or slow table then costs this process a stale copy, not a stalled feed.
REREAD_TIMEOUT_MS = 2000

_NOW = "EXTRACT(EPOCH FROM clock_timestamp())::double precision"
_FIELDS = tuple(field.name for field in dataclasses.fields(BreakerState))
_SELECT = f"SELECT {', '.join(_FIELDS)}, {_NOW} FROM connection_state WHERE name = %s"
# A plain read (not a transition's) also counts the workers sharing this state, once per ``refresh`` while
# requests go out: one store connection each (APPLICATION_NAME), its own included, so never 0; a connection
# whose worker died but the server has not noticed yet counts too (the safe side).
_READ = _SELECT.replace(" FROM connection_state", f", ({COUNT_SESSIONS}) FROM connection_state")
_UPDATE = f"UPDATE connection_state SET {', '.join(f'{f} = %s' for f in _FIELDS)} WHERE name = %s"
# The next slot is one interval after the last one claimed, or now if that is past: one statement, so two
# workers claiming at once get two slots. Returns the wait, in seconds, until the claimed slot.
_CLAIM = f"""WITH clock AS (SELECT {_NOW} AS now)
             UPDATE connection_state SET next_free = GREATEST(next_free, clock.now) + %(interval)s FROM clock
             WHERE name = %(name)s RETURNING next_free - %(interval)s - clock.now"""
# A hold (Retry-After): the next slot claimed starts after it, whichever worker claims it.
_HOLD = f"""UPDATE connection_state SET next_free = GREATEST(next_free, {_NOW} + %(seconds)s)
            WHERE name = %(name)s"""


class PostgresStateStore:
    """The :class:`~shipmap.connectors._breaker.SharedStore` of a PostgreSQL journal. Open it with
    ``await PostgresStateStore.connect(url, {name: base_url})`` inside the event loop that uses it; ``aclose()``
    it. Its methods take connection names; each breaker's row is the connection's at its ``base_url``."""

    def __init__(
        self,
        connection: Any,
        name: str,
        *,
        refresh: float,
        probe_lease: float,
        endpoints: Mapping[str, str] | None = None,
        reopen: Callable[[], Awaitable[Any]] | None = None,
        reconnect_deadline: float = RECONNECT_DEADLINE_S,
        redactor: Redactor | None = None,
        runtime_name: str | None = None,
        enrichment: bool = False,
    ) -> None:
        """``enrichment``: the store of serve's enrichment GETs (see the module's docstring)."""
        # A record's reason was written by another worker (or an earlier version, which kept it as the
        # destination said it), and the database's errors may name what it was given: masked with the
        # runtime's secrets before a line shows them.
        self._log = get_logger("breaker", redactor or Redactor(), runtime_name=runtime_name)
        self._conn = connection
        self._name = name
        self._watchdog = StatementWatchdog(f"journal {name}: breaker and rate state")
        self._watchdog.watch(connection.fileno())
        self._application_name = ENRICHMENT_APPLICATION_NAME if enrichment else APPLICATION_NAME
        self._waits = "its webhooks wait" if enrichment else "deliveries wait"
        self._row_of = enrichment_breaker_row if enrichment else breaker_row
        self._rows = {c: self._row_of(c, url) for c, url in (endpoints or {}).items()}
        self._reopen = reopen  # opens a new connection; None: a lost connection ends the run
        self.reconnect_deadline = reconnect_deadline
        self._lost_at: float | None = None  # when the connection was lost; None while connected
        self._reconnecting: asyncio.Task[None] | None = None
        self._gave_up: JournalError | None = None
        self._local_rates: dict[str, RateState] = {}  # max_rate slots while the connection is away
        self.peers = 1  # the workers sharing this state when last counted, this one included
        self.reconnects = 0
        self.refresh_seconds = refresh
        self.poll = refresh
        self.probe_lease = probe_lease
        self._lock = asyncio.Lock()
        self._records: dict[str, BreakerState] = {}
        self._read_at: dict[str, float] = {}
        self._reading: dict[str, asyncio.Future[None]] = {}
        self._offset = 0.0  # the database's clock minus this process's monotonic clock, at the last read
        # Since when rereads time out (REREAD_TIMEOUT_MS); None while they answer.
        self._late_since: float | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        endpoints: Mapping[str, str],
        *,
        lease: float,
        reconnect_deadline: float = RECONNECT_DEADLINE_S,
        refresh: float = 0.25,
        redactor: Redactor | None = None,
        runtime_name: str | None = None,
        enrichment: bool = False,
    ) -> PostgresStateStore:
        """``endpoints``: each connection's ``base_url``. ``lease``: the journal's lease, which bounds a probe
        whose worker died and an idle transaction. ``reconnect_deadline``: the journal's, how long a lost
        connection is tried again (see the module's docstring). ``redactor``: the runtime's, for the store's
        log lines.
        ``enrichment``: serve's enrichment store, named apart (its connection, so which connections count as
        its peers, and its breakers' rows)."""
        try:
            import psycopg
        except ImportError:  # pragma: no cover - the journal needed it first
            raise JournalError(
                "a postgresql:// journal needs psycopg 3: pip install 'shipmap[postgresql]'"
            ) from None
        application_name = ENRICHMENT_APPLICATION_NAME if enrichment else APPLICATION_NAME
        idle = max(1000, int(lease * 1000))
        options = f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c idle_in_transaction_session_timeout={idle}"

        async def reopen() -> Any:
            return await psycopg.AsyncConnection.connect(url, **connect_arguments(options, application_name))

        try:
            connection = await reopen()
        except psycopg.Error as error:
            raise JournalError(f"cannot open journal {display_url(url)}: {first_line(error)}") from None
        store = cls(
            connection,
            display_url(url),
            refresh=refresh,
            probe_lease=lease,
            endpoints=endpoints,
            reopen=reopen,
            reconnect_deadline=reconnect_deadline,
            redactor=redactor,
            runtime_name=runtime_name,
            enrichment=enrichment,
        )
        try:
            async with store._statement():
                for name in endpoints:
                    await store._insert_rows(name)
                store._count_peers(
                    await (await connection.execute(COUNT_SESSIONS, (application_name,))).fetchone()
                )
        except BaseException:
            await store.aclose()  # its connection and its watchdog's thread
            raise
        return store

    async def aclose(self) -> None:
        # A reread outlives the callers that waited for it (``refresh`` shields it), so one can still be inside
        # the connection here. It ends before the connection closes: psycopg's C generator keeps the libpq
        # connection's pointer while it waits, and a close under it frees that memory (a stop during a reread
        # killed the process with SIGABRT or SIGSEGV in PQconsumeInput). Its wait is bounded by its own
        # timeout and the watchdog, which stops after it.
        pending = [task for task in (*self._reading.values(), self._reconnecting) if task is not None]
        for task in pending:
            task.cancel()
        ended = (
            not pending
            or not (await asyncio.wait(pending, timeout=REREAD_TIMEOUT_MS / 1000 + ANSWER_GRACE_S + 3))[1]
        )
        self._watchdog.stop()
        if not ended:  # left open for the process's end to close: a close now could crash it
            self._log.warning(
                "journal %s: breaker and rate state: a reread did not end; its connection is left open",
                self._name,
            )
            return
        with contextlib.suppress(Exception):
            await self._conn.close()

    @property
    def connected(self) -> bool:
        """False while the connection is lost and being opened again (the records are this worker's copy)."""
        return self._lost_at is None

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
        import psycopg

        try:
            async with self._statement(REREAD_TIMEOUT_MS):
                try:
                    # SET LOCAL: this read's limit, not the session's (a transition's stays 30 s).
                    async with self._conn.transaction():
                        await self._conn.execute(f"SET LOCAL statement_timeout = {REREAD_TIMEOUT_MS}")
                        row = await (
                            await self._conn.execute(_READ, (self._application_name, self._row(name)))
                        ).fetchone()
                except psycopg.errors.QueryCanceled as error:
                    self._late(first_line(error))
                    raise _Away from None
        except _Away:  # this worker's copy stands; looked at again after another ``refresh``
            self._read_at[name] = time.monotonic()
            return
        if self._late_since is not None:
            self._log.info(
                "journal %s: breaker records read again after %.1f s of timed-out rereads",
                self._name,
                time.monotonic() - self._late_since,
            )
            self._late_since = None
        if row is not None:
            self._count_peers(row[len(_FIELDS) + 1 :])
            before = self.breaker(name).phase
            first = name not in self._read_at  # this run's first look: an earlier run may have opened it
            record = self._keep(name, row)
            if before == "closed" and record.phase != "closed":
                self._log.warning(
                    "connection %s: circuit breaker open (%s after %s); %s",
                    name,
                    "found so in the journal, opened by an earlier run or another worker"
                    if first
                    else "opened by another worker",
                    record.reason,
                    self._waits,
                )

    @contextlib.asynccontextmanager
    async def locked(self, name: str) -> AsyncIterator[tuple[BreakerState, float]]:
        handed = False
        try:
            async with self._statement(), self._conn.transaction():
                row = await (await self._conn.execute(_SELECT + " FOR UPDATE", (self._row(name),))).fetchone()
                if row is None:
                    raise JournalError(f"journal {self._name} has no breaker record for connection {name}")
                record = self._keep(name, row)
                before = dataclasses.replace(record)
                handed = True
                yield record, float(row[len(_FIELDS)])
                if record != before:
                    values = [getattr(record, field) for field in _FIELDS]
                    await self._conn.execute(_UPDATE, (*values, self._row(name)))
        except _Away:
            if handed:  # lost while writing: the change stays in this worker's copy
                return
            yield self.breaker(name), self.now()  # this worker's copy, changed here only

    async def claim_rate(self, name: str, interval: float) -> float:
        try:
            async with self._statement():
                row = await (
                    await self._conn.execute(_CLAIM, {"name": name, "interval": interval})
                ).fetchone()
        except _Away:  # this worker's share of the slots, on its clock, until the shared ones are back
            state = self._local_rates.setdefault(name, RateState())
            now = time.monotonic()
            start = max(now, state.next_free)
            state.next_free = start + interval * self.peers
            return start - now
        return max(0.0, float(row[0])) if row is not None else 0.0

    async def hold_rate(self, name: str, seconds: float) -> None:
        try:
            async with self._statement():
                await self._conn.execute(_HOLD, {"name": name, "seconds": seconds})
        except _Away:  # this worker's own hold stands (RateLimiter.hold); the others hold on their own 429
            state = self._local_rates.setdefault(name, RateState())
            state.next_free = max(state.next_free, time.monotonic() + seconds)

    async def close_breaker(self, name: str) -> None:
        """Close ``name``'s breaker for every worker: its credentials or headers changed (a reload), so the
        failures it counted say nothing about them. Its count of openings stays, as in ``MemoryStore``."""
        async with self.locked(name) as (state, _):
            state.phase, state.failures, state.reason = "closed", 0, ""
            state.retry_at = state.cooldown = 0.0

    async def move(self, name: str, base_url: str) -> None:
        """``name``'s breaker is its record at ``base_url`` from now on (a reload moved the connection): what
        the old one saw says nothing of it. Created closed when no worker has been there yet; a lost
        connection leaves it to this worker's copy, closed, until it is back."""
        row = self._row_of(name, base_url)
        self._rows[name] = row
        self._records[name] = BreakerState(opened=self.breaker(name).opened)  # until the row is read
        self._read_at.pop(name, None)
        with contextlib.suppress(_Away):
            async with self._statement():
                await self._conn.execute(
                    "INSERT INTO connection_state (name) VALUES (%s) ON CONFLICT DO NOTHING", (row,)
                )

    async def add(self, name: str, base_url: str) -> None:
        """Connection ``name`` at ``base_url`` shared from now on, as ``connect`` shares those it is given (a
        reload's enrich fetches over it first): its rows made when no worker has made them yet. A lost
        connection leaves it to this worker's copy until it is back."""
        self._rows[name] = self._row_of(name, base_url)
        with contextlib.suppress(_Away):
            async with self._statement():
                await self._insert_rows(name)

    # --- helpers -------------------------------------------------------------------------------------------

    async def _insert_rows(self, name: str) -> None:
        """``name``'s max_rate slots, then its breaker at its base_url (within a ``_statement``)."""
        for row in dict.fromkeys((name, self._row(name))):
            await self._conn.execute(
                "INSERT INTO connection_state (name) VALUES (%s) ON CONFLICT DO NOTHING", (row,)
            )

    def _row(self, name: str) -> str:
        return self._rows.get(name, name)

    def _keep(self, name: str, row: tuple[Any, ...]) -> BreakerState:
        record = BreakerState(*row[: len(_FIELDS)])
        self._records[name] = record
        self._read_at[name] = time.monotonic()
        self._offset = float(row[len(_FIELDS)]) - time.monotonic()
        return record

    def _late(self, reason: str) -> None:
        """A reread ran past ``REREAD_TIMEOUT_MS``: said once until a reread answers again (an idle process
        looks every few seconds, and each would be a line)."""
        if self._late_since is None:
            self._late_since = time.monotonic()
            self._log.warning(
                "journal %s: a reread of the breaker records did not answer within %g s (%s); this process "
                "keeps its last copy of each and reads again after %g s",
                self._name,
                REREAD_TIMEOUT_MS / 1000,
                reason,
                self.refresh_seconds,
            )

    def _count_peers(self, row: tuple[Any, ...] | None) -> None:
        if row:
            self.peers = max(1, int(row[0]))

    @contextlib.asynccontextmanager
    async def _statement(self, limit_ms: int = STATEMENT_TIMEOUT_MS) -> AsyncIterator[None]:
        """One operation at a time on the connection. A lost connection raises _Away (the caller falls back
        on this worker's copy) and is opened again in the background; any other database failure, or a
        connection away past the deadline, is a JournalError, which ends the run (exit 7) like any journal
        failure: nothing is lost, pending deliveries are sent by the next run. ``limit_ms``: the statements'
        own timeout, which the watchdog's bound follows."""
        import psycopg

        if self._gave_up is not None:
            raise self._gave_up
        if self._lost_at is not None:
            raise _Away
        async with self._lock:
            if self._lost_at is not None:  # lost while this caller waited for the lock
                raise _Away
            # A statement whose answer never comes (a partition, a stopped server) has its connection cut, as
            # the journal's and the inbox's do: it is lost, and opened again in the background.
            self._watchdog.begin(limit_ms / 1000)
            try:
                yield
            except psycopg.Error as error:
                cut = self._watchdog.end()
                if self._reopen is None or not (self._conn.closed or cut):
                    raise JournalError(
                        f"journal {self._name}: breaker and rate state: PostgreSQL says: {first_line(error)}"
                    ) from None
                self._lose(first_line(error))
                raise _Away from None
            finally:
                self._watchdog.end()

    def _lose(self, reason: str) -> None:
        self._lost_at = time.monotonic()
        self._log.warning(
            "journal %s: lost the connection for breaker and rate state (%s); this worker uses its own copy "
            "while it reconnects (for up to %.0f s)%s",
            self._name,
            reason,
            self.reconnect_deadline,
            f", and 1/{self.peers} of each max_rate (the share of each of the {self.peers} workers on it)"
            if self.peers > 1
            else "",
        )
        self._reconnecting = asyncio.ensure_future(self._reconnect())

    async def _reconnect(self) -> None:
        import psycopg

        assert self._reopen is not None and self._lost_at is not None
        deadline = self._lost_at + self.reconnect_deadline
        reason = ""
        for pause in pauses(self._lost_at, self.reconnect_deadline):
            await asyncio.sleep(pause)
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns a result that comes in the
                # instant the task is cancelled (aclose), and the cancellation is lost.
                async with asyncio.timeout(max(0.1, min(CONNECT_TIMEOUT_S, deadline - time.monotonic()))):
                    connection = await self._reopen()
            except (psycopg.Error, OSError, TimeoutError) as error:
                reason = first_line(error) if isinstance(error, psycopg.Error) else type(error).__name__
                continue
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = connection
            self._watchdog.watch(connection.fileno())
            away = time.monotonic() - self._lost_at
            self._lost_at, self._read_at = None, {}  # the shared records are read again at once, and win
            self.reconnects += 1
            self._log.warning(
                "journal %s: breaker and rate state reconnected after %.1f s; shared with the other workers again",
                self._name,
                away,
            )
            return
        self._gave_up = JournalError(
            f"journal {self._name}: breaker and rate state: no connection for {self.reconnect_deadline:g} s"
            + (f" (last attempt: {reason})" if reason else "")
        )
        self._log.error("%s", self._gave_up)


def breaker_row(connection: str, base_url: str) -> str:
    """The ``connection_state`` row of a connection's breaker at ``base_url`` (a URL has no whitespace)."""
    return f"{connection} {base_url}"


def enrichment_breaker_row(connection: str, base_url: str) -> str:
    """The ``connection_state`` row of the breaker of enrichment GETs through ``connection`` at ``base_url``:
    three words, never a delivery breaker's row (two) nor a connection's slots (one)."""
    return f"enrichment {breaker_row(connection, base_url)}"


class _Away(Exception):
    """The store's connection is lost and being opened again: use this worker's own copy."""


__all__ = ["PostgresStateStore", "breaker_row", "enrichment_breaker_row"]
