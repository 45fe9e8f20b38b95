"""What a running service has delivered since it started, across the runs of its delivery loop.

``shipmap serve`` delivers in successive runs of the runtime (a new run re-sends what an outage left
pending, or carries out a replay; see ``_delivery_loop``). Each run has its own :class:`RunSummary`; the
service's counters (``/metrics``, the summary printed at exit) must not go back to zero when a run ends, so
finished runs are folded into one summary here, in constant memory. Totals only add up: what the summary at
exit says is still owed (outages, dead letters) the service reads when it stops (``Service._as_at_stop``).
"""

from __future__ import annotations

import os

from .._plural import counted
from .._runtime import RunSummary
from .._store._journal import open_readonly
from .._store._journal_pg import is_database_url
from .._summary import DEAD_KEYS_KEPT
from ._inbox import InboxStore


def fold(total: RunSummary, run: RunSummary) -> None:
    """Add ``run``'s counts, latencies and outages to ``total``."""
    for stats in list(run.targets.values()):
        into = total.target(stats.mapping, stats.target)
        into.delivered += stats.delivered
        into.retried += stats.retried
        into.dead += stats.dead
        into.skipped += stats.skipped
        into.skipped_dead += stats.skipped_dead
        into.attempts += stats.attempts
        # Same bucket layout on both sides: the counts add up (the histogram has no public merge).
        buckets = into.latency._buckets
        for index, count in list(stats.latency._buckets.items()):
            buckets[index] = buckets.get(index, 0) + count
        into.latency.count += stats.latency.count
    total.unrouted += run.unrouted
    total.rejected += run.rejected
    total.recovered += run.recovered
    for kind, count in list(run.forgotten.items()):
        total.forgotten[kind] = total.forgotten.get(kind, 0) + count
    total.parked = run.parked  # what is parked now: the last run's, not a sum of re-parks of the same rows
    total.outages.update(run.outages)
    total.events += run.events
    total.elapsed += run.elapsed
    total.dead_keys.extend(run.dead_keys[: max(0, DEAD_KEYS_KEPT - len(total.dead_keys))])  # bounded


def combined(total: RunSummary, live: RunSummary | None) -> RunSummary:
    """``total`` with the run in progress added (a new summary; neither argument changes)."""
    out = RunSummary()
    fold(out, total)
    if live is not None:
        fold(out, live)
    return out


def owed_at_stop(journal: str | os.PathLike[str] | None, inbox: InboxStore) -> str | None:
    """What is still owed when the service stops, read from the journal and the inbox (None: nothing): the
    deliveries ``pending`` in the journal (a drain deadline cut them off, or an outage parked them) and the
    webhooks not yet handed to delivery. The summary's counts are the service's life; this is the state now."""
    parts = []
    try:
        found = open_readonly(journal)
        if found is not None:
            with found:
                pending = found.counts().get("pending", 0)
            if pending:
                parts.append(f"{counted(pending, 'delivery', 'deliveries')} pending in the journal")
        waiting = inbox.depth()
    except Exception as error:  # a line of the stop report: its failure is said, not raised
        return f"cannot read what is owed at stop ({type(error).__name__}: {error})"
    if waiting:
        parts.append(f"{counted(waiting, 'webhook')} waiting in the inbox")
    if not parts:
        return None
    shared = journal is not None and is_database_url(journal)
    after = "the next start, or another serve process on this journal," if shared else "the next start"
    return f"owed at stop: {' and '.join(parts)}; {after} sends them, nothing acknowledged is lost"
