"""Intake's way into the inbox: the webhooks that arrive together share one commit, and each request waits
for the commit that holds its own row (its acknowledgement is that row)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Executor

from ._inbox import Accepted, GroupCommitting, InboxError, InboxStore, Incoming


class GroupCommit:
    """Hands the inbox the webhooks that arrived together, in one ``accept_many``; each caller awaits the
    commit that holds its own row. An inbox without ``accept_many`` takes them one by one.

    With a ``worker`` (the thread of intake's connection to a PostgreSQL inbox) each commit runs there, one at
    a time, and the webhooks that arrive meanwhile wait for the next: a commit that waits on the database (a
    lock, a slow server) holds its own requests, not the event loop that answers the others, ``/readyz`` and
    ``/metrics`` among them. Without one (an SQLite inbox, a local file) the commit runs on the loop."""

    _LIMIT = 256  # webhooks per transaction at most

    def __init__(self, inbox: InboxStore, worker: Executor | None = None) -> None:
        self.inbox = inbox
        self.worker = worker
        self._waiting: list[tuple[Incoming, asyncio.Future[Accepted]]] = []
        self._committing = False  # a commit runs on the worker now
        self.commits = 0

    async def accept(self, incoming: Incoming) -> Accepted:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Accepted] = loop.create_future()
        self._waiting.append((incoming, future))
        if len(self._waiting) == 1 and not self._committing:
            # After the callbacks already queued: the other requests read in this turn join the batch.
            loop.call_soon(self._commit)
        return await future

    def _commit(self) -> None:
        if self.worker is not None:
            self._hand_over()
            return
        while self._waiting:
            batch = self._take()
            try:
                results = self._accept([incoming for incoming, _ in batch])
            except InboxError as error:
                _settle(batch, error=error)
                continue
            _settle(batch, results)

    def _take(self) -> list[tuple[Incoming, asyncio.Future[Accepted]]]:
        batch, self._waiting = self._waiting[: self._LIMIT], self._waiting[self._LIMIT :]
        self.commits += 1
        return batch

    def _hand_over(self) -> None:
        """The next batch to the worker; the one after it once this one is settled."""
        if not self._waiting:
            return
        batch = self._take()
        self._committing = True
        done = asyncio.get_running_loop().run_in_executor(
            self.worker, self._accept, [incoming for incoming, _ in batch]
        )

        def settled(done: asyncio.Future[list[Accepted]]) -> None:
            self._committing = False
            error = done.exception()
            if error is None:
                _settle(batch, done.result())
            else:  # not only InboxError: a request must not wait for an answer that never comes
                _settle(batch, error=error)
            self._hand_over()

        done.add_done_callback(settled)

    def _accept(self, incoming: Sequence[Incoming]) -> list[Accepted]:
        if isinstance(self.inbox, GroupCommitting):
            return self.inbox.accept_many(incoming)
        return [self.inbox.accept(*item) for item in incoming]


def _settle(
    batch: Sequence[tuple[Incoming, asyncio.Future[Accepted]]],
    results: Sequence[Accepted] = (),
    *,
    error: BaseException | None = None,
) -> None:
    """Answer each caller of a batch: its row, or the commit's error (an InboxError is worded afresh for each)."""
    for index, (_, future) in enumerate(batch):
        if future.done():  # a request whose client went away was cancelled meanwhile
            continue
        if error is None:
            future.set_result(results[index])
        elif isinstance(error, InboxError):
            future.set_exception(InboxError(error.message))
        else:
            future.set_exception(error)
