"""Retention: what the journal forgets once it is older than ``journal.keep``.

A journal left running grows by every event (its source document, ~5 KB, and each delivery's row, ~3 KB). A
prune deletes, in small transactions so that a run beside it never waits long:

- ``delivered`` and ``resolved`` rows last changed before the cut-off;
- ``unrouted`` records last seen before it, and ``rejected`` input records from before it;
- the source documents that nothing left in the journal refers to.

``pending`` rows (owed) and ``dead`` ones (a dead letter is a to-do: resolve or replay it) are never pruned.
Forgetting a delivered row ends its deduplication: the same document coming again after the cut-off is
delivered again, under the same key, as the serve inbox forgets a webhook id after its window.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from .._config import duration_text
from .._errors import JournalError
from .._plural import counted
from ._journal import Journal

DEFAULT_CHUNK = 500  # rows per transaction: a few milliseconds of the journal's lock at a time

# What is old, per table: the rows a prune deletes (at most LIMIT a chunk; on PostgreSQL, workers pruning at
# once take rows the others have not locked) and a dry run counts. The column is what a deletion returns.
_OLD = {
    "deliveries": ("source_hash", "key", "state IN ('delivered', 'resolved') AND updated_at < ?"),
    "unrouted": ("source_hash", "source_hash", "last_seen < ?"),
    "rejected": ("id", "id", "at < ?"),
}
_CHUNKS = {
    table: f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE {old} LIMIT ?{{lock}})"
    f" RETURNING {returned}"
    for table, (returned, key, old) in _OLD.items()
}
_COUNTS = {table: f"SELECT COUNT(*) FROM {table} WHERE {old}" for table, (_, _, old) in _OLD.items()}
_UNREFERENCED = """DELETE FROM sources WHERE hash IN ({marks})
    AND NOT EXISTS (SELECT 1 FROM deliveries WHERE deliveries.source_hash = sources.hash)
    AND NOT EXISTS (SELECT 1 FROM unrouted WHERE unrouted.source_hash = sources.hash)"""


@dataclass
class Pruned:
    """How many rows a prune deleted, by what they were."""

    deliveries: int = 0
    sources: int = 0
    unrouted: int = 0
    rejected: int = 0

    def __iadd__(self, other: Pruned) -> Pruned:
        other.add_to(self.__dict__)
        return self

    def add_to(self, counts: dict[str, int]) -> None:
        for kind, count in asdict(self).items():
            counts[kind] = counts.get(kind, 0) + count

    def __bool__(self) -> bool:
        return any(asdict(self).values())

    def describe(self, *, sources: bool = True) -> str:
        documents = f"{counted(self.sources, 'source document')}, " if sources else ""
        records = "record" if self.unrouted + self.rejected == 1 else "records"  # the noun both counts share
        return (
            f"{counted(self.deliveries, 'delivery')}, {documents}{self.unrouted} unrouted and {self.rejected}"
            f" rejected input {records}"
            + ("" if sources else " (and the source documents only they refer to)")
        )


def prune_chunk(journal: Journal, before: float, *, limit: int = DEFAULT_CHUNK) -> Pruned:
    """One transaction: at most ``limit`` rows of each kind older than ``before`` (epoch seconds), and the source
    documents they leave unreferenced. A prune is done when a chunk deletes nothing."""
    db = journal._db
    lock = " FOR UPDATE SKIP LOCKED" if journal.shared else ""

    def prune() -> Pruned:
        deleted = {
            table: [row[0] for row in db.execute(sql.format(lock=lock), (before, limit)).fetchall()]
            for table, sql in _CHUNKS.items()
        }
        hashes = sorted({*deleted["deliveries"], *deleted["unrouted"]})
        sources = (
            db.execute(_UNREFERENCED.format(marks=",".join("?" * len(hashes))), hashes).rowcount
            if hashes
            else 0
        )
        return Pruned(len(deleted["deliveries"]), sources, len(deleted["unrouted"]), len(deleted["rejected"]))

    return journal.run_transaction(prune)


def count_prunable(journal: Journal, before: float) -> Pruned:
    """What a prune at ``before`` would delete, but the source documents (that takes the prune's own checks)."""
    return Pruned(
        **{table: int(journal._db.execute(sql, (before,)).fetchone()[0]) for table, sql in _COUNTS.items()}
    )


def oldest_forgettable(journal: Journal) -> float | None:
    """When the oldest delivered or resolved row last changed (epoch seconds): what a prune forgets first."""
    times = [
        journal._db.execute("SELECT MIN(updated_at) FROM deliveries WHERE state = ?", (state,)).fetchone()[0]
        for state in ("delivered", "resolved")  # one state at a time: each MIN is one step down the index
    ]
    known = [float(value) for value in times if value is not None]
    return min(known) if known else None


def prune(journal: Journal, before: float, *, limit: int = DEFAULT_CHUNK) -> Pruned:
    """Everything older than ``before``, chunk by chunk (each its own transaction)."""
    total = Pruned()
    while chunk := prune_chunk(journal, before, limit=limit):
        total += chunk
    return total


async def prune_periodically(
    journal: Journal,
    keep: float,
    *,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    every: float | None = None,
    forgotten: Callable[[Pruned], None] = lambda pruned: None,
) -> None:
    """For a run's life: prune what is older than ``keep`` seconds at once, then every ``every`` seconds (by
    default a 24th of ``keep``, between 1 s and an hour), logging (the run's ``log``) and telling ``forgotten``
    what each pass deleted. Chunk by chunk, letting the event loop run between them: the run's own sends and
    commits wait a chunk at most. A pass that fails is logged and tried again at the next one: forgetting is
    upkeep, and delivery goes on (a journal that cannot be written stops the run on its own writes)."""
    every = every if every is not None else min(3600.0, max(1.0, keep / 24))
    while True:
        total = Pruned()
        try:
            before = time.time() - keep
            while chunk := prune_chunk(journal, before):
                total += chunk
                await asyncio.sleep(0)
        except JournalError as error:
            log.warning("journal: could not forget what is older than %s: %s; trying again in %s",
                        duration_text(keep), error.message, duration_text(every))  # fmt: skip
        if total:
            log.info("journal: forgot what is older than %s: %s", duration_text(keep), total.describe())
            forgotten(total)
        await asyncio.sleep(every)
