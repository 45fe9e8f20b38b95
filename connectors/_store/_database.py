"""The journal's database: opening it and keeping it sound, apart from what the journal records in it.

An SQLite file (the default) or a PostgreSQL database (``postgresql://...``, see ``_journal_pg``). An SQLite
file is opened in WAL mode with the ``synchronous`` level asked for (what that costs and guarantees is in
``_journal``'s docstring), under a run lock when one writer must be alone (``exclusive``: a run, a service);
a file that holds another application's tables is refused before anything is written to it. Opening checks
the schema's version and upgrades the store when it may (``_schema`` says when); ``migrate`` is ``shipmap
journal migrate``. ``transaction`` is one commit around many writes, and ``run_transaction`` runs a body again
whole when PostgreSQL rolls it back for a lock conflict.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

from .._errors import JournalError
from ._journal_pg import (
    STATEMENT_TIMEOUT_MS,
    PostgresConnection,
    TransactionConflict,
    display_url,
    is_database_url,
)
from ._schema import (
    _HAS_META,
    _MIGRATION_LOCK,
    _SQLITE_TABLES,
    JOURNAL_TABLES,
    MIGRATIONS,
    SCHEMA_VERSION,
    Backend,
)
from ._sqlite import _Guarded, journal_fault

try:  # POSIX: an advisory lock that the kernel drops when the process dies, even by SIGKILL
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

DEFAULT_LEASE_SECONDS = 30.0
TRANSACTION_TRIES = 5  # runs of a transaction that loses lock conflicts, before the error ends the run
_T = TypeVar("_T")
_log = logging.getLogger("shipmap.journal")


class NoJournalError(JournalError):
    """The database holds no journal (read-only opening of a store that nothing has written yet)."""


class JournalInUseError(JournalError):
    """An SQLite journal's run lock is held: a run or a service has it open for writing."""


class JournalDatabase:
    """The database under one journal (:class:`~._journal.Journal` adds what it records): opened, checked,
    upgraded when it may be, and closed; its transactions. One thread at a time."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["normal", "full"] = "normal",
        readonly: bool = False,
        exclusive: bool = False,
        upgrade: bool = False,
        lease: float = DEFAULT_LEASE_SECONDS,
        statement_timeout: float | None = None,
        reconnect_deadline: float | None = None,
        stop: threading.Event | None = None,
        wait_to_open: bool = False,
    ) -> None:
        """``upgrade``: bring an older PostgreSQL store to this version (``shipmap journal migrate``); an
        SQLite file opened for writing is always upgraded, and a new store always created.
        ``statement_timeout``: seconds one statement may wait and run (PostgreSQL's statement_timeout, SQLite's
        busy timeout); None: the backend's (PostgreSQL 60 s; SQLite 30 s, 5 s read-only). ``reconnect_deadline``
        (PostgreSQL): how long a session the server ended is opened again for (``journal.reconnect_deadline``);
        None: not at all; ``stop``, once set, ends that wait (the service is stopping). ``wait_to_open``: the
        first session too is waited for within that deadline (a service that reached the database before)."""
        self.readonly = readonly
        self.upgraded_from: int | None = None  # the version before this opening upgraded the store
        # Who this opening is, in lease columns: many workers may share a PostgreSQL journal.
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_seconds = lease
        self._lock_file: Any = None
        self._db: Any
        self.backend: Backend
        if is_database_url(path):
            assert isinstance(path, str)
            self.backend, self.path, self.name = "postgresql", None, display_url(path)
            limit = (
                STATEMENT_TIMEOUT_MS if statement_timeout is None else max(1, round(statement_timeout * 1000))
            )
            self._db = PostgresConnection(
                path,
                readonly=readonly,
                lease=lease,
                statement_timeout_ms=limit,
                reconnect_deadline=reconnect_deadline,
                stop=stop,
                wait_to_open=wait_to_open,
            )
            errors: tuple[type[Exception], ...] = (self._db.errors,)
        else:
            self.backend, self.path = "sqlite", Path(path)
            self.name = str(self.path)
            errors = (sqlite3.Error,)
        self._errors: tuple[type[Exception], ...] = errors
        caught: tuple[type[Exception], ...] = (*errors, JournalError)
        try:
            if self.backend == "sqlite":
                self._open_sqlite(synchronous, exclusive, statement_timeout)
            version = self.schema_version()
            if (
                not readonly
                and version < SCHEMA_VERSION
                and (upgrade or version == 0 or self.backend == "sqlite")
            ):
                self.upgraded_from, version = self.migrate()
        except caught as error:
            self.close()
            if self.path is None:  # PostgreSQL: the driver's message, never the URL's password
                raise (
                    error
                    if isinstance(error, JournalError)
                    else JournalError(f"cannot open journal {self.name}: {error}")
                ) from None
            raise journal_fault(self.path, error, opening=True, readonly=readonly) from None
        except OSError as error:  # the directory or the lock file cannot be created
            self.close()
            raise JournalError(
                f"cannot open journal {self.path}: {error.strerror or error}; check that its directory "
                "exists and is writable, then run again (nothing was sent)"
            ) from None
        if isinstance(self._db, _Guarded):
            self._db.opening = False
        problem = self._version_problem(version)
        if problem:
            empty = version == 0 and self._holds_nothing()
            self.close()
            raise (NoJournalError if empty else JournalError)(problem)

    def _open_sqlite(self, synchronous: str, exclusive: bool, busy_timeout: float | None) -> None:
        assert self.path is not None
        if self.readonly:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            self._db = _Guarded(
                sqlite3.connect(uri, uri=True, isolation_level=None, timeout=busy_timeout or 5.0),
                self.path,
                readonly=True,
            )
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if exclusive:
            self._take_run_lock()
        self._db = _Guarded(
            sqlite3.connect(self.path, isolation_level=None, timeout=busy_timeout or 30.0), self.path
        )
        self._refuse_another_database()  # before the first write: WAL mode changes the file's header
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._db.execute("PRAGMA foreign_keys=ON")

    def _version_problem(self, version: int) -> str | None:
        if version == 0:  # read-only: an opening for writing has created the journal
            if self._holds_nothing():
                return f"{self.name} holds no shipmap journal yet"
            return self._another_database() or f"{self.name} is not a shipmap journal (no schema)"
        if version > SCHEMA_VERSION:
            return (
                f"{self.name} is not a shipmap journal this shipmap can read: schema version {version} was "
                f"written by a newer shipmap (this one reads versions up to {SCHEMA_VERSION})"
            )
        if version < SCHEMA_VERSION and not self.readonly:
            return (
                f"journal {self.name} has schema version {version}; this shipmap needs {SCHEMA_VERSION}: "
                f"run `shipmap journal migrate {self.name}` (with its password) once, then start the workers"
            )
        return None

    def _refuse_another_database(self) -> None:
        """An SQLite file with no journal schema but tables of its own belongs to another application: making it
        a journal would add five tables to it. (A PostgreSQL database is meant to be shared.)"""
        problem = self._another_database()
        if problem:
            raise JournalError(problem)

    def _sqlite_tables(self) -> set[str]:
        return {str(name) for (name,) in self._db.execute(_SQLITE_TABLES).fetchall()}

    def _another_database(self) -> str | None:
        if self.backend != "sqlite":
            return None
        tables = self._sqlite_tables()
        others = sorted(tables - JOURNAL_TABLES)
        if not others or "meta" in tables:
            return None
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        return (
            f"{self.name} is not a shipmap journal: it holds other tables ({shown}); give the journal a "
            "file of its own (nothing was written to this one)"
        )

    def _holds_nothing(self) -> bool:
        """Whether this store is one nothing was journaled to yet, read while a run or a service creates the
        journal in it: a PostgreSQL database with no journal schema (it is meant to be shared), or an SQLite
        file with no table at all (the file exists from the moment a writer opens it, its tables from the
        commit that creates them)."""
        return self.backend == "postgresql" or not self._sqlite_tables()

    def schema_version(self) -> int:
        """The store's schema version; 0 for a database that holds no journal yet."""
        if not self._db.execute(_HAS_META[self.backend]).fetchone()[0]:
            return 0
        row = self._db.execute("SELECT v FROM meta WHERE k = 'schema_version'").fetchone()
        try:
            return int(row[0]) if row is not None else 0
        except ValueError:
            raise JournalError(f"{self.name}: schema version {row[0]!r} is not a number") from None

    def migrate(self) -> tuple[int, int]:
        """Bring the store to ``SCHEMA_VERSION`` in one transaction; ``(version before, version after)``."""
        if self.readonly:
            raise JournalError(f"journal {self.name} is open read-only; it cannot be migrated")

        def upgrade() -> int:
            if self.backend == "postgresql":
                self._db.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            before = self.schema_version()
            if before > SCHEMA_VERSION:
                raise JournalError(self._version_problem(before) or "")
            for step in MIGRATIONS[self.backend][before:]:
                for statement in step.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
            self._db.execute(
                "INSERT INTO meta (k, v) VALUES ('schema_version', ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                (str(SCHEMA_VERSION),),
            )
            return before

        before = self.run_transaction(upgrade)
        return before, SCHEMA_VERSION

    def _take_run_lock(self) -> None:
        if fcntl is None:  # pragma: no cover
            return
        handle = open(f"{self.path}.lock", "a+")  # noqa: SIM115 - held open for the journal's lifetime
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise JournalInUseError(
                f"journal {self.path} is in use by another shipmap run (lock {self.path}.lock)"
            ) from None
        self._lock_file = handle

    def _release_run_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing drops the flock
            self._lock_file = None

    @property
    def shared(self) -> bool:
        """Many workers may write this journal at once (PostgreSQL): deliveries are held under leases."""
        return self.backend == "postgresql"

    def lock_fds(self) -> list[int]:
        """Descriptors a forked child must close: the run lock file, or the database connection (so that
        a parent killed with SIGKILL drops its session at once)."""
        if self._lock_file is not None:
            return [self._lock_file.fileno()]
        return [self._db.fileno()] if self.backend == "postgresql" and hasattr(self, "_db") else []

    def close(self) -> None:
        if hasattr(self, "_db"):
            with contextlib.suppress(Exception):
                self._db.close()
        self._release_run_lock()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def run_transaction(self, body: Callable[[], _T], *, undo: Callable[[], None] | None = None) -> _T:
        """``body()`` in one transaction, run again whole when PostgreSQL rolls it back for a lock conflict
        (a deadlock, a serialization failure) or ends its idle session: ``undo()`` first puts back what
        ``body`` changed outside the database, then, after a random pause that grows, ``body()`` runs again
        (``TRANSACTION_TRIES`` runs at most, or lock waits of a lease each until the statement timeout; the
        last conflict is raised). Inside another transaction it joins that one, whose own runner runs it again. On SQLite, one run (it has one writer)."""
        if self._db.in_transaction:
            return body()
        tries = 0
        started = time.monotonic()
        while True:
            tries += 1
            try:
                with self.transaction():
                    return body()
            except TransactionConflict as conflict:
                # Waiting for a live holder's lock, a lease at a time: bounded as one wait was, not by runs.
                if conflict.lock_wait and time.monotonic() - started < STATEMENT_TIMEOUT_MS / 1000:
                    tries -= 1
                elif tries >= TRANSACTION_TRIES:
                    raise
                pause = random.uniform(0.01, 0.05 * 2**tries)
                _log.info("%s; running the whole transaction again in %.2fs (run %d of %d)", conflict, pause,
                          tries + 1, TRANSACTION_TRIES)  # fmt: skip
                if undo is not None:
                    undo()
                time.sleep(pause)
                if conflict.reconnect:
                    self._db.reconnect()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction (one commit) around many writes; nested calls join the outer one."""
        if self._db.in_transaction:
            yield
            return
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            with contextlib.suppress(JournalError, *self._errors):
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
