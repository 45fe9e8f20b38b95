"""The store stage as a run sees it: the outbox of owed deliveries, written ahead of every send.

:class:`Outbox` writes a run's deliveries to the journal (leases are ``_leases``'s). Events are settled in
batches: one transaction journals a batch's sources, dead letters and ``pending`` rows (write-ahead: before
any of its requests goes out), then its jobs go to the delivery workers. Delivered marks are committed in batches too
(every ``_FLUSH_MARKS`` or ``_FLUSH_SECONDS``); until its mark is committed a key stays in ``scheduled``, so a
repeat of its event in the input is still skipped. A crash before the commit leaves the row ``pending``: the
next run re-sends it (at-least-once), exactly as recorded (:meth:`Outbox.recover`).
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from shipmap.engine import SourceDocument

from .._config import Connection
from .._deliver._request import OutboundRequest, Outcome, encode_payload
from .._map._mapper import EventMapper
from .._map._steps import (
    MAPPING_STAGE,
    Dead,
    Event,
    Item,
    Job,
    Resolve,
    RouteStart,
    Skip,
    SourceMarker,
    Unrouted,
    event_fields,
    request_headers,
)
from .._redact import DELIVERIES_LOGGER, RedactingLogger
from .._summary import RunSummary
from ._claims import claim_pending, pending_counts
from ._entries import JournalEntry, by_last_write
from ._journal import CLOSED, Journal, PendingRow, State

_FLUSH_MARKS = 16  # delivered marks committed together, at the latest ...
_FLUSH_SECONDS = 0.05  # ... this long after the oldest of them
_RECOVER_PAGE = 1000  # pending rows read at a time when a run starts


class Outbox:
    """One run's writes to the journal, and the counters of what they settled."""

    def __init__(
        self,
        journal: Journal,
        mapper: EventMapper,
        connections: Mapping[str, Connection],
        summary: RunSummary,
        log: RedactingLogger,
        waits: dict[str, tuple[float, str]] | None = None,
    ) -> None:
        """``waits``: the deliveries whose wait a run's end or a stop cut short, by key: when it ends
        (monotonic) and the failure they retry, which the Deliverer waits out first (``Carryover.resume``).
        This process knows its own; recovery adds those a row's ``not_before`` still holds (``recover``)."""
        self.journal = journal
        self.mapper = mapper
        self.connections = connections
        self.summary = summary
        self.log = log
        # One line per delivery sent or re-sent: a logger of its own, which a command line quiets by default
        # (a service delivering around the clock would otherwise write a line per event to its journal).
        self.deliveries = log.sibling(DELIVERIES_LOGGER)
        # Keys queued, being sent, or delivered but not yet committed so: a repeat is a duplicate.
        self.scheduled: set[str] = set()
        self._marks: list[tuple[str, int, int]] = []  # (key, status, attempts) delivered, not committed
        self._marks_since = 0.0
        # Records rejected by earlier runs (a line cut off while it was being written): resolved once they read.
        self._rejected_origins = journal.rejected_origins()
        self._down: dict[str, str] = {}  # connections whose rows recovery mostly parks (``park_down``)
        self._waits = waits if waits is not None else {}
        self._probes = 0

    def park_down(self, down: Mapping[str, str], probes: int) -> None:
        """Before ``recover``: connections whose circuit breaker is open, each with how it is down (as
        ``RunSummary.outages`` words it). Recovery reads the ``probes`` oldest of each one's pending deliveries,
        which wait for its breaker (one of them is its next probe), and counts the others parked without
        reading them: ``shipmap serve`` looks at parked work again and again during an outage, and a look that
        read, claimed and parked again every row the outage had parked (150,000 in an hour at 40 webhooks a
        second) sent none of them."""
        self._down = dict(down)
        self._probes = probes

    def recover(self) -> Iterator[Job]:
        """The pending deliveries this run takes over, as recorded: on a shared journal those one claim finds
        (the lease keeper claims again as it goes), on an exclusive one all of them, a page at a time as the
        queue takes them, in the order they were last written. Of a connection parked (``park_down``), a
        few are read and the rest counted, once a run. A row another worker, or this process before a restart,
        left with a ``not_before`` still ahead joins ``waits``, so its rest is waited out; a replay's run leaves
        the deliveries still waiting pending, unsent, to the service's next run."""
        if not self._down:
            self.summary.parked_known = True  # nothing parked: no connection is down
            yield from self._recovered(self._pages() if not self.journal.shared else self._claim())
            return
        counts = pending_counts(self.journal)
        # Its probes are read by the run's first call; the lease keeper's later ones take the others' rows only.
        if self._probes:
            probes, self._probes = self._probes, 0
            for name in sorted(self._down.keys() & counts.keys()):
                entries = claim_pending(self.journal, limit=probes, connections=[name])
                yield from self._recovered(entries)
                unread = counts[name] - len(entries)
                if unread > 0 and self.summary.park(name, self._down[name], unread, counted=True):
                    self.log.warning("connection %s %s", name, self._down[name])
        self.summary.parked_known = True
        others = [name for name in counts if name not in self._down]
        if not others:
            return
        if self.journal.shared:
            yield from self._recovered(self._claim(others))
            return
        # Each connection's pages walk its part of the index; merged, they keep the journal's order.
        pages = [self._pages([name]) for name in others]
        yield from self._recovered(heapq.merge(*pages, key=by_last_write))

    def _claim(self, connections: list[str | None] | None = None) -> list[JournalEntry]:
        return claim_pending(self.journal, limit=_RECOVER_PAGE, connections=connections)

    def _pages(self, connections: list[str | None] | None = None) -> Iterator[JournalEntry]:
        """An exclusive journal's pending rows (of ``connections``), a page at a time."""
        after: tuple[float, str] | None = None
        while True:
            entries = claim_pending(self.journal, limit=_RECOVER_PAGE, after=after, connections=connections)
            yield from entries
            if len(entries) < _RECOVER_PAGE:
                return
            after = (entries[-1].updated_at, entries[-1].key)

    def _recovered(self, entries: Iterable[JournalEntry]) -> Iterator[Job]:
        for entry in entries:
            if entry.key in self.scheduled:  # a look at held-back deliveries queued it meanwhile
                continue
            if entry.not_before is not None and entry.key not in self._waits:
                left = entry.not_before - time.time()
                if left > 0:  # the rest of a wait the journal kept (``add_attempts``)
                    self._waits[entry.key] = (time.monotonic() + left, entry.reason or "")
            if self.summary.replay and entry.key in self._waits:
                continue
            job = self._job_of(entry)
            if job is None:
                continue
            self.summary.recovered += 1
            self.scheduled.add(entry.key)
            self.deliveries.info("re-sending %s left pending by an interrupted run", job.request.label)
            yield job

    def held_back(
        self, connection: str, after: tuple[float, str] | None
    ) -> tuple[list[Job], tuple[float, str] | None]:
        """A page of ``connection``'s pending deliveries that are not queued, in flight or delivered unmarked
        (not ``scheduled``): those a run held back while its breaker was open, to send now that it has closed;
        and the cursor of the next page (None: this was the last). Each is ``scheduled`` at once, so a repeat
        of its event in the input meanwhile is skipped, not sent beside it."""
        entries = claim_pending(
            self.journal, limit=_RECOVER_PAGE, after=after, connections=[connection], held_here=True
        )
        jobs = []
        for entry in entries:
            if entry.key in self.scheduled:
                continue
            job = self._job_of(entry)
            if job is not None:
                self.scheduled.add(entry.key)
                jobs.append(job)
        following = (entries[-1].updated_at, entries[-1].key) if len(entries) == _RECOVER_PAGE else None
        return jobs, following

    def count_pending(self, connection: str) -> int:
        """How many of ``connection``'s deliveries are pending in the journal for this run (or this worker)."""
        return pending_counts(self.journal, [connection], held_here=True).get(connection, 0)

    def _job_of(self, entry: JournalEntry) -> Job | None:
        """The job that sends a pending row as it was recorded; None (and a dead letter) when its connection
        is not in the config any more."""
        connection = self.connections.get(entry.connection or "")
        if connection is None or entry.method is None or entry.url is None:
            self.dead(
                Dead(
                    entry.key,
                    entry.mapping,
                    entry.target,
                    entry.source_hash,
                    entry.origin,
                    "recovery: its connection is not in the config any more",
                )
            )
            return None
        headers = request_headers(connection, entry.idempotency_key)
        text = encode_payload(entry.payload)  # the very text that was journaled and sent
        request = OutboundRequest(
            connection.name,
            entry.method,
            entry.url,
            entry.payload,
            headers,
            label=f"{entry.mapping}.{entry.target} {entry.key[:12]}",
            key=entry.key,
            content=text.encode("utf-8"),
            tried=entry.attempts,  # a pending row's: those of a run that ended while it waited to retry, or parked
        )
        return Job(entry.key, entry.mapping, entry.target, entry.source_hash, entry.origin,
                   entry.idempotency_key, request, text)  # fmt: skip

    def settle(self, batch: list[Item], *, decide: bool) -> list[Job]:
        """Journal a batch in one transaction; return the jobs to send, each already ``pending``.

        With ``decide``, each delivery is checked against the journal as it is now (and against what this
        run has scheduled): already delivered or dead is a skip, a mapping stage dead earlier skips that
        entry's whole event, and a row that recorded an idempotency key keeps it."""
        journal = self.journal
        jobs: list[Job] = []
        pending: list[PendingRow] = []

        def settle() -> set[str]:  # one transaction; run again whole if it loses a lock conflict
            jobs.clear()
            pending.clear()
            self.flush_marks()  # the same commit; and the lookup below sees them delivered
            states: dict[str, tuple[State, str | None]] = {}
            if decide:
                keys = [
                    step.stage_key if isinstance(step, RouteStart) else step.key
                    for item in batch
                    if isinstance(item, Event)
                    for step in item.steps
                    if isinstance(step, RouteStart | Job | Dead)
                ]
                states = journal.lookup(keys)
            journal.put_sources(
                [(item.digest, item.canonical) for item in batch if isinstance(item, Event)]
                + [
                    (step.digest, step.canonical)
                    for item in batch
                    if isinstance(item, Event)
                    for step in item.steps
                    if isinstance(step, SourceMarker)
                ]
            )
            if self._rejected_origins:
                self._resolve_rejections(batch)
            for item in batch:
                if isinstance(item, SourceDocument):
                    self.summary.rejected += 1
                    journal.record_rejected(item.origin, item.error or "unreadable", item.excerpt)
                    self.log.warning("%s: rejected input record: %s", item.origin, item.error)
                    continue
                skipping = False  # the current entry's mapping stage is a dead letter from an earlier run
                for step in item.steps:
                    if isinstance(step, RouteStart):
                        stage = states.get(step.stage_key, ("", None))[0]
                        skipping = decide and (stage == "dead" or stage in CLOSED)
                        if skipping:
                            self._skip(Skip(step.stage_key, step.mapping, MAPPING_STAGE, stage))
                        continue
                    if isinstance(step, SourceMarker):
                        continue
                    if isinstance(step, Unrouted):
                        self.summary.unrouted += 1
                        journal.record_unrouted(step.source_digest, step.origin)
                        self.log.warning("%s: unrouted: %s", step.origin, step.reason)
                        continue
                    if skipping:
                        continue
                    if decide and isinstance(step, Job | Dead):
                        state, recorded = states.get(step.key, (None, None))
                        if state == "dead" or state in CLOSED:
                            step = Skip(step.key, step.mapping, step.target, state)
                        elif isinstance(step, Job) and recorded and recorded != step.idempotency_key:
                            step = self.mapper.rebuild(step, recorded)
                    if isinstance(step, Skip) or (isinstance(step, Job) and step.key in self.scheduled):
                        self._skip(step)
                    elif isinstance(step, Dead):
                        self.dead(step)
                        states[step.key] = ("dead", None)
                    elif isinstance(step, Resolve):
                        journal.mark_resolved(step.key, step.reason)
                    else:
                        self.scheduled.add(step.key)
                        request = step.request
                        pending.append((step.key, step.source_digest, step.mapping, step.target,
                                        request.connection, step.idempotency_key, request.method,
                                        request.url, step.text, step.origin))  # fmt: skip
                        jobs.append(step)
            return journal.mark_pending_many(pending)

        held = journal.run_transaction(settle, undo=self._undoer() if journal.shared else None)
        if len(held) < len(jobs):  # a shared journal: another worker holds these, or delivered them
            for job in jobs:
                if job.key not in held:
                    self.scheduled.discard(job.key)
                    self._skip(job)
            jobs = [job for job in jobs if job.key in held]
        return jobs

    def _undoer(self) -> Callable[[], None]:
        """What settling a batch changes outside the journal, put back as it is now: its transaction may run
        again (a shared journal)."""
        summary, scheduled, marks = self.summary, set(self.scheduled), self._marks
        rejected = set(self._rejected_origins)
        counts = (summary.rejected, summary.unrouted, len(summary.dead_keys))
        targets = {label: (t.skipped, t.skipped_dead, t.dead) for label, t in summary.targets.items()}

        def undo() -> None:
            summary.rejected, summary.unrouted = counts[0], counts[1]
            del summary.dead_keys[counts[2] :]
            for label in list(summary.targets):
                if label in targets:
                    stats = summary.targets[label]
                    stats.skipped, stats.skipped_dead, stats.dead = targets[label]
                else:
                    del summary.targets[label]
            self.scheduled.clear()
            self.scheduled.update(scheduled)
            self._marks = marks  # the delivered marks the rolled-back transaction had taken
            self._rejected_origins = set(rejected)

        return undo

    def _resolve_rejections(self, batch: list[Item]) -> None:
        resolved = set()
        for item in batch:
            if isinstance(item, Event) and item.record.origin is not None:
                origin = (
                    item.record.origin.rsplit("[", 1)[0]
                    if item.record.origin.endswith("]")
                    else item.record.origin
                )
                if origin in self._rejected_origins:
                    resolved.add(origin)
        if resolved:
            self.journal.resolve_rejections(resolved)
            self._rejected_origins -= resolved
            for origin in sorted(resolved):
                self.log.info("%s: rejected by an earlier run, now reads: rejection resolved", origin)

    def _skip(self, step: Skip | Job) -> None:
        stats = self.summary.target(step.mapping, step.target)
        stats.skipped += 1
        if isinstance(step, Skip) and step.state == "dead":
            stats.skipped_dead += 1

    def dead(self, step: Dead, outcome: Outcome | None = None) -> None:
        recorded = self.journal.mark_dead(
            step.key,
            source_digest=step.source_digest,
            mapping=step.mapping,
            target=step.target,
            reason=step.reason,
            status=outcome.status if outcome else None,
            response_excerpt=outcome.response_excerpt if outcome else None,
            attempts=outcome.attempts if outcome else 0,
            origin=step.origin,
        )
        if not recorded:  # a shared journal: this worker's lease was taken over; the other worker decides
            self.log.warning("%s.%s %s: lease lost while sending; its outcome is left to the worker that "
                             "took it over", step.mapping, step.target, step.key[:12])  # fmt: skip
            return
        stats = self.summary.target(step.mapping, step.target)
        stats.dead += 1
        self.summary.add_dead_key(step.key)
        where = f"{step.origin}: " if step.origin else ""
        self.log.warning("%sdead letter %s.%s %s: %s", where, step.mapping, step.target or "(mapping)",
                         step.key[:12], step.reason, extra=event_fields(step.key, step.mapping, step.target,
                         outcome.attempts if outcome else 0))  # fmt: skip

    def flush_marks(self) -> None:
        """Commit the delivered marks waiting, in one transaction; then their keys leave ``scheduled``."""
        marks, self._marks = self._marks, []
        if not marks:
            return
        marked = self.journal.mark_delivered_many(marks)
        if marked < len(marks):
            self.log.warning("%d answer(s) came after this worker's lease was taken over; the journal keeps "
                             "what the worker that took them over records", len(marks) - marked)  # fmt: skip
        for key, _, _ in marks:
            self.scheduled.discard(key)

    async def flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(_FLUSH_SECONDS)
            if self._marks and time.monotonic() - self._marks_since >= _FLUSH_SECONDS:
                self.flush_marks()

    def delivered(self, key: str, status: int, attempts: int) -> None:
        """Mark a delivery delivered; the mark is committed with the next batch of them."""
        if not self._marks:
            self._marks_since = time.monotonic()
        self._marks.append((key, status, attempts))
        if len(self._marks) >= _FLUSH_MARKS:
            self.flush_marks()

    def interrupted(self, key: str, outcome: Outcome) -> None:
        """A delivery the run's end (or a stop) interrupted while it waited to retry: its row stays pending,
        with the attempts that counted towards max_attempts added and when its wait ends, so the next run, on
        this worker or another, goes on with its budget and waits out the rest (``recover``)."""
        self.keep_attempts(key, outcome)
        self.release(key)

    def keep_attempts(self, key: str, outcome: Outcome) -> None:
        """Add the attempts of a delivery left pending that counted towards max_attempts to its row (an
        interrupted one's, or a parked one's made before its breaker opened), so that the next run goes on with
        its budget."""
        self.journal.add_attempts(key, outcome.counted, not_before=outcome.not_before, failed=outcome.failed)

    def release(self, key: str) -> None:
        """A delivery this run no longer holds (parked, or its lease lost): a repeat of its event may send it."""
        self.scheduled.discard(key)
