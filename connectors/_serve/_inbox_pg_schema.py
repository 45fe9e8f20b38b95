"""The PostgreSQL inbox's schema: its versions, what each migration adds and why (``MIGRATIONS``), and why a
version is refused (``version_problem``). ``PostgresInbox.migrate`` applies them, under the journal's lock."""

from __future__ import annotations

INBOX_SCHEMA_VERSION = 5
VERSION_KEY = "inbox_schema_version"  # in meta
_V1 = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inbox (
    id BIGSERIAL PRIMARY KEY,
    source TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    topic TEXT,
    received_at DOUBLE PRECISION NOT NULL,
    headers TEXT NOT NULL,
    body BYTEA NOT NULL,
    documents TEXT,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'processed')),
    processed_at DOUBLE PRECISION,
    lease_owner TEXT,
    lease_until DOUBLE PRECISION,
    UNIQUE (source, webhook_id)
);
CREATE INDEX IF NOT EXISTS inbox_pending ON inbox (id) WHERE state = 'pending';
"""
# Version 2: when a processed row's body was dropped (serve.keep_bodies), and the rows that still hold one.
_V2 = """
ALTER TABLE inbox ADD COLUMN IF NOT EXISTS body_dropped_at DOUBLE PRECISION;
CREATE INDEX IF NOT EXISTS inbox_bodies ON inbox (processed_at) WHERE state = 'processed' AND body_dropped_at IS NULL;
"""
# Version 3: the pending rows a process holds, by lease_owner. Renewing its claims (every third of a lease, on
# each delivery side's thread) and giving them up (when it closes) found its few rows by reading every pending
# one: 55-80 ms each with 100,000 pending, 0.3 ms on this index. Partial: only claimed pending rows, so a
# backlog nobody holds yet costs it nothing (a row is accepted unclaimed: no entry).
_V3 = """
CREATE INDEX IF NOT EXISTS inbox_leased ON inbox (lease_owner) WHERE state = 'pending' AND lease_owner IS NOT NULL;
"""
# Version 4: when a pending row was parked (its source API down: ``park``; NULL again when it is processed,
# or its process is gone), and the parked rows on an index of their own, by process (a claim reads its own;
# ``PARKED_HEADS`` the first of each) and id, out of ``inbox_pending`` (rebuilt: migrate reads the table once).
# A parked row held for hours by a live process held every claims' floor at its id: claims and scrapes
# stepped over every row processed since (2-7 ms at 1,000,000 processed; 80 ms a claim with 100,000 parked).
_V4 = """
ALTER TABLE inbox ADD COLUMN IF NOT EXISTS parked_at DOUBLE PRECISION;
DROP INDEX IF EXISTS inbox_pending;
CREATE INDEX inbox_pending ON inbox (id) WHERE state = 'pending' AND parked_at IS NULL;
CREATE INDEX IF NOT EXISTS inbox_parked ON inbox (lease_owner, id) WHERE state = 'pending' AND parked_at IS NOT NULL;
"""
# Version 5: the processed rows by when they were received, what ``purge`` reads (oldest first) and deletes.
# Without it each purge read the whole table, even with nothing old enough: 80-120 ms at 1,000,000 small rows,
# 0.3 ms on it (docs/scale.md).
_V5 = """
CREATE INDEX IF NOT EXISTS inbox_processed ON inbox (received_at) WHERE state = 'processed';
"""
# MIGRATIONS[n] takes an inbox from version n to n + 1 (version 0: no inbox in the database).
MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4, _V5)


def version_problem(name: str, version: int, readonly: bool) -> str | None:
    """Why this shipmap cannot use the inbox of ``version`` in ``name``, or None (a read-only reader reads an
    older version as it is; a service needs it migrated)."""
    if version == 0:
        return f"{name} holds no shipmap inbox"
    if version > INBOX_SCHEMA_VERSION:
        return (
            f"the inbox in {name} has schema version {version}, written by a newer shipmap (this one reads "
            f"versions up to {INBOX_SCHEMA_VERSION})"
        )
    if 0 < version < INBOX_SCHEMA_VERSION and not readonly:
        return (
            f"the inbox in {name} has schema version {version}; this shipmap needs {INBOX_SCHEMA_VERSION}: "
            f"run `shipmap journal migrate {name}` (with its password) once, then start the services"
        )
    return None
