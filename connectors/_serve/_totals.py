"""What a running service has delivered since it started, across the runs of its delivery loop.

``shipmap serve`` delivers in successive runs of the runtime (a new run re-sends what an outage left
pending, or carries out a replay; see ``_delivery_loop``). Each run has its own :class:`RunSummary`; the
service's counters (``/metrics``, the summary printed at exit) must not go back to zero when a run ends, so
finished runs are folded into one summary here, in constant memory. Totals only add up: what the summary at
exit says is still owed (outages, dead letters) the service reads when it stops (``Service._as_at_stop``).
"""

from __future__ import annotations

from .._runtime import RunSummary
from .._summary import DEAD_KEYS_KEPT


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
