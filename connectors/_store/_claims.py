"""Claiming pending deliveries: what a run takes over when it starts (an interrupted run's rows, a page at a
time) or once a connection it held back is up again, and on a shared journal the leases under which a worker
holds them (claim, renew, hold, give up, and who holds the rest); and how many are pending, by connection.
``_leases.LeaseKeeper`` keeps a run's leases with these; ``Journal.mark_pending_many`` takes a new row's lease
as it journals it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection
from typing import Any

from ._entries import CLAIM_COLUMNS, JournalEntry, by_creation, by_last_write, entry_of
from ._journal import Journal


def claim_pending(
    journal: Journal,
    *,
    limit: int = 1000,
    after: tuple[float, str] | None = None,
    connections: Collection[str | None] | None = None,
    held_here: bool = False,
) -> list[JournalEntry]:
    """Take over up to ``limit`` pending deliveries nobody holds: on a shared journal, those whose lease
    expired (their worker died or stalled), oldest first; ``FOR UPDATE SKIP LOCKED``: two workers
    claiming at once never take the same row. On an exclusive one (what an interrupted run left, or an
    outage parked), the pending rows in the order they were last written, a page at a time: ``after`` is
    the (``updated_at``, ``key``) of the previous page's last row. A page at a time, because a day of
    outage can leave millions of rows pending, and a run that read them at once would need their
    payloads' gigabytes in memory before it sent the first.

    ``held_here``: the rows this worker's leases hold already (renewed), paged by ``after`` as on an exclusive
    journal: what a run held back while a connection's breaker was open, to send once it has closed. On an
    exclusive journal every pending row is this run's to send, and claiming one takes it over from the run
    that journaled it, whose lease would otherwise fence off its delivered mark.

    ``connections``: only the rows of these connections (``None`` among them: rows without one), found by
    the index on each connection's pending rows (schema 6); an SQLite journal's pages take one connection at
    a time (several would be sorted, not read in the index's order)."""
    now = time.time()
    among, named = _among(connections)
    if journal.shared and not held_here:
        chosen = f"""SELECT key FROM deliveries WHERE state = 'pending'{among}
                     AND (lease_until IS NULL OR lease_until < ?)
                     ORDER BY created_at, key LIMIT ? FOR UPDATE SKIP LOCKED"""
        parameters: tuple[Any, ...] = (journal.worker, now + journal.lease_seconds, *named, now, limit)
        order, fence = by_creation, ""
    else:  # claiming does not hide a row from the next claim here: the page's cursor moves on instead
        mine, owner = _held_here(journal, held_here)
        chosen = f"""SELECT key FROM deliveries WHERE state = 'pending'{among}{mine} AND (updated_at, key) > (?, ?)
                     ORDER BY updated_at, key LIMIT ?"""
        cursor = after or (-math.inf, "")
        parameters = (journal.worker, now + journal.lease_seconds, *named, *owner, *cursor, limit, *owner)
        # Checked again on the row it updates: another worker may have taken it over since the page was read.
        order, fence = by_last_write, mine
    rows = journal._db.execute(
        f"UPDATE deliveries SET lease_owner = ?, lease_until = ? WHERE key IN ({chosen}){fence}"
        f" RETURNING {CLAIM_COLUMNS}",
        parameters,
    ).fetchall()
    return sorted((entry_of(row) for row in rows), key=order)


def pending_counts(
    journal: Journal, connections: Collection[str | None] | None = None, *, held_here: bool = False
) -> dict[str | None, int]:
    """How many deliveries each connection has pending (None: rows without one), counted on the index of
    pending rows (schema 6), not read: a service that looks at parked work counts a down connection's.
    ``connections``: only theirs; ``held_here``: only the rows this worker's leases hold (a run counting what
    it held back and leaves pending; on an exclusive journal, every row). A connection with none is absent."""
    among, named = _among(connections)
    mine, owner = _held_here(journal, held_here)
    rows = journal._db.execute(
        f"SELECT connection, COUNT(*) FROM deliveries WHERE state = 'pending'{among}{mine} GROUP BY connection",
        (*named, *owner),
    ).fetchall()
    return {name: int(count) for name, count in rows}


def _held_here(journal: Journal, held_here: bool) -> tuple[str, tuple[str, ...]]:
    """The condition that keeps the rows under this worker's leases, and its parameter: on a shared journal
    only (an exclusive one has a worker, this run, and its rows may carry an interrupted run's leases)."""
    if held_here and journal.shared:
        return " AND lease_owner = ?", (journal.worker,)
    return "", ()


def _among(connections: Collection[str | None] | None) -> tuple[str, list[str]]:
    """The condition (`` AND (...)``, or nothing for every connection) that keeps the rows of ``connections``,
    and its parameters."""
    if connections is None:
        return "", []
    named = sorted(name for name in connections if name is not None)
    parts = [f"connection IN ({','.join('?' * len(named))})"] if named else []
    if None in connections:
        parts.append("connection IS NULL")
    return f" AND ({' OR '.join(parts) or 'FALSE'})", named


def renew_leases(journal: Journal) -> set[str]:
    """Extend every lease this worker holds; the keys it still holds."""
    rows = journal._db.execute(
        "UPDATE deliveries SET lease_until = ? WHERE lease_owner = ? AND state = 'pending' RETURNING key",
        (time.time() + journal.lease_seconds, journal.worker),
    ).fetchall()
    return {row[0] for row in rows}


def release_leases(journal: Journal) -> int:
    """Give up every lease this worker holds (its run ended: nothing of it is in flight), so another
    worker, or this one's next run, takes the rows now and not when the leases expire. How many."""
    cursor = journal._db.execute(
        "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ? AND state = 'pending'",
        (journal.worker,),
    )
    return int(cursor.rowcount)


def holds(journal: Journal, key: str) -> bool:
    """Whether this worker still holds ``key``'s lease, renewing it if so (a worker that was stopped
    asks before it sends: another may have taken the delivery over meanwhile)."""
    cursor = journal._db.execute(
        "UPDATE deliveries SET lease_until = ? WHERE key = ? AND lease_owner = ? AND state = 'pending'",
        (time.time() + journal.lease_seconds, key, journal.worker),
    )
    return int(cursor.rowcount) == 1


# What others hold, counted on indexes: every pending row, on an index by state (schema 4's or 6's, the planner
# picks; an index-only scan, without the table, once vacuum has marked its pages all-visible), less the leased
# ones, on schema 8's index of leased pending rows (PostgreSQL). The end of a shared `run` polls it four times a
# second (serve never waits for others), and with 100,000 parked rows a condition on lease_owner read each one
# from the table: 110-160 ms a poll, 9-15 ms now.
_PENDING = "(SELECT COUNT(*) FROM deliveries WHERE state = 'pending')"
_LEASED = "(SELECT COUNT(*) FROM deliveries WHERE state = 'pending' AND lease_owner IS NOT NULL{mine})"
_MINE = _LEASED.format(mine=" AND lease_owner = ?")
# The end of a shared run needs "none" or "how many, to see them move": counted up to this, exact below it
# (0.9 ms with 100,000 pending; every one took 7-15 ms a poll, four a second), as the inbox's queue depth is.
ELSEWHERE_CAP = 10_000


def pending_elsewhere(journal: Journal, cap: int | None = ELSEWHERE_CAP) -> int:
    """Pending deliveries that other workers hold, or nobody (the end of a shared run waits for them), counted
    up to ``cap``: exact below it, ``cap`` when at least that many wait (None: every one). The pending rows
    are counted up to ``cap`` more than this worker's own, on the index (this worker's are few at a run's
    end: it has sent what it holds)."""
    if cap is None:
        sql = f"SELECT {_PENDING} - {_MINE}"
        return int(journal._db.execute(sql, (journal.worker,)).fetchone()[0])
    capped = f"SELECT COUNT(*) - {_MINE} FROM (SELECT 1 FROM deliveries WHERE state = 'pending' LIMIT ? + {_MINE}) AS p"
    return int(journal._db.execute(capped, (journal.worker, cap, journal.worker)).fetchone()[0])


def pending_holders(journal: Journal) -> list[tuple[str | None, int, float | None]]:
    """Who holds the pending deliveries other workers hold: ``(lease owner, count, lease until)``, most
    first (owner None: nobody, until a worker takes them over). The leased ones are read on the index of
    leased pending rows; those nobody holds are counted (see ``pending_elsewhere``)."""
    rows = journal._db.execute(
        "SELECT lease_owner, COUNT(*), MAX(lease_until) FROM deliveries WHERE state = 'pending'"
        " AND lease_owner IS NOT NULL AND lease_owner <> ? GROUP BY lease_owner"
        f" UNION ALL SELECT NULL, {_PENDING} - {_LEASED.format(mine='')}, NULL",
        (journal.worker,),
    ).fetchall()
    held = [
        (owner, int(count), None if until is None else float(until)) for owner, count, until in rows if count
    ]
    return sorted(held, key=lambda row: (-row[1], row[0] is None, row[0] or ""))
