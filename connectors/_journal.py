"""The journal: an embedded SQLite database recording every delivery under a stable key.

A delivery is one target of one event. Its key is a hash of the mapping name, the target name and the source
document's canonical JSON, so the same document mapped by the same mapping always lands on the same row.

States: ``pending`` (written *before* the request is sent, with the exact method, URL, payload and
idempotency key), ``delivered``, ``dead`` (dead-lettered, with status, reason and a redacted response
excerpt) and ``resolved`` (a dead letter superseded by a replay). A run first re-sends every ``pending`` row
exactly as stored, so a run killed with SIGKILL resumes with the same idempotency keys, then skips every
event whose row is ``delivered``.

Durability: WAL mode with ``synchronous=NORMAL`` by default. In WAL mode a committed transaction survives the
process being killed (it is in the WAL file, which the OS already has); only an OS crash or power cut can lose
the last commits. Losing those can only cause a re-send, never a loss, because the inputs, not the journal,
are the record of what must be delivered, and keys are derived from content: a re-sent event carries the same
idempotency key. ``synchronous: full`` (an fsync per commit) narrows that window at a cost per delivery.

The journal stores source documents and payloads, never request headers; dead-letter text is redacted by the
caller before it gets here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from ._errors import JournalError

try:  # POSIX: an advisory lock that the kernel drops when the process dies, even by SIGKILL
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

SCHEMA_VERSION = "1"
State = Literal["pending", "delivered", "dead", "resolved"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources (
    hash TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    key TEXT PRIMARY KEY,
    source_hash TEXT NOT NULL REFERENCES sources(hash),
    mapping TEXT NOT NULL,
    target TEXT NOT NULL,
    connection TEXT,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead', 'resolved')),
    idempotency_key TEXT,
    method TEXT,
    url TEXT,
    payload TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    status INTEGER,
    reason TEXT,
    response_excerpt TEXT,
    origin TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_state ON deliveries(state);
CREATE TABLE IF NOT EXISTS unrouted (
    source_hash TEXT PRIMARY KEY REFERENCES sources(hash),
    origin TEXT,
    seen INTEGER NOT NULL DEFAULT 1,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    origin TEXT NOT NULL,
    reason TEXT NOT NULL,
    excerpt TEXT,
    at REAL NOT NULL
);
"""


def canonical_json(value: Any) -> str:
    """The canonical text of a JSON value: sorted keys, no spaces, UTF-8 kept. Equal documents, equal text.
    (Values of no JSON type, from library callers, are written as their ``str``; NaN and infinities raise
    ValueError: the journal holds strict JSON only.)"""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str
    )


def digest_of(canonical: str) -> str:
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def source_hash(document: Any) -> str:
    return digest_of(canonical_json(document))


def delivery_key(mapping: str, target: str, source_digest: str) -> str:
    """The stable key of one target of one event (32 hex digits, 128 bits)."""
    text = f"{mapping}\x1f{target}\x1f{source_digest}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One row of the journal, as stored."""

    key: str
    source_hash: str
    mapping: str
    target: str
    connection: str | None
    state: State
    idempotency_key: str | None
    method: str | None
    url: str | None
    payload: Any
    attempts: int
    status: int | None
    reason: str | None
    response_excerpt: str | None
    origin: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class RejectedInput:
    """An input record that could not be read as JSON."""

    origin: str
    reason: str
    excerpt: str | None
    at: float


class Journal:
    """One SQLite journal file. Open it with ``with Journal(path) as journal:``; one thread at a time."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["normal", "full"] = "normal",
        readonly: bool = False,
        exclusive: bool = False,
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._lock_file: Any = None
        try:
            if readonly:
                uri = f"{self.path.resolve().as_uri()}?mode=ro"
                self._db = _Guarded(sqlite3.connect(uri, uri=True, isolation_level=None), self.path)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if exclusive:
                    self._take_run_lock()
                self._db = _Guarded(sqlite3.connect(self.path, isolation_level=None, timeout=30.0), self.path)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
                self._db.execute("PRAGMA foreign_keys=ON")
                self._db.executescript(_SCHEMA)
                self._db.execute(
                    "INSERT OR IGNORE INTO meta (k, v) VALUES ('schema_version', ?)", (SCHEMA_VERSION,)
                )
            row = self._db.execute("SELECT v FROM meta WHERE k = 'schema_version'").fetchone()
        except (sqlite3.Error, JournalError) as error:
            self._release_run_lock()
            raise journal_fault(self.path, error, opening=True) from None
        except OSError as error:  # the directory or the lock file cannot be created
            self._release_run_lock()
            raise JournalError(
                f"cannot open journal {self.path}: {error.strerror or error}; check that its directory "
                "exists and is writable, then run again (nothing was sent)"
            ) from None
        self._db.opening = False
        if row is None or row[0] != SCHEMA_VERSION:
            self._db.close()
            self._release_run_lock()
            raise JournalError(f"{self.path} is not a shipmap journal (schema version {SCHEMA_VERSION})")

    def _take_run_lock(self) -> None:
        if fcntl is None:  # pragma: no cover
            return
        handle = open(f"{self.path}.lock", "a+")  # noqa: SIM115 - held open for the journal's lifetime
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise JournalError(
                f"journal {self.path} is in use by another shipmap run (lock {self.path}.lock)"
            ) from None
        self._lock_file = handle

    def _release_run_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing drops the flock
            self._lock_file = None

    def lock_fds(self) -> list[int]:
        """The descriptor of the run lock, if this journal holds it (a forked child must close its copy)."""
        return [self._lock_file.fileno()] if self._lock_file is not None else []

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error, AttributeError):
            self._db.close()
        self._release_run_lock()

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- writes ---------------------------------------------------------------------------------------------

    def put_source(self, digest: str, document_json: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO sources (hash, doc) VALUES (?, ?)", (digest, document_json))

    def mark_pending(
        self,
        key: str,
        *,
        source_digest: str,
        mapping: str,
        target: str,
        connection: str,
        method: str,
        url: str,
        payload: Any,
        idempotency_key: str | None,
        origin: str | None,
    ) -> None:
        """Record a request about to be sent. Call it before sending: after a crash, it is re-sent.
        ``payload`` is the JSON value, or its encoded text as it goes on the wire (a ``str``)."""
        text = payload if isinstance(payload, str) else canonical_json(payload)
        now = time.time()
        row = (key, source_digest, mapping, target, connection, idempotency_key, method, url, text, origin)
        self._db.execute(_PENDING, (*row, now, now))

    def mark_pending_many(self, rows: Sequence[PendingRow]) -> None:
        """Record many requests about to be sent, in one statement (call it inside ``transaction()``)."""
        now = time.time()
        self._db.executemany(_PENDING, [(*row, now, now) for row in rows])

    def put_sources(self, rows: Iterable[tuple[str, str]]) -> None:
        """Many ``(digest, canonical JSON)`` source documents at once (call it inside ``transaction()``)."""
        self._db.executemany("INSERT OR IGNORE INTO sources (hash, doc) VALUES (?, ?)", rows)

    def mark_delivered_many(self, rows: Sequence[tuple[str, int, int]]) -> None:
        """Mark ``(key, status, attempts)`` rows delivered, in one transaction."""
        now = time.time()
        with self.transaction():
            self._db.executemany(_DELIVERED, [(status, attempts, now, key) for key, status, attempts in rows])

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
            with contextlib.suppress(sqlite3.Error, JournalError):
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def mark_delivered(self, key: str, *, status: int, attempts: int) -> None:
        self._db.execute(_DELIVERED, (status, attempts, time.time(), key))

    def mark_dead(
        self,
        key: str,
        *,
        source_digest: str,
        mapping: str,
        target: str,
        reason: str,
        status: int | None = None,
        response_excerpt: str | None = None,
        attempts: int = 0,
        origin: str | None = None,
    ) -> None:
        """Dead-letter a delivery, creating its row if it failed before a request existed (e.g. mapping)."""
        now = time.time()
        self._db.execute(
            """INSERT INTO deliveries (key, source_hash, mapping, target, state, attempts, status, reason,
                                       response_excerpt, origin, created_at, updated_at)
               VALUES (?, ?, ?, ?, 'dead', ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(key) DO UPDATE SET
                   state = 'dead', attempts = deliveries.attempts + excluded.attempts,
                   status = excluded.status, reason = excluded.reason,
                   response_excerpt = excluded.response_excerpt,
                   origin = COALESCE(excluded.origin, deliveries.origin), updated_at = excluded.updated_at""",
            (
                key,
                source_digest,
                mapping,
                target,
                attempts,
                status,
                reason,
                response_excerpt,
                origin,
                now,
                now,
            ),
        )

    def mark_resolved(self, key: str, reason: str) -> None:
        """Close a dead letter that a replay superseded (its event was re-mapped into other deliveries)."""
        self._db.execute(
            "UPDATE deliveries SET state = 'resolved', reason = ?, updated_at = ? WHERE key = ?",
            (reason, time.time(), key),
        )

    def record_unrouted(self, digest: str, origin: str | None) -> None:
        now = time.time()
        self._db.execute(
            """INSERT INTO unrouted (source_hash, origin, first_seen, last_seen) VALUES (?, ?, ?, ?)
               ON CONFLICT(source_hash) DO UPDATE SET seen = seen + 1, last_seen = excluded.last_seen,
                                                      origin = excluded.origin""",
            (digest, origin, now, now),
        )

    def record_rejected(self, origin: str, reason: str, excerpt: str | None) -> None:
        self._db.execute(
            "INSERT INTO rejected (origin, reason, excerpt, at) VALUES (?, ?, ?, ?)",
            (origin, reason, excerpt, time.time()),
        )

    # --- reads ----------------------------------------------------------------------------------------------

    def state(self, key: str) -> State | None:
        row = self._db.execute("SELECT state FROM deliveries WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def get(self, key: str) -> JournalEntry | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM deliveries WHERE key = ?", (key,)).fetchone()
        return None if row is None else _entry(row)

    def entries(self, state: State | None = None) -> Iterator[JournalEntry]:
        """Rows in insertion order, optionally of one state."""
        if state is None:
            cursor = self._db.execute(f"SELECT {_COLUMNS} FROM deliveries ORDER BY created_at, key")
        else:
            cursor = self._db.execute(
                f"SELECT {_COLUMNS} FROM deliveries WHERE state = ? ORDER BY created_at, key", (state,)
            )
        for row in cursor:
            yield _entry(row)

    def dead_letters(self, keys: Sequence[str] | None = None) -> list[JournalEntry]:
        entries = list(self.entries("dead"))
        if keys:
            wanted = set(keys)
            # A key prefix is enough, like a short git hash.
            entries = [e for e in entries if e.key in wanted or any(e.key.startswith(k) for k in wanted)]
        return entries

    def source(self, digest: str) -> Any:
        row = self._db.execute("SELECT doc FROM sources WHERE hash = ?", (digest,)).fetchone()
        if row is None:
            raise JournalError(f"journal {self.path} has no source document {digest[:12]}")
        return json.loads(row[0])

    def unrouted_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM unrouted").fetchone()[0])

    def rejected(self) -> list[RejectedInput]:
        rows = self._db.execute("SELECT origin, reason, excerpt, at FROM rejected ORDER BY id").fetchall()
        return [RejectedInput(*row) for row in rows]

    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state").fetchall()
        return {state: int(count) for state, count in rows}

    def lookup(self, keys: Iterable[str]) -> dict[str, tuple[State, str | None]]:
        """``key -> (state, idempotency key)`` for those of ``keys`` that have a row (one query per 500)."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, tuple[State, str | None]] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key, state, idempotency_key FROM deliveries WHERE key IN ({marks})", chunk
            ).fetchall()
            found.update((key, (state, idempotency)) for key, state, idempotency in rows)
        return found


_FAULTS = (
    ("full", "the disk holding the journal is full; free some space"),
    ("readonly", "the journal is read-only; make the file and its directory writable"),
    ("read-only", "the journal is read-only; make the file and its directory writable"),
    ("locked", "the journal is locked by another process; stop it or wait for it"),
    ("busy", "the journal is locked by another process; stop it or wait for it"),
    ("malformed", "the journal file is corrupt; move it aside (a fresh journal re-sends everything once)"),
    ("not a database", "the file is not a journal, or it is corrupt; move it aside"),
    ("unable to open", "the journal file cannot be opened; check its directory and permissions"),
    ("i/o error", "an I/O error on the journal's disk; check the disk"),
)


def journal_fault(path: Path, error: BaseException, *, opening: bool = False) -> JournalError:
    """A JournalError that says what went wrong with the journal's file or disk and what to do; it never
    carries data. The run stops there: nothing is lost (pending rows are re-sent), and the next run, once
    the cause is fixed, resumes."""
    if isinstance(error, JournalError):
        return error
    text = str(error).lower()
    diagnosis = next((advice for needle, advice in _FAULTS if needle in text), f"SQLite says: {error}")
    action = "cannot open journal" if opening else "journal write failed"
    return JournalError(
        f"{action} {path}: {diagnosis}. Nothing is lost: deliveries not recorded as delivered are sent "
        "again, under the same keys, by the next run"
    )


class _Guarded:
    """The journal's SQLite connection, whose failures become JournalErrors with a diagnosis. A text value
    that SQLite cannot take (a lone surrogate, from a bad file name) is stored with it escaped."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self._path = path
        self.opening = True  # until the journal's schema is checked: errors say "cannot open"

    @property
    def in_transaction(self) -> bool:
        return self._db.in_transaction

    def close(self) -> None:
        self._db.close()

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, parameters)
        except UnicodeEncodeError:
            return self.execute(sql, _escaped(parameters))
        except sqlite3.Error as error:
            raise journal_fault(self._path, error, opening=self.opening) from None

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
        rows = list(rows)
        try:
            return self._db.executemany(sql, rows)
        except UnicodeEncodeError:
            return self.executemany(sql, [_escaped(row) for row in rows])
        except sqlite3.Error as error:
            raise journal_fault(self._path, error, opening=self.opening) from None

    def executescript(self, script: str) -> sqlite3.Cursor:
        try:
            return self._db.executescript(script)
        except sqlite3.Error as error:
            raise journal_fault(self._path, error, opening=self.opening) from None


def _escaped(row: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(
        item.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(item, str) else item
        for item in row
    )


# key, source digest, mapping, target, connection, idempotency key, method, url, payload text, origin
PendingRow = tuple[str, str, str, str, str, str | None, str, str, str, str | None]

_PENDING = """INSERT INTO deliveries (key, source_hash, mapping, target, connection, idempotency_key, method, url,
                                    payload, origin, state, attempts, created_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)
               ON CONFLICT(key) DO UPDATE SET
                   connection = excluded.connection, state = 'pending', method = excluded.method,
                   url = excluded.url, payload = excluded.payload, origin = excluded.origin,
                   idempotency_key = COALESCE(deliveries.idempotency_key, excluded.idempotency_key),
                   status = NULL, reason = NULL, response_excerpt = NULL, updated_at = excluded.updated_at"""
_DELIVERED = """UPDATE deliveries SET state = 'delivered', status = ?, attempts = attempts + ?, reason = NULL,
                                      response_excerpt = NULL, updated_at = ? WHERE key = ?"""

_COLUMNS = (
    "key, source_hash, mapping, target, connection, state, idempotency_key, method, url, payload, attempts, "
    "status, reason, response_excerpt, origin, created_at, updated_at"
)


def _entry(row: tuple[Any, ...]) -> JournalEntry:
    values = list(row)
    values[9] = json.loads(values[9]) if values[9] is not None else None
    return JournalEntry(*values)
