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

Backends: an SQLite file (the default) or a PostgreSQL database (``postgresql://...``, see ``_journal_pg``).
Both run the same statements; only the schema is written per backend (``_schema``). ``_database`` opens the
store and keeps it sound (WAL, the run lock, the schema's version and its upgrade, the refusal of another
application's file) and runs transactions; this module is what the journal records and reads.
``_copy.copy_journal`` moves every row of one store into another (SQLite to PostgreSQL); ``_entries`` holds
the rows as read; ``_moves`` points a moved connection's pending rows at its new ``base_url``; ``_claims``
takes pending rows over (a run's recovery, a shared journal's leases).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .._errors import JournalError
from ._database import TRANSACTION_TRIES as TRANSACTION_TRIES
from ._database import JournalDatabase
from ._database import JournalInUseError as JournalInUseError
from ._database import NoJournalError as NoJournalError
from ._entries import (
    ENTRY_COLUMNS,
    JournalEntry,
    RejectedInput,
    entry_of,
)
from ._journal_pg import is_database_url
from ._keys import canonical_json as canonical_json
from ._keys import delivery_key as delivery_key
from ._keys import digest_of as digest_of
from ._keys import source_hash as source_hash
from ._schema import _MIGRATION_LOCK as _MIGRATION_LOCK
from ._schema import CLOSED as CLOSED
from ._schema import MIGRATIONS as MIGRATIONS
from ._schema import SCHEMA_VERSION as SCHEMA_VERSION
from ._schema import State as State


def open_readonly(
    location: str | os.PathLike[str] | None,
    *,
    statement_timeout: float | None = None,
    reconnect_deadline: float | None = None,
    stop: threading.Event | None = None,
) -> Journal | None:
    """The journal at ``location`` (a file or a ``postgresql://`` URL) for reading, or None when there is no
    journal there yet: nothing was run, or a run or a service is creating it now (its file exists, its tables
    not yet). A file that holds another application's tables is refused (a JournalError).
    ``statement_timeout``: seconds each read may take (None: the backend's). ``reconnect_deadline``, ``stop``
    (PostgreSQL; a service's look-up, its database reached before): the open, and a read whose session the
    server ended, wait for the database within that deadline (``Journal``'s); None: they fail at once."""
    if location is None:
        return None
    if not is_database_url(location) and not Path(location).exists():
        return None
    try:
        return Journal(
            location,
            readonly=True,
            statement_timeout=statement_timeout,
            reconnect_deadline=reconnect_deadline,
            stop=stop,
            wait_to_open=reconnect_deadline is not None,
        )
    except NoJournalError:
        return None


class Journal(JournalDatabase):
    """One journal: an SQLite file, or a PostgreSQL database named by a ``postgresql://`` URL. Open it with
    ``with Journal(location) as journal:``; one thread at a time. Opening, the schema's version and
    transactions are :class:`~._database.JournalDatabase`'s; the records and their queries are here."""

    # --- writes ---------------------------------------------------------------------------------------------

    def put_source(self, digest: str, document_json: str) -> None:
        self._db.execute(
            "INSERT INTO sources (hash, doc) VALUES (?, ?) ON CONFLICT DO NOTHING", (digest, document_json)
        )

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
        self._db.execute(_PENDING, (*row, self.worker, now + self.lease_seconds, now, now))

    def mark_pending_many(self, rows: Sequence[PendingRow]) -> set[str]:
        """Record many requests about to be sent, each under this worker's lease (call it inside
        ``transaction()``). Returns the keys this worker now holds: on a shared journal, a row that another
        worker holds under a live lease, or that is delivered, stays as it is, and is not this worker's to
        send."""
        now = time.time()
        until = now + self.lease_seconds
        if not self.shared:
            self._db.executemany(_PENDING, [(*row, self.worker, until, now, now) for row in rows])
            return {row[0] for row in rows}  # one worker: every row is written under its lease
        # Shared: the upsert returns the keys it wrote, which are the ones this worker now holds, so no query
        # asks afterwards (that one read every row this worker leased, a cost that grew with the table). One
        # row per key (the last, as one statement per row would leave): a statement may upsert a row once.
        latest = list({row[0]: row for row in rows}.values())
        held: set[str] = set()
        for start in range(0, len(latest), _PENDING_PER_STATEMENT):
            chunk = latest[start : start + _PENDING_PER_STATEMENT]
            sql = _PENDING_TAKEN.format(values=",".join([_PENDING_VALUES] * len(chunk)))
            parameters = [value for row in chunk for value in (*row, self.worker, until, now, now)]
            held.update(key for (key,) in self._db.execute(sql, parameters).fetchall())
        return held

    def put_sources(self, rows: Iterable[tuple[str, str]]) -> None:
        """Many ``(digest, canonical JSON)`` source documents at once (call it inside ``transaction()``)."""
        self._db.executemany("INSERT INTO sources (hash, doc) VALUES (?, ?) ON CONFLICT DO NOTHING", rows)

    def mark_delivered_many(self, rows: Sequence[tuple[str, int, int]]) -> int:
        """Mark ``(key, status, attempts)`` rows delivered, in one transaction; how many were marked. A row
        this worker no longer holds (its lease was taken over) is left alone: a late answer changes nothing."""
        now = time.time()
        if not rows:
            return 0
        if self.shared and len(rows) <= _MARKS_PER_STATEMENT:
            # One statement, autocommitted: one round trip (a lock conflict runs it again by itself).
            return self._mark_delivered_at_once(rows, now)

        def mark() -> int:
            if self.shared:
                return sum(self._mark_delivered_at_once(rows[start : start + _MARKS_PER_STATEMENT], now)
                           for start in range(0, len(rows), _MARKS_PER_STATEMENT))  # fmt: skip
            # One statement for the batch (SQLite sums the rows it changed): no Python round per mark.
            worker = self.worker
            return int(self._db.executemany(_DELIVERED, [(status, attempts, now, key, worker)
                                                         for key, status, attempts in rows]).rowcount)  # fmt: skip

        return self.run_transaction(mark)

    def _mark_delivered_at_once(self, rows: Sequence[tuple[str, int, int]], now: float) -> int:
        """Many marks in one statement (on PostgreSQL a statement is a network round trip)."""
        values = ",".join(["(?, ?, ?)"] * len(rows))
        parameters = [value for row in rows for value in row]
        sql = _DELIVERED_MANY.format(values=values)
        return int(self._db.execute(sql, (now, *parameters, self.worker)).rowcount)

    def add_attempts(
        self, key: str, attempts: int, *, not_before: float | None = None, failed: str = ""
    ) -> None:
        """A pending delivery made ``attempts`` that count towards max_attempts and stays pending (the run
        ended, or a stop cut it short, while it waited to retry): the next run goes on from there, on this
        worker or another, and sends it at ``not_before`` (epoch seconds) at the earliest, the rest of the wait,
        which retried ``failed`` (kept as the row's reason; "" for a Retry-After's hold). Fenced like the marks."""
        self._db.execute(_ATTEMPTED, (attempts, not_before, failed or None, time.time(), key, self.worker))

    def mark_delivered(self, key: str, *, status: int, attempts: int) -> None:
        self._db.execute(_DELIVERED, (status, attempts, time.time(), key, self.worker))

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
    ) -> bool:
        """Dead-letter a delivery, creating its row if it failed before a request existed (e.g. mapping).
        Returns False when another worker holds the row (this worker's lease was taken over): it stays."""
        now = time.time()
        cursor = self._db.execute(
            """INSERT INTO deliveries (key, source_hash, mapping, target, state, attempts, status, reason,
                                       response_excerpt, origin, lease_owner, created_at, updated_at)
               VALUES (?, ?, ?, ?, 'dead', ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(key) DO UPDATE SET
                   state = 'dead', attempts = deliveries.attempts + excluded.attempts,
                   status = excluded.status, reason = excluded.reason,
                   response_excerpt = excluded.response_excerpt, lease_until = NULL,
                   origin = COALESCE(excluded.origin, deliveries.origin), updated_at = excluded.updated_at
               WHERE deliveries.state <> 'pending' OR deliveries.lease_owner IS NULL
                     OR deliveries.lease_owner = excluded.lease_owner""",
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
                self.worker,
                now,
                now,
            ),
        )
        return int(cursor.rowcount) == 1

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
               ON CONFLICT(source_hash) DO UPDATE SET seen = unrouted.seen + 1, last_seen = excluded.last_seen,
                                                      origin = excluded.origin""",
            (digest, origin, now, now),
        )

    def record_rejected(self, origin: str, reason: str, excerpt: str | None) -> None:
        """Record an input record that could not be read; the same one again (a re-run) is one row."""
        now = time.time()
        updated = self._db.execute(
            """UPDATE rejected SET at = ? WHERE origin = ? AND reason = ?
               AND COALESCE(excerpt, '') = COALESCE(?, '')""",
            (now, origin, reason, excerpt),
        )
        if not updated.rowcount:
            self._db.execute(
                "INSERT INTO rejected (origin, reason, excerpt, at) VALUES (?, ?, ?, ?)",
                (origin, reason, excerpt, now),
            )

    def rejected_origins(self) -> set[str]:
        """The origins (``file:line``) of the rejected records on record."""
        return {row[0] for row in self._db.execute("SELECT DISTINCT origin FROM rejected").fetchall()}

    def resolve_rejections(self, origins: Iterable[str]) -> None:
        """Forget rejections whose record now reads (a line that was still being written when rejected): the
        event it holds is owed, and delivered, like any other. One statement per 500 origins (each found by
        the index on ``origin``): one round trip for many on PostgreSQL, under SQLite's limit of parameters."""
        wanted = list(dict.fromkeys(origins))
        for start in range(0, len(wanted), _ORIGINS_PER_STATEMENT):
            chunk = wanted[start : start + _ORIGINS_PER_STATEMENT]
            self._db.execute(f"DELETE FROM rejected WHERE origin IN ({','.join('?' * len(chunk))})", chunk)

    # --- reads ----------------------------------------------------------------------------------------------

    def state(self, key: str) -> State | None:
        row = self._db.execute("SELECT state FROM deliveries WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def get(self, key: str) -> JournalEntry | None:
        row = self._db.execute(f"SELECT {ENTRY_COLUMNS} FROM deliveries WHERE key = ?", (key,)).fetchone()
        return None if row is None else entry_of(row)

    def entries(self, state: State | None = None) -> Iterator[JournalEntry]:
        """Rows in insertion order, optionally of one state."""
        if state is None:
            cursor = self._db.execute(f"SELECT {ENTRY_COLUMNS} FROM deliveries ORDER BY created_at, key")
        else:
            cursor = self._db.execute(
                f"SELECT {ENTRY_COLUMNS} FROM deliveries WHERE state = ? ORDER BY created_at, key", (state,)
            )
        for row in cursor:
            yield entry_of(row)

    def dead_letters(self, keys: Sequence[str] | None = None) -> list[JournalEntry]:
        """Every dead letter (those whose key starts with one of ``keys``) in the order they were written
        first, in one list; a replay and ``shipmap dead-letters`` read ``dead_letter_pages`` instead."""
        condition, parameters = _key_prefixes(keys)
        rows = self._db.execute(
            f"SELECT {ENTRY_COLUMNS} FROM deliveries WHERE state = 'dead'{condition} ORDER BY created_at, key",
            parameters,
        ).fetchall()
        return [entry_of(row) for row in rows]

    def dead_letter_count(self, keys: Sequence[str] | None = None) -> int:
        """How many dead letters there are (those whose key starts with one of ``keys``), counted, not read."""
        condition, parameters = _key_prefixes(keys)
        query = f"SELECT COUNT(*) FROM deliveries WHERE state = 'dead'{condition}"
        return int(self._db.execute(query, parameters).fetchone()[0])

    def dead_letter_pages(
        self, keys: Sequence[str] | None = None, *, limit: int = 1000
    ) -> Iterator[list[JournalEntry]]:
        """The dead letters there are now (those whose key starts with one of ``keys``), a page at a time, in
        the order they were last written: what a replay reads, so that a million of them never sit in memory
        at once. A replay rewrites each one it takes (pending, then delivered or dead again, later than the
        start), so no page returns one already taken."""
        started = time.time()
        after: tuple[float, str] = (-math.inf, "")
        condition, parameters = _key_prefixes(keys)
        while True:
            rows = self._db.execute(
                f"""SELECT {ENTRY_COLUMNS} FROM deliveries WHERE state = 'dead' AND updated_at <= ?
                    AND (updated_at, key) > (?, ?){condition} ORDER BY updated_at, key LIMIT ?""",
                (started, *after, *parameters, limit),
            ).fetchall()
            entries = [entry_of(row) for row in rows]
            if entries:
                yield entries
            if len(entries) < limit:
                return
            after = (entries[-1].updated_at, entries[-1].key)

    def source(self, digest: str) -> Any:
        row = self._db.execute("SELECT doc FROM sources WHERE hash = ?", (digest,)).fetchone()
        if row is None:
            raise JournalError(f"journal {self.name} has no source document {digest[:12]}")
        return json.loads(row[0])

    def unrouted_count(self) -> int:
        return self._count("unrouted")

    def rejected_count(self) -> int:
        return self._count("rejected")

    def rejected(self) -> list[RejectedInput]:
        rows = self._db.execute("SELECT origin, reason, excerpt, at FROM rejected ORDER BY id").fetchall()
        return [RejectedInput(*row) for row in rows]

    def rejected_pages(self, *, limit: int = 1000) -> Iterator[list[RejectedInput]]:
        """The rejected input records, a page at a time in the order they were first recorded."""
        after = 0
        while True:
            rows = self._db.execute(
                "SELECT id, origin, reason, excerpt, at FROM rejected WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit),
            ).fetchall()
            if rows:
                yield [RejectedInput(*row[1:]) for row in rows]
            if len(rows) < limit:
                return
            after = rows[-1][0]

    def _count(self, table: str) -> int:
        return int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

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


def _key_prefixes(keys: Sequence[str] | None) -> tuple[str, list[object]]:
    """The condition (`` AND (...)``, or nothing without keys) and its parameters that keep the rows whose key
    starts with one of ``keys`` (a prefix is enough, like a short git hash): ``substr``, the same SQL on both
    backends, so ``_`` and ``%`` are text, not LIKE patterns."""
    prefixes = list(dict.fromkeys(keys or ()))
    if not prefixes:
        return "", []
    condition = " OR ".join(["substr(key, 1, ?) = ?"] * len(prefixes))
    return f" AND ({condition})", [part for prefix in prefixes for part in (len(prefix), prefix)]


# key, source digest, mapping, target, connection, idempotency key, method, url, payload text, origin
PendingRow = tuple[str, str, str, str, str, str | None, str, str, str, str | None]

_PENDING_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)"
# A pending row keeps its attempts (the retry budget earlier runs spent: ``add_attempts``), and the rest of the
# wait they left (``not_before``, and the failure it retries as ``reason``); a dead letter journaled pending
# again (a replay) starts its budget over, at once.
_PENDING_MANY = """INSERT INTO deliveries (key, source_hash, mapping, target, connection, idempotency_key, method,
                                         url, payload, origin, lease_owner, lease_until, state, attempts,
                                         created_at, updated_at)
               VALUES {values}
               ON CONFLICT(key) DO UPDATE SET
                   connection = excluded.connection, state = 'pending', method = excluded.method,
                   url = excluded.url, payload = excluded.payload, origin = excluded.origin,
                   idempotency_key = COALESCE(deliveries.idempotency_key, excluded.idempotency_key),
                   lease_owner = excluded.lease_owner, lease_until = excluded.lease_until,
                   status = NULL, response_excerpt = NULL, updated_at = excluded.updated_at,
                   attempts = CASE WHEN deliveries.state = 'pending' THEN deliveries.attempts ELSE 0 END,
                   not_before = CASE WHEN deliveries.state = 'pending' THEN deliveries.not_before END,
                   reason = CASE WHEN deliveries.state = 'pending' THEN deliveries.reason END
               WHERE deliveries.state IN ('dead', 'resolved')
                     OR (deliveries.state = 'pending' AND (deliveries.lease_owner IS NULL
                         OR deliveries.lease_owner = excluded.lease_owner
                         OR deliveries.lease_until < excluded.updated_at))"""
_PENDING = _PENDING_MANY.format(values=_PENDING_VALUES)
# A shared journal's pending rows, many in one statement that returns the keys it wrote (PostgreSQL: one round
# trip); 500 rows are 7,000 parameters, under PostgreSQL's 65,535.
_PENDING_PER_STATEMENT = 500
_PENDING_TAKEN = _PENDING_MANY + " RETURNING key"
# Fenced: only the worker that holds the lease records the outcome.
_DELIVERED = """UPDATE deliveries SET state = 'delivered', status = ?, attempts = attempts + ?, reason = NULL,
                                      response_excerpt = NULL, lease_until = NULL, updated_at = ?
               WHERE key = ? AND state = 'pending' AND (lease_owner = ? OR lease_owner IS NULL)"""

_ATTEMPTED = """UPDATE deliveries SET attempts = attempts + ?, not_before = ?, reason = ?, updated_at = ?
                WHERE key = ? AND state = 'pending' AND (lease_owner = ? OR lease_owner IS NULL)"""

# The same, for many (key, status, attempts) rows in one statement (PostgreSQL: one round trip, one commit).
_MARKS_PER_STATEMENT = 500
_ORIGINS_PER_STATEMENT = 500  # under SQLite's oldest limit of bound parameters (999)
_DELIVERED_MANY = """UPDATE deliveries SET state = 'delivered', status = marks.column2,
                                           attempts = deliveries.attempts + marks.column3, reason = NULL,
                                           response_excerpt = NULL, lease_until = NULL, updated_at = ?
                    FROM (VALUES {values}) AS marks
                    WHERE deliveries.key = marks.column1 AND deliveries.state = 'pending'
                          AND (deliveries.lease_owner = ? OR deliveries.lease_owner IS NULL)"""
