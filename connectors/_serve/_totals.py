"""What a running service has delivered since it started, across the runs of its delivery loop.

``shipmap serve`` delivers in successive runs of the runtime (a new run re-sends what an outage left
pending, or carries out a replay; see ``_delivery_loop``). Each run has its own :class:`RunSummary`; the
service's counters (``/metrics``, the summary printed at exit) must not go back to zero when a run ends, so
finished runs are folded into one summary here, in constant memory. Totals only add up: what the summary at
exit says is still owed (outages, dead letters, pending work) the service reads when it stops (``as_at_stop``,
``owed_at_stop``).

Replays are folded into a total of their own: a dead letter replayed that fails again is the same dead
letter, and the service's count of dead letters (what an alert watches) is of events that became dead
letters; a replay's outcomes are counted beside it (``shipmap_replays_total``). What a replay left pending (a
connection down) is counted by the run that later sends it, as that run's: the journal's pending row does not
say that a replay made it so (docs/serve.md#operations says what a mark would take).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

from shipmap.engine import ShipmapError

from .._config import PlannedRoute
from .._deliver._breaker import BreakerState
from .._errors import JournalError
from .._map._steps import MAPPING_STAGE
from .._plural import counted
from .._runtime import RunSummary, Runtime
from .._store._journal import open_readonly
from .._store._journal_pg import is_database_url
from .._summary import DEAD_KEYS_KEPT, TargetKey
from ._inbox import InboxStore


def exported_targets(routes: Iterable[PlannedRoute], kept: Iterable[TargetKey] = ()) -> tuple[TargetKey, ...]:
    """The targets whose counters /metrics exports from the start, at 0 until something happens to them, so
    that a first delivery that becomes a dead letter is a rise from 0 that ``increase()`` sees: ``kept`` (what
    the service exported before a reload: a counter never vanishes), then each mapping's own stage (where an
    event the mapping fails on is dead-lettered) and each target it delivers (not those ``enabled: false``)."""
    found = dict.fromkeys(kept)
    for route in routes:
        found[TargetKey(route.name, MAPPING_STAGE)] = None
        for planned in route.targets.values():
            if planned.enabled:
                found[TargetKey(route.name, planned.name)] = None
    return tuple(found)


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
        into.latency.merge(stats.latency)
    total.unrouted += run.unrouted
    total.rejected += run.rejected
    total.recovered += run.recovered
    for kind, count in list(run.forgotten.items()):
        total.forgotten[kind] = total.forgotten.get(kind, 0) + count
    if run.parked_known:  # what is parked now: the last look's, not a sum of re-parks of the same rows
        total.parked = run.parked
        total.parked_counted = run.parked_counted
    total.outages.update(run.outages)
    total.events += run.events
    total.elapsed += run.elapsed
    total.dead_keys.extend(run.dead_keys[: max(0, DEAD_KEYS_KEPT - len(total.dead_keys))])  # bounded


def fold_replay(total: RunSummary, replays: RunSummary, replay: RunSummary) -> None:
    """Add a finished ``replay``'s counts to ``replays``; the connections it found down are the service's
    outages all the same (``as_at_stop`` says at stop which of them are still down)."""
    fold(replays, replay)
    total.outages.update(replay.outages)


def combined(total: RunSummary, live: RunSummary | None) -> RunSummary:
    """``total`` with the run in progress added (a new summary; neither argument changes)."""
    out = RunSummary(replay=total.replay)
    fold(out, total)
    if live is not None:
        fold(out, live)
    return out


def owed_at_stop(journal: str | os.PathLike[str] | None, inbox: InboxStore) -> str | None:
    """What is still owed when the service stops, read from the journal and the inbox (None: nothing): the
    deliveries ``pending`` in the journal (a drain deadline cut them off, or an outage parked them) and the
    webhooks not yet handed to delivery. The summary's counts are the service's life; this is the state now.
    Each is read apart: one that cannot be read (the journal's database is what stopped the service) is said
    to be unread, never counted as nothing, and the other is still counted."""
    parts, unread, owed = [], [], 0
    try:
        # Not waited for (no reconnect_deadline): the stop report says what it cannot read, and a database
        # away would hold the stop up to the deadline.
        found = open_readonly(journal)
        if found is not None:
            with found:
                pending = found.counts().get("pending", 0)
            if pending:
                owed += pending
                parts.append(f"{counted(pending, 'delivery')} pending in the journal")
    except Exception as error:  # a line of the stop report: its failure is said, not raised
        unread.append(f"the journal's pending deliveries ({why(error)})")
    try:
        waiting = inbox.depth(cap=None)  # exact: what is owed is never a guess (counted once, at stop)
        if waiting:
            owed += waiting
            parts.append(f"{counted(waiting, 'webhook')} waiting in the inbox")
    except Exception as error:
        unread.append(f"the inbox's waiting webhooks ({why(error)})")
    if not parts and not unread:
        return None
    shared = journal is not None and is_database_url(journal)
    after = "the next start, or another serve process on this journal," if shared else "the next start"
    if not unread:
        them = "it" if owed == 1 else "them"
        return f"owed at stop: {' and '.join(parts)}; {after} sends {them}, nothing acknowledged is lost"
    said = "".join(f"{part}; " for part in parts) + f"cannot read {' nor '.join(unread)}"
    return f"owed at stop: {said}; {after} sends what is owed, nothing acknowledged is lost"


def why(error: BaseException) -> str:
    """An error as a clause of one line: its type and its own message (a ShipmapError's, without "error: ")."""
    message = error.message if isinstance(error, ShipmapError) else str(error)
    return f"{type(error).__name__}: {message}"


def as_at_stop(
    summary: RunSummary,
    runtime: Runtime,
    breakers: Mapping[str, tuple[BreakerState, float]],
    log: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    """What ``summary`` (the service's life) says is owed, made true at stop: an outage whose breaker has
    closed since is over; a breaker open at stop is an outage, whether or not a delivery was parked past
    ``outage_wait`` (a drain deadline cuts the wait short), a destination's or a source API's; and the dead
    letters are those the journal holds now (one count), since a replay, this service's or another
    process's, may have resolved some. ``breakers``: each connection's record, delivery's or enrichment's,
    with now on the clock of its times (``_readiness.breaker_records``)."""
    summary.outages_ended = [
        name for name in summary.outages if name not in breakers or breakers[name][0].phase == "closed"
    ]
    for name in summary.outages_ended:
        del summary.outages[name]
    for name, (record, now) in breakers.items():
        if record.phase != "closed" and name not in summary.outages:
            summary.outages[name] = (
                f"unavailable for {max(0.0, now - record.opened_at):.0f} s (circuit breaker {record.phase}:"
                f" {record.reason}); what waits for it stays owed for the next start"
            )
    # On a shared journal, what this process left pending itself: the journal's count of the rest is every
    # process's (``owed_at_stop`` says it once), and a sum of the processes' summaries would count it N times.
    summary.parked = summary.parked_here(shared=runtime.config.journal.url is not None)
    summary.parked_counted = 0
    if runtime.config.journal.location is None:  # a journal in memory, gone with its runs
        return
    try:  # not waited for, as owed_at_stop's reads: the report says what it cannot read
        summary.dead_now = runtime.dead_letter_count()
    except JournalError as error:  # the summary then says what the service dead-lettered, as a run's does
        log.warning("cannot count the journal's dead letters at stop: %s", error.message)
