"""``shipmap replay --rejected``: webhooks whose enrichment failed for good, handed to delivery again.

A skinny webhook whose documents cannot be fetched for good (the store API answers 404 because the order is
not visible yet, 403 because the token lacks a scope; a body that is not JSON or too large) becomes a
rejected input record in the journal, its origin ``<source>#<inbox row id>`` (``_origins``), while the inbox
keeps the webhook's body for the dedup window (``serve.dedup_window``). Once the cause is fixed,
:func:`find_rejected` finds those webhooks from the journal's rejected records, and they are requeued in the
inbox with their documents forgotten: the feed fetches them again, and the run that takes them resolves the
earlier rejection of each one that reads now (``Outbox._resolve_rejections``), or records it again with the
reason of now.

Who requeues: a running ``shipmap serve`` holds its SQLite inbox, so it is asked through its replay requests
(``_replays``, beside the journal, or beside the inbox when the journal is in PostgreSQL) and requeues the
rows between two runs (:func:`requeue_requested`); with no service running, ``shipmap replay`` requeues them
in the inbox itself and the next start processes them.

A PostgreSQL inbox is shared by the services on its database, whose runs last as long as they do and read
the journal's rejections only when they start: ``shipmap replay`` requeues the rows itself, services running
or not, and forgets their rejections in the same transaction (``_inbox_journal.requeue_rejected``); the service
that takes a row records its rejection again, with the reason of now, if it still fails. That needs the
journal in the inbox's database (the default: ``serve.inbox`` unset), which :func:`refuse_apart` checks.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from .._errors import JournalError
from .._plural import counted
from .._redact import RedactingLogger
from .._store._journal import Journal, open_readonly
from .._store._journal_pg import display_url, is_database_url
from ._inbox import HeldRow, Inbox
from ._inbox_journal import requeue_rejected
from ._inbox_pg import PostgresInbox, open_reader
from ._origins import WebhookOrigin, parse_webhook_origin, webhook_origin
from ._replays import ReplayRequest

NOT_A_WEBHOOK = "not a webhook: an input line of `shipmap run` (run that file again)"
GONE = "its webhook is no longer in the inbox (forgotten serve.dedup_window after it arrived)"
BODY_DROPPED = "the inbox no longer holds its body (dropped after serve.keep_bodies)"
# A row received this long after its origin's rejection holds another webhook (the inbox was made afresh and
# its ids began again). Not 0: on PostgreSQL the intake's host stamps the row and a delivery host the
# rejection, and their clocks may differ by a little.
_CLOCK_SKEW = 60.0


@runtime_checkable
class Requeueing(Protocol):
    """An inbox that hands processed rows to delivery again (both of shipmap's inboxes do)."""

    def requeue(self, ids: Iterable[int] | None = None, *, refetch: bool = False) -> int: ...


@dataclass(frozen=True, slots=True)
class Unreplayable:
    origin: str
    why: str


@dataclass(slots=True)
class RejectedWebhooks:
    """What ``shipmap replay --rejected`` found: the inbox rows to requeue (id: origin, in id order) and the
    rejected records it cannot bring back, each with why."""

    rows: dict[int, str] = field(default_factory=dict)
    unreplayable: list[Unreplayable] = field(default_factory=list)


def selected(origin: str, keys: Sequence[str] | None) -> bool:
    """``--key``: a source's name takes its webhooks (``bc``), an origin one webhook (``bc#12``)."""
    if not keys:
        return True
    return any(origin == key if "#" in key else origin.startswith(f"{key}#") for key in keys)


def refuse_apart(inbox: Path | str | None, journal: Path | str | None) -> None:
    """A PostgreSQL inbox outside the journal's database (or beside an SQLite journal) is refused: a webhook
    is requeued and its rejection forgotten in one transaction, and there the two cannot be one. (Several
    services on such an inbox, each with a journal of its own, would leave a rejection in one journal while
    another service delivered the webhook.)"""
    if inbox is None or not is_database_url(inbox):
        return
    if is_database_url(journal) and display_url(str(inbox)) == display_url(str(journal)):
        return
    where = f"in {display_url(str(journal))}" if is_database_url(journal) else f"the SQLite file {journal}"
    raise JournalError(
        f"shipmap replay --rejected: the PostgreSQL inbox {display_url(str(inbox))} needs the journal in its"
        f" database (this one is {where}): requeueing a webhook and forgetting its rejection are one"
        " transaction; put the journal there (journal.url) and leave serve.inbox unset"
        " (docs/serve.md#enrichment-fetching-from-the-sources-api)"
    )


def find_rejected(
    journal: Journal, inbox: Path | str | None, sources: Collection[str], keys: Sequence[str] | None
) -> RejectedWebhooks:
    """The journal's rejected records that ``keys`` select, sorted into the webhooks of ``sources`` still held
    by ``inbox`` (None: the config has no sources, so no inbox) and those that cannot be replayed."""
    latest: dict[str, float] = {}  # origin: when it was last rejected (a record per reason it had)
    for page in journal.rejected_pages():
        for record in page:
            if selected(record.origin, keys):
                latest[record.origin] = max(record.at, latest.get(record.origin, 0.0))
    wanted: dict[str, tuple[WebhookOrigin, float]] = {}  # origin: the webhook it names, rejected at
    why: dict[str, str] = {}  # origin: why it cannot be replayed
    for origin, at in latest.items():
        webhook = parse_webhook_origin(origin)
        if webhook is None:
            why[origin] = NOT_A_WEBHOOK
        elif webhook.source not in sources:
            why[origin] = f"source {webhook.source} is not in the config"
        else:
            wanted[origin] = (webhook, at)
    held: dict[int, HeldRow] = {}
    inbox_id: str | None = None
    reader = open_reader(inbox) if wanted and inbox is not None else None
    if reader is not None:
        with reader:
            inbox_id = reader.inbox_id
            held = reader.held({webhook.row for webhook, _ in wanted.values() if webhook.of_inbox(inbox_id)})
    found = RejectedWebhooks()
    for origin, (webhook, at) in sorted(wanted.items(), key=lambda item: item[1][0].row):
        kept = held.get(webhook.row)
        if not webhook.of_inbox(inbox_id):  # another service's SQLite inbox beside a shared journal
            why[origin] = (
                f"a webhook of another inbox ({webhook.inbox}): replay it with the config of the service that"
                " keeps that inbox"
            )
        elif kept is None:
            why[origin] = GONE
        elif (
            kept.source != webhook.source or kept.received_at > at + _CLOCK_SKEW
        ):  # received after its rejection: made afresh
            why[origin] = f"inbox row {webhook.row} holds another webhook now (the inbox was started anew)"
        elif kept.body_dropped:  # its rejection was not on record when the purge dropped the body
            why[origin] = BODY_DROPPED
        else:
            found.rows[webhook.row] = origin
    found.unreplayable = [Unreplayable(origin, why[origin]) for origin in latest if origin in why]
    return found


def rejected_rows(
    journal: str | Path | None,
    inbox_id: str | None,
    *,
    reconnect_deadline: float | None = None,
    stop: threading.Event | None = None,
) -> set[int]:
    """The rows of the inbox ``inbox_id`` (``_origins``) of which the journal at ``journal`` holds a rejected
    record: the webhooks ``replay --rejected`` may bring back, whose bodies the inbox keeps; none where there
    is no journal yet. Raises JournalError when the journal cannot be read (on PostgreSQL with a
    ``reconnect_deadline``: once it has not been reached again within it; ``stop`` ends that wait)."""
    reader = open_readonly(journal, reconnect_deadline=reconnect_deadline, stop=stop)
    if reader is None:
        return set()
    with reader:
        origins = reader.rejected_origins()
    webhooks = (parse_webhook_origin(origin) for origin in origins)
    return {webhook.row for webhook in webhooks if webhook is not None and webhook.of_inbox(inbox_id)}


def name_by_inbox(url: str, lease: float, inbox: Path, rows: Mapping[int, str]) -> dict[int, str]:
    """An SQLite inbox beside the PostgreSQL journal at ``url``, whose feed names its webhooks ``bc#kqzmvt.3``
    (``_origins``): the rejections recorded before inboxes had ids (``bc#3``) that ``find_rejected`` matched to
    rows of this inbox take that name in the journal, in one transaction, before the rows are requeued. The run
    that reads a requeued webhook resolves its rejection by the origin it gives the event: under the old name
    the rejection would stay listed after the webhook was delivered. ``rows`` as they are named now."""
    old = {
        row: webhook
        for row, origin in rows.items()
        if (webhook := parse_webhook_origin(origin)) and not webhook.inbox
    }
    if not old:
        return dict(rows)
    with Inbox(inbox, readonly=True) as reader:
        inbox_id = reader.inbox_id
    if inbox_id is None:  # no service has opened the file since inboxes have ids: its first writer draws one
        with Inbox(inbox) as writer:
            inbox_id = writer.inbox_id
    assert inbox_id is not None  # a writer draws it
    renamed = {row: webhook_origin(webhook.source, row, inbox_id) for row, webhook in old.items()}
    with Journal(url, lease=lease) as journal, journal.transaction():
        journal._db.executemany(
            "UPDATE rejected SET origin = ? WHERE origin = ?", [(renamed[row], rows[row]) for row in renamed]
        )
    return {**rows, **renamed}


def requeue_directly(inbox: Path, rows: Iterable[int]) -> int:
    """No service runs: requeue the rows in the inbox itself, holding its lock meanwhile (a service starting
    now waits for nothing: it fails to take the lock, and says so)."""
    try:
        with Inbox(inbox) as writer:
            return writer.requeue(list(rows), refetch=True)
    except JournalError as error:
        raise JournalError(
            f"{error.message}; if a shipmap serve is starting now, run `shipmap replay --rejected` again once"
            " it listens"
        ) from None


def requeue_shared(url: str, lease: float, rows: Mapping[int, str]) -> int:
    """A PostgreSQL inbox, in the journal's database at ``url``: requeue the rows and forget their rejections
    in one transaction, whether or not services run on it (they claim the rows as they claim new webhooks)."""
    with Journal(url, lease=lease) as journal:
        return requeue_rejected(journal, rows)


def services_on(inbox: str) -> int:
    """The ``shipmap serve`` processes taking webhooks into the PostgreSQL inbox at ``inbox`` now."""
    reader = open_reader(inbox)
    if reader is None:
        return 0
    with reader:
        assert isinstance(reader, PostgresInbox)
        return reader.services()


def requeue_requested(inbox: object, request: ReplayRequest, log: RedactingLogger) -> dict[str, object]:
    """The service's side: requeue a request's rows on its delivery connection to the inbox, between two runs
    (the next run's feed reads the inbox from its start, and its journal knows the rejections to resolve)."""
    if not isinstance(inbox, Requeueing):
        raise JournalError("this inbox cannot requeue webhooks")
    rows = list(request.rows or ())
    requeued = inbox.requeue(rows, refetch=True)
    log.info(
        "requeued %s rejected earlier, as `shipmap replay --rejected` asked (request %d): their documents are"
        " fetched again",
        counted(requeued, "webhook"),
        request.id,
    )
    return {"requeued": requeued, "rows": rows}
