"""The service's Prometheus metrics, in a registry of its own (no process-wide state).

Request counters and the acknowledgement histogram are updated as requests are answered; the delivery,
queue and breaker figures are read from the runtime and the inbox when ``/metrics`` is scraped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from .._runtime import LatencyHistogram, RunSummary
from .._summary import TargetKey, TargetSummary
from ._inbox import DEPTH_CAP
from ._inbox_gauges import INBOX_READ_DEADLINE_S

ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
DELIVERY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BREAKER_STATES = ("closed", "half_open", "open")


class ServiceMetrics:
    def __init__(
        self,
        *,
        summary: Callable[[], RunSummary | None],
        queue: Callable[[], tuple[int, float | None] | None],
        breakers: Callable[[], Mapping[str, str]],
        in_flight: Callable[[], int],
        stalled: Callable[[], bool],
        processes: Callable[[], int] = lambda: 1,
        enrichment: Callable[[], Mapping[str, Mapping[str, int]]] = lambda: {},
        parked: Callable[[], tuple[int, int]] = lambda: (0, 0),
        replays: Callable[[], RunSummary | None] = lambda: None,
        queue_stale: Callable[[], bool] = lambda: False,
        intake_waiting: Callable[[], int] = lambda: 0,
        targets: Callable[[], Iterable[TargetKey]] = lambda: (),
    ) -> None:
        """``summary``: the service's deliveries (its runs); ``replays``: what the replays it carried out did;
        ``targets``: those exported at 0 before anything happens to them (``_totals.exported_targets``);
        ``queue``: the inbox's depth and oldest webhook at its last reading (None before any), and
        ``queue_stale``: whether that reading is older than this scrape (the inbox did not answer in time);
        ``intake_waiting``: the webhooks waiting for their commit now."""
        self.registry = CollectorRegistry(auto_describe=True)
        self.received = Counter(
            "shipmap_webhooks_received", "Webhook requests received", ["source"], registry=self.registry
        )
        self.accepted = Counter(
            "shipmap_webhooks_accepted",
            "Webhooks committed to the inbox and acknowledged",
            ["source"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "shipmap_webhooks_duplicate",
            "Webhooks acknowledged as repeats of an accepted webhook id (not stored again)",
            ["source"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "shipmap_webhooks_rejected",
            "Webhook requests refused, by reason",
            ["source", "reason"],
            registry=self.registry,
        )
        self.ack_seconds = Histogram(
            "shipmap_webhook_ack_seconds",
            "Time from a request's arrival to its answer",
            ["source"],
            buckets=ACK_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(
            _Live(
                summary,
                queue,
                queue_stale,
                breakers,
                in_flight,
                stalled,
                processes,
                enrichment,
                parked,
                replays,
                intake_waiting,
                targets,
            )
        )

    def reject(self, source: str, reason: str) -> None:
        self.rejected.labels(source, reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Live(Collector):
    """Figures read at scrape time: deliveries per target, queue depth and age, breakers, in flight, stall."""

    def __init__(
        self,
        summary: Callable[[], RunSummary | None],
        queue: Callable[[], tuple[int, float | None] | None],
        queue_stale: Callable[[], bool],
        breakers: Callable[[], Mapping[str, str]],
        in_flight: Callable[[], int],
        stalled: Callable[[], bool],
        processes: Callable[[], int],
        enrichment: Callable[[], Mapping[str, Mapping[str, int]]],
        parked: Callable[[], tuple[int, int]],
        replays: Callable[[], RunSummary | None],
        intake_waiting: Callable[[], int],
        targets: Callable[[], Iterable[TargetKey]],
    ) -> None:
        self._targets = targets
        self._intake_waiting = intake_waiting
        self._parked = parked
        self._replays = replays
        self._processes = processes
        self._enrichment = enrichment
        self._summary = summary
        self._queue = queue
        self._queue_stale = queue_stale
        self._breakers = breakers
        self._in_flight = in_flight
        self._stalled = stalled

    def describe(self) -> list[Any]:
        return []  # dynamic: nothing to check at registration

    def collect(self) -> Iterator[Any]:
        deliveries = CounterMetricFamily(
            "shipmap_deliveries", "Deliveries by target and outcome since start", labels=["target", "outcome"]
        )
        latency = HistogramMetricFamily(
            "shipmap_delivery_seconds",
            "Delivered requests: first attempt to final answer, backoff included",
            labels=["target"],
        )
        # Apart from the deliveries: a replayed dead letter that fails again is not a new dead letter, and an
        # alert on the rate of dead letters must not fire while old ones are replayed (docs/serve.md#operations).
        replays = CounterMetricFamily(
            "shipmap_replays",
            "Dead letters replayed by this service, by target and outcome (dead: failed again, still the same"
            " dead letter)",
            labels=["target", "outcome"],
        )
        summary = self._summary()
        known = tuple(self._targets())
        for stats in _every_target(summary, known):
            _outcomes(deliveries, stats)
            latency.add_metric([stats.label], _buckets(stats.latency), sum_value=stats.latency.total)
        for stats in _every_target(self._replays(), known):
            _outcomes(replays, stats)
        yield deliveries
        yield replays
        yield latency
        forgotten = CounterMetricFamily(
            "shipmap_journal_forgotten",
            "Journal rows forgotten after journal.keep since start, by kind",
            labels=["kind"],
        )
        for kind, count in sorted(summary.forgotten.items()) if summary is not None else ():
            forgotten.add_metric([kind], count)
        yield forgotten
        queue = self._queue()
        if queue is not None:  # none before the inbox first answered
            depth, oldest = queue
            yield GaugeMetricFamily(
                "shipmap_queue_depth",
                f"Accepted webhooks not yet handed to delivery (exact up to {DEPTH_CAP:,};"
                f" {DEPTH_CAP:,} when at least that many wait)",
                value=depth,
            )
            yield GaugeMetricFamily(
                "shipmap_queue_oldest_age_seconds",
                "Age of the oldest webhook waiting in the inbox (0 when none)",
                value=max(0.0, time.time() - oldest) if oldest is not None else 0.0,
            )
        yield GaugeMetricFamily(
            "shipmap_queue_stale",
            f"1 when the inbox did not answer this scrape within {INBOX_READ_DEADLINE_S:g} s (or failed):"
            " shipmap_queue_depth and shipmap_queue_oldest_age_seconds are from its last answer",
            value=1.0 if self._queue_stale() else 0.0,
        )
        yield GaugeMetricFamily(
            "shipmap_intake_waiting",
            "Webhook requests waiting for the inbox to commit them now (at most serve.intake_max_waiting)",
            value=self._intake_waiting(),
        )
        yield GaugeMetricFamily(
            "shipmap_deliveries_in_flight", "Requests being sent now", value=self._in_flight()
        )
        yield GaugeMetricFamily(
            "shipmap_delivery_stalled",
            "1 while delivery waits to run again after a run whose sends kept raising inside shipmap",
            value=1.0 if self._stalled() else 0.0,
        )
        here, in_journal = self._parked()
        yield GaugeMetricFamily(
            "shipmap_parked_deliveries",
            "Deliveries this process left pending for an open circuit breaker (on a shared journal, those it"
            " read; sums across processes)",
            value=here,
        )
        yield GaugeMetricFamily(
            "shipmap_journal_parked_deliveries",
            "Deliveries pending in the journal for connections whose circuit breaker is open, counted at this"
            " process's last look at parked work: journal-wide, every serve process on a shared journal reports"
            " the same count (take the max, not the sum)",
            value=in_journal,
        )
        yield GaugeMetricFamily(
            "shipmap_serve_processes",
            "Serve processes taking webhooks into this inbox, this one included (each allows 1/N of each"
            " source's rate_limit)",
            value=self._processes(),
        )
        breakers = GaugeMetricFamily(
            "shipmap_breaker_state",
            "Circuit breaker state per connection (1 for the current state)",
            labels=["connection", "state"],
        )
        for connection, state in sorted(self._breakers().items()):
            for candidate in BREAKER_STATES:
                breakers.add_metric([connection, candidate], 1.0 if state == candidate else 0.0)
        yield breakers
        enrichment = self._enrichment()
        fetching = GaugeMetricFamily(
            "shipmap_enrich_fetching",
            "Webhooks whose documents are being fetched from their source's API now",
            labels=["source"],
        )
        for source, count in sorted(enrichment.get("fetching", {}).items()):
            fetching.add_metric([source], count)
        yield fetching
        waiting = GaugeMetricFamily(
            "shipmap_enrich_waiting_for_rate",
            "Enrichment GETs waiting for their connection's max_rate, or for a Retry-After the API gave",
            labels=["connection"],
        )
        for connection, count in sorted(enrichment.get("waiting_for_rate", {}).items()):
            waiting.add_metric([connection], count)
        yield waiting


def _every_target(summary: RunSummary | None, known: Iterable[TargetKey]) -> list[TargetSummary]:
    """``summary``'s targets, and each of ``known`` that nothing happened to yet (all 0), by label."""
    # list(): the delivery thread may add a target meanwhile; copying the view is one step under the GIL.
    found = {stats.label: stats for stats in list(summary.targets.values())} if summary is not None else {}
    for key in known:
        empty = TargetSummary(key.mapping, key.target)
        found.setdefault(empty.label, empty)
    return [found[label] for label in sorted(found)]


def _outcomes(family: CounterMetricFamily, stats: TargetSummary) -> None:
    for outcome, value in (
        ("delivered", stats.delivered),
        ("dead", stats.dead),
        ("skipped", stats.skipped),
        ("retried", stats.retried),
    ):
        family.add_metric([stats.label, outcome], value)


def _buckets(histogram: LatencyHistogram) -> list[tuple[str, float]]:
    """The runtime's 2%-wide log buckets folded into cumulative Prometheus buckets."""
    counts = [0] * (len(DELIVERY_BUCKETS) + 1)
    for upper, count in histogram.buckets():
        slot = next((i for i, bound in enumerate(DELIVERY_BUCKETS) if upper <= bound), len(DELIVERY_BUCKETS))
        counts[slot] += count
    out: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip(DELIVERY_BUCKETS, counts, strict=False):
        running += count
        out.append((repr(bound), float(running)))
    out.append(("+Inf", float(running + counts[-1])))
    return out
