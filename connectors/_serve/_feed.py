"""The delivery loop's input: inbox rows become runtime events, in order, for as long as the service runs.

``InboxFeed.events()`` is an async iterable for ``Runtime.run_async``. The runtime settles (journals) each
event before it asks for the next one, so when the generator resumes after a ``yield`` the event's deliveries
are owed in the journal and its inbox row can be marked processed. Those marks are committed in small
batches: a crash can leave a few settled rows unmarked, and handing them over again is harmless, because the
runtime keys deliveries by content and skips what is already pending or delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from shipmap.engine import SourceDocument

from .._redact import get_logger
from ._enrich import Enricher, EnrichmentError
from ._inbox import DEDUP_WINDOW, InboundRow, InboxStore

_PAGE = 64
_MARK_EVERY = 32
_IDLE_POLL = 1.0  # seconds between looks at the inbox when nothing wakes the feed
_PURGE_EVERY = 3600.0


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


class InboxFeed:
    def __init__(self, inbox: InboxStore, enricher: Enricher, redactor: Any) -> None:
        self.inbox = inbox
        self.enricher = enricher
        self.wakeup = asyncio.Event()
        self.stopping = False
        self.idle = False  # waiting for a wake-up: intake's commit sets ``wakeup`` only then
        self.handed = 0  # events handed to the runtime
        self.enrichment_failures = 0
        self._log = get_logger("serve.feed", redactor)
        self._purged_at = time.monotonic()  # the service purged at start

    def stop(self) -> None:
        """Hand over what the inbox holds now, then end: the runtime finishes its work and returns. (The
        service's drain deadline cancels whatever is left; it stays owed for the next start.)"""
        self.stopping = True
        self.wakeup.set()

    async def events(self) -> AsyncIterator[SourceDocument]:
        done: list[int] = []
        cursor = 0
        try:
            while True:
                if done:
                    self.inbox.mark_processed(done)
                    done.clear()
                # Idle before looking: a commit after the look wakes the wait below, one before it is found.
                self.idle = True
                self.wakeup.clear()
                rows = self.inbox.pending(after=cursor, limit=_PAGE)
                if not rows:
                    if self.stopping:
                        return
                    if time.monotonic() - self._purged_at > _PURGE_EVERY:  # the dedup window moves on
                        self._purged_at = time.monotonic()
                        self.inbox.purge(time.time() - DEDUP_WINDOW)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wakeup.wait(), _IDLE_POLL)
                    continue
                self.idle = False
                for row in rows:
                    cursor = row.id
                    yield await self._event(row)
                    # Resumed: the runtime has journaled that event's deliveries.
                    self.handed += 1
                    done.append(row.id)
                    if len(done) >= _MARK_EVERY:
                        self.inbox.mark_processed(done)
                        done.clear()
        finally:
            if done:
                with contextlib.suppress(Exception):
                    self.inbox.mark_processed(done)

    async def _event(self, row: InboundRow) -> SourceDocument:
        origin = f"{row.source}#{row.id}"
        try:
            event = envelope(row)
        except ValueError as error:
            return SourceDocument(origin, error=f"the webhook body is not JSON: {error}", excerpt=None)
        if row.documents is not None:
            event.update(row.documents)  # fetched before a restart: map the same data
        elif self.enricher.applies(event):
            try:
                documents = await self.enricher.documents(event)
            except EnrichmentError as error:
                # Recorded by the runtime as a rejected input with this reason (shipmap dead-letters).
                self.enrichment_failures += 1
                self._log.warning("%s: enrichment failed: %s", origin, error.message)
                return SourceDocument(
                    origin,
                    error=f"enrichment failed: {error.message}",
                    excerpt=row.body[:500].decode("utf-8", "replace"),
                )
            self.inbox.save_documents(row.id, documents)
            event.update(documents)
        return SourceDocument(origin, document=event)
