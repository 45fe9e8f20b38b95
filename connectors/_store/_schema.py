"""The journal's schema, versioned (``SCHEMA_VERSION``, in the ``meta`` table), per backend.

A new store is created at the current version; an SQLite file of an older version is upgraded when it is opened
for writing (it has one user), while a PostgreSQL store, which many workers share, is upgraded only by
``shipmap journal migrate`` (``Journal.migrate``). A store written by a newer shipmap is refused.
"""

from __future__ import annotations

from typing import Literal

SCHEMA_VERSION = 9
State = Literal["pending", "delivered", "dead", "resolved"]
# What a run never sends again: delivered, or resolved (superseded by a replay, or closed by hand). A dead row is
# skipped too, until it is replayed.
CLOSED: frozenset[State] = frozenset({"delivered", "resolved"})
Backend = Literal["sqlite", "postgresql"]

# Version 1: the tables. The SQLite text is also what journals written before versioning hold.
_V1_SQLITE = """
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
# PostgreSQL: the same tables; epoch seconds as double precision, like SQLite's REAL.
_V1_POSTGRESQL = (
    _V1_SQLITE.replace(" REAL", " DOUBLE PRECISION")
    .replace("id INTEGER PRIMARY KEY AUTOINCREMENT", "id BIGSERIAL PRIMARY KEY")
    .replace("attempts INTEGER", "attempts BIGINT")
)
# Version 2: who holds a pending delivery, and until when (leases, for many workers on one store).
_V2 = """
ALTER TABLE deliveries ADD COLUMN lease_owner TEXT;
ALTER TABLE deliveries ADD COLUMN lease_until {real};
"""
# Version 3: each connection's circuit breaker and max_rate slot, shared by the workers (``_breaker_pg``;
# times on the database's clock). An SQLite journal has one worker, which keeps them in memory.
_V3 = """
CREATE TABLE connection_state (
    name TEXT PRIMARY KEY,
    phase TEXT NOT NULL DEFAULT 'closed' CHECK (phase IN ('closed', 'open', 'half_open')),
    failures BIGINT NOT NULL DEFAULT 0,
    opened_at {real} NOT NULL DEFAULT 0,
    retry_at {real} NOT NULL DEFAULT 0,
    cooldown {real} NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    opened BIGINT NOT NULL DEFAULT 0,
    probes BIGINT NOT NULL DEFAULT 0,
    probe_until {real} NOT NULL DEFAULT 0,
    next_free {real} NOT NULL DEFAULT 0
);
"""
# Version 4: retention (``_retention``). Old delivered rows are found by (state, updated_at), and the source
# documents that no remaining row references by source_hash, without reading the whole table.
_V4 = """
DROP INDEX IF EXISTS deliveries_state;
CREATE INDEX deliveries_state ON deliveries(state, updated_at);
CREATE INDEX deliveries_source ON deliveries(source_hash);
"""
# Version 5: rejected input records by origin. Recording one (its UPDATE), resolving, resolving by hand and a
# requeue of rejected webhooks each find rows by origin; without an index each read the whole table, so a
# service that rejects 100,000 webhooks slowed down with every one (4 ms a record at 100,000 rows, 0.03 ms now).
_V5 = """
CREATE INDEX rejected_origin ON rejected(origin);
"""
# Version 6: the pending deliveries of one connection, in the order a run takes them over (``_claims``): a
# service looking again at parked work reads a few of a down connection's rows and counts the rest, instead of
# reading every one (``Outbox.recover``). Partial: only pending rows, so delivered ones cost it nothing. The
# order is each backend's: an SQLite journal pages by last write, a shared one claims the oldest created.
_V6 = """
CREATE INDEX deliveries_pending ON deliveries(state, connection, {order}, key) WHERE state = 'pending';
"""
# Version 7: the pending deliveries of one connection by URL. Each run asks whether any of a connection's was
# journaled under another base URL (``_moves.stranded``): two short ranges of this index, outside the base's,
# not a read of every pending row's URL (56 ms on SQLite, 85 ms on PostgreSQL with 100,000 parked, at each of
# serve's looks at parked work). A prefix's URLs are one range in byte order only: PostgreSQL orders text by
# the database's collation, which may weigh letters before punctuation, so there the index and the query are
# in "C" (byte) order; SQLite's text is in byte order. PostgreSQL's index leaves `state` out: the predicate
# implies it, so the query's condition on it is dropped, and with none on the first column the range would
# not bound the scan (the whole index read). SQLite keeps it, and reads the URLs from the index alone.
_V7 = """
CREATE INDEX deliveries_pending_url ON deliveries({columns}) WHERE state = 'pending';
"""
# Version 8, PostgreSQL only: the pending rows a worker holds, by lease_owner. Releasing or renewing a worker's
# leases (at the end of each of serve's looks at parked work, and every third of a lease) read every pending
# row to find its few: ~85 ms each with 100,000 parked, 0.1-0.2 ms on this index. Partial: only leased pending
# rows, so a down connection's parked ones, released, cost it nothing. SQLite has one worker and never asks.
_V8_POSTGRESQL = """
CREATE INDEX deliveries_leased ON deliveries(lease_owner) WHERE state = 'pending' AND lease_owner IS NOT NULL;
"""
# Version 9: when a pending delivery may be sent again (epoch seconds, this worker's clock, as leases are): the
# rest of a backoff or a Retry-After that a run's end or a stop cut short (``Journal.add_attempts``), so that the
# worker that sends it next, after a restart or on another process, waits it out too. NULL: at once.
_V9 = """
ALTER TABLE deliveries ADD COLUMN not_before {real};
"""
NOT_BEFORE_VERSION = 9  # the first version with deliveries.not_before (a copy reads NULL from an older store)
# MIGRATIONS[backend][n] takes a store from version n to n + 1 (version 0: an empty database).
MIGRATIONS: dict[Backend, tuple[str, ...]] = {
    "sqlite": (
        _V1_SQLITE,
        _V2.format(real="REAL"),
        "",
        _V4,
        _V5,
        _V6.format(order="updated_at"),
        _V7.format(columns="state, connection, url"),
        "",
        _V9.format(real="REAL"),
    ),
    "postgresql": (
        _V1_POSTGRESQL,
        _V2.format(real="DOUBLE PRECISION"),
        _V3.format(real="DOUBLE PRECISION"),
        _V4,
        _V5,
        _V6.format(order="created_at"),
        _V7.format(columns='connection, url COLLATE "C"'),
        _V8_POSTGRESQL,
        _V9.format(real="DOUBLE PRECISION"),
    ),
}
# The tables a journal of any version holds. An SQLite file without `meta` that holds others is another
# application's database, not a journal written before versioning: it is refused, never written to.
JOURNAL_TABLES = frozenset({"meta", "sources", "deliveries", "unrouted", "rejected", "connection_state"})
_SQLITE_TABLES = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'"
_HAS_META = {
    "sqlite": "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
    "postgresql": "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'meta'",
}
_MIGRATION_LOCK = 7_316_016_001  # pg_advisory_xact_lock key: one migration at a time per database
