"""The delivery workers of a run: ``concurrency`` tasks that take jobs off the queue, send each through the
Deliverer, count the outcome, and hand it to the store: delivered (a mark, committed in batches), dead (a
dead letter with its reason), or parked (left ``pending``: its connection's breaker stayed open past
``outage_wait``). One broken request never stops the others: whatever ``send`` raises is that job's dead
letter."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .._errors import JournalError
from .._map._steps import Dead, Job, event_fields
from .._store._leases import LeaseKeeper
from .._store._outbox import Outbox
from ._delivery import Deliverer, Outcome


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
        self._reason = reason
        self._report = report
        self.sending = 0

    async def work(self, deliverer: Deliverer, queue: asyncio.Queue[Job | None]) -> None:
        """One worker: send jobs until it takes ``None`` off the queue."""
        log_info = self.log.isEnabledFor(logging.INFO)
        while True:
            job = await queue.get()
            if job is None:
                return
            if not self.leases.may_send(job.key):
                self.log.warning("%s: lease lost (this worker was stalled); another worker sends it",
                                 job.request.label)  # fmt: skip
                self.outbox.release(job.key)
                continue
            self.sending += 1
            try:
                outcome = await deliverer.send(job.request)
            except JournalError:  # the shared breaker's database failed: the run stops, the row stays pending
                raise
            except Exception as error:  # one broken request must not stop the run; it is dead-lettered
                reason = self._reason(f"internal error while sending: {type(error).__name__}: {error}")
                outcome = Outcome(False, None, 1, 0.0, reason)
            finally:
                self.sending -= 1
            stats = self.summary.target(job.mapping, job.target)
            stats.attempts += outcome.attempts
            if outcome.attempts > 1:
                stats.retried += 1
            if outcome.parked:
                # The connection is down past outage_wait: the row stays pending for the next run.
                self.summary.parked += 1
                if job.request.connection not in self.summary.outages:
                    self.summary.outages[job.request.connection] = outcome.reason or "circuit breaker open"
                    self.log.warning("%s", outcome.reason)
                self.outbox.release(job.key)
            elif outcome.delivered:
                assert outcome.status is not None
                self.outbox.delivered(job.key, outcome.status, outcome.attempts)
                stats.delivered += 1
                stats.latency.add(outcome.latency)
                if log_info:
                    self.log.info("delivered %s: HTTP %d in %.0f ms, %d attempt%s", job.request.label,
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
