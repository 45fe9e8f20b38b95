"""Leases on a shared journal (PostgreSQL): how several workers share one outbox without sending twice.

A worker holds the ``pending`` rows it claimed under a lease, renews them every third of a lease, and takes
over rows whose lease expired (their worker died or stalled). A worker that was itself stalled past half a
lease asks the journal before it sends, so its late copy of a delivery another worker took over is dropped.
On a local SQLite journal nothing is shared and every check here passes at once.
"""

from __future__ import annotations

import asyncio
import time

from .._map._steps import Job
from .._summary import Held, describe_held
from ._claims import ELSEWHERE_CAP, holds, pending_elsewhere, pending_holders, renew_leases
from ._outbox import Outbox


class LeaseKeeper:
    """This worker's leases on the outbox's rows, for one run."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.journal = outbox.journal
        self._renewed = time.monotonic()  # when this worker's leases were last renewed (shared journals)
        self._lost: set[str] = set()  # keys whose lease another worker took over (shared journals)

    def may_send(self, key: str) -> bool:
        """False when another worker has taken this delivery over (this one was stalled past its lease)."""
        return not (key in self._lost or (self._lease_lapsed() and not holds(self.journal, key)))

    def _lease_lapsed(self) -> bool:
        """On a shared journal: this worker has not renewed its leases for half a lease (it was stopped, or
        starved), so another worker may have taken its deliveries over; ask before sending."""
        journal = self.journal
        return journal.shared and time.monotonic() - self._renewed > journal.lease_seconds / 2

    async def keep(self, queue: asyncio.Queue[Job | None]) -> None:
        """A shared journal: renew this worker's leases, and take over deliveries whose lease expired."""
        while True:
            await asyncio.sleep(self.journal.lease_seconds / 3)
            held = renew_leases(self.journal)
            # Queued here but held by another worker now (this one was stalled past its lease): not ours. Only
            # keys still scheduled here matter, so the set stays within what this worker has in hand.
            scheduled = self.outbox.scheduled
            self._lost = {key for key in self._lost if key in scheduled}
            self._lost.update(key for key in scheduled if key not in held)
            self._renewed = time.monotonic()
            for job in self.outbox.recover():
                await queue.put(job)

    async def wait_for_others(self, queue: asyncio.Queue[Job | None], patience: float) -> list[Held]:
        """A shared journal: the input is done, but other workers may hold deliveries; one that dies leaves
        them to expire, and this worker takes them over. Returns [] when none are held elsewhere. Otherwise
        it stops waiting when their number has not moved for three leases (the workers holding them are
        alive but stuck, on an outage for example) or after ``patience`` seconds, and returns who holds
        them: the run is not done, and says so (``shipmap run`` exits 10)."""
        lease = self.journal.lease_seconds
        started = last_move = time.monotonic()
        last = -1
        counted_at = -lease  # when every one was last counted (only while the poll's count is at its cap)
        while True:
            for job in self.outbox.recover():
                await queue.put(job)
            waiting = pending_elsewhere(self.journal, ELSEWHERE_CAP)  # a poll stays cheap
            if waiting == 0:
                return []
            now = time.monotonic()
            if waiting >= ELSEWHERE_CAP and now - counted_at >= lease / 3:
                # At the cap, the count cannot move: whether they move is read on every one, a third of a
                # lease apart (a count of every one takes 7-15 ms with 100,000 pending).
                waiting, counted_at = pending_elsewhere(self.journal, cap=None), now
            elif waiting >= ELSEWHERE_CAP:
                waiting = last
            if waiting != last:
                last, last_move = waiting, now
            if now - last_move > 3 * lease or now - started >= patience:
                waiting = pending_elsewhere(self.journal, cap=None)
                held = [Held(*row) for row in pending_holders(self.journal)]
                self.outbox.log.warning(
                    "%d deliveries are still pending, held by other live workers: %s; stopped waiting after"
                    " %.0f s (%s)",
                    waiting,
                    describe_held(held),
                    now - started,
                    "none moved for three leases"
                    if now - last_move > 3 * lease
                    else "journal.wait_for_others",
                )
                return held
            # Polled often: a worker that waited a whole second here outlived the run by up to that second.
            await asyncio.sleep(min(0.25, lease / 4))
