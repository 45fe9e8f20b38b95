"""Where a PostgreSQL inbox's claims start scanning its pending rows: :class:`ClaimFloor`, and the note a
command that makes old rows pending again leaves for it (``NOTE_REQUEUE``)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

FLOOR_REFRESH_S = 10.0  # how often a process reads the smallest pending id again, stepping over dead entries
REQUEUES_CHECK_S = 1.0  # how often it looks whether a command made old rows pending again
_REQUEUES_KEY = "inbox_requeues"
# Appended to a statement's WITH that makes rows pending again (``requeued``, one row each): counts it in meta,
# in the same transaction, so the processes claiming from a floor look below it (``ClaimFloor``).
NOTE_REQUEUE = f"""noted AS (INSERT INTO meta (k, v) SELECT '{_REQUEUES_KEY}', '1' WHERE EXISTS (SELECT 1 FROM requeued)
           ON CONFLICT (k) DO UPDATE SET v = (meta.v::bigint + 1)::text)"""


class ClaimFloor:
    """Where a process's claims start scanning ``inbox_pending``: no pending row has a smaller id, but for the
    two kinds below, so the scan skips the dead entries of the rows processed before it. Autovacuum removes
    those when a fifth of the table is dead (days of webhooks, for a table that keeps ``serve.dedup_window``),
    and a lower per-table threshold would not help a large table: a VACUUM that finds dead rows on under 2% of
    its pages skips the indexes.

    Every ``FLOOR_REFRESH_S`` one statement reads the smallest pending id (or, none pending, the id after the
    last), stepping over those entries once; the floor is the smaller of that reading and the one before. A
    row's id is drawn before its insert commits, and several processes insert, so a row in flight at a reading
    can commit below it: it is still at or above the next floor unless its insert took longer than a refresh,
    and then the reading after its commit finds it. A command that makes old rows pending again (``requeue``,
    ``replay --rejected``) counts itself in ``meta`` in its transaction (``NOTE_REQUEUE``); the count is
    looked at every ``REQUEUES_CHECK_S``, and a change reads the floor again at once. The reading and the
    count are one statement, one snapshot: a requeue is in both or in neither.

    A pending row counts whoever holds it, so a webhook parked for hours (its source API down) holds the floor
    at its id, and claims step over the rows processed since, as they all did before, until it is handed over."""

    def __init__(self) -> None:
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
        now = time.monotonic()
        if now - self._checked_at >= REQUEUES_CHECK_S and now - self._read_at < FLOOR_REFRESH_S:
            self._checked_at = now
            row = execute("SELECT v FROM meta WHERE k = %s", (_REQUEUES_KEY,)).fetchone()
            if (row[0] if row else None) != self._requeues:
                self._read_at = -math.inf
        if now - self._read_at >= FLOOR_REFRESH_S:
            requeues, smallest = execute(
                """SELECT (SELECT v FROM meta WHERE k = %s),
                           coalesce((SELECT id FROM inbox WHERE state = 'pending' ORDER BY id LIMIT 1),
                                    (SELECT max(id) + 1 FROM inbox), 0)""",
                (_REQUEUES_KEY,),
            ).fetchone()
            self._readings = (int(smallest), self._readings[0])
            self._requeues, self._read_at, self._checked_at = requeues, now, now
