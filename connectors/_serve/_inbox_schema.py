"""The inbox file's schema (SQLite), and what a file of another version is.

Versions (``inbox_schema`` in ``meta``): 1, the rows; 2, ``body_dropped_at`` (when the body was dropped, NULL
while it is held) and the index of processed rows that still hold a body; 3, the index of processed rows by
``received_at`` (what ``purge`` reads). ``UPGRADES`` brings a file of an older version to ``SCHEMA_VERSION``
(``Inbox`` does, when it opens the file for writing). The PostgreSQL inbox's is ``_inbox_pg_schema``.
"""

from __future__ import annotations

from pathlib import Path

SCHEMA_VERSION = "3"
READABLE = ("1", "2", SCHEMA_VERSION)
# The processed rows that still hold a body, by when they were processed: what ``drop_bodies`` walks. A row
# leaves it when its body is dropped, so a purge reads only bodies it may drop and those it keeps.
BODIES_INDEX = (
    "CREATE INDEX IF NOT EXISTS inbox_bodies ON inbox (processed_at)"
    " WHERE state = 'processed' AND body_dropped_at IS NULL"
)
# The processed rows by when they were received: what ``purge`` reads, oldest first, and deletes. Without it
# each purge read the whole table, even with nothing old enough (96 ms at 1,000,000 rows; 0.01 ms on it).
PROCESSED_INDEX = (
    "CREATE INDEX IF NOT EXISTS inbox_processed ON inbox (received_at) WHERE state = 'processed'"
)
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS inbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        source TEXT NOT NULL,
        webhook_id TEXT NOT NULL,
        topic TEXT,
        received_at REAL NOT NULL,
        headers TEXT NOT NULL,
        body BLOB NOT NULL,
        documents TEXT,
        state TEXT NOT NULL DEFAULT 'pending',
        processed_at REAL,
        body_dropped_at REAL,
        UNIQUE (source, webhook_id)
    )""",
    "CREATE INDEX IF NOT EXISTS inbox_pending ON inbox (id) WHERE state = 'pending'",
    BODIES_INDEX,
    PROCESSED_INDEX,
)
# From a version to the current one. Adding a column rewrites no row; the index reads the processed ones once.
UPGRADES = {
    "1": ("ALTER TABLE inbox ADD COLUMN body_dropped_at REAL", BODIES_INDEX, PROCESSED_INDEX),
    "2": (PROCESSED_INDEX,),
}
HAS_META = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'"


def unreadable(path: Path, version: str | None) -> str:
    """Why ``path``, of schema ``version`` (None: it has none), is not read as an inbox."""
    if version is not None and version.isdigit() and int(version) > int(SCHEMA_VERSION):
        return (
            f"{path} is an inbox this shipmap cannot read: schema version {version} was written by a newer"
            f" shipmap (this one reads versions up to {SCHEMA_VERSION})"
        )
    said = "it has no inbox schema version" if version is None else f"inbox schema version {version!r}"
    return f"{path} is not a shipmap inbox ({said})"
