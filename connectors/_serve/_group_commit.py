"""Intake's way into the inbox: the webhooks that arrive together share one commit, within a deadline.

A webhook is answered 2xx only after its row is committed, so each request waits for a commit. Three things
bound that wait:

- **the deadline** (``serve.intake_deadline``, or its source's ``sources.S.intake_deadline``: each request
  has its own sender's): a request whose commit has not answered by then raises
  :class:`InboxTimeout` (503 ``inbox_timeout``), well before its sender gives up (Shopify waits 5 s) and
  retries blind. A webhook still queued then leaves the queue: it is never committed after its 503. One
  already in a commit may still land after it (the commit was waiting on a lock that went just then): its
  sender's retry carries the same webhook id, which the inbox answers ``duplicate``, and the row is delivered
  once, as any accepted row is. So a 503 never costs a second delivery, and never a lost one.
- **the cap** (``serve.intake_max_waiting``): at most that many requests wait at once, each holding its body;
  one more raises :class:`IntakeFull` at once (503 ``inbox_busy``). While the inbox is stuck, requests keep
  coming (and their senders' retries with them): without it they would pile up for as long as it stays stuck.
- **the inbox's own limit** (``InboxStore.limit_waits``): one per connection, so each batch's commit runs
  under the longest deadline among its requests (set before the commit when it differs from the last one's:
  a statement only when sources of different deadlines take turns). On PostgreSQL the statement that waits on
  a locked table ends then too, so the connection goes on to the next batch instead of holding every later
  webhook behind the first one for the server's 30 s; a batch of a short source's webhooks alone ends at its
  short deadline. A short source's request in a batch with a long one's is answered at its own deadline all
  the same, and its row may land after (the duplicate case above). On SQLite the busy timeout is what is
  left of the batch's latest deadline, and the requests of that deadline are answered by the commit itself
  (``_answered_by_the_commit``): their 503 comes once it gave up, so their rows never land after it.

Where a commit waits: never on the event loop, which answers every other source, ``/healthz``, ``/readyz`` and
``/metrics``. On PostgreSQL each commit runs on intake's thread (``shipmap-intake``). On SQLite a commit is
tried on the loop first without waiting (``TriesFirst``: a local file's commit takes microseconds when the
write lock is free); only a batch that finds the lock held elsewhere goes to that thread, to wait there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Executor

from .._config import duration_text
from .._config._serve_model import DEFAULT_INTAKE_DEADLINE, DEFAULT_INTAKE_MAX_WAITING
from .._plural import counted
from ._inbox import (
    Accepted,
    GroupCommitting,
    InboxError,
    InboxStore,
    InboxTimeout,
    Incoming,
    TriesFirst,
)


class _Waiting:
    """A request waiting for its commit: its webhook, its answer, its deadline (seconds, and when on the loop's
    clock) and its timer."""

    __slots__ = ("deadline", "ends", "future", "incoming", "timer")

    def __init__(
        self, incoming: Incoming, future: asyncio.Future[Accepted], deadline: float, ends: float
    ) -> None:
        self.incoming, self.future, self.deadline, self.ends = incoming, future, deadline, ends
        self.timer: asyncio.Timeout | None = None


class IntakeFull(Exception):
    """``serve.intake_max_waiting`` webhooks wait for the inbox already: this one is refused at once."""

    def __init__(self, max_waiting: int) -> None:
        are = "is" if max_waiting == 1 else "are"
        super().__init__(f"{counted(max_waiting, 'webhook')} {are} waiting for the inbox already")
        self.max_waiting = max_waiting


class GroupCommit:
    """Hands the inbox the webhooks that arrived together, in one ``accept_many``; each caller awaits the
    commit that holds its own row, up to its deadline (``deadline`` seconds unless the caller gives its own;
    with a worker; without one the inbox's own limit bounds the commit), and at most ``max_waiting`` callers
    wait at once (see the module's docstring).
    An inbox without ``accept_many`` takes them one by one.

    With a ``worker`` (intake's thread) each commit that may wait runs there, one at a time, and the webhooks
    that arrive meanwhile wait for the next: a commit that waits on the inbox (a lock, a slow server) holds
    its own requests, not the event loop that answers the others, ``/readyz`` and ``/metrics`` among them. An
    inbox that can try a commit without waiting (``TriesFirst``: SQLite) commits on the loop when it can, and
    hands the worker only a batch that would wait. Without a worker the commit runs on the loop, waiting as
    long as the inbox's own limit."""

    _LIMIT = 256  # webhooks per transaction at most

    def __init__(
        self,
        inbox: InboxStore,
        worker: Executor | None = None,
        *,
        deadline: float = DEFAULT_INTAKE_DEADLINE,
        max_waiting: int = DEFAULT_INTAKE_MAX_WAITING,
    ) -> None:
        self.inbox = inbox
        self.worker = worker
        self.deadline = deadline
        self.max_waiting = max_waiting
        self._waiting: list[_Waiting] = []  # not yet in a commit
        self._committing = False  # a commit runs on the worker now
        self._tries_first = worker is not None and isinstance(inbox, TriesFirst)
        self.commits = 0
        self.waiting = 0  # requests awaiting their commit now, queued or in one (shipmap_intake_waiting)

    async def accept(self, incoming: Incoming, deadline: float | None = None) -> Accepted:
        """``incoming``'s row (or the earlier one of its webhook id), once committed. Raises
        :class:`IntakeFull` at once past the cap, :class:`InboxTimeout` at ``deadline`` (seconds; None: the
        committer's), and the inbox's :class:`InboxError` when the commit fails."""
        if self.waiting >= self.max_waiting:
            raise IntakeFull(self.max_waiting)
        deadline = self.deadline if deadline is None else deadline
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Accepted] = loop.create_future()
        entry = _Waiting(incoming, future, deadline, loop.time() + deadline)
        self._waiting.append(entry)
        if len(self._waiting) == 1 and not self._committing:
            # After the callbacks already queued: the other requests read in this turn join the batch.
            loop.call_soon(self._commit)
        self.waiting += 1
        try:
            if self.worker is None:
                # The commit runs on this loop, in this turn: the inbox's own limit (``limit_waits``) bounds
                # it, and a timer could not fire before it ends anyway (it would cost each request 4 us).
                return await future
            async with asyncio.timeout_at(entry.ends) as entry.timer:
                return await future  # cancelled at the deadline: a batch taken later leaves it out
        except TimeoutError:
            raise InboxTimeout(
                f"the inbox did not store the webhook within {duration_text(deadline)}"
            ) from None
        finally:
            self.waiting -= 1

    def _commit(self) -> None:
        if self.worker is not None:
            self._hand_over()
            return
        while batch := self._take():
            try:
                results = self._accept(batch, max(entry.deadline for entry in batch))
            except Exception as error:  # not only InboxError: these requests have no deadline to end a wait
                _settle(batch, error=error)
                continue
            _settle(batch, results)

    def _take(self) -> list[_Waiting]:
        """The next batch, without the requests answered meanwhile (past their deadline, or gone)."""
        live = [entry for entry in self._waiting if not entry.future.done()]
        batch, self._waiting = live[: self._LIMIT], live[self._LIMIT :]
        if batch:
            self.commits += 1
        return batch

    def _hand_over(self) -> None:
        """The next batch to the worker (committed here first when it need not wait); the one after it once
        this one is settled."""
        while batch := self._take():
            if not self._tries_first:
                break
            assert isinstance(self.inbox, TriesFirst)
            try:
                results = self.inbox.accept_at_once([entry.incoming for entry in batch])
            except Exception as error:  # as on the worker: a request must not wait for an answer never sent
                _settle(batch, error=error)
                continue
            if results is None:  # the write lock is held elsewhere: this batch waits for it on the worker
                break
            _settle(batch, results)
        if not batch:
            return
        loop = asyncio.get_running_loop()
        if self._tries_first:
            limit = self._answered_by_the_commit(batch, loop.time())
        else:
            limit = max(entry.deadline for entry in batch)
        self._committing = True
        done = loop.run_in_executor(self.worker, self._accept, batch, limit)

        def settled(done: asyncio.Future[list[Accepted]]) -> None:
            self._committing = False
            error = done.exception()
            if error is None:
                _settle(batch, done.result())
            else:  # not only InboxError: a request must not wait for an answer that never comes
                _settle(batch, error=error)
            self._hand_over()

        done.add_done_callback(settled)

    @staticmethod
    def _answered_by_the_commit(batch: Sequence[_Waiting], now: float) -> float:
        """SQLite: the commit waits for the write lock until the latest deadline of its batch, no longer (its
        busy timeout), and the requests of that deadline are answered by the commit itself, not by their timer:
        a 503 only once it gave up, so never a row stored after its 503, as when commits waited on the loop.
        Shorter ones keep their timer (a row that lands after its 503 is then a duplicate to its retry)."""
        ends = max(entry.ends for entry in batch)
        for entry in batch:
            if entry.ends >= ends and entry.timer is not None and not entry.timer.expired():
                entry.timer.reschedule(None)
        return max(0.001, ends - now)

    def _accept(self, batch: Sequence[_Waiting], limit: float) -> list[Accepted]:
        """On the worker (or the loop): the batch's commit, waiting at most ``limit`` seconds for the inbox (the
        inbox sets it when it changed)."""
        self.inbox.limit_waits(limit)
        incoming = [entry.incoming for entry in batch]
        if isinstance(self.inbox, GroupCommitting):
            return self.inbox.accept_many(incoming)
        return [self.inbox.accept(*item) for item in incoming]


def _settle(
    batch: Sequence[_Waiting],
    results: Sequence[Accepted] = (),
    *,
    error: BaseException | None = None,
) -> None:
    """Answer each caller of a batch: its row, or the commit's error (an InboxError is worded afresh for each,
    of its own class)."""
    for index, entry in enumerate(batch):
        future = entry.future
        if future.done():  # answered meanwhile: past its deadline, or its client went away
            continue
        if error is None:
            future.set_result(results[index])
        elif isinstance(error, InboxError):
            future.set_exception(type(error)(error.message))
        else:
            future.set_exception(error)
