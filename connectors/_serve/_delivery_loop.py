"""The delivery side of ``shipmap serve``, on a thread and an event loop of its own.

Intake answers webhooks; delivery maps, journals and sends them. Each would delay the other on one event
loop (a batch of mapping holds the loop for milliseconds, and every acknowledgement would wait behind it), so
delivery runs ``Runtime.run_async`` over the inbox on its own thread, with its own connection to the inbox.
The two share nothing else: intake wakes the feed when it commits a webhook, and the service asks it to stop
(hand over what the inbox holds, then end) or, at the drain deadline, to cancel.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

import httpx

from .._runtime import Progress, RunSummary, Runtime
from ._enrich import Enricher
from ._feed import InboxFeed
from ._inbox import Inbox
from ._settings import Enrichment


class DeliveryLoop:
    def __init__(
        self,
        runtime: Runtime,
        inbox: Path,
        synchronous: Literal["normal", "full"],
        enrichments: Mapping[str, Enrichment],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.runtime = runtime
        self._inbox_path = inbox
        self._synchronous = synchronous
        self._enrichments = enrichments
        self._transport = transport
        self.result: concurrent.futures.Future[RunSummary | None] = concurrent.futures.Future()
        self.cancelled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._feed: InboxFeed | None = None
        self._task: asyncio.Task[RunSummary | None] | None = None
        self._progress: Progress | None = None
        self._thread = threading.Thread(target=self._main, name="shipmap-serve-delivery", daemon=True)

    # --- called from the service's thread -----------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self.result.done()

    @property
    def handed(self) -> int:
        return self._feed.handed if self._feed is not None else 0

    def in_flight(self) -> int:
        progress = self._progress
        return progress.in_flight if progress is not None else 0

    def wake(self) -> None:
        """A webhook was committed: the feed looks at the inbox now (if it was waiting)."""
        feed, loop = self._feed, self._loop
        if feed is not None and loop is not None and feed.idle:
            _call_in(loop, feed.wakeup.set)

    def stop(self) -> None:
        """Hand over what the inbox holds, then end."""
        feed, loop = self._feed, self._loop
        if feed is not None and loop is not None:
            _call_in(loop, feed.stop)

    def cancel(self) -> None:
        """The drain deadline: what is in flight stays ``pending`` in the journal for the next start."""
        task, loop = self._task, self._loop
        if task is not None and loop is not None and not self.result.done():
            self.cancelled = True
            _call_in(loop, task.cancel)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    # --- the delivery thread --------------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            summary = asyncio.run(self._deliver())
        except asyncio.CancelledError:
            self.result.set_result(self.runtime.live)
        except BaseException as error:  # handed to the service, which stops and reports it
            self.result.set_exception(error)
        else:
            self.result.set_result(summary)

    async def _deliver(self) -> RunSummary | None:
        self._task = asyncio.current_task()
        with Inbox(self._inbox_path, synchronous=self._synchronous, lock=False) as inbox:
            async with Enricher(self.runtime, self._enrichments, transport=self._transport) as enricher:
                feed = InboxFeed(inbox, enricher, self.runtime.redactor)
                self._feed = feed
                self._loop = asyncio.get_running_loop()
                return await self.runtime.run_async(feed.events(), progress=self._on_progress)

    def _on_progress(self, progress: Progress) -> None:
        self._progress = progress


def _call_in(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
    with contextlib.suppress(RuntimeError):  # the delivery loop has closed: it has ended, nothing to do
        loop.call_soon_threadsafe(callback)
