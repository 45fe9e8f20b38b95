"""The delivery workers of a run: ``concurrency`` tasks that take jobs off the queue, send each through the
Deliverer, count the outcome, and hand it to the store: delivered (a mark, committed in batches), dead (a
dead letter with its reason), parked (left ``pending``: its connection's breaker stayed open past
``outage_wait``, or more senders than ``waiting_cap`` would have waited for it), or interrupted (left
``pending`` by the run's end during a backoff, its attempts added to its row). With a ``HeldBack``
(``shipmap run``), a parked delivery is held back instead: it goes once the breaker closes (``_held``).

One broken request never stops the others: a send that raises inside shipmap, instead of getting an answer,
is that job's dead letter. Many in a row are not the requests' fault but a bug (in shipmap, or in a custom
transport or auth flow of a program that embeds it), so such a job waits, ``pending``: an answer to a send
started after it makes it a dead letter (the send path works; it was its request's own problem), while
``INTERNAL_ERRORS_TO_STOP`` in a row stop the run, and they stay ``pending`` with everything not yet sent, for
the run after the fix. An answer to a send started before the one that raised says nothing about the send path
since, so a bug that appears mid-run, with the answers of earlier sends still coming in, costs no dead letters
either."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
from collections.abc import Callable
from pathlib import Path

from .._errors import JournalError, SendingStopped
from .._map._steps import Dead, Job, event_fields
from .._store._leases import LeaseKeeper
from .._store._outbox import Outbox
from ._delivery import Deliverer
from ._held import HeldBack
from ._request import Outcome

INTERNAL_ERRORS_TO_STOP = 10  # sends in a row that raised inside shipmap, nothing answered between them


class DeliveryWorkers:
    """The senders of one run; ``sending`` is how many requests are in flight (for progress)."""

    def __init__(
        self,
        outbox: Outbox,
        leases: LeaseKeeper,
        reason: Callable[[str], str],
        report: Callable[[], None],
    ) -> None:
        self.outbox = outbox
        self.leases = leases
        self.summary = outbox.summary
        self.log = outbox.log
        self.deliveries = outbox.deliveries
        self._reason = reason
        self._report = report
        self.sending = 0
        self._started = 0  # sends started so far, numbered: which answer can speak for which raise
        # Sends that raised, with their numbers, that no later-started send's answer has settled yet: not yet
        # dead letters.
        self._raised: list[tuple[Job, Outcome, int]] = []
        self._stop: SendingStopped | None = None
        self.held_back: HeldBack | None = None  # a run's: its parked deliveries go once their breaker closes

    async def work(self, deliverer: Deliverer, queue: asyncio.Queue[Job | None]) -> None:
        """One worker: send jobs until it takes ``None`` off the queue. Each job taken is ``task_done`` once
        its outcome is handed over, so ``queue.join()`` says that nothing is queued or in flight."""
        log_info = self.deliveries.isEnabledFor(logging.INFO)
        while True:
            job = await queue.get()
            try:
                if job is None:
                    return
                await self._send(deliverer, job, log_info)
            finally:
                queue.task_done()

    async def _send(self, deliverer: Deliverer, job: Job, log_info: bool) -> None:
        if not self.leases.may_send(job.key):
            self.log.warning("%s: lease lost (this worker was stalled); another worker sends it",
                             job.request.label)  # fmt: skip
            self.outbox.release(job.key)
            return
        self.sending += 1
        self._started += 1
        number = self._started
        try:
            outcome = await deliverer.send(job.request)
        except asyncio.CancelledError:
            # A stop (serve's drain deadline) in a backoff, a Retry-After's hold or a request in flight: the
            # attempts are kept as at a run's end; best effort, the row stays pending either way.
            cut = deliverer.take_cut()
            if cut is not None and cut.interrupted:
                with contextlib.suppress(Exception):
                    self._count(job, cut, log_info)
            raise
        except JournalError:  # the shared breaker's database failed: the run stops, the row stays pending
            raise
        except Exception as error:  # this job's problem, or a bug that fails them all: the next ones say
            self.log.debug("%s: internal error while sending", job.request.label, exc_info=True)
            reason = self._reason(f"internal error while sending: {type(error).__name__}: {error}")
            self._raised.append((job, Outcome(False, None, 1, 0.0, reason), number))
            if len(self._raised) >= INTERNAL_ERRORS_TO_STOP:
                for raised, _, _ in self._raised:
                    self.outbox.release(raised.key)  # pending in the journal: the next run sends it
                # One error object for every sender that gets here before the run is cancelled: the
                # run raises it alone, not in a group.
                self._stop = self._stop or _stopped(error, len(self._raised))
                raise self._stop from error
            return
        finally:
            self.sending -= 1
        if self._raised:
            # A send started after them was answered: the send path works, each was its request's own.
            # (An answer to a send started before them says nothing about the send path since.)
            self.settle_raised(before=number)
        self._count(job, outcome, log_info)

    def settle_raised(self, before: int | None = None) -> None:
        """The sends that raised and still wait, started before send number ``before`` (all, when None: the
        run ended before the streak reached ``INTERNAL_ERRORS_TO_STOP``), each made its delivery's dead
        letter."""
        settled = [entry for entry in self._raised if before is None or entry[2] < before]
        if not settled:
            return
        self._raised = [entry for entry in self._raised if before is not None and entry[2] >= before]
        for job, outcome, _ in settled:
            self._count(job, outcome, log_info=False)  # none was delivered: no delivery line to log

    def _count(self, job: Job, outcome: Outcome, log_info: bool) -> None:
        stats = self.summary.target(job.mapping, job.target)
        stats.attempts += outcome.attempts
        if outcome.attempts > 1:
            stats.retried += 1
        if outcome.interrupted:
            # The run ended while it waited to retry: pending, its attempts kept; the next run goes on with it.
            self.outbox.interrupted(job.key, outcome)
            self.log.info("%s: %s", job.request.label, outcome.reason)
        elif outcome.parked:
            if outcome.counted:  # attempts before the breaker opened: they count once it closes
                self.outbox.keep_attempts(job.key, outcome)
            if self.held_back is not None:
                self.held_back.hold(
                    job, outcome
                )  # pending; it goes when the breaker closes, within outage_wait
            else:
                # The connection is down past outage_wait: the row stays pending for the next run.
                connection = job.request.connection
                if self.summary.park(connection, outcome.reason or "unavailable (circuit breaker open)"):
                    self.log.warning("connection %s %s", connection, self.summary.outages[connection])
                self.outbox.release(job.key)
        elif outcome.delivered:
            assert outcome.status is not None
            self.outbox.delivered(job.key, outcome.status, outcome.attempts)
            stats.delivered += 1
            stats.latency.add(outcome.latency)
            if log_info:
                self.deliveries.info("delivered %s: HTTP %d in %.0f ms, %d attempt%s", job.request.label,
                                     outcome.status, outcome.latency * 1000, outcome.attempts,
                                     "" if outcome.attempts == 1 else "s",
                                     extra=event_fields(job.key, job.mapping, job.target,
                                                        outcome.attempts))  # fmt: skip
        else:
            reason = outcome.reason or "not delivered"
            self.outbox.dead(
                Dead(job.key, job.mapping, job.target, job.source_digest, job.origin, reason), outcome
            )
            self.outbox.release(job.key)
        self._report()


def _stopped(error: Exception, count: int) -> SendingStopped:
    """The run's error when sends keep raising: the exception's type and where it was raised, not its message
    (which may quote a config value; -vv logs each traceback, redacted)."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return SendingStopped(
        f"sending stopped: {count} requests in a row raised {type(error).__name__}{where} inside shipmap, with"
        " no answer between them: a bug in shipmap or in a custom transport or auth flow, not a problem of"
        " the events. They, and everything not sent yet, stay pending for the next run; -vv logs the"
        " tracebacks."
    )
