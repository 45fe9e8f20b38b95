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
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from operator import methodcaller
from typing import Any

from shipmap.engine import SourceDocument

from .._config import Connection
from .._deliver._delivery import OutboundRequest, Outcome, encode_payload
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
from .._redact import RedactingLogger
from .._summary import RunSummary
from ._journal import Journal, PendingRow, State
from ._writer import JournalWriter

_Write = Callable[[Callable[[Journal], object]], object]  # takes a journal write: runs it now, or keeps it
_FLUSH_MARKS = 16  # delivered marks committed together, at the latest ...
_FLUSH_SECONDS = 0.05  # ... this long after the oldest of them


class Outbox:
    """One run's writes to the journal, and the counters of what they settled."""

    def __init__(
        self,
        journal: Journal,
        mapper: EventMapper,
        connections: Mapping[str, Connection],
        summary: RunSummary,
        log: RedactingLogger,
    ) -> None:
        self.journal = journal
        self.mapper = mapper
        self.connections = connections
        self.summary = summary
        self.log = log
        # Keys queued, being sent, or delivered but not yet committed so: a repeat is a duplicate.
        self.scheduled: set[str] = set()
        self._marks: list[tuple[str, int, int]] = []  # (key, status, attempts) delivered, not committed
        self._marks_since = 0.0
        # An SQLite journal's writer thread (``start_writer``): the units handed to it, oldest first, each
        # with the marks and the dead letters' keys it commits; keys of dead letters not committed yet.
        self.writer: JournalWriter | None = None
        self._units: deque[tuple[Future[Any], list[tuple[str, int, int]], list[str]]] = deque()
        self._marking = 0  # delivered marks handed to the writer, not committed yet
        self._dying: set[str] = set()
        self._reading: Future[Any] | None = None  # the lookup of the batch being settled
        # Records rejected by earlier runs (a line cut off while it was being written): resolved once they read.
        self._rejected_origins = journal.rejected_origins()

    def start_writer(self) -> None:
        """Run the journal's writes on a writer thread from now on (an SQLite journal; see ``_writer``)."""
        if not self.journal.shared and self.writer is None:
            self.writer = JournalWriter(self.journal)

    def stop_writer(self) -> None:
        """Let the writer finish what it holds and stop; the journal is the loop's again."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def recover(self) -> Iterator[Job]:
        for entry in self.journal.claim_pending():
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
                continue
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
            )
            self.summary.recovered += 1
            self.scheduled.add(entry.key)
            self.log.info("re-sending %s left pending by an interrupted run", request.label)
            yield Job(entry.key, entry.mapping, entry.target, entry.source_hash, entry.origin,
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
            states = journal.lookup(_keys(batch)) if decide else {}
            self._decide(batch, decide, states, jobs, pending, lambda write: write(journal))
            return journal.mark_pending_many(pending)

        held = journal.run_transaction(settle, undo=self._undoer() if journal.shared else None)
        if len(held) < len(jobs):  # a shared journal: another worker holds these, or delivered them
            for job in jobs:
                if job.key not in held:
                    self.scheduled.discard(job.key)
                    self._skip(job)
            jobs = [job for job in jobs if job.key in held]
        return jobs

    async def settle_async(self, batch: list[Item], *, decide: bool) -> list[Job]:
        """``settle``, with the journal's work on the writer thread (an SQLite journal): the loop awaits the
        lookup, decides, then awaits the commit of the batch's ``pending`` rows (with the delivered marks
        waiting), and goes on sending meanwhile."""
        writer = self.writer
        if writer is None:
            return self.settle(batch, decide=decide)
        journal = self.journal
        keys = _keys(batch) if decide else []
        if writer.idle():  # the connection is the loop's while the writer holds nothing: read it here
            self._settle_units()
            states = journal.lookup(keys) if keys else {}
        else:
            states = await self._lookup_behind(writer, keys)
        jobs: list[Job] = []
        pending: list[PendingRow] = []
        writes: list[Callable[[Journal], object]] = []
        self._decide(batch, decide, states, jobs, pending, writes.append)
        marks, self._marks = self._marks, []

        def commit() -> None:
            def body() -> None:
                for write in writes:
                    write(journal)
                journal.mark_pending_many(pending)  # an SQLite journal: this worker holds every row
                if marks:
                    journal.mark_delivered_many(marks)

            journal.run_transaction(body)

        self._units.append((writer.submit(commit, checkpoint=False), marks, []))
        self._marking += len(marks)
        await asyncio.wrap_future(self._units[-1][0])
        return jobs

    async def _lookup_behind(
        self, writer: JournalWriter, keys: list[str]
    ) -> dict[str, tuple[State, str | None]]:
        """The journal's states of ``keys``, read on the writer thread after the units it holds."""
        journal = self.journal
        lookup = writer.submit(lambda: journal.lookup(keys) if keys else {}, checkpoint=False)
        self._units.append((lookup, [], []))
        # What finished before the lookup is in what it read; what finishes after it waits until the batch
        # is decided: a delivery whose mark commits after the lookup read it pending stays scheduled.
        self._reading = lookup
        try:
            states = await asyncio.wrap_future(lookup)
            self._settle_units()
        finally:
            self._reading = None
        return states

    def _decide(
        self,
        batch: list[Item],
        decide: bool,
        states: dict[str, tuple[State, str | None]],
        jobs: list[Job],
        pending: list[PendingRow],
        write: _Write,
    ) -> None:
        """Settle each item of ``batch`` against ``states``: the journal writes go to ``write`` (run now, in
        the transaction, or later on the writer thread), the jobs to send to ``jobs`` and ``pending``."""
        sources = [(item.digest, item.canonical) for item in batch if isinstance(item, Event)] + [
            (step.digest, step.canonical)
            for item in batch
            if isinstance(item, Event)
            for step in item.steps
            if isinstance(step, SourceMarker)
        ]
        write(methodcaller("put_sources", sources))
        if self._rejected_origins:
            self._resolve_rejections(batch, write)
        for item in batch:
            if isinstance(item, SourceDocument):
                self.summary.rejected += 1
                write(methodcaller("record_rejected", item.origin, item.error or "unreadable", item.excerpt))
                self.log.warning("%s: rejected input record: %s", item.origin, item.error)
                continue
            skipping = False  # the current entry's mapping stage is a dead letter from an earlier run
            for step in item.steps:
                if isinstance(step, RouteStart):
                    skipping = decide and states.get(step.stage_key, ("", None))[0] == "dead"
                    if skipping:
                        self._skip(Skip(step.stage_key, step.mapping, MAPPING_STAGE, "dead"))
                    continue
                if isinstance(step, SourceMarker):
                    continue
                if isinstance(step, Unrouted):
                    self.summary.unrouted += 1
                    write(methodcaller("record_unrouted", step.source_digest, step.origin))
                    self.log.warning("%s: unrouted: no mappings entry matches this event", step.origin)
                    continue
                if skipping:
                    continue
                if decide and isinstance(step, Job | Dead):
                    state, recorded = states.get(step.key, (None, None))
                    if state == "delivered" or state == "dead":
                        step = Skip(step.key, step.mapping, step.target, state)
                    elif isinstance(step, Job) and recorded and recorded != step.idempotency_key:
                        step = self.mapper.rebuild(step, recorded)
                if isinstance(step, Skip) or (isinstance(step, Job) and step.key in self.scheduled):
                    self._skip(step)
                elif isinstance(step, Dead):
                    self.dead(step, write=write)
                    states[step.key] = ("dead", None)
                elif isinstance(step, Resolve):
                    write(methodcaller("mark_resolved", step.key, step.reason))
                else:
                    self.scheduled.add(step.key)
                    request = step.request
                    pending.append((step.key, step.source_digest, step.mapping, step.target,
                                    request.connection, step.idempotency_key, request.method,
                                    request.url, step.text, step.origin))  # fmt: skip
                    jobs.append(step)

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

    def _resolve_rejections(self, batch: list[Item], write: _Write) -> None:
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
            write(methodcaller("resolve_rejections", resolved))
            self._rejected_origins -= resolved
            for origin in sorted(resolved):
                self.log.info("%s: rejected by an earlier run, now reads: rejection resolved", origin)

    def _skip(self, step: Skip | Job) -> None:
        stats = self.summary.target(step.mapping, step.target)
        stats.skipped += 1
        if isinstance(step, Skip) and step.state == "dead":
            stats.skipped_dead += 1

    def dead(self, step: Dead, outcome: Outcome | None = None, *, write: _Write | None = None) -> None:
        """Dead-letter a delivery with its reason: now, or through ``write`` (a batch's transaction); with a
        writer thread, as a unit of its own that the loop does not wait for (like a delivered mark, it may
        lag: a kill before its commit leaves the row pending, and the next run sends it again)."""
        mark = methodcaller(
            "mark_dead",
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
        if write is not None:
            write(mark)
            recorded = True  # an SQLite journal, or a shared one's batch: this worker holds the row
        elif self.writer is not None:
            journal = self.journal
            self._units.append((self.writer.submit(lambda: mark(journal)), [], [step.key]))
            self._dying.add(step.key)
            recorded = True  # an SQLite journal has one worker: the row is this run's
        else:
            recorded = bool(mark(self.journal))
        if not recorded:  # a shared journal: this worker's lease was taken over; the other worker decides
            self.log.warning("%s.%s %s: lease lost while sending; its outcome is left to the worker that "
                             "took it over", step.mapping, step.target, step.key[:12])  # fmt: skip
            return
        stats = self.summary.target(step.mapping, step.target)
        stats.dead += 1
        self.summary.dead_keys.append(step.key)
        where = f"{step.origin}: " if step.origin else ""
        self.log.warning("%sdead letter %s.%s %s: %s", where, step.mapping, step.target or "(mapping)",
                         step.key[:12], step.reason, extra=event_fields(step.key, step.mapping, step.target,
                         outcome.attempts if outcome else 0))  # fmt: skip

    def flush_marks(self) -> None:
        """Commit the delivered marks waiting, in one transaction; then their keys leave ``scheduled``. With a
        writer thread, hand them over without waiting, one flush at a time (see ``delivered``)."""
        marks, self._marks = self._marks, []
        if not marks:
            return
        if self.writer is None:
            self._marked(marks, self.journal.mark_delivered_many(marks))
            return
        journal = self.journal
        self._units.append((self.writer.submit(lambda: journal.mark_delivered_many(marks)), marks, []))
        self._marking += len(marks)

    def _marked(self, marks: list[tuple[str, int, int]], marked: int) -> None:
        if marked < len(marks):
            self.log.warning("%d answer(s) came after this worker's lease was taken over; the journal keeps "
                             "what the worker that took them over records", len(marks) - marked)  # fmt: skip
        for key, _, _ in marks:
            self.scheduled.discard(key)

    def _settle_units(self) -> None:
        """Account for the writer's units that are done, oldest first (while a batch is being settled, up
        to its lookup): their delivered and dead keys leave ``scheduled``. The first journal error among them
        stops the run here."""
        while self._units and self._units[0][0].done():
            future, marks, dead = self._units.popleft()
            error = future.exception()
            if error is not None:
                raise error
            if marks:
                self._marking -= len(marks)
                result = future.result()
                self._marked(marks, result if isinstance(result, int) else len(marks))
            for key in dead:
                self._dying.discard(key)
                self.scheduled.discard(key)
            if future is self._reading:
                return

    async def flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(_FLUSH_SECONDS)
            if self._marks and time.monotonic() - self._marks_since >= _FLUSH_SECONDS:
                self.flush_marks()
            if self.writer is not None:
                self._settle_units()

    async def finish(self) -> None:
        """The end of a run: commit the marks waiting, and wait for the writer's last units."""
        self.flush_marks()
        if self.writer is not None:
            await self.writer.drain()
            self._settle_units()

    async def room_for_mark(self) -> None:
        """Wait until one more answered delivery may wait for its mark: never more than ``_FLUSH_MARKS`` do
        (a kill re-sends at most those, and what is in flight). A sender awaits it with an answer in hand,
        before ``delivered``; only a writer thread's flushes can make it wait (behind a checkpoint, say),
        and then only the senders with answers wait: the loop goes on reading the others' answers."""
        while len(self._marks) + self._marking >= _FLUSH_MARKS:
            # Every mark waiting has been handed to the writer (``delivered`` flushes at half the bound):
            # wait for the oldest unit that holds some.
            held = next(future for future, marks, _ in self._units if marks)
            if held.done():  # committed after the lookup of a batch being decided: counted once it is
                await asyncio.sleep(0)
            else:
                await asyncio.wait([asyncio.wrap_future(held)])
            self._settle_units()  # raises the unit's error, if it failed: the run stops there

    def delivered(self, key: str, status: int, attempts: int) -> None:
        """Mark a delivery delivered; the mark is committed with the next batch of them. Await
        ``room_for_mark`` first: with a writer thread, flushes go to it at half the bound, without waiting
        for the one before."""
        if not self._marks:
            self._marks_since = time.monotonic()
        self._marks.append((key, status, attempts))
        if self.writer is None:
            if len(self._marks) >= _FLUSH_MARKS:
                self.flush_marks()
            return
        self._settle_units()
        if len(self._marks) >= _FLUSH_MARKS // 2:
            self.flush_marks()

    def release(self, key: str) -> None:
        """A delivery this run no longer holds (parked, or its lease lost): a repeat of its event may send it.
        A dead letter's key is released once its row is committed dead (``_settle_units``)."""
        if key not in self._dying:
            self.scheduled.discard(key)


def _keys(batch: list[Item]) -> list[str]:
    """The delivery keys (and mapping stages) of a batch's events, to look up in the journal."""
    return [
        step.stage_key if isinstance(step, RouteStart) else step.key
        for item in batch
        if isinstance(item, Event)
        for step in item.steps
        if isinstance(step, RouteStart | Job | Dead)
    ]
