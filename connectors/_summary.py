"""What a run reports: counters per target, latency percentiles, and the progress snapshots of a live run.

A :class:`RunSummary` is filled by the store (what was settled, skipped or dead-lettered) and by the delivery
workers (attempts, latencies); ``shipmap run`` prints it, ``shipmap serve`` exports it on /metrics.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from ._plural import counted


class LatencyHistogram:
    """Latencies in log-spaced buckets (2% wide): percentiles within 2%, memory flat however many samples."""

    _RATIO = math.log(1.02)

    def __init__(self) -> None:
        self._buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0.0  # the samples' sum in seconds: Prometheus' ``_sum``, for a mean over a window

    def add(self, seconds: float) -> None:
        index = math.floor(math.log(max(seconds, 1e-6)) / self._RATIO)
        self._buckets[index] = self._buckets.get(index, 0) + 1
        self.count += 1
        self.total += seconds

    def merge(self, other: LatencyHistogram) -> None:
        """Add ``other``'s samples to this one (the same bucket layout on both sides)."""
        for index, count in list(other._buckets.items()):  # a copy: another thread may be adding samples
            self._buckets[index] = self._buckets.get(index, 0) + count
        self.count += other.count
        self.total += other.total

    def percentile(self, p: float) -> float | None:
        """The p-th percentile in seconds (upper bound of its bucket), or None without samples."""
        if not self.count:
            return None
        rank = max(1, math.ceil(p / 100 * self.count))
        seen = 0
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen >= rank:
                return math.exp((index + 1) * self._RATIO)
        return None  # pragma: no cover - rank <= count

    def buckets(self) -> Iterator[tuple[float, int]]:
        """(upper bound in seconds, count) of every non-empty bucket, in no particular order."""
        for index, count in list(self._buckets.items()):  # a copy: another thread may be adding samples
            yield math.exp((index + 1) * self._RATIO), count


class TargetKey(NamedTuple):
    """A key of ``RunSummary.targets``: a mapping's name and one of its targets' names (``""`` for what
    happened to the mapping as a whole). A tuple: ``summary.targets[("shopify-order", "order")]`` works too."""

    mapping: str
    target: str


@dataclass
class TargetSummary:
    """What happened to one target of one mapping during a run."""

    mapping: str
    target: str
    delivered: int = 0
    retried: int = 0  # deliveries that needed more than one attempt
    dead: int = 0
    skipped: int = 0  # already delivered (or already dead-lettered) in an earlier run
    skipped_dead: int = 0  # of ``skipped``: dead letters waiting for ``shipmap replay``
    attempts: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram, repr=False)

    @property
    def label(self) -> str:
        return f"{self.mapping}.{self.target}" if self.target else f"{self.mapping} (mapping)"

    def percentiles(self) -> dict[str, float | None]:
        return {f"p{p}": self.latency.percentile(p) for p in (50, 95, 99)}


@dataclass(frozen=True, slots=True)
class Held:
    """Deliveries still pending at the end of a run on a shared journal, held by another live worker."""

    worker: str | None  # its lease owner, host:pid:run (None: nobody holds them yet)
    deliveries: int
    lease_until: float | None  # when its lease ends unless renewed (epoch seconds)


DEAD_KEYS_KEPT = 1000  # the dead letters' keys a summary lists (what `shipmap replay` reports of them)


@dataclass
class RunSummary:
    """The outcome of a run or replay. ``ok`` is false when anything was dead-lettered or rejected.

    A replay's summary says so (``replay``): its ``dead`` are dead letters sent again that failed again, still
    the same dead letters, not new ones; a service counts them apart (``replays``), so that its dead-letter
    count is of events that became dead letters (docs/serve.md#operations).

    ``targets`` holds what happened to each target that something happened to, by :class:`TargetKey`;
    ``get("mapping.target")`` reads one by its label."""

    targets: dict[TargetKey, TargetSummary] = field(default_factory=dict)
    unrouted: int = 0  # events no mapping entry matched
    rejected: int = 0  # input records that were not JSON
    recovered: int = 0  # pending deliveries of an interrupted run, re-sent first
    parked: int = 0  # left pending: their connection's breaker stayed open past outage_wait
    # Of ``parked``, those counted on the journal's index without being read (``shipmap serve``'s look at a
    # connection whose breaker is open): on a shared journal, every worker's, which each of them counts.
    parked_counted: int = 0
    # False from the start of a service's run until its look at parked work has counted them (``Outbox.recover``):
    # until then ``parked`` says nothing yet, and the service's figures keep the last look's, not 0.
    parked_known: bool = True
    # connection -> how it is down, without its name (Outage.detail): "unavailable for 12 s (circuit breaker
    # open: why); left pending for the next run"
    outages: dict[str, str] = field(default_factory=dict)
    # A shared journal: pending deliveries other live workers still held when this run stopped waiting.
    held: list[Held] = field(default_factory=list)
    # Rows the journal let go meanwhile (journal.keep), by kind: deliveries, sources, unrouted, rejected.
    forgotten: dict[str, int] = field(default_factory=dict)
    events: int = 0
    elapsed: float = 0.0
    dead_keys: list[str] = field(default_factory=list, repr=False)  # the first DEAD_KEYS_KEPT dead letters
    # A service's summary at stop (``shipmap serve``; a run's leaves them as they are). Its counts cover its
    # whole life, while a replay or the end of an outage may have settled some of it since; what is owed at
    # stop is read then: the dead letters in the journal, and the connections of ``outages`` whose circuit
    # breaker has closed since (moved out of ``outages``, which keeps those still down).
    dead_now: int | None = None
    outages_ended: list[str] = field(default_factory=list)
    replay: bool = False  # the summary of a replay of dead letters
    # A service's: what the replays it carried out did, folded (their counts are not in ``targets``).
    replays: RunSummary | None = None

    def park(self, connection: str, outage: str, count: int = 1, *, counted: bool = False) -> bool:
        """``count`` deliveries of ``connection`` left pending, its breaker open (``outage``: how it is down,
        as ``outages`` keeps it), ``counted`` on the journal's index rather than read; True when
        ``connection`` is new to ``outages`` (the caller logs it)."""
        self.parked += count
        if counted:
            self.parked_counted += count
        if connection in self.outages:
            return False
        self.outages[connection] = outage
        return True

    def parked_here(self, *, shared: bool) -> int:
        """This worker's part of ``parked``, which adds up across the workers of a journal: on a shared one
        the deliveries it read and left pending (those counted on the index are every worker's), on an
        exclusive one all of them (it is the journal's only worker)."""
        return self.parked - self.parked_counted if shared else self.parked

    def add_dead_key(self, key: str) -> None:
        """Keep a dead letter's key, among the first ``DEAD_KEYS_KEPT`` (``dead`` counts them all): a service's
        run can last for months."""
        if len(self.dead_keys) < DEAD_KEYS_KEPT:
            self.dead_keys.append(key)

    def target(self, mapping: str, target: str) -> TargetSummary:
        """The summary of ``target`` of ``mapping``, added (all zero) when it has none yet."""
        # A plain tuple finds its TargetKey (equal, same hash) at a sixth of the cost of making one: this runs
        # for every delivery.
        found: TargetSummary | None = self.targets.get((mapping, target))  # type: ignore[call-overload]
        if found is None:
            found = self.targets[TargetKey(mapping, target)] = TargetSummary(mapping, target)
        return found

    def get(self, label: str) -> TargetSummary:
        """The summary of ``mapping.target`` (KeyError when nothing happened to it)."""
        mapping, _, target = label.rpartition(".")
        return self.targets[TargetKey(mapping, target)]

    @property
    def delivered(self) -> int:
        return sum(t.delivered for t in self.targets.values())

    @property
    def dead(self) -> int:
        return sum(t.dead for t in self.targets.values())

    @property
    def skipped(self) -> int:
        return sum(t.skipped for t in self.targets.values())

    @property
    def retried(self) -> int:
        return sum(t.retried for t in self.targets.values())

    @property
    def held_elsewhere(self) -> int:
        return sum(h.deliveries for h in self.held)

    @property
    def ok(self) -> bool:
        return self.dead == 0 and self.rejected == 0 and self.parked == 0


def describe_held(held: list[Held]) -> str:
    """``host:4242:1f2e3d4c holds 12 (lease until 10:04:05 UTC), ...``: who to look at, and how long."""
    parts = []
    for entry in held:
        until = (
            f" (lease until {datetime.fromtimestamp(entry.lease_until, UTC):%H:%M:%S} UTC)"
            if entry.lease_until is not None
            else ""
        )
        parts.append(f"{entry.worker or 'nobody yet'} holds {entry.deliveries}{until}")
    return ", ".join(parts)


def target_rows(summary: RunSummary) -> list[dict[str, Any]]:
    """The summary's per-target rows as the JSON summary lists them (docs/cli-formats.md), by label."""
    rows = []
    for stats in sorted(summary.targets.values(), key=lambda s: s.label):
        latency = {
            name: None if value is None else round(value, 6) for name, value in stats.percentiles().items()
        }
        rows.append(
            {
                "mapping": stats.mapping,
                "target": stats.target or None,
                "delivered": stats.delivered,
                "retried": stats.retried,
                "dead": stats.dead,
                "skipped": stats.skipped,
                "skipped_dead": stats.skipped_dead,
                "attempts": stats.attempts,
                "latency_seconds": latency,
            }
        )
    return rows


REPLAY_DETAIL = ("dead_keys", "retried", "unrouted", "recovered", "targets")  # not in a service's stop log


def replay_report(summary: RunSummary) -> dict[str, Any]:
    """A replay's outcome as ``shipmap serve`` hands it back to the ``shipmap replay`` that asked (JSON); its
    ``--format json`` makes the run summary document of it (``targets``: a service older than this field
    sends none)."""
    return {
        "delivered": summary.delivered,
        "dead": summary.dead,
        "skipped": summary.skipped,
        "parked": summary.parked,
        "rejected": summary.rejected,
        "events": summary.events,
        "dead_keys": summary.dead_keys[:100],
        "outages": summary.outages,
        "retried": summary.retried,
        "unrouted": summary.unrouted,
        "recovered": summary.recovered,
        "targets": target_rows(summary),
    }


def replay_outcome(report: Mapping[str, Any]) -> str:
    """``delivered 1, still dead 2, left pending 0, skipped 0``: a replay's ``replay_report``, as ``shipmap
    replay`` prints it and the service logs it. Still dead, not dead: they were dead letters already."""
    return (
        f"delivered {report.get('delivered', 0)}, still dead {report.get('dead', 0)},"
        f" left pending {report.get('parked', 0)}, skipped {report.get('skipped', 0)}"
    )


def summary_hints(summary: RunSummary) -> list[str]:
    """What the text summary says after its table and counts, one line each, in its order: outages, what is left
    pending or held elsewhere, a replay's outcome, and what to do about dead letters and rejections (which
    command shows them, which sends them again). The JSON summary lists the same lines as ``hints``."""
    hints = [f"connection {connection} is down: {reason}" for connection, reason in summary.outages.items()]
    hints.extend(  # a service's, at stop
        f"connection {connection} was down meanwhile; its circuit breaker has closed since"
        for connection in summary.outages_ended
    )
    if summary.parked:
        hints.append(
            f"{counted(summary.parked, 'delivery')} left pending (circuit breaker open past outage_wait):"
            " they are sent first by the next run"
        )
    if summary.held:
        hints.append(
            f"{counted(summary.held_elsewhere, 'delivery')} still pending, held by other live workers: "
            f"{describe_held(summary.held)}; they send them, or a later run takes them over"
        )
    if summary.replay:
        hints.append(f"replayed: {replay_outcome(replay_report(summary))}")
        if summary.dead:
            hints.append(
                f"{counted(summary.dead, 'dead letter')} failed again (still dead, not new ones): see"
                " `shipmap dead-letters`; fix and `shipmap replay` again"
            )
        return hints
    if summary.replays is not None and summary.replays.targets:  # a service's, at stop
        hints.append(f"replayed while serving: {replay_outcome(replay_report(summary.replays))}")
    if summary.dead_now is not None:
        hints.extend(_dead_at_stop(summary))
        return hints
    if summary.dead or summary.rejected:
        hints.append(
            f"{summary.dead} dead-lettered, {summary.rejected} rejected: see `shipmap dead-letters`;"
            " fix and `shipmap replay`"
        )
    if skipped_dead := sum(stats.skipped_dead for stats in summary.targets.values()):
        hints.append(
            f"{counted(skipped_dead, 'dead letter')} of earlier runs skipped, not sent again: see `shipmap"
            " dead-letters`; fix and `shipmap replay`"
        )
    return hints


def _dead_at_stop(summary: RunSummary) -> list[str]:
    """A service's dead letters: how many it made while serving, and how many the journal holds now (a replay
    may have resolved some since: only those are still to replay)."""
    assert summary.dead_now is not None
    if not (summary.dead or summary.rejected or summary.dead_now):
        return []
    made = f"{summary.dead} dead-lettered" + (f", {summary.rejected} rejected" if summary.rejected else "")
    if summary.dead_now:
        now = f"{counted(summary.dead_now, 'dead letter')} in the journal now: see `shipmap dead-letters`; fix and"
        now += " `shipmap replay`"
    elif summary.rejected:
        now = "no dead letters in the journal now; the rejected input records: see `shipmap dead-letters`"
    else:
        now = "no dead letters in the journal now (replayed meanwhile)"
    return [f"{made} while serving; {now}"]


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot passed to the progress callback after each event or delivery settles."""

    events: int
    delivered: int
    dead: int
    skipped: int
    unrouted: int
    rejected: int
    in_flight: int
    elapsed: float
    total: int | None = None
