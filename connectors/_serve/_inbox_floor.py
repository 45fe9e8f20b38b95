"""Where a PostgreSQL inbox's claims start scanning its pending rows: :class:`ClaimFloor` (a service's inboxes
share one: it makes it and hands it to each), the note a command that makes old rows pending again leaves for it
(``NOTE_REQUEUE``), and where the parked rows begin (``PARKED_HEADS``)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

FLOOR_REFRESH_S = 10.0  # how often a process reads the smallest pending id again, stepping over dead entries
REQUEUES_CHECK_S = 1.0  # how often it looks whether a command made old rows pending again
_REQUEUES_KEY = "inbox_requeues"
_NOW = "extract(epoch from clock_timestamp())"
# Appended to a statement's WITH that makes rows pending again (``requeued``, one row each): counts it in meta,
# in the same transaction, so the processes claiming from a floor look below it (``ClaimFloor``).
NOTE_REQUEUE = f"""noted AS (INSERT INTO meta (k, v) SELECT '{_REQUEUES_KEY}', '1' WHERE EXISTS (SELECT 1 FROM requeued)
           ON CONFLICT (k) DO UPDATE SET v = (meta.v::bigint + 1)::text)"""
# For ``WITH RECURSIVE``: the first parked row of each process that holds some, by a loose scan of
# ``inbox_parked`` (one descent a process, not a read of every parked row). A process renews all its claims in
# one statement, and its first row was claimed first (or, requeued, later: then it lapses at most a third of
# a lease after the others), so when that row's lease has lapsed, the process is gone.
PARKED_HEADS = """parked_heads (lease_owner, id, lease_until) AS (
        (SELECT lease_owner, id, lease_until FROM inbox WHERE state = 'pending' AND parked_at IS NOT NULL
             AND lease_owner IS NOT NULL ORDER BY lease_owner, id LIMIT 1)
        UNION ALL
        SELECT next.lease_owner, next.id, next.lease_until FROM parked_heads CROSS JOIN LATERAL (
            SELECT lease_owner, id, lease_until FROM inbox WHERE state = 'pending' AND parked_at IS NOT NULL
                AND lease_owner > parked_heads.lease_owner ORDER BY lease_owner, id LIMIT 1) AS next)"""
# Parked rows whose process is gone, made ordinary pending rows again (claimable by any process, which parks
# them anew if their API is still down), and noted as a requeue: they are below the floors. Every parked row of
# a gone process at once, its claim cleared: its first row's lease lapsed, so it has not renewed for a lease,
# and its rows claimed since its last renewal (leased up to a third of a lease longer) are as lost.
_UNPARK_ABANDONED = f"""WITH requeued AS (
        UPDATE inbox SET parked_at = NULL, lease_owner = NULL, lease_until = NULL
        WHERE state = 'pending' AND parked_at IS NOT NULL AND (lease_owner IS NULL OR lease_owner = ANY(%s))
        RETURNING id),
    {NOTE_REQUEUE}
    SELECT min(id) FROM requeued"""


class ClaimFloor:
    """Where a process's claims start scanning ``inbox_pending`` (the pending rows but the parked ones): no
    such row has a smaller id, but for the two kinds below, so the scan skips the dead entries of the rows
    processed before it. Autovacuum removes those when a fifth of the table is dead (days of webhooks, for a
    table that keeps ``serve.dedup_window``), and a lower per-table threshold would not help a large table: a
    VACUUM that finds dead rows on under 2% of its pages skips the indexes.

    Every ``FLOOR_REFRESH_S`` one statement reads the smallest pending id (or, none pending, the id after the
    last), stepping over those entries once; the floor is the smaller of that reading and the one before. A
    row's id is drawn before its insert commits, and several processes insert, so a row in flight at a reading
    can commit below it: it is still at or above the next floor unless its insert took longer than a refresh,
    and then the reading after its commit finds it. A command that makes old rows pending again (``requeue``,
    ``replay --rejected``) counts itself in ``meta`` in its transaction (``NOTE_REQUEUE``); the count is
    looked at every ``REQUEUES_CHECK_S``, and a change reads the floor again at once. The reading and the
    count are one statement, one snapshot: a requeue is in both or in neither.

    A *parked* row (``parked_at``: its source API is down, for hours maybe) is on an index of its own,
    ``inbox_parked``, and holds no floor: its process reads it there. Before, it held every process's floor
    at its id, and each claim and scrape stepped over every row processed since (2-7 ms with 1,000,000; a
    claim 80 ms with 100,000 parked), for as long as the outage lasted. The same statement looks at the first
    parked row of each process (``PARKED_HEADS``): one whose lease lapsed belongs to a process that is gone,
    and its parked rows are made pending again and noted as a requeue (``rescue``; not by a read-only reader),
    so some process claims them within a second. A process that closes gives its parked rows up alike.

    A service makes one floor and hands it to each of its inboxes on the database (the gauges' reader,
    delivery's claims: the same number read once), which read it from their own threads and connections."""

    def __init__(self, *, rescue: bool = True) -> None:
        self._lock = threading.Lock()
        self._rescue = rescue
        self._readings: tuple[int, int] = (0, 0)  # the last two, newest first: the floor is their minimum
        self._requeues: str | None = None
        self._read_at = -math.inf
        self._checked_at = -math.inf

    def value(self, execute: Callable[..., Any]) -> int:
        """The floor of a claim: the smaller of the last two readings."""
        self._read(execute)
        return min(self._readings)

    def last_reading(self, execute: Callable[..., Any]) -> int:
        """The floor of the queue's gauges (``depth``, ``oldest_pending``): the last reading alone. A row whose
        insert was in flight during it is missing from them until the next (a claim must not miss it; a gauge
        read a moment earlier would have); a process's first gauges need not wait for a second reading."""
        self._read(execute)
        return self._readings[0]

    def _read(self, execute: Callable[..., Any]) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._checked_at >= REQUEUES_CHECK_S and now - self._read_at < FLOOR_REFRESH_S:
                self._checked_at = now
                row = execute("SELECT v FROM meta WHERE k = %s", (_REQUEUES_KEY,)).fetchone()
                if (row[0] if row else None) != self._requeues:
                    self._read_at = -math.inf
            if now - self._read_at >= FLOOR_REFRESH_S:
                abandoned = self._reading(execute, now)
                if abandoned is not None and self._rescue:
                    (first,) = execute(_UNPARK_ABANDONED, (abandoned,)).fetchone()
                    if first is not None:  # pending now, below the reading: the floor comes down to them
                        self._readings = (min(self._readings[0], int(first)), self._readings[1])

    def _reading(self, execute: Callable[..., Any], now: float) -> list[str] | None:
        """Read the floor. The processes gone with parked rows (``[]``: only parked rows nobody holds), or None
        when none is."""
        requeues, smallest, gone, unheld = execute(
            f"""WITH RECURSIVE {PARKED_HEADS}
                SELECT (SELECT v FROM meta WHERE k = %s),
                       coalesce((SELECT id FROM inbox WHERE state = 'pending' AND parked_at IS NULL
                                 ORDER BY id LIMIT 1), (SELECT max(id) + 1 FROM inbox), 0),
                       (SELECT array_agg(lease_owner) FROM parked_heads WHERE lease_until < {_NOW}),
                       EXISTS (SELECT 1 FROM inbox WHERE state = 'pending' AND parked_at IS NOT NULL
                               AND lease_owner IS NULL)""",
            (_REQUEUES_KEY,),
        ).fetchone()
        self._readings = (int(smallest), self._readings[0])
        self._requeues, self._read_at, self._checked_at = requeues, now, now
        return list(gone) if gone else ([] if unheld else None)
