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
  the same, and its row may land after (the duplicate case above). On SQLite, whose commits run on the event
  loop, the busy timeout is that deadline (the loop waits that long at most).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Executor

from .._config import duration_text
from .._config._serve_model import DEFAULT_INTAKE_DEADLINE, DEFAULT_INTAKE_MAX_WAITING
from ._inbox import Accepted, GroupCommitting, InboxError, InboxStore, InboxTimeout, Incoming

_Waiting = tuple[Incoming, asyncio.Future[Accepted], float]  # and the request's deadline, in seconds


class IntakeFull(Exception):
    """``serve.intake_max_waiting`` webhooks wait for the inbox already: this one is refused at once."""

    def __init__(self, max_waiting: int) -> None:
        super().__init__(f"{max_waiting} webhooks are waiting for the inbox already")
        self.max_waiting = max_waiting


class GroupCommit:
    """Hands the inbox the webhooks that arrived together, in one ``accept_many``; each caller awaits the
    commit that holds its own row, up to its deadline (``deadline`` seconds unless the caller gives its own;
    with a worker; without one the inbox's own limit bounds the commit), and at most ``max_waiting`` callers
    wait at once (see the module's docstring).
    An inbox without ``accept_many`` takes them one by one.

    With a ``worker`` (the thread of intake's connection to a PostgreSQL inbox) each commit runs there, one at
    a time, and the webhooks that arrive meanwhile wait for the next: a commit that waits on the database (a
    lock, a slow server) holds its own requests, not the event loop that answers the others, ``/readyz`` and
    ``/metrics`` among them. Without one (an SQLite inbox, a local file) the commit runs on the loop."""

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
        self.commits = 0
        self.waiting = 0  # requests awaiting their commit now, queued or in one (shipmap_intake_waiting)
        self._limit: float | None = None  # the inbox's limit_waits now (None: not set by this committer yet)

    async def accept(self, incoming: Incoming, deadline: float | None = None) -> Accepted:
        """``incoming``'s row (or the earlier one of its webhook id), once committed. Raises
        :class:`IntakeFull` at once past the cap, :class:`InboxTimeout` at ``deadline`` (seconds; None: the
        committer's), and the inbox's :class:`InboxError` when the commit fails."""
        if self.waiting >= self.max_waiting:
            raise IntakeFull(self.max_waiting)
        deadline = self.deadline if deadline is None else deadline
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Accepted] = loop.create_future()
        self._waiting.append((incoming, future, deadline))
        if len(self._waiting) == 1 and not self._committing:
            # After the callbacks already queued: the other requests read in this turn join the batch.
            loop.call_soon(self._commit)
        self.waiting += 1
        try:
            if self.worker is None:
                # The commit runs on this loop, in this turn: the inbox's own limit (``limit_waits``) bounds
                # it, and a timer could not fire before it ends anyway (it would cost each request 4 us).
                return await future
            async with asyncio.timeout(deadline):
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
                results = self._accept(batch)
            except Exception as error:  # not only InboxError: these requests have no deadline to end a wait
                _settle(batch, error=error)
                continue
            _settle(batch, results)

    def _take(self) -> list[_Waiting]:
        """The next batch, without the requests answered meanwhile (past their deadline, or gone)."""
        live = [entry for entry in self._waiting if not entry[1].done()]
        batch, self._waiting = live[: self._LIMIT], live[self._LIMIT :]
        if batch:
            self.commits += 1
        return batch

    def _hand_over(self) -> None:
        """The next batch to the worker; the one after it once this one is settled."""
        batch = self._take()
        if not batch:
            return
        self._committing = True
        done = asyncio.get_running_loop().run_in_executor(self.worker, self._accept, batch)

        def settled(done: asyncio.Future[list[Accepted]]) -> None:
            self._committing = False
            error = done.exception()
            if error is None:
                _settle(batch, done.result())
            else:  # not only InboxError: a request must not wait for an answer that never comes
                _settle(batch, error=error)
            self._hand_over()

        done.add_done_callback(settled)

    def _accept(self, batch: Sequence[_Waiting]) -> list[Accepted]:
        """On the worker (or the loop): the batch's commit, under the longest deadline among its requests."""
        limit = max(deadline for _, _, deadline in batch)
        if limit != self._limit:
            self.inbox.limit_waits(limit)
            self._limit = limit
        incoming = [entry[0] for entry in batch]
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
    for index, (_, future, _) in enumerate(batch):
        if future.done():  # answered meanwhile: past its deadline, or its client went away
            continue
        if error is None:
            future.set_result(results[index])
        elif isinstance(error, InboxError):
            future.set_exception(type(error)(error.message))
        else:
            future.set_exception(error)
