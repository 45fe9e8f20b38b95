"""What the inbox forgets, and when (at a service's start, then hourly while it is idle).

- A processed webhook's row, its id with it, ``serve.dedup_window`` (7 days by default) after it arrived: a
  repeat of that id is a new webhook from then on. A pending row is never forgotten: it is owed.
- A processed webhook's body, ``serve.keep_bodies`` after it was processed, unless the journal holds a
  rejected record of it. Only ``shipmap replay --rejected`` maps a processed body again, and only a rejected
  one; deduplication needs the id alone, and the journal keeps each event's document for itself. A rejected
  webhook keeps its body for the window, and so does one whose rejection cannot be read (the journal is
  unreachable): a body is dropped only when it is known not to be needed.

Both are done in chunks, so that intake commits between two. The cut-off is fixed before the journal is read:
the runtime journals an event (its rejection included) before the feed marks its row processed, so a row
processed before the cut-off has its rejection, if any, in what is read.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .._config import duration_text
from .._config._serve_model import ServeSettings
from .._errors import JournalError
from .._plural import counted
from .._redact import RedactingLogger
from ._inbox import DEDUP_WINDOW, InboxStore
from ._rejected import rejected_rows


@dataclass(frozen=True, slots=True)
class Retention:
    """How long the inbox remembers: a processed webhook's id (``serve.dedup_window``, from when it arrived)
    and its body (``serve.keep_bodies``, from when it was processed; at most the window)."""

    dedup_window: float = DEDUP_WINDOW
    keep_bodies: float = DEDUP_WINDOW

    @classmethod
    def of(cls, settings: ServeSettings) -> Retention:
        return cls(settings.dedup_window, settings.bodies_kept_for)


@dataclass(frozen=True, slots=True)
class Purged:
    """What one purge forgot: processed rows past the dedup window, and bodies past ``serve.keep_bodies``."""

    rows: int
    bodies: int


def purge_inbox(
    inbox: InboxStore,
    retention: Retention,
    *,
    journal: str | Path | None,
    log: RedactingLogger,
    reconnect_deadline: float | None = None,
    stop: threading.Event | None = None,
) -> Purged:
    """Forget what the inbox holds past its time (see the module's docstring). ``journal``: where the
    rejections are recorded (None: no journal, so none). ``reconnect_deadline``, ``stop``: delivery's hourly
    purge reads the rejections as delivery reads the journal, waiting out a database restart within
    ``journal.reconnect_deadline`` (the purge at start has none: a database not reached yet fails at once)."""
    now = time.time()
    rows = inbox.purge(now - retention.dedup_window)
    bodies = 0
    if retention.keep_bodies < retention.dedup_window:
        processed_before = now - retention.keep_bodies
        try:
            rejected = rejected_rows(
                journal, inbox.inbox_id, reconnect_deadline=reconnect_deadline, stop=stop
            )
        except JournalError as error:
            log.warning(
                "the inbox keeps the bodies of processed webhooks for now (serve.keep_bodies): it cannot read"
                " which of them were rejected: %s",
                error.message,
            )
        else:
            bodies = inbox.drop_bodies(processed_before, rejected)
    if rows or bodies:
        log.info(
            "inbox: forgot %s received more than %s ago (serve.dedup_window); dropped %s of webhooks processed"
            " more than %s ago (serve.keep_bodies)",
            counted(rows, "webhook"),
            duration_text(retention.dedup_window),
            counted(bodies, "body"),
            duration_text(retention.keep_bodies),
        )
    return Purged(rows, bodies)
