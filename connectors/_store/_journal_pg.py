"""The PostgreSQL backend of the journal: a psycopg 3 connection that speaks the SQLite connection's dialect.

The journal's statements are written once, in the SQL both databases share (``INSERT ... ON CONFLICT``,
``excluded``, ``?`` placeholders). :class:`PostgresConnection` offers the few methods of ``sqlite3.Connection``
that the journal calls (``execute``, ``executemany``, ``in_transaction``, ``close``) and turns ``?`` into
psycopg's ``%s``; only the schema (``CREATE TABLE``) is written per backend.

The connection is in autocommit mode, so a statement outside ``Journal.transaction()`` commits at once, as in
SQLite; a transaction is ``BEGIN`` ... ``COMMIT``. A commit is durable when PostgreSQL says so (its WAL, with
``synchronous_commit`` as the server is configured), so a worker killed at any point leaves committed rows.

psycopg is the ``postgresql`` extra (``pip install 'shipmap[postgresql]'``); it is imported only when a
journal URL is opened.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import re
import threading
import time
from collections.abc import Iterator
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from .._config_key import duration_text
from .._errors import JournalError
from ._pg_watchdog import ANSWER_GRACE_S, StatementWatchdog
from ._reconnect import open_within
from ._sqlite import AFTER_A_READ, AFTER_A_WRITE, JournalFault


class TransactionConflict(JournalError):
    """A transaction lost a lock conflict (deadlock, serialization failure), or the server ended its idle
    session: PostgreSQL rolled it back whole, so running it again from its start is safe."""

    def __init__(self, message: str, *, reconnect: bool, lock_wait: bool = False) -> None:
        super().__init__(message)
        self.reconnect = reconnect  # the session is gone: a new one first
        # A lock wait past a lease (lock_timeout): run again until the statement timeout, as one wait was.
        self.lock_wait = lock_wait


URL_SCHEMES = ("postgresql://", "postgres://")
CONNECT_TIMEOUT_S = 10
# A silent network (a partition, a peer gone without a word) must not hold a read for the kernel's TCP timeout
# (15 minutes for unacknowledged data, for ever for a wait with nothing outstanding): keepalives probe an idle
# connection after KEEPALIVE_IDLE_S, and TCP_USER_TIMEOUT_MS ends one whose data or probes go unacknowledged,
# so a read past the server's statement_timeout fails within this bound instead.
KEEPALIVE_IDLE_S = 10
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_COUNT = 3
TCP_USER_TIMEOUT_MS = (KEEPALIVE_IDLE_S + KEEPALIVE_INTERVAL_S * KEEPALIVE_COUNT) * 1000
STATEMENT_TIMEOUT_MS = 60_000  # no statement of the journal's takes long; one that does is stuck
# Workers sharing a journal lock the same rows: PostgreSQL then ends one statement with a deadlock (40P01) or a
# serialization failure (40001). Outside a transaction that statement was rolled back whole, so running it again
# is the same as running it a moment later; these tries, with a short random pause, settle it. Inside a
# transaction the whole transaction was rolled back: it is a TransactionConflict, which Journal.run_transaction
# answers by running the whole transaction again.
RETRIED_SQLSTATES = frozenset({"40001", "40P01"})
STATEMENT_TRIES = 5
# The server ended the session of a transaction left idle for a lease (idle_in_transaction_session_timeout):
# the transaction was rolled back, and it can run again on a new session.
IDLE_TIMEOUT_SQLSTATE = "25P03"
# A lock wait past a lease (lock_timeout): the holder may be a worker frozen (SIGSTOP, a paused VM) while its
# session is not idle in a transaction, e.g. between the rows of a pipelined executemany: the server then waits
# for its next message with the locks held, and no server timeout ends it. See end_stuck_sessions().
LOCK_WAIT_SQLSTATE = "55P03"
# A prune (``_retention``) and a worker's transaction raced over one source document: the prune deleted it as
# unreferenced while the other referred to it anew, and the foreign key ended whichever came second. Run again,
# it finds the document referenced (the prune keeps it) or gone (the worker writes it again).
FOREIGN_KEY_SQLSTATE = "23503"
APPLICATION_NAME = "shipmap journal"  # in pg_stat_activity: how the journal's sessions find each other
# The sessions on this database named %s (its application_name): how shipmap's processes of one kind count
# each other (breaker stores, serve intakes). The caller's own session counts too.
COUNT_SESSIONS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s"
)
# A journal session inside a transaction whose server has waited for the client for a lease: its worker is
# frozen or starved past its lease (a healthy one's transactions run no await and no I/O but their statements).
_END_STUCK_SESSIONS = """SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid() AND usename = current_user
      AND application_name = %s AND wait_event = 'ClientRead' AND xact_start IS NOT NULL
      AND greatest(query_start, state_change) < clock_timestamp() - make_interval(secs => %s)"""
_log = logging.getLogger("shipmap.journal")


def is_database_url(location: object) -> bool:
    return isinstance(location, str) and location.startswith(URL_SCHEMES)


def display_url(url: str) -> str:
    """The URL without its password (and without query parameters, which may hold one)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = (
        (f"{parts.username}@" if parts.username else "") + host + (f":{parts.port}" if parts.port else "")
    )
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def url_password(url: str) -> str | None:
    return urlsplit(url).password


class Changed(NamedTuple):
    """What ``PostgresConnection.executemany`` did: how many rows it changed, as sqlite3's ``rowcount``."""

    rowcount: int


class PostgresConnection:
    """A psycopg connection with the ``sqlite3.Connection`` methods the journal uses."""

    def __init__(
        self,
        url: str,
        *,
        readonly: bool,
        lease: float = 30.0,
        statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
        reconnect_deadline: float | None = None,
        stop: threading.Event | None = None,
        wait_to_open: bool = False,
    ) -> None:
        """``statement_timeout_ms``: how long the server lets one statement run (a command that reports,
        ``shipmap status``, asks for less). ``reconnect_deadline``: a session the server ended (a restart, a
        failover) is opened again for up to this long (``_reconnect.reopen_within``), and a statement outside a transaction
        that met the end runs again on it; None (a command's journal): the statement fails, as does opening
        it again. ``stop``: once set, that wait ends (``ReconnectStopped``: the service is stopping).
        ``wait_to_open``: this first session too is waited for within the deadline (a service that reached
        the database before: an outage, not a misconfiguration); else it fails at once."""
        try:
            import psycopg
        except ImportError:
            raise JournalError(
                "a postgresql:// journal needs psycopg 3: pip install 'shipmap[postgresql]'"
            ) from None
        self._psycopg = psycopg
        self._name = display_url(url)
        self._readonly = readonly
        # A worker stopped inside a transaction holds row locks: the server ends its session after one lease,
        # so the others are never blocked longer than that (the stopped worker's transaction rolls back).
        # A healthy worker never waits inside a transaction (its transactions run no await and no I/O but
        # their statements), so only a stopped or starved one reaches this; if it was alive after all, its
        # transaction runs again on a new session (TransactionConflict).
        # A frozen worker whose session is mid-statement instead (not idle) is ended by the first other worker
        # that waits a lease for its locks (lock_timeout, end_stuck_sessions), with the same rule.
        idle = max(1000, int(lease * 1000))
        options = (
            f"-c statement_timeout={statement_timeout_ms} -c idle_in_transaction_session_timeout={idle}"
            f" -c lock_timeout={idle}"
            # Until VACUUM, the pending-row indexes hold an entry of every row delivered since: a bitmap scan
            # visits the table for each at every call, a plain index scan marks them dead once and steps over
            # them after. The planner takes the bitmap scan on a table without statistics (claims, counts) and
            # on one with them (stranded, a move's count): with it off, the index scans that these statements'
            # indexes were built for, statistics or none (docs/scale.md).
            " -c enable_bitmapscan=off"
        )
        self._statement_timeout = statement_timeout_ms / 1000
        if readonly:
            options += " -c default_transaction_read_only=on"
        self._url, self._options, self._lease = url, options, idle / 1000
        self._reconnect_deadline = reconnect_deadline
        self._stop = stop
        # A statement whose answer never comes (a partition, a stopped server) is cut, as the inbox's are: it
        # fails, and outside a transaction runs again on a new session (``_reconnected``).
        self._watchdog = StatementWatchdog(f"journal {self._name}")
        self._cut = False  # the last statement failed because the watchdog cut its connection
        try:
            self._conn = self._connect_within() if wait_to_open else self._connect()
        except BaseException:
            self._watchdog.stop()
            raise

    def _connect(self) -> Any:
        psycopg = self._psycopg
        try:
            connection = psycopg.connect(self._url, **connect_arguments(self._options, APPLICATION_NAME))
        except psycopg.Error as error:
            raise JournalError(f"cannot open journal {self._name}: {first_line(error)}") from None
        self._watchdog.watch(connection.fileno())
        return connection

    def reconnect(self) -> None:
        """A new session, after the server ended this one: within the reconnect deadline, when there is one."""
        with contextlib.suppress(Exception):
            self._conn.close()
        self._conn = self._connect_within()

    def _connect_within(self) -> Any:
        return open_within(
            self._reconnect_deadline,
            self._connect,
            (JournalError,),
            what=f"journal {self._name}",
            log=_log,
            stop=self._stop,
        )

    def _reconnected(self, error: Exception, inside: bool) -> bool:
        """Whether a statement that failed with ``error`` runs again: outside a transaction, on a session the
        server ended, opened again within the reconnect deadline. Run again, it is the same statement a
        moment later: ended before its commit it left nothing; committed just before the end, its writes are
        keyed (run twice, they leave what they left once) or leased to this worker (a claim whose answer was
        lost lapses after its lease and is taken again, not lost)."""
        if inside or self._reconnect_deadline is None or not (self._conn.broken or self._conn.closed):
            return False
        ended = "its connection was cut" if self._cut else "the server ended the session"
        _log.warning("journal %s: %s (%s)", self._name, ended, first_line(error))
        try:
            self.reconnect()
        except JournalError as failure:
            _log.error(
                "journal %s: no new session within %g s: %s",
                self._name,
                self._reconnect_deadline,
                failure.message,
            )
            return False
        return True

    @property
    def errors(self) -> type[Exception]:
        return self._psycopg.Error

    def execute(self, sql: str, parameters: Any = ()) -> Any:
        tries = 0
        waited_since = time.monotonic()  # lock waits past a lease, run again up to the statement timeout
        while True:
            tries += 1
            inside = self.in_transaction
            try:
                with self._watched():
                    return self._conn.execute(_dialect(sql), parameters or None)
            except self._psycopg.Error as error:
                if not self._try_again(error, tries, waited_since) and not (
                    tries < STATEMENT_TRIES and self._reconnected(error, inside)
                ):
                    raise self._fault(error, inside) from None

    @contextlib.contextmanager
    def _watched(self) -> Iterator[None]:
        """One statement under the watchdog (``_pg_watchdog``); ``_cut`` says whether it cut the connection."""
        self._watchdog.begin(self._statement_timeout)
        try:
            yield
        finally:
            # A cut socket fails this statement or, answered as it was cut, the next: either way psycopg then
            # finds the session broken, and it is opened again as one the server ended.
            self._cut = self._watchdog.end()

    def _try_again(self, error: Exception, tries: int, waited_since: float) -> bool:
        """Whether a statement that lost a lock conflict, or waited a lease for a lock, is run again (only
        outside a transaction: inside one, the whole transaction was aborted, and only its caller can run it
        again)."""
        state = getattr(error, "sqlstate", None)
        if state == LOCK_WAIT_SQLSTATE and not self.in_transaction:
            self.end_stuck_sessions()  # whether or not it found one, the wait is bounded as before
            return time.monotonic() - waited_since < STATEMENT_TIMEOUT_MS / 1000
        if state not in RETRIED_SQLSTATES or tries >= STATEMENT_TRIES or self.in_transaction:
            return False
        pause = random.uniform(0.01, 0.05 * 2**tries)
        _log.info("journal statement lost a lock conflict (%s); running it again in %.2fs", state, pause)
        time.sleep(pause)
        return True

    def executemany(self, sql: str, rows: Any) -> Changed:
        """The statement for every row, pipelined (one round trip); its ``rowcount`` is the rows changed all
        told, as sqlite3's cursor's (taken before the cursor closes: a closed one says -1)."""
        rows = list(rows)
        waited_since = time.monotonic()
        tries = 0
        while True:
            tries += 1
            with self._conn.cursor() as cursor:
                if not rows:
                    return Changed(0)
                inside = self.in_transaction
                try:
                    with self._watched():
                        cursor.executemany(_dialect(sql), rows)
                    return Changed(int(cursor.rowcount))
                except self._psycopg.Error as error:
                    # Outside a transaction the pipeline ran in one implicit transaction, rolled back whole.
                    given_up = inside or not self._try_again(error, STATEMENT_TRIES, waited_since)
                    if given_up and (tries >= STATEMENT_TRIES or not self._reconnected(error, inside)):
                        raise self._fault(error, inside) from None

    def end_stuck_sessions(self) -> list[int]:
        """After a lock wait of a lease: end the journal's sessions stuck inside a transaction, their server
        waiting for the client for a lease (the worker is frozen or starved past its lease, as the server's
        idle-in-transaction timeout judges one idle there). Their transactions roll back and their locks go;
        one that was alive after all runs its transaction again on a new session (TransactionConflict).
        The pids it ended."""
        try:
            # Opened per look, never waited for (a failed look waits for the lock as before); its one statement
            # is bounded by the server's statement_timeout and the connection's TCP bounds.
            with self._psycopg.connect(
                self._url, **connect_arguments(self._options)
            ) as other:  # this session may be inside its own (aborted) transaction
                rows = other.execute(_END_STUCK_SESSIONS, (APPLICATION_NAME, self._lease)).fetchall()
        except self._psycopg.Error as error:  # e.g. not allowed to end another role's session: wait as before
            _log.info("journal: could not look for stuck sessions: %s", first_line(error))
            return []
        ended = [int(pid) for pid, done in rows if done]
        if ended:
            _log.warning(
                "journal: ended %d session(s) of a worker stuck inside a transaction for a lease, holding "
                "locks others wait for (pid %s); its transaction rolled back",
                len(ended),
                ", ".join(map(str, ended)),
            )
        return ended

    def _fault(self, error: Exception, inside: bool) -> JournalError:
        """Like the SQLite journal's faults: what the server said, never the URL's password or the data.
        ``inside``: the statement ran inside a transaction (which a conflict rolled back whole)."""
        state = getattr(error, "sqlstate", None)
        if inside and state == LOCK_WAIT_SQLSTATE:
            self.end_stuck_sessions()
        if inside and (
            state in RETRIED_SQLSTATES
            or state in (IDLE_TIMEOUT_SQLSTATE, LOCK_WAIT_SQLSTATE, FOREIGN_KEY_SQLSTATE)
            or self._conn.broken
        ):
            return TransactionConflict(
                f"journal {self._name}: transaction rolled back: PostgreSQL says: {first_line(error)}",
                reconnect=bool(self._conn.broken or self._conn.closed),
                lock_wait=state == LOCK_WAIT_SQLSTATE,
            )
        if isinstance(error, self._psycopg.errors.ReadOnlySqlTransaction):
            return JournalError(f"journal {self._name} is open read-only: {first_line(error)}")
        action = "journal read failed" if self._readonly else "journal write failed"
        said = f"PostgreSQL says: {first_line(error)}"
        if isinstance(error, self._psycopg.errors.QueryCanceled) and "statement timeout" in said:
            said = f"no answer within {duration_text(self._statement_timeout)} ({said})"
        elif self._cut:
            said = (
                f"no answer within {duration_text(self._statement_timeout)}, nor {ANSWER_GRACE_S:g}s after;"
                f" the connection was cut ({said})"
            )
        return JournalFault(
            f"{action} {self._name}: {said}",
            AFTER_A_READ if self._readonly else AFTER_A_WRITE,
        )

    @property
    def in_transaction(self) -> bool:
        return bool(self._conn.info.transaction_status != self._psycopg.pq.TransactionStatus.IDLE)

    def fileno(self) -> int:
        return int(self._conn.fileno())

    def close(self) -> None:
        self._watchdog.stop()
        self._conn.close()


@functools.lru_cache(maxsize=128)
def _dialect(sql: str) -> str:
    """SQLite's ``?`` placeholders as psycopg's ``%s`` (the journal's SQL has no ``%`` and no ``?`` in text)."""
    return re.sub(r"\?", "%s", sql)


def connect_arguments(options: str, application_name: str | None = None) -> dict[str, Any]:
    """The arguments of every PostgreSQL connection shipmap opens (journal, inbox, gauges, breaker store): its
    server ``options`` (``-c statement_timeout=...``), the time a connection may take to open, and the TCP
    bounds above, so no connect and no read waits past a stated bound however the network fails."""
    arguments: dict[str, Any] = {
        "autocommit": True,
        "connect_timeout": CONNECT_TIMEOUT_S,
        "keepalives": 1,
        "keepalives_idle": KEEPALIVE_IDLE_S,
        "keepalives_interval": KEEPALIVE_INTERVAL_S,
        "keepalives_count": KEEPALIVE_COUNT,
        "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
        "options": options,
    }
    if application_name:
        arguments["application_name"] = application_name
    return arguments


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
