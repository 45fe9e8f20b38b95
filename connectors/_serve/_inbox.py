"""The inbox: accepted webhooks, committed before they are acknowledged. One SQLite file.

The narrow interface the service needs, and the one a PostgreSQL twin implements:

- ``accept(...)``: commit the raw body and the headers that matter, unless this source already has that
  webhook id (then it is a duplicate, acknowledged and not stored again); an inbox may also offer
  ``accept_many`` (:class:`GroupCommitting`), which commits several webhooks in one transaction;
- ``pending(after, limit, source=, skip_sources=)``: accepted rows not yet handed to the runtime, oldest
  first; of one source, or of all but some (the feed reads a source whose webhooks wait for a slow API
  apart from the others);
- ``mark_processed(ids)``: their deliveries are now owed in the journal, so the inbox is done with them;
- ``park(ids)``: these rows wait for their source API (the PostgreSQL inbox's claims then step past them);
- ``save_documents(id, documents)``: enrichment responses, kept with the webhook so a restart maps the same data.

Rows stay after processing, so a repeat of an old webhook id is still recognised; ``purge`` drops processed
rows older than the dedup window. A processed row's body is needed only to bring a rejected webhook back
(``shipmap replay --rejected``): ``drop_bodies`` empties the others' after ``serve.keep_bodies``
(``_inbox_retention``), and the row, its id and its headers stay for the window.

The file's schema and its versions: ``_inbox_schema``. A file is upgraded when it is opened for writing (one
service holds it); one of version 1 is read as it is. ``inbox_id`` in ``meta``, drawn when the file is first
opened for writing (whatever its version), names the inbox in its webhooks' origins beside a PostgreSQL
journal that other services' inboxes share (``_origins``).
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from .._config._serve_model import DEDUP_WINDOW as DEDUP_WINDOW
from .._config_key import duration_text
from .._errors import JournalError
from ._inbox_schema import HAS_META, READABLE, SCHEMA, SCHEMA_VERSION, UPGRADES, unreadable
from ._origins import new_inbox_id

try:  # POSIX: an advisory lock the kernel drops when the process dies, even by SIGKILL
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

DROP_CHUNK = 500  # bodies dropped per statement (one transaction): under SQLite's limit of bound parameters
BUSY_TIMEOUT_S = 5.0  # an SQLite statement's wait for a lock (``limit_waits`` sets another); readers' too


class InboxError(JournalError):
    """The inbox cannot take or give a webhook (disk full, locked, not an inbox): answered 503."""


class InboxTimeout(InboxError):
    """The inbox did not store a webhook within ``serve.intake_deadline`` (a lock held elsewhere, a slow
    server): answered 503 ``inbox_timeout``. Nothing was acknowledged; a commit that still lands is the same
    webhook id, which the sender's retry finds as a duplicate."""


class InboxCancelled(InboxError):
    """The database cancelled the statement storing a webhook before its deadline (an administrator's
    ``pg_cancel_backend``): answered 503 ``inbox_cancelled``. Nothing was acknowledged; the connection stays and
    takes the next webhook."""


class InboxDisconnected(InboxError):
    """The database closed the connection during a statement (``pg_terminate_backend``, a restart, a
    failover): answered 503 ``inbox_unavailable``, as a database out of reach is. Nothing was acknowledged; the
    next statement opens a new connection."""


class NoInboxError(InboxError):
    """A read-only opening found no inbox: no service accepted a webhook there yet, or one is creating it now."""


class HeldRow(NamedTuple):
    """One row: its source, when it was received, its state, whether its body was dropped (``keep_bodies``)."""

    source: str
    received_at: float
    state: str
    body_dropped: bool


@dataclass(frozen=True, slots=True)
class Accepted:
    id: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class InboundRow:
    id: int
    source: str
    webhook_id: str
    topic: str | None
    received_at: float
    headers: dict[str, str]
    body: bytes
    documents: dict[str, Any] | None


def inbound_row(row: Sequence[Any]) -> InboundRow:
    """A row as both backends select it: id, source, webhook_id, topic, received_at, headers, body, documents."""
    return InboundRow(
        int(row[0]),
        row[1],
        row[2],
        row[3],
        float(row[4]),
        json.loads(row[5]),
        bytes(row[6]),
        json.loads(row[7]) if row[7] else None,
    )


def sources_clause(
    source: str | None, skip_sources: Collection[str], placeholder: str
) -> tuple[str, list[str]]:
    """The SQL that keeps ``pending``'s rows to one source, or to all but ``skip_sources``, and its values."""
    if source is not None:
        return f" AND source = {placeholder}", [source]
    skipped = sorted(skip_sources)
    if not skipped:
        return "", []
    return f" AND source NOT IN ({', '.join([placeholder] * len(skipped))})", skipped


# The queue's gauges (``/metrics``, ``/readyz``, the activity line, ``shipmap status``) count the pending rows
# up to DEPTH_CAP: a count reads them one by one, on intake's event loop, at every scrape and probe. 10,000
# took 1.6 ms on PostgreSQL (100,000: 21 ms; a million: 0.5 s), 0.5 ms on SQLite.
DEPTH_CAP = 10_000


def depth_capped(depth: int) -> bool:
    """Whether ``depth`` (of ``InboxStore.depth()``, up to ``DEPTH_CAP``) stopped at the cap: that many wait."""
    return depth >= DEPTH_CAP


def depth_text(depth: int) -> str:
    """``depth`` as a person reads it: ``12``, or ``10000 or more`` when the count stopped at the cap (as
    ``shipmap status`` says a capped count of pending deliveries)."""
    return f"{depth} or more" if depth_capped(depth) else str(depth)


class InboxStore(Protocol):
    """What the service needs of an inbox, whatever holds it: SQLite here (:class:`Inbox`), PostgreSQL next.
    One object per thread; ``accept`` must be durable when it returns."""

    # The inbox's name in its webhooks' origins beside a shared journal (``_origins``); None for the
    # PostgreSQL inbox, one table whose ids are unique across the services that share it.
    inbox_id: str | None

    def accept(
        self,
        source: str,
        webhook_id: str,
        topic: str | None,
        headers: Mapping[str, str],
        body: bytes,
        *,
        received_at: float | None = None,
    ) -> Accepted: ...

    def pending(
        self,
        after: int = 0,
        limit: int = 64,
        *,
        source: str | None = None,
        skip_sources: Collection[str] = (),
    ) -> list[InboundRow]: ...

    def mark_processed(self, ids: Iterable[int]) -> None: ...

    def park(self, ids: Iterable[int]) -> None: ...

    def save_documents(self, row_id: int, documents: Mapping[str, Any]) -> None: ...

    def purge(self, older_than: float) -> int: ...

    def drop_bodies(self, processed_before: float, keep: Collection[int]) -> int: ...

    def writable(self) -> bool: ...

    def limit_waits(self, seconds: float) -> None:
        """From now on a statement of this connection waits at most ``seconds`` for a lock or a slow server,
        then raises :class:`InboxTimeout` (intake's connection: before each commit, the longest deadline of
        its webhooks, ``GroupCommit``)."""
        ...

    def depth(self, cap: int | None = DEPTH_CAP) -> int:
        """Webhooks accepted and not yet handed to delivery, counted up to ``cap`` (``cap`` when at least that
        many wait; None: every one, exact, however long it takes: once, at stop)."""
        ...

    def oldest_pending(self) -> float | None: ...

    def close(self) -> None: ...


Incoming = tuple[str, str, str | None, Mapping[str, str], bytes]  # source, webhook id, topic, headers, body


@runtime_checkable
class GroupCommitting(Protocol):
    """An inbox that commits several webhooks in one transaction (``_app`` batches the requests that arrive
    together); each result says what became of one of them. Durable when it returns, like ``accept``."""

    def accept_many(self, incoming: Sequence[Incoming]) -> list[Accepted]: ...


@runtime_checkable
class TriesFirst(Protocol):
    """An inbox whose commit can be tried without waiting (SQLite, a local file): ``accept_at_once`` commits
    as ``accept_many`` does when nothing holds the write lock now, and returns None, having stored nothing,
    when its commit would wait for it. Intake tries on the event loop and hands only such a batch to its
    thread (``GroupCommit``)."""

    def accept_at_once(self, incoming: Sequence[Incoming]) -> list[Accepted] | None: ...


@runtime_checkable
class SharedIntake(Protocol):
    """An inbox that several serve processes take webhooks into (PostgreSQL): ``services`` counts those
    processes now, this one included, so each takes its share of a source's ``rate_limit``."""

    def services(self) -> int: ...


class Inbox:
    """One inbox file (SQLite, WAL). One connection per object: each thread of the service opens its own."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Literal["normal", "full"] = "normal",
        readonly: bool = False,
        lock: bool = True,
        busy_timeout: float = BUSY_TIMEOUT_S,
    ) -> None:
        """``lock``: hold the inbox's run lock (the service's intake does; its delivery thread, a second
        connection of the same process, does not); ``busy_timeout``: seconds a statement waits for a lock
        another connection holds (``limit_waits`` changes it later)."""
        self.path = Path(path)
        self._lock_file: Any = None
        self._waits_ms = max(1, round(busy_timeout * 1000))  # the connection's busy timeout now
        try:
            if readonly:
                uri = f"{self.path.resolve().as_uri()}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=busy_timeout)
                # A service creates its inbox in one transaction after opening the file: until that commits,
                # the file holds no table, and nothing was accepted yet.
                if self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                    self._db.close()
                    raise NoInboxError(f"{self.path} holds no shipmap inbox yet")
                if self._db.execute(HAS_META).fetchone()[0] == 0:
                    self._db.close()
                    raise InboxError(unreadable(self.path, None))
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if lock:
                    self._take_lock()
                # Intake's commits that must wait for the write lock run on its thread, one at a time, the
                # event loop's never meanwhile (``GroupCommit``): one connection, used by one thread at once.
                self._db = sqlite3.connect(
                    self.path, isolation_level=None, timeout=busy_timeout, check_same_thread=not lock
                )
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
                self._create_or_upgrade()
            row = self._db.execute("SELECT v FROM meta WHERE k = 'inbox_schema'").fetchone()
            named = self._db.execute("SELECT v FROM meta WHERE k = 'inbox_id'").fetchone()
        except (sqlite3.Error, OSError) as error:
            self._release_lock()
            if isinstance(error, sqlite3.Error) and _busy(error):  # another connection holds it alone
                raise unanswered(self.path, error, busy_timeout) from None
            raise InboxError(f"cannot open inbox {self.path}: {error}") from None
        self.version = str(row[0]) if row is not None else None
        # Part of its webhooks' origins beside a shared journal (``_origins``). None: a file read-only that no
        # service has opened since inboxes have ids; none of its origins names it then.
        self.inbox_id: str | None = str(named[0]) if named is not None else None
        if self.version not in READABLE:
            self.close()
            raise InboxError(unreadable(self.path, self.version))
        # A file of version 1 (read-only) has no such column: none of its bodies was dropped.
        self._body_dropped = "0" if self.version == "1" else "body_dropped_at IS NOT NULL"

    def _create_or_upgrade(self) -> None:
        """Create the inbox in a new file, or bring an older one to ``SCHEMA_VERSION``, in one transaction."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
            row = self._db.execute("SELECT v FROM meta WHERE k = 'inbox_schema'").fetchone()
            steps = SCHEMA if row is None else UPGRADES.get(str(row[0]), ())
            for statement in steps:
                self._db.execute(statement)
            if steps:
                self._db.execute(
                    "INSERT INTO meta (k, v) VALUES ('inbox_schema', ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                    (SCHEMA_VERSION,),
                )
            # Drawn once, kept for good (a file made before inboxes had ids gets one now): no schema change,
            # an older shipmap reads the file as it did.
            self._db.execute(
                "INSERT INTO meta (k, v) VALUES ('inbox_id', ?) ON CONFLICT (k) DO NOTHING", (new_inbox_id(),)
            )
            self._db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise

    def _take_lock(self) -> None:
        if fcntl is None:  # pragma: no cover
            return
        handle = open(f"{self.path}.lock", "a+")  # noqa: SIM115 - held open for the inbox's lifetime
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise InboxError(f"inbox {self.path} is in use by another shipmap serve") from None
        self._lock_file = handle

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._release_lock()

    def __enter__(self) -> Inbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- the interface ------------------------------------------------------------------------------------

    def accept(
        self,
        source: str,
        webhook_id: str,
        topic: str | None,
        headers: Mapping[str, str],
        body: bytes,
        *,
        received_at: float | None = None,
    ) -> Accepted:
        """Commit one webhook (durably, before the caller acknowledges it), or recognise a duplicate."""
        try:
            return self._insert(source, webhook_id, topic, headers, body, received_at or time.time())
        except sqlite3.Error as error:
            raise _cannot_take(error, "the webhook") from None

    def accept_many(self, incoming: Sequence[Incoming]) -> list[Accepted]:
        """Commit several webhooks in one transaction: one commit (one WAL append, one fsync with
        ``synchronous: full``) for all of them. All or none: when the commit fails, none is stored."""
        try:
            return self._accept_all(incoming)
        except sqlite3.Error as error:
            raise _cannot_take(error, "the webhooks") from None

    def accept_at_once(self, incoming: Sequence[Incoming]) -> list[Accepted] | None:
        """``accept_many`` without waiting for the write lock: None, nothing stored, when another connection
        holds it (``TriesFirst``). The busy timeout stays 0 until ``limit_waits`` sets one again."""
        try:
            self._wait_at_most(0)
            return self._accept_all(incoming)
        except sqlite3.Error as error:
            if _busy(error):
                return None
            raise _cannot_take(error, "the webhooks") from None

    def _accept_all(self, incoming: Sequence[Incoming]) -> list[Accepted]:
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            accepted = [self._insert(*item, now) for item in incoming]
            self._db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise
        return accepted

    def _insert(
        self,
        source: str,
        webhook_id: str,
        topic: str | None,
        headers: Mapping[str, str],
        body: bytes,
        received_at: float,
    ) -> Accepted:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO inbox (source, webhook_id, topic, received_at, headers, body)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (source, webhook_id, topic, received_at, json.dumps(dict(headers)), body),
        )
        if cursor.rowcount == 1:
            return Accepted(int(cursor.lastrowid or 0), duplicate=False)
        row = self._db.execute(
            "SELECT id FROM inbox WHERE source = ? AND webhook_id = ?", (source, webhook_id)
        ).fetchone()
        return Accepted(int(row[0]) if row else 0, duplicate=True)

    def pending(
        self,
        after: int = 0,
        limit: int = 64,
        *,
        source: str | None = None,
        skip_sources: Collection[str] = (),
    ) -> list[InboundRow]:
        where, parameters = sources_clause(source, skip_sources, "?")
        try:
            rows = self._db.execute(
                "SELECT id, source, webhook_id, topic, received_at, headers, body, documents FROM inbox"
                f" WHERE state = 'pending' AND id > ?{where} ORDER BY id LIMIT ?",
                (after, *parameters, limit),
            ).fetchall()
        except sqlite3.Error as error:
            raise InboxError(f"the inbox cannot be read: {error}") from None
        return [inbound_row(r) for r in rows]

    def mark_processed(self, ids: Iterable[int]) -> None:
        now = time.time()
        self._executemany(
            "UPDATE inbox SET state = 'processed', processed_at = ? WHERE id = ?", [(now, i) for i in ids]
        )

    def park(self, ids: Iterable[int]) -> None:
        """Nothing to do: one process reads this inbox, and its reads have no floor to hold."""

    def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> sqlite3.Cursor:
        """The statement for each row, in one transaction: the connection is in autocommit mode, where each row
        would be a commit of its own (a WAL append, and an fsync with ``synchronous: full``)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            cursor = self._db.executemany(sql, rows)
            self._db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise
        return cursor

    def save_documents(self, row_id: int, documents: Mapping[str, Any]) -> None:
        self._db.execute(
            "UPDATE inbox SET documents = ? WHERE id = ?", (json.dumps(documents, ensure_ascii=False), row_id)
        )

    def requeue(self, ids: Iterable[int] | None = None, *, refetch: bool = False) -> int:
        """Hand processed rows to the runtime again (all, or ``ids``); ``refetch`` forgets their responses. A
        row still ``pending`` stays as it is (the feed may hold it, its documents fetched), as on PostgreSQL;
        so does a row whose body was dropped: there is nothing to map."""
        documents = ", documents = NULL" if refetch else ""
        held = "state = 'processed' AND body_dropped_at IS NULL"
        if ids is None:
            cursor = self._db.execute(f"UPDATE inbox SET state = 'pending'{documents} WHERE {held}")
        else:
            cursor = self._executemany(
                f"UPDATE inbox SET state = 'pending'{documents} WHERE id = ? AND {held}", [(i,) for i in ids]
            )
        return int(cursor.rowcount)

    def held(self, ids: Iterable[int]) -> dict[int, HeldRow]:
        """Of these rows, those the inbox holds, each as :class:`HeldRow`."""
        found: dict[int, HeldRow] = {}
        wanted = list(ids)
        for start in range(0, len(wanted), 500):  # under SQLite's limit of bound parameters
            page = wanted[start : start + 500]
            marks = ", ".join("?" * len(page))
            for row in self._db.execute(
                f"SELECT id, source, received_at, state, {self._body_dropped} FROM inbox WHERE id IN ({marks})",
                page,
            ):
                found[int(row[0])] = HeldRow(str(row[1]), float(row[2]), str(row[3]), bool(row[4]))
        return found

    # --- operations -------------------------------------------------------------------------------------

    def limit_waits(self, seconds: float) -> None:
        """A statement waits at most ``seconds`` for a lock another connection holds (its busy timeout,
        ``BUSY_TIMEOUT_S`` until now): a write for the write lock, a read (WAL) only for a connection that
        holds the file alone.
        A commit then raises :class:`InboxTimeout`. Intake waits so on its thread, not on the event loop
        (``GroupCommit``). A statement only when it changes."""
        try:
            self._wait_at_most(max(1, round(seconds * 1000)))
        except sqlite3.Error as error:
            raise InboxError(f"inbox {self.path}: {error}") from None

    def _wait_at_most(self, ms: int) -> None:
        if ms != self._waits_ms:
            self._db.execute(f"PRAGMA busy_timeout = {ms}")
            self._waits_ms = ms

    def writable(self) -> bool:
        """Whether a write transaction can start now (readiness)."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            return False
        return True

    def depth(self, cap: int | None = DEPTH_CAP) -> int:
        """Webhooks accepted and not yet handed to the runtime, counted up to ``cap``
        (``InboxStore.depth``)."""
        pending = "SELECT 1 FROM inbox WHERE state = 'pending'"
        if cap is None:
            return int(self._db.execute(f"SELECT count(*) FROM ({pending})").fetchone()[0])
        return int(self._db.execute(f"SELECT count(*) FROM ({pending} LIMIT ?)", (cap,)).fetchone()[0])

    def oldest_pending(self) -> float | None:
        """When the oldest webhook still waiting was received (epoch seconds), or None."""
        row = self._db.execute(
            "SELECT received_at FROM inbox WHERE state = 'pending' ORDER BY id LIMIT 1"
        ).fetchone()
        return float(row[0]) if row else None

    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT source, state, count(*) FROM inbox GROUP BY source, state").fetchall()
        return {f"{source}/{state}": int(n) for source, state, n in rows}

    def purge(self, older_than: float, *, chunk: int = 2000) -> int:
        """Forget processed rows received before ``older_than`` (epoch seconds): the dedup window ends.

        In transactions of ``chunk`` rows, oldest first: the other connection (intake's, whose commit answers
        a webhook) gets the write lock between two, instead of waiting behind one DELETE of an hour's rows
        (720,000 at 200 a second: seconds, past its 5 s busy timeout, so 503s). Each chunk reads the index
        ``inbox_processed`` (schema version 3) from its start, no further than the rows it deletes."""
        total = 0
        while True:
            cursor = self._db.execute(
                "DELETE FROM inbox WHERE id IN (SELECT id FROM inbox WHERE state = 'processed'"
                " AND received_at < ? ORDER BY received_at LIMIT ?)",
                (older_than, chunk),
            )
            total += int(cursor.rowcount)
            if cursor.rowcount < chunk:
                return total

    def drop_bodies(self, processed_before: float, keep: Collection[int], *, chunk: int = DROP_CHUNK) -> int:
        """Empty the bodies of rows processed before ``processed_before`` (epoch seconds), and forget the documents
        their enrichment fetched (the journal holds the enriched event; a skinny webhook's documents are most of
        its row), but for the rows in ``keep`` (those rejected: ``replay --rejected`` maps them again); how many. The rows stay, so their ids
        are still duplicates until ``purge``. A statement (one transaction) per ``chunk`` rows, oldest first,
        as ``purge`` does, so intake's connection commits between two."""
        dropped = 0
        after: tuple[float, int] = (-math.inf, 0)
        while True:
            rows = self._db.execute(
                "SELECT id, processed_at FROM inbox WHERE state = 'processed' AND body_dropped_at IS NULL"
                " AND processed_at < ? AND (processed_at, id) > (?, ?) ORDER BY processed_at, id LIMIT ?",
                (processed_before, *after, chunk),
            ).fetchall()
            ids = [int(row_id) for row_id, _ in rows if row_id not in keep]
            if ids:
                cursor = self._db.execute(
                    "UPDATE inbox SET body = x'', documents = NULL, body_dropped_at = ? WHERE state = 'processed'"
                    f" AND body_dropped_at IS NULL AND id IN ({', '.join('?' * len(ids))})",
                    (time.time(), *ids),
                )
                dropped += int(cursor.rowcount)
            if len(rows) < chunk:
                return dropped
            after = (float(rows[-1][1]), int(rows[-1][0]))


def _cannot_take(error: sqlite3.Error, what: str) -> InboxError:
    """An SQLite failure to store ``what`` as the inbox's error: the write lock still held past the busy
    timeout (``limit_waits``) is a timeout, anything else (a full disk, an I/O error) a failure."""
    if _busy(error):
        return InboxTimeout(f"the inbox did not take {what} in time: {error}")
    return InboxError(f"the inbox cannot take {what}: {error}")


def unanswered(path: Path, error: sqlite3.Error, busy_timeout: float) -> InboxTimeout:
    """A lock another connection held past ``busy_timeout`` seconds, as the inbox's timeout, named."""
    return InboxTimeout(
        f"inbox {path}: no answer within {duration_text(busy_timeout)} (SQLite says: {error})"
    )


def _busy(error: sqlite3.Error) -> bool:
    """SQLITE_BUSY, or one of its extended codes: a lock held elsewhere past the busy timeout."""
    return getattr(error, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY
