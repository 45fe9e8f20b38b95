"""Moving a journal: every row of one store into another, empty one (an SQLite file into PostgreSQL, as
``shipmap journal copy`` does), in one transaction on the destination."""

from __future__ import annotations

from collections.abc import Sequence

from .._errors import JournalError
from ._entries import ENTRY_COLUMNS
from ._journal import Journal
from ._schema import NOT_BEFORE_VERSION

# Every table's columns that a copy moves, in dependency order (sources before what references them).
_COPIED: tuple[tuple[str, str, str], ...] = (
    ("sources", "hash, doc", ""),
    ("deliveries", ENTRY_COLUMNS + ", not_before", "ORDER BY created_at, key"),
    ("unrouted", "source_hash, origin, seen, first_seen, last_seen", ""),
    ("rejected", "origin, reason, excerpt, at", "ORDER BY id"),
)
_COPY_BATCH = 1000


def copy_journal(source: Journal, destination: Journal) -> dict[str, int]:
    """Copy every row of ``source`` into ``destination``, which must hold none yet: ``{table: rows}``.

    One transaction on the destination: a copy that fails leaves it as it was. Rows keep their keys,
    states, idempotency keys, times and attempts, and a pending row the rest of its cut wait (``not_before``;
    NULL from a source older than version 9), so runs against the destination resume where the source stopped.
    The tables' statistics are gathered in it too (``analyze``)."""
    if destination.readonly:
        raise JournalError(f"journal {destination.name} is open read-only; nothing can be copied into it")
    held = {table: destination._count(table) for table, _, _ in _COPIED}
    if any(held.values()):
        found = ", ".join(f"{count} {table}" for table, count in held.items() if count)
        raise JournalError(f"journal {destination.name} is not empty ({found}); copy into an empty store")
    copied: dict[str, int] = {}
    # A source of an older version (read-only: never upgraded) has no not_before: its rows go at once.
    read = {} if source.schema_version() >= NOT_BEFORE_VERSION else {"not_before": "NULL"}

    def copy_all() -> None:
        for table, columns, order in _COPIED:
            names = [name.strip() for name in columns.split(",")]
            marks = ", ".join("?" * len(names))
            insert = f"INSERT INTO {table} ({columns}) VALUES ({marks})"
            selected = ", ".join(read.get(name, name) for name in names)
            cursor = source._db.execute(f"SELECT {selected} FROM {table} {order}")
            copied[table] = 0
            while rows := cursor.fetchmany(_COPY_BATCH):
                destination._db.executemany(insert, [tuple(row) for row in rows])
                copied[table] += len(rows)
        analyze(destination, [table for table, _, _ in _COPIED])

    destination.run_transaction(copy_all)
    return copied


def analyze(destination: Journal, tables: Sequence[str]) -> None:
    """PostgreSQL: gather the planner's statistics of ``tables``, which a copy has just filled (inside its
    transaction: ANALYZE counts its rows). Otherwise a million rows are planned without any until autovacuum
    comes round (its next look, a minute or more): a workers' claim of 1,000 took 42 ms against 20, a count
    of prunable rows 132 ms against 79. About 0.6 s per 1,000,000 rows, once."""
    if destination.backend == "postgresql" and tables:
        destination._db.execute(f"ANALYZE {', '.join(tables)}")
