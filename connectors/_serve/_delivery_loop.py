"""The delivery side of ``shipmap serve``, on a thread and an event loop of its own.

Intake answers webhooks; delivery maps, journals and sends them. Each would delay the other on one event
loop (a batch of mapping holds the loop for milliseconds, and every acknowledgement would wait behind it), so
delivery runs ``Runtime.run_async`` over the inbox on its own thread, with its own connection to the inbox.
The two share nothing else: intake wakes the feed when it commits a webhook, and the service asks it to stop
(hand over what the inbox holds, then end) or, at the drain deadline, to cancel.

Delivery is a sequence of runs over one feed. A run ends when the feed says so (a sweep of parked
deliveries is due, or ``shipmap replay`` left a request, see ``_feed`` and ``_replays``); the loop then
carries out the waiting replays and starts the next run, which first re-sends what the journal holds
pending. Each run's summary is folded into the service's totals, and each replay's into the totals of its
replays, apart: a replayed dead letter that fails again is not a new one (``_totals``). A run or a replay that
an error ends is folded all the same, once: what it delivered and dead-lettered before is in the journal.

A run that stops because its sends keep raising inside shipmap (``SendingStopped``: a bug, or a custom
transport or auth flow that fails every request) does not stop the service: what it had not delivered is
``pending`` in the journal and the inbox, intake goes on accepting webhooks, ``/readyz`` reports delivery
*stalled*, and the next run starts after ``resweep``, twice as long each time it stops again without having
delivered anything, up to ``resweep_cap`` (a ``shipmap replay`` request ends the wait: it is carried out, then
the next run starts). Any other error of a run stops the service.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
from shipmap.engine import ShipmapError, SourceDocument

from .._config import Connection
from .._deliver._breaker import StateStore
from .._errors import SendingStopped
from .._map._mapper import EventMapper
from .._redact import get_logger
from .._runtime import Progress, RunSummary, Runtime
from .._summary import replay_outcome, replay_report
from ._enrich import Enricher
from ._enrich_batch import refetcher
from ._feed import InboxFeed
from ._inbox import InboxStore
from ._inbox_floor import ClaimFloor
from ._inbox_pg import open_inbox
from ._inbox_retention import Retention, purge_inbox
from ._rejected import requeue_requested
from ._replays import ReplayRequest, ReplayRequests
from ._settings import Enrichment
from ._totals import combined, fold, fold_replay

_STALL_POLL = 0.25  # seconds between looks for a stop or a replay request while delivery is stalled


@dataclass(frozen=True, slots=True)
class Stall:
    """Delivery waits after runs whose sends kept raising (monotonic times)."""

    reason: str
    since: float
    retry_at: float


class DeliveryLoop:
    def __init__(
        self,
        runtime: Runtime,
        inbox: Path | str,
        synchronous: Literal["normal", "full"],
        enrichments: Mapping[str, Enrichment],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        replays: Path | None = None,
        resweep: tuple[float, float] = (5.0, 300.0),
        retention: Retention | None = None,
        floor: ClaimFloor | None = None,
    ) -> None:
        """``replays``: the file where ``shipmap replay`` leaves requests while this service runs (the
        delivery thread opens its own connection to it); ``resweep``: the first and the longest wait before
        parked work is looked at again; ``retention``: ``serve.dedup_window`` and ``keep_bodies`` (the feed's
        hourly purge; None: their defaults); ``floor``: the claims' floor of the service's inboxes (PostgreSQL)."""
        self.runtime = runtime
        self._inbox_path = inbox
        self._synchronous = synchronous
        self._enrichments = enrichments
        # The last reload's connections, with its enrich: those it added are fetched over before delivery takes them.
        self._added: tuple[Connection, ...] = ()
        self._transport = transport
        self._replays_path = replays
        self._replays: ReplayRequests | None = None
        self._inbox: InboxStore | None = None  # the delivery thread's connection (replay --rejected requeues)
        self._resweep = resweep
        self._retention = retention or Retention()
        self._floor = floor
        self._log = get_logger("serve", runtime.redactor, runtime_name=runtime.name)
        self.total = RunSummary()  # the finished runs, folded
        self.replayed = RunSummary(replay=True)  # the finished replays, folded
        self.accepted = 0  # webhooks intake committed (counted by ``wake``): the feed steps aside in bursts
        self._folded: RunSummary | None = (
            None  # the last run folded in (the runtime's ``live`` until the next)
        )
        # A fold and a read of the totals (/metrics, on intake's thread) exclude each other: a read between
        # the two steps of a fold would count the run twice, or not at all, and a counter must never go down.
        self._totals = threading.Lock()
        self.runs = 0
        self.result: concurrent.futures.Future[RunSummary | None] = concurrent.futures.Future()
        self.cancelled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._feed: InboxFeed | None = None
        self._task: asyncio.Task[RunSummary | None] | None = None
        # A stop or a cancel asked before the delivery thread has its feed (or its task) is remembered here,
        # under this lock, and carried out as soon as it has them: else it was lost, and the drain waited
        # out its whole deadline for a feed that never heard of it.
        self._control = threading.Lock()
        # Set by a stop (or the drain's cancel): the feed ends at once when built after it, and a wait for
        # the database (journal.reconnect_deadline) ends, so an outage does not hold the stop.
        self._stopping = threading.Event()
        self._progress: Progress | None = None
        self._parked_seen: tuple[RunSummary, int] | None = None  # the run's parked count at the last report
        self.stalled: Stall | None = None  # waiting to run again, after a run whose sends kept raising
        self._stalled_since: float | None = None  # since the first of such runs in a row
        self._next_mapper: EventMapper | None = None  # a reload's, for the next run
        self._enrich_share = 1  # the serve processes on the inbox, when last counted
        self._mapper_lock = threading.Lock()
        self._thread = threading.Thread(target=self._main, name="shipmap-serve-delivery", daemon=True)

    # --- called from the service's thread -----------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        """Delivery has started, its feed built (it takes what intake commits), and has not ended."""
        return self._feed is not None and self._thread.is_alive() and not self.result.done()

    @property
    def starting(self) -> bool:
        """The delivery thread is opening its inbox connection and building its feed: what intake commits
        meanwhile waits in the inbox and is handed over once it runs."""
        return self._feed is None and not self.result.done()

    @property
    def handed(self) -> int:
        return self._feed.handed if self._feed is not None else 0

    def summary(self) -> RunSummary:
        """Everything delivered since the service started: the finished runs and the one in progress (the
        replays apart: ``replays``)."""
        with self._totals:
            live = self._unfolded()
            return combined(self.total, live if live is not None and not live.replay else None)

    def replays(self) -> RunSummary:
        """What the replays carried out since the service started did: the finished ones and the one in
        progress."""
        with self._totals:
            live = self._unfolded()
            return combined(self.replayed, live if live is not None and live.replay else None)

    def _unfolded(self) -> RunSummary | None:
        """The runtime's run or replay in progress, None once it is folded into the totals."""
        live = self.runtime.live
        return None if live is self._folded else live

    def _fold_ended(self) -> RunSummary | None:
        """Fold the run or replay that has just ended into the service's totals, however it ended: its
        summary, or what it delivered and dead-lettered before an error stopped it (the journal has those
        outcomes; /metrics must too, and must not go down when the next run replaces ``runtime.live``).
        Once: a summary already folded is not folded again (None then, and when no run has started)."""
        with self._totals:
            ended = self._unfolded()
            if ended is None:
                return None
            if ended.replay:
                fold_replay(self.total, self.replayed, ended)
            else:
                fold(self.total, ended)
            self._folded = ended
            return ended

    def enrichment_breakers(self) -> StateStore | None:
        """The store enrichment's breakers live in, once the delivery thread has built its enricher (not
        the runtime's on a PostgreSQL journal, whose runs each bring their own shared store)."""
        feed = self._feed
        return feed.enricher.breaker_store if feed is not None and self._enrichments else None

    def enrichment_connections(self) -> frozenset[str]:
        """The connections the ``enrich`` sections in use fetch over, as the last reload left them (set as it
        returns, before the delivery thread takes them): /readyz lists their breakers from the reload, one it
        added (which delivery takes at the end of its run in progress) included."""
        return frozenset(enrichment.connection for enrichment in self._enrichments.values())

    def parked_deliveries(self) -> tuple[int, int]:
        """Deliveries left pending for an open breaker: ``(this process's, the journal's)``. On a shared
        journal a look counts a down connection's pending deliveries for every process, so only the first
        adds up across processes (``RunSummary.parked_here``); on an SQLite journal the two are the same."""
        summary = self.summary()
        return summary.parked_here(shared=self.runtime.config.journal.url is not None), summary.parked

    def parked_webhooks(self) -> int:
        return len(self._feed.parked) if self._feed is not None else 0

    def in_flight(self) -> int:
        progress = self._progress
        return progress.in_flight if progress is not None else 0

    def enrichment(self) -> dict[str, dict[str, int]]:
        """``fetching``: webhooks of each enriching source whose documents are being fetched now;
        ``waiting_for_rate``: GETs waiting for their connection's ``max_rate`` or a Retry-After, by connection.
        Read from the delivery thread's enricher: a reload replaces its dict, else only its counts change."""
        feed = self._feed
        if feed is None:  # the delivery thread is starting: nothing under way yet
            connections = {enrichment.connection for enrichment in self._enrichments.values()}
            return {
                "fetching": dict.fromkeys(self._enrichments, 0),
                "waiting_for_rate": dict.fromkeys(connections, 0),
            }
        return {"fetching": dict(feed.enricher.fetching), "waiting_for_rate": feed.enricher.waiting()}

    def share_enrich_rates(self, processes: int) -> None:
        """``processes`` serve processes share the inbox, and so the source APIs: a process whose enrichment
        could not claim its ``max_rate`` slots in the journal keeps to 1/N of each (the others' limiters are
        spaced by the journal, and ignore it)."""
        self._enrich_share = processes
        feed, loop = self._feed, self._loop
        if feed is not None and loop is not None:
            _call_in(loop, lambda: feed.enricher.share_rates(processes))

    def wake(self) -> None:
        """A webhook was committed: the feed looks at the inbox now (if it was waiting)."""
        self.accepted += 1
        feed, loop = self._feed, self._loop
        if feed is not None and loop is not None and feed.idle:
            _call_in(loop, feed.wakeup.set)

    def use_enrichments(
        self, enrichments: Mapping[str, Enrichment], connections: tuple[Connection, ...]
    ) -> None:
        """A reload's ``enrich`` sections: the webhooks whose fetches start once the delivery thread took them
        are fetched with them, replays (``--rejected``, ``--refetch``) too; those in flight end with theirs.
        ``connections``: the reload's, for those it added, fetched over before delivery takes them."""
        self._added = connections  # before the sections: the thread that reads these reads them after
        self._enrichments = enrichments
        feed, loop = self._feed, self._loop
        if feed is not None and loop is not None:
            _call_in(loop, lambda: feed.use_enrichments(enrichments, connections))

    def use_mapper(self, mapper: EventMapper) -> None:
        """A reload's mappings, connections and delivery settings (``mapper.config``): the run in progress ends
        once the events handed to it are journaled (they go as mapped), and the next maps and sends with
        ``mapper``, as do the replays between them."""
        with self._mapper_lock:
            self._next_mapper = mapper
        feed, loop = self._feed, self._loop
        if feed is not None and loop is not None:
            # Deliveries waiting on a moved connection's open breaker would wait up to outage_wait first.
            _call_in(loop, lambda: self.runtime.stop_waiting_for(mapper.config))
            _call_in(loop, feed.end_run)

    def stop(self) -> None:
        """Hand over what the inbox holds, then end (at once, when this comes before the feed is built)."""
        with self._control:
            self._stopping.set()
            feed, loop = self._feed, self._loop
        if feed is not None and loop is not None:
            _call_in(loop, feed.stop)

    def cancel(self) -> None:
        """The drain deadline: what is in flight stays ``pending`` in the journal for the next start."""
        if self.result.done():
            return
        with self._control:
            self.cancelled = True
            self._stopping.set()
            task, loop = self._task, self._loop
        if task is not None and loop is not None:
            _call_in(loop, task.cancel)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    # --- the delivery thread --------------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            summary = asyncio.run(self._deliver())
        except asyncio.CancelledError:
            self.result.set_result(self.summary_at_end())
        except BaseException as error:  # handed to the service, which stops, reports it and raises it
            self.result.set_exception(error)
        else:
            self.result.set_result(self._at_end(summary) if summary is not None else None)

    def summary_at_end(self) -> RunSummary:
        """What the service delivered, however delivery ended: an error that stopped it too (its runs and
        replays are folded into the totals as each ends), or a cancel it has not finished yet."""
        return self._at_end(self.summary())

    def _at_end(self, summary: RunSummary) -> RunSummary:
        summary.replays = self.replays()  # a replay cut short by the drain's deadline included
        return summary

    async def _deliver(self) -> RunSummary | None:
        with self._control:
            if self.cancelled:  # the drain's deadline passed before this thread got going
                return self.total
            self._task = asyncio.current_task()
            self._loop = asyncio.get_running_loop()
        lease = self.runtime.config.journal.lease
        with contextlib.ExitStack() as held:
            inbox = open_inbox(
                self._inbox_path,
                synchronous=self._synchronous,
                lease=lease,
                intake=False,
                floor=self._floor,
                # Delivery waits out a database restart, as the journal does; intake answers 503 meanwhile.
                reconnect_deadline=self.runtime.config.journal.reconnect_deadline,
                stop=self._stopping,
                wait_to_open=True,  # intake's opened it at start: a failure now is an outage
            )
            held.callback(inbox.close)
            self._inbox = inbox
            if self._replays_path is not None:
                self._replays = held.enter_context(ReplayRequests(self._replays_path))
            enrichments = self._enrichments
            async with Enricher(
                self.runtime, enrichments, transport=self._transport, wait=False, connections=self._added
            ) as enricher:
                feed = InboxFeed(
                    inbox,
                    enricher,
                    self.runtime.redactor,
                    resweep=self._resweep[0],
                    resweep_cap=self._resweep[1],
                    delivery=_FeedsDeliverySide(self, self._replays),
                    runtime_name=self.runtime.name,
                    # Other services may write to a PostgreSQL journal, each from an SQLite inbox numbered
                    # from 1 like this one: the inbox's id keeps its webhooks' origins apart from theirs.
                    origin_inbox=inbox.inbox_id if self.runtime.config.journal.url is not None else None,
                    purge=lambda: purge_inbox(
                        inbox,
                        self._retention,
                        journal=self.runtime.config.journal.location,
                        log=self._log,
                        reconnect_deadline=self.runtime.config.journal.reconnect_deadline,
                        stop=self._stopping,
                    ),
                )
                with self._control:
                    self._feed = feed
                    if self._stopping.is_set():  # asked while the feed was being built: it ends at once
                        feed.stop()
                if self._enrichments is not enrichments:  # a reload's, while the feed was built
                    feed.use_enrichments(self._enrichments, self._added)
                # After the feed is set: a count the service makes from now on reaches the enricher itself.
                enricher.share_rates(self._enrich_share)
                try:
                    return await self._runs(feed, enricher)
                finally:
                    await feed.aclose()  # its fetches end while their clients are open

    async def _runs(self, feed: InboxFeed, enricher: Enricher) -> RunSummary | None:
        """Runs over the feed, one after another, until the feed stops."""
        stall = self._resweep[0]
        while True:
            self._take_mapper()
            self.runs += 1
            try:
                # Other services on a shared journal keep running and take over what this one leaves.
                # A connection that is down holds up half the senders at most: the feed's sweeps send the rest.
                await self.runtime.run_async(
                    self._epoch(feed),
                    progress=self._on_progress,
                    wait_for_others=False,
                    park_when_down=True,
                    stop=self._stopping,
                    # The first run's open is the process's first of the journal: a wrong password or host
                    # fails at once. A later run's follows one that opened it: an outage, waited out.
                    wait_to_open=self.runs > 1,
                )
            except SendingStopped as stopped:  # counted before the wait: /metrics says what it did meanwhile
                stall = await self._stall(stopped, feed, stall, self._fold_ended())
            else:
                self._stalled_since, stall = None, self._resweep[0]
            finally:
                self._fold_ended()  # whatever ended it: another error stops the service, a cancel the drain
            if feed.stopping:
                return self.total
            self._take_mapper()  # a replay that follows a reload maps with the new mappings
            await self._carry_out_replays(enricher)

    async def _epoch(self, feed: InboxFeed) -> AsyncIterator[SourceDocument]:
        """The feed's events for one run. When it ends the run to look at parked work (or for a replay, or a
        reload's mappings), the deliveries still waiting for an open breaker, a backoff or a Retry-After are
        left pending, so the run ends now and the next one starts (they are its first sends, each when its
        wait is over); at a stop, they wait for the drain's deadline."""
        async for event in feed.events():
            yield event
        if not feed.stopping:
            self.runtime.park_waiting()

    def _take_mapper(self) -> None:
        with self._mapper_lock:
            mapper, self._next_mapper = self._next_mapper, None
        if mapper is not None:
            self.runtime.use_mapper(mapper)
            self._log.info("the last reload's mappings, connections and delivery settings in use: the events"
                           " delivery takes from now on, and replays, are mapped and sent with them; deliveries"
                           " already journaled go as mapped, to their URLs")  # fmt: skip

    async def _stall(
        self, stopped: SendingStopped, feed: InboxFeed, wait: float, run: RunSummary | None
    ) -> float:
        """Wait before the next run, after one whose sends kept raising (``run``: what it did before they
        stopped it); return the wait after this one. Intake goes on meanwhile; a stop (the service draining)
        ends the wait."""
        now = time.monotonic()
        if self._stalled_since is None or (run is not None and run.delivered):
            self._stalled_since, wait = now, self._resweep[0]  # a new stall, not the same one going on
        self.stalled = Stall(stopped.message, self._stalled_since, now + wait)
        self._log.error("delivery stalled: %s Webhooks are still accepted; the next run starts in %.1f s",
                        stopped.message, wait)  # fmt: skip
        # A `shipmap replay` waiting is carried out now, not after the wait (which may outlast its --wait).
        replay_asked = self._replays.any_waiting if self._replays is not None else lambda: False
        while not feed.stopping and time.monotonic() < now + wait and not replay_asked():
            await asyncio.sleep(min(_STALL_POLL, max(0.0, now + wait - time.monotonic())))
        self.stalled = None  # the next run is trying
        return min(wait * 2, self._resweep[1])

    async def _carry_out_replays(self, enricher: Enricher) -> None:
        for request in self._replays.waiting() if self._replays is not None else ():
            if request.rows is not None:  # replay --rejected: the next run's feed reads the rows requeued
                try:
                    requeued = requeue_requested(self._inbox, request, self._log)
                except Exception as error:  # the request fails, the service goes on
                    self._failed(request, error)
                else:
                    assert self._replays is not None
                    self._replays.finish(request.id, requeued)
                continue
            self._log.info("replaying dead letters as `shipmap replay` asked (request %d)", request.id)
            try:
                summary = await self._replay(request, enricher)
            except Exception as error:  # the request fails, the service goes on
                self._failed(request, error, self._fold_ended())
                continue
            finally:
                self._fold_ended()  # whatever ended it, the drain deadline's cancel included
            self._log.info("replay request %d: %s", request.id, replay_outcome(replay_report(summary)))
            assert self._replays is not None
            self._replays.finish(request.id, replay_report(summary))

    def _failed(self, request: ReplayRequest, error: Exception, partial: RunSummary | None = None) -> None:
        """``partial``: what the replay did before ``error`` stopped it (counted in the service's replays),
        said to ``shipmap replay`` and in the log with the error."""
        # The command says "error: ... could not replay: <this>": a ShipmapError's own "error: " goes.
        said = (
            error.render().removeprefix(f"{error.kind}: ") if isinstance(error, ShipmapError) else str(error)
        )
        if partial is not None:
            said += f" (before it stopped: {replay_outcome(replay_report(partial))})"
        message = self.runtime.redactor.redact(said)
        self._log.warning("replay request %d failed: %s", request.id, message)
        assert self._replays is not None
        self._replays.finish(request.id, {"error": message}, failed=True)

    async def _replay(self, request: ReplayRequest, enricher: Enricher) -> RunSummary:
        keys = list(request.keys) if request.keys else None
        if not request.refetch or not self._enrichments:
            return await self.runtime.replay_async(
                keys, progress=self._on_progress, stop=self._stopping, wait_to_open=True
            )
        return await self.runtime.replay_async(
            keys,
            progress=self._on_progress,
            refresh=refetcher(self.runtime, enricher),
            stop=self._stopping,
            wait_to_open=True,  # after the first run, which opened the journal
        )

    def _on_progress(self, progress: Progress) -> None:
        self._progress = progress
        # A delivery parked since the last report (each outcome reports): its look is planned now, not after
        # the feed's idle poll.
        live, feed = self.runtime.live, self._feed
        if live is None or feed is None:
            return
        seen = self._parked_seen
        before = seen[1] if seen is not None and seen[0] is live else 0
        if live.parked > before:
            feed.delivery_parked()
        self._parked_seen = (live, live.parked)


class _FeedsDeliverySide:
    """A delivery loop as its feed sees it (``_feed.DeliverySide``): what the runtime's run in progress parked,
    its breakers, the ``shipmap replay`` requests waiting, and how many webhooks intake has committed."""

    def __init__(self, delivery: DeliveryLoop, replays: ReplayRequests | None) -> None:
        self._delivery = delivery
        self._runtime = delivery.runtime
        self._replays = replays

    def parked_deliveries(self) -> int:
        # All the journal counted, not this process's part: any parked delivery is a reason to look again.
        live = self._runtime.live
        return live.parked if live is not None else 0

    def outages_over(self) -> bool:
        live = self._runtime.live
        return live is not None and bool(live.outages) and self._closed(live.outages)

    def breakers_closed(self) -> bool:
        return self._closed(self._runtime.connections)

    async def look_at_breakers(self) -> None:
        await self._runtime.look_at_breakers()

    def replays_waiting(self) -> bool:
        return self._replays is not None and self._replays.any_waiting()

    def intake_accepted(self) -> int:
        return self._delivery.accepted

    def _closed(self, connections: Iterable[str]) -> bool:
        store = self._runtime.breaker_store
        return all(store.breaker(name).phase == "closed" for name in connections)


def _call_in(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
    with contextlib.suppress(RuntimeError):  # the delivery loop has closed: it has ended, nothing to do
        loop.call_soon_threadsafe(callback)
