"""The delivery loop's input: inbox rows become runtime events, for as long as the service runs.

``InboxFeed.events()`` is an async iterable for ``Runtime.run_async``. Rows go through a lane per source
(``_lanes``): a webhook that needs its documents is fetched there, beside others, and the feed hands over the
oldest ready row at a lane's head, so each source's webhooks go in the order they arrived and a slow store
API holds up its own source only. The runtime settles (journals) each event before it asks for the next one,
so when the generator resumes after a ``yield`` the event's deliveries are owed in the journal and its inbox
row can be marked processed. Those marks are committed in small
batches: a crash can leave a few settled rows unmarked, and handing them over again is harmless, because the
runtime keys deliveries by content and skips what is already pending or delivered.

The feed hands events to one run of the runtime (an *epoch*) and ends that run when the service must look at
its pending work again: a run re-sends what the journal holds ``pending`` only when it starts, so a delivery
parked by an outage (its breaker open past ``outage_wait``) waits for the next run. When deliveries are
parked, or a ``shipmap replay`` request is waiting, the feed ends its epoch once it is idle (for a replay, at
once) and the delivery loop starts the next. A webhook whose enrichment finds the source API's breaker open
is *parked* too: it stays ``pending`` in the inbox, is skipped, and is looked at again at the next sweep.
Sweeps come ``resweep`` seconds after something was parked (at the earliest when the breaker's next probe is
due; a delivery the run parks wakes the idle feed to plan it), doubling while the outage lasts (while
something is parked or a breaker is open), up to ``resweep_cap``, and at once when the breakers of the
connections whose deliveries were parked have closed (a probe was answered), or those of the parked webhooks'
source APIs (on a PostgreSQL journal, by another process's probe too: an idle feed reads the shared breaker
records again, delivery's and enrichment's). The breakers decide what is sent: a sweep into an open breaker
sends nothing, so sweeping never hammers a destination that is down.

During a burst of webhooks, delivery steps aside: intake and delivery share one process (one GIL), and every
millisecond delivery spends mapping is a millisecond a webhook waits for its 200. While intake accepts more
than ``_BURST_RATE`` webhooks a second, the feed waits before handing over its next page, for at most
``_MAX_STEP_ASIDE`` at a time, so delivery still moves at least a page a second. Nothing waits unsafely: the
webhooks are committed in the inbox, and the feed hands them over as soon as the burst ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, Protocol

from shipmap.engine import SourceDocument

from .._config import Connection
from .._plural import counted
from .._redact import get_logger
from ._enrich import Enricher
from ._enrich_errors import EnrichmentError, SourceUnavailable
from ._inbox import DEDUP_WINDOW, InboundRow, InboxError, InboxStore
from ._lanes import PAGE, Lane, Lanes, Slot
from ._origins import webhook_origin
from ._settings import Enrichment

_MARK_EVERY = 32
_IDLE_POLL = 1.0  # seconds between looks at the inbox when nothing wakes the feed
_PURGE_EVERY = 3600.0
_CHECK_REPLAYS_EVERY = 1.0  # seconds between looks for replay requests while the feed is busy
_BURST_RATE = 400.0  # webhooks accepted a second above which intake is in a burst (the steady target is 200)
_RATE_WINDOW = 0.05  # seconds over which that rate is measured
_MAX_STEP_ASIDE = 1.0  # the longest delivery waits for a burst, at a time
# Bytes of a body read for a 500-character excerpt: enough that a secret across the cut is still whole.
_EXCERPT_READ = 4096


def envelope(row: InboundRow) -> dict[str, Any]:
    """The event the runtime routes and maps: the webhook as received, with its source and topic."""
    return {
        "id": row.webhook_id,
        "source": row.source,
        "topic": row.topic,
        "received_at": datetime.datetime.fromtimestamp(row.received_at, datetime.UTC).isoformat(),
        "headers": row.headers,
        "payload": json.loads(row.body),
    }


class DeliverySide(Protocol):
    """What the feed asks of the delivery loop that drives it: the state of the runs it feeds, the replay
    requests waiting, and intake's pace. Read on the delivery thread, between two events."""

    def parked_deliveries(self) -> int:
        """Deliveries the run in progress left pending for an open breaker (the journal's count)."""
        ...

    def outages_over(self) -> bool:
        """Whether the connections the run in progress parked deliveries for all have closed breakers."""
        ...

    def breakers_closed(self) -> bool:
        """Whether every delivery breaker is closed, as this process last read it."""
        ...

    async def look_at_breakers(self) -> None:
        """Read the run's delivery breakers again where a shared store's copy is stale
        (``Runtime.look_at_breakers``), as the feed does the enricher's while it is idle."""
        ...

    def replays_waiting(self) -> bool:
        """Whether a ``shipmap replay`` request waits for the delivery loop."""
        ...

    def intake_accepted(self) -> int:
        """Webhooks intake has committed since the service started (the feed steps aside in bursts)."""
        ...


class NoDelivery:
    """A delivery side with nothing parked, every breaker closed, no replay and no intake: a feed read on its
    own (tests, tools)."""

    def parked_deliveries(self) -> int:
        return 0

    def outages_over(self) -> bool:
        return False

    def breakers_closed(self) -> bool:
        return True

    async def look_at_breakers(self) -> None:
        return None

    def replays_waiting(self) -> bool:
        return False

    def intake_accepted(self) -> int:
        return 0


class ParkedRows:
    """The inbox rows waiting for their source API. Their ids, up to ``KEPT``, and a count of the others: a
    day's outage of a busy source's API parks millions, which wait in the inbox itself, and need not each hold
    an id in memory too. The count is rebuilt by each pass over the inbox (``new_pass``), which reads every
    parked row again; an id kept is taken back when its row is handed over."""

    KEPT = 100_000

    def __init__(self) -> None:
        self._ids: set[int] = set()
        self._beyond = 0

    def __len__(self) -> int:
        return len(self._ids) + self._beyond

    def add(self, row: int) -> None:
        if row in self._ids:
            return
        if len(self._ids) < self.KEPT:
            self._ids.add(row)
        else:
            self._beyond += 1

    def discard(self, row: int) -> None:
        self._ids.discard(row)

    def clear(self) -> None:
        self._ids.clear()
        self._beyond = 0

    def new_pass(self) -> None:
        """A pass over the inbox from its first pending row begins: the rows beyond ``KEPT`` are counted again
        as it meets them (those kept by id are known already)."""
        self._beyond = 0


class InboxFeed:
    def __init__(
        self,
        inbox: InboxStore,
        enricher: Enricher,
        redactor: Any,
        *,
        resweep: float = 5.0,
        resweep_cap: float = 300.0,
        delivery: DeliverySide | None = None,
        runtime_name: str | None = None,
        purge: Callable[[], object] | None = None,
        origin_inbox: str | None = None,
    ) -> None:
        """``delivery``: the delivery loop this feed hands its events to (``DeliverySide``; by default
        ``NoDelivery``). ``purge``: forget what the inbox holds past its time (``_inbox_retention``), hourly
        while the feed is idle; by default, the rows past the dedup window. ``origin_inbox``: the inbox's id,
        named in each webhook's origin (an SQLite inbox beside a journal that other services share:
        ``_origins``)."""
        self.inbox = inbox
        self._origin_inbox = origin_inbox
        self.enricher = enricher
        self.wakeup = asyncio.Event()
        self.stopping = False
        self.idle = False  # waiting for a wake-up: intake's commit sets ``wakeup`` only then
        self.handed = 0  # events handed to the runtime
        self.enrichment_failures = 0
        self.parked = ParkedRows()  # inbox rows waiting for their source API (still pending there)
        self._parking: list[int] = []  # parked since the inbox was last told (``_tell_parked``)
        self.sweeps = 0
        self._resweep = resweep
        self._resweep_cap = resweep_cap
        self._backoff = resweep
        self._next_sweep: float | None = None  # monotonic: when parked work is looked at again
        self._retry_in = 0.0  # the soonest a parked webhook's source API probes again
        self._delivery: DeliverySide = delivery if delivery is not None else NoDelivery()
        self._replays_checked = 0.0
        self._new_run = False  # a reload changed the mappings: the next events go to a run with them
        self._intake_mark = (time.monotonic(), 0)
        self._intake_rate = 0.0
        self.stepped_aside = 0.0  # seconds delivery waited for bursts
        self._log = get_logger("serve.feed", redactor, runtime_name=runtime_name)
        self._purge = purge or (lambda: inbox.purge(time.time() - DEDUP_WINDOW))
        self._purged_at = time.monotonic()  # the service purged at start
        self._lanes: Lanes[InboundRow, SourceDocument] = Lanes(enricher.concurrency, shared=PAGE)
        self._cursor = 0  # the last row read by the reads of the sources whose lanes are not detached

    def use_enrichments(
        self, enrichments: Mapping[str, Enrichment], connections: Iterable[Connection]
    ) -> None:
        """A reload's ``enrich`` sections (and its ``connections``, for those it added): the webhooks read from
        now on are fetched with them (``Enricher.use``), each source's lane held to its new ``concurrency``."""
        self.enricher.use(enrichments, connections)
        self._lanes.recap()
        self.wakeup.set()  # a lane with more room now: read

    def stop(self) -> None:
        """Hand over what the inbox holds now, then end: the runtime finishes its work and returns. (The
        service's drain deadline cancels whatever is left; it stays owed for the next start.)"""
        self.stopping = True
        self.wakeup.set()

    def end_run(self) -> None:
        """End this epoch once the events handed so far are journaled: the delivery loop then starts the next
        run (with the mappings a reload gave it)."""
        self._new_run = True
        self.wakeup.set()

    async def events(self) -> AsyncIterator[SourceDocument]:
        """One epoch's events: until stopped and empty, or until a sweep or a replay needs a new run. The rows
        in the lanes (and their fetches) outlast the epoch: the next one hands them over."""
        done: list[int] = []
        self._rewind()
        self.parked.new_pass()
        try:
            while True:
                if len(done) >= _MARK_EVERY:
                    self.inbox.mark_processed(done)
                    done.clear()
                if not self.stopping:
                    if self._new_run:
                        self._new_run = False
                        return
                    if self._replay_requested():
                        return  # the delivery loop replays between two runs
                    sweep = self._sweep_due()
                    if sweep == "run":
                        return  # the next run re-sends the parked deliveries
                    if sweep == "inbox":
                        self._rewind()  # parked webhooks are pending rows behind the cursors: read them again
                # Idle before looking: a commit (or a fetch ending) after the look wakes the wait below, one
                # before it is found.
                self.idle = True
                self.wakeup.clear()
                for row, down in self._lanes.take_failed(SourceUnavailable):
                    self._park(row, down)
                self._read_detached(done)
                self._tell_parked()
                slot = self._lanes.pop_ready()
                if slot is None:
                    if done:  # marked before the others are read, as the page was
                        self.inbox.mark_processed(done)
                        done.clear()
                    taken = self._read_others(done)
                    self._tell_parked()
                    if taken:
                        self.idle = False
                        await self._step_aside()
                        continue
                    if self.stopping and not self._lanes:
                        return
                    if time.monotonic() - self._purged_at > _PURGE_EVERY:  # the dedup window moves on
                        self._purged_at = time.monotonic()
                        self._purge()
                    await self._look_at_breakers()
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that
                    # comes as the event is set, and the run's TaskGroup, stopping on a worker's error, would
                    # wait for this body forever.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._idle_wait()):
                            await self.wakeup.wait()
                    continue
                self.idle = False
                try:
                    event = slot.result()
                except SourceUnavailable as down:  # its fetch ended since the look above
                    self._park(slot.row, down)
                    self._tell_parked()
                    continue
                self.parked.discard(slot.row.id)
                yield event
                # Resumed: the runtime has journaled that event's deliveries.
                self.handed += 1
                done.append(slot.row.id)
        finally:
            if done:
                with contextlib.suppress(Exception):
                    self.inbox.mark_processed(done)

    async def aclose(self) -> None:
        """The service stops: the fetches in flight are cancelled; their webhooks stay pending in the inbox."""
        await self._lanes.aclose()

    # --- reading the inbox into the lanes ---------------------------------------------------------------------

    def _rewind(self) -> None:
        """The next reads start from the inbox's first pending row (a parked webhook is one)."""
        self._cursor = 0
        self._lanes.rewind()

    def _read_detached(self, done: list[int]) -> None:
        """Each detached lane's own rows, as far as it has room; a lane that has caught up joins the others."""
        for source, lane in list(self._lanes.detached()):
            while self._lanes.room(lane) > 0:
                # A page, not just the room: a webhook parked at once (its API down) takes no room.
                rows = self.inbox.pending(after=lane.cursor, limit=PAGE, source=source)
                for row in rows:
                    if self._lanes.room(lane) <= 0:
                        break  # the lane's cursor stays before this row: the next read starts there
                    lane.cursor = max(lane.cursor, row.id)
                    if row.id not in self._lanes.held and row.id not in done:
                        self._take(lane, row)
                if len(rows) < PAGE and self._lanes.room(lane) > 0:
                    lane.detached = False  # caught up: its next rows come with the others'
                    break

    def _read_others(self, done: list[int]) -> int:
        """Rows of the sources whose lanes are not detached, oldest first, as far as the lanes have room: a
        full lane detaches, and the reads go on past its rows. How many rows the lanes took."""
        taken = 0
        while (room := self._lanes.shared_room()) > 0:
            rows = self.inbox.pending(
                after=self._cursor, limit=room, skip_sources=self._lanes.detached_sources()
            )
            for row in rows:
                self._cursor = max(self._cursor, row.id)
                lane = self._lanes.lane(row.source)
                if lane.detached or row.id in self._lanes.held or row.id in done:
                    continue  # a detached lane reads its rows itself, in their order
                if self._lanes.room(lane) <= 0:
                    lane.detached = True  # this row and its source's next ones wait in the inbox for room
                    continue
                lane.cursor = row.id
                taken += self._take(lane, row)
            if len(rows) < room:
                break
        return taken

    def _take(self, lane: Lane[InboundRow, SourceDocument], row: InboundRow) -> bool:
        """The row into its lane, or parked at once when its source API is known to be down."""
        slot = self._slot(row)
        if isinstance(slot, SourceUnavailable):
            self._park(row, slot)
            return False
        self._lanes.add(lane, slot)
        return True

    # --- bursts -----------------------------------------------------------------------------------------------

    def _intake_busy(self) -> bool:
        now = time.monotonic()
        then, before = self._intake_mark
        if now - then >= _RATE_WINDOW:
            count = self._delivery.intake_accepted()
            self._intake_rate = (count - before) / (now - then)
            self._intake_mark = (now, count)
        return self._intake_rate > _BURST_RATE

    async def _step_aside(self) -> None:
        waited = 0.0
        while not self.stopping and waited < _MAX_STEP_ASIDE and self._intake_busy():
            await asyncio.sleep(_RATE_WINDOW)
            waited += _RATE_WINDOW
        self.stepped_aside += waited

    # --- parked work ------------------------------------------------------------------------------------------

    def _park(self, row: InboundRow, down: SourceUnavailable) -> None:
        if not self.parked:
            self._log.warning(
                "%s#%d: %s; the webhook waits in the inbox and is tried again when the API is probed",
                row.source,
                row.id,
                down.message,
            )
            self._retry_in = down.retry_in
        self.parked.add(row.id)
        self._parking.append(row.id)
        self._retry_in = min(self._retry_in, down.retry_in)

    def _tell_parked(self) -> None:
        """The rows parked since the last time, to the inbox, in one statement (a sweep parks a page at once):
        a PostgreSQL inbox's claims and gauges then step past them instead of over every row processed since."""
        if self._parking:
            # Untold (the database unreachable now), a row holds the floor as it did before: no harm, and the
            # next sweep parks it again.
            with contextlib.suppress(InboxError):
                self.inbox.park(self._parking)
            self._parking.clear()

    def _sweep_due(self) -> str | None:
        """Whether to look at parked work now: ``"run"`` (deliveries are parked in the journal: a new
        run re-sends them), ``"inbox"`` (only webhooks are parked: read the inbox from its start), or None."""
        deliveries = self._delivery.parked_deliveries()
        if not deliveries and not self.parked:
            self._next_sweep = None
            # And every breaker closed: the outage is over. (Not while a look's probe is in flight, nor while a
            # run's deliveries wait for an open breaker, with nothing parked yet: the backoff goes on doubling.)
            if self.enricher.breakers_closed() and self._delivery.breakers_closed():
                self._backoff = self._resweep
            return None
        now = time.monotonic()
        # The deliveries' connections are back, or the parked webhooks' source APIs (a probe was answered,
        # here or by another process on the journal): what is parked goes now, not after the backoff.
        back = (bool(deliveries) and self._delivery.outages_over()) or (
            bool(self.parked) and self.enricher.breakers_closed()
        )
        if not back and now < self._plan_sweep(now):
            return None
        self._next_sweep = None
        self._backoff = self._resweep if back else min(self._backoff * 2, self._resweep_cap)
        self.sweeps += 1
        self._log.info(
            "looking again at parked work: %s, %s (next look in %.1f s at the latest)",
            counted(deliveries, "delivery"),
            counted(len(self.parked), "webhook"),
            self._backoff,
        )
        self.parked.clear()  # those still waiting park again, at once and without a request
        return "run" if deliveries else "inbox"

    def delivery_parked(self) -> None:
        """The run parked a delivery (its breaker stayed open past ``outage_wait``): an idle feed plans its look
        now, not after its idle poll."""
        if self.idle:
            self.wakeup.set()

    def _plan_sweep(self, now: float) -> float:
        """When parked work is looked at next: ``resweep`` (doubled while it stays parked) after the first time
        the feed found something parked since the last look, at the earliest when a parked webhook's source API
        probes again. Planned by whichever comes first, this look or the idle wait: a sweep's own webhooks park
        again while the feed reads them, after this look, and waiting out the idle poll before planning their
        look made every look after the first ``_IDLE_POLL`` late."""
        if self._next_sweep is None:
            self._next_sweep = now + max(self._backoff, self._retry_in if self.parked else 0.0)
        return self._next_sweep

    def _idle_wait(self) -> float:
        """How long the idle feed waits for a wake-up: until the next look at parked work, at most
        ``_IDLE_POLL``."""
        if self._next_sweep is None and not self.parked and not self._delivery.parked_deliveries():
            return _IDLE_POLL
        now = time.monotonic()
        return max(0.01, min(_IDLE_POLL, self._plan_sweep(now) - now))

    async def _look_at_breakers(self) -> None:
        """On a PostgreSQL journal, what the other processes did to the breakers while this one is idle: the
        source APIs' (enrichment's) and the destinations' (the run's deliveries), each record read again when
        this process's copy is stale (one short query per connection, at most one a ``refresh``). The feed
        looks each time it goes idle, so an idle process's /readyz, /metrics and stop summary follow the
        others' within ``_IDLE_POLL`` (and parked work is looked at once another process's probe closed one)."""
        await self.enricher.look_at_breakers()
        await self._delivery.look_at_breakers()

    def _replay_requested(self) -> bool:
        now = time.monotonic()
        if now - self._replays_checked < _CHECK_REPLAYS_EVERY:
            return False
        self._replays_checked = now
        return self._delivery.replays_waiting()

    def _slot(self, row: InboundRow) -> Slot[InboundRow, SourceDocument] | SourceUnavailable:
        """The row in its lane: its event at once, or a fetch of its documents under way."""
        origin = webhook_origin(row.source, row.id, self._origin_inbox)
        try:
            event = envelope(row)
        except ValueError as error:
            return Slot(
                row, SourceDocument(origin, error=f"the webhook body is not JSON: {error}", excerpt=None)
            )
        except RecursionError:  # intake parsed it on a shallower stack: a rejected input, not a crash
            return Slot(
                row,
                SourceDocument(origin, error="the webhook body is not JSON: nested too deeply", excerpt=None),
            )
        if row.documents is not None:
            event.update(row.documents)  # fetched before a restart: map the same data
        elif self.enricher.applies(event):
            if (down := self.enricher.unavailable(event)) is not None:
                return down  # no request would go: parked without a task
            fetch = asyncio.create_task(self._enriched(row, event, origin), name=f"shipmap-enrich-{origin}")
            fetch.add_done_callback(self._fetched)
            return Slot(row, fetch=fetch)
        return Slot(row, SourceDocument(origin, document=event))

    def _fetched(self, _: asyncio.Task[SourceDocument]) -> None:
        self.wakeup.set()  # a lane's head may be ready: look

    async def _enriched(self, row: InboundRow, event: dict[str, Any], origin: str) -> SourceDocument:
        try:
            documents = await self.enricher.documents(event)
        except SourceUnavailable:
            raise  # not the event's fault: it is parked, not dead-lettered
        except EnrichmentError as error:
            # Recorded by the runtime as a rejected input with this reason (shipmap dead-letters), and logged
            # by it as one: a warning here too said each failure twice.
            self.enrichment_failures += 1
            return SourceDocument(
                origin,
                error=f"enrichment failed: {error.message}",
                # As `shipmap run` records one: redacted, then cut (a body may echo a token the runtime knows).
                excerpt=self._log.redactor.excerpt(row.body[:_EXCERPT_READ].decode("utf-8", "replace"), 500),
            )
        self.inbox.save_documents(row.id, documents)
        event.update(documents)
        return SourceDocument(origin, document=event)
