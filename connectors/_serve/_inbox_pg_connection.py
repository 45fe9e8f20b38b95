"""One connection to a PostgreSQL inbox's database (``InboxConnection``): how it is opened (its statement and
idle-in-transaction timeouts), how a statement runs on it and fails (``InboxError``, ``InboxTimeout``), and the
inbox's schema version there and its migration. ``PostgresInbox`` (``_inbox_pg``) is the inbox on top of it."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from .._config_key import duration_text
from .._store._journal_pg import connect_arguments, display_url, first_line
from .._store._pg_watchdog import ANSWER_GRACE_S, StatementWatchdog
from .._store._reconnect import open_within
from .._store._schema import _MIGRATION_LOCK  # the journal's: one migration at a time per database
from ._inbox import InboxCancelled, InboxDisconnected, InboxError, InboxTimeout
from ._inbox_pg_schema import INBOX_SCHEMA_VERSION, MIGRATIONS, VERSION_KEY, version_problem

STATEMENT_TIMEOUT_MS = 30_000
RECONNECT_TRIES = 5  # a statement whose session ends again and again stops trying (with a reconnect_deadline)
_log = logging.getLogger("shipmap.connectors.serve.inbox")


class InboxConnection:
    """The connection of one inbox object (one per thread), opened at once; ``readonly``: a reader's
    (``default_transaction_read_only``); ``lease``: the idle-in-transaction bound; ``statement_timeout_ms``:
    how long the server lets one statement run."""

    def __init__(
        self,
        url: str,
        *,
        lease: float,
        readonly: bool,
        application_name: str | None,
        statement_timeout_ms: int,
        reconnect_deadline: float | None = None,
        stop: threading.Event | None = None,
        wait_to_open: bool = False,
    ) -> None:
        """``reconnect_deadline``: a statement whose session the server ended, or whose connection the watchdog
        cut, runs again on a new one, opened for up to this long (delivery's side: it waits out a database
        restart or a partition); None (intake's, a reader's):
        the statement fails at once (intake answers 503, its sender retries). ``stop``: once set, that wait
        ends (``ReconnectStopped``: the service is stopping). ``wait_to_open``: the first session too is waited
        for within that deadline (the process reached the database before); else it fails at once."""
        try:
            import psycopg
        except ImportError:
            raise InboxError(
                "a postgresql:// inbox needs psycopg 3: pip install 'shipmap[postgresql]'"
            ) from None
        self._psycopg = psycopg
        self._url = url
        self.name = display_url(url)
        self.readonly = readonly
        self.application_name = application_name
        self.statement_timeout_ms = statement_timeout_ms
        self.lease_seconds = lease
        self.reconnect_deadline = reconnect_deadline
        self._stop = stop
        self._conn: Any = None
        self._cut = False  # the last statement failed because the watchdog cut its connection
        self._watchdog = StatementWatchdog(f"inbox {self.name}")
        if wait_to_open:
            self._connect_within()
        else:
            self._connect()

    def _connect(self) -> None:
        # A process stopped inside a transaction would hold row locks: the server ends such a session after
        # one lease, so the other processes are never blocked longer than that.
        idle = max(1000, int(self.lease_seconds * 1000))
        options = (
            f"-c statement_timeout={self.statement_timeout_ms} -c idle_in_transaction_session_timeout={idle}"
        )
        if self.readonly:
            options += " -c default_transaction_read_only=on"
        try:
            self._conn = self._psycopg.connect(self._url, **connect_arguments(options, self.application_name))
        except self._psycopg.Error as error:
            raise InboxError(f"cannot open inbox {self.name}: {first_line(error)}") from None
        self._watchdog.watch(self._conn.fileno())

    def _execute(self, sql: str, parameters: Any = None, *, timeout_ms: int | None = None) -> Any:
        """One statement, in autocommit; with ``timeout_ms``, in a transaction of its own under that
        statement_timeout (SET LOCAL: the session's stays). A connection the server dropped (a restart, a
        failover) is opened again, for the next statement: this one failed, and its caller says so (intake
        answers 503); with a ``reconnect_deadline``, within it, and this one runs again on it (each is one
        transaction: ended before its commit it left nothing, after it run again it changes nothing more).
        One whose answer does not come past its limit is cut (``StatementWatchdog``) and, with a
        ``reconnect_deadline``, runs again as one whose session ended (a partition that heals within it is
        ridden out as a restart is). Run again, each of the delivery side's statements is safe: its writes are
        keyed (``mark_processed``, ``park``, ``save_documents``, ``requeue``: by id and state, so a second run
        finds them done and changes nothing) or are leases (``pending``'s claim, ``renew_leases``: a claim
        committed whose answer was cut is this process's: the re-run claims it again, as its own row past
        ``after``, or its lease lapses and it is taken over; never lost nor given to two), and the purge's
        deletes are by age."""
        tries = 0
        while True:
            tries += 1
            try:
                return self._execute_once(sql, parameters, timeout_ms)
            except (InboxDisconnected, InboxTimeout) as ended:
                lost = isinstance(ended, InboxDisconnected) or self._cut
                if not lost or self.reconnect_deadline is None or tries >= RECONNECT_TRIES:
                    raise
                try:
                    self._connect_within()
                except InboxError:
                    raise ended from None

    def _connect_within(self) -> None:
        open_within(
            self.reconnect_deadline,
            self._connect,
            (InboxError,),
            what=f"inbox {self.name}",
            log=_log,
            stop=self._stop,
        )

    def _execute_once(self, sql: str, parameters: Any, timeout_ms: int | None) -> Any:
        if self._conn is None or self._conn.closed:
            self._connect()
        limit = (self.statement_timeout_ms if timeout_ms is None else timeout_ms) / 1000
        started = time.monotonic()
        self._cut = False
        self._watchdog.begin(limit)
        try:
            if timeout_ms is None:
                result = self._conn.execute(sql, parameters)
            else:
                with self._conn.transaction():
                    self._conn.execute(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
                    result = self._conn.execute(sql, parameters)
        except self._psycopg.Error as error:
            self._cut = self._watchdog.end()
            raise self._failure(error, limit, time.monotonic() - started, self._cut) from None
        if self._watchdog.end():  # answered as it was cut: the connection is of no use now
            with contextlib.suppress(Exception):
                self._conn.close()
        return result

    def _failure(self, error: Exception, limit: float, took: float, cut: bool) -> InboxError:
        """What a failed statement that ran ``took`` of its ``limit`` seconds was, worded; ``cut``: its
        connection was cut for want of an answer."""
        broken = cut or bool(self._conn.broken)
        if broken:
            with contextlib.suppress(Exception):
                self._conn.close()
        said = f"PostgreSQL says: {first_line(error)}"
        if cut:
            return InboxTimeout(
                f"inbox {self.name}: no answer within {duration_text(limit)}, nor {ANSWER_GRACE_S:g}s after;"
                f" the connection was cut ({said})"
            )
        if isinstance(error, self._psycopg.errors.QueryCanceled):
            # The statement timeout and pg_cancel_backend raise the same SQLSTATE (57014), in the server's
            # language: only the clock tells them apart. The server starts its timer after the client's.
            if took >= limit:  # a lock held elsewhere, a slow server (``limit_waits``)
                return InboxTimeout(f"inbox {self.name}: no answer within {duration_text(limit)} ({said})")
            return InboxCancelled(
                f"inbox {self.name}: the statement was cancelled on the server after {took:.1f}s, before its"
                f" {duration_text(limit)} deadline ({said})"
            )
        if broken:  # what the server said names it (terminating connection, server closed the connection)
            return InboxDisconnected(f"inbox {self.name}: {said}")
        return InboxError(f"inbox {self.name}: {said}")

    def close_connection(self) -> None:
        self._watchdog.stop()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()

    def schema_version(self) -> int:
        """The inbox's schema version in this database; 0 when it holds no inbox yet."""
        has_meta = self._execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'meta'"
        ).fetchone()[0]
        if not has_meta:
            return 0
        row = self._execute("SELECT v FROM meta WHERE k = %s", (VERSION_KEY,)).fetchone()
        if row is None:
            return 0
        try:
            return int(row[0])
        except ValueError:
            raise InboxError(f"{self.name}: inbox schema version {row[0]!r} is not a number") from None

    def migrate(self) -> tuple[int, int]:
        """Bring the inbox to ``INBOX_SCHEMA_VERSION`` in one transaction: ``(version before, after)``. Many
        processes may start at once: an advisory lock lets one create or upgrade, the others then find it."""
        try:
            with self._conn.transaction():
                self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                before = self.schema_version()
                if before > INBOX_SCHEMA_VERSION:
                    raise InboxError(version_problem(self.name, before, False) or "")
                for step in MIGRATIONS[before:]:
                    self._conn.execute(step)
                self._conn.execute(
                    "INSERT INTO meta (k, v) VALUES (%s, %s) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                    (VERSION_KEY, str(INBOX_SCHEMA_VERSION)),
                )
        except self._psycopg.Error as error:
            raise InboxError(f"cannot create the inbox in {self.name}: {first_line(error)}") from None
        return before, INBOX_SCHEMA_VERSION

    def writable(self) -> bool:
        """Whether the server takes writes now (readiness): reachable, and not a read-only standby."""
        try:
            row = self._execute(
                "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'"
            ).fetchone()
        except InboxError:
            return False
        return bool(row[0])

    def limit_waits(self, seconds: float) -> None:
        """Each statement of this connection runs at most ``seconds`` (the session's statement_timeout, lock
        waits included; a connection opened again takes it too), then raises :class:`InboxTimeout`. Intake's
        connection takes the longest deadline of each batch of webhooks before its commit (``GroupCommit``;
        the service's purge at start keeps ``statement_timeout_ms``): an INSERT that waits on a locked table
        ends at the deadline its requests were answered at, and leaves the connection to the next batch. A
        statement only when it changes (a connection opened again is given it at once)."""
        limit = max(1, round(seconds * 1000))
        if limit == self.statement_timeout_ms:
            return
        self.statement_timeout_ms = limit
        self._execute(f"SET statement_timeout = {self.statement_timeout_ms}")
