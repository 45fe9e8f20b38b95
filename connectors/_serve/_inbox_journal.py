"""The PostgreSQL inbox seen from the journal in the same database: what moves webhooks and journal rows together.

A PostgreSQL inbox lives in its journal's database (``_inbox_pg``), so one transaction on the journal's
connection can change both: ``requeue_rejected`` hands rejected webhooks back to delivery and forgets their
rejections at once, and ``copy_inbox`` moves an SQLite inbox into PostgreSQL inside ``shipmap journal copy``'s
transaction, so the journal and the inbox move together or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .._errors import JournalError
from .._plural import counted
from .._store._copy import analyze
from .._store._journal import Journal
from ._inbox import Inbox
from ._inbox_floor import NOTE_REQUEUE


def requeue_rejected(journal: Journal, rows: Mapping[int, str]) -> int:
    """Requeue the webhooks of ``rows`` (inbox row id: its rejected origin) in the inbox that shares the
    PostgreSQL ``journal``'s database, with their documents forgotten, and forget their rejections, in one
    statement (so one transaction): how many were requeued.

    Together, because the services on the database read the journal's rejections once, when a run starts,
    and their runs last as long as they do: a webhook requeued with its rejection left on record would be
    delivered and still listed. Forgotten here, a rejection is recorded again, with the reason of now, by
    whichever service fetches the webhook and fails again. Only ``processed`` rows that still hold their body
    are requeued, and only their rejections forgotten: a row still ``pending`` is some service's now (another
    command requeued it, or the worker that rejected it has not marked it yet), and it is left to that
    service; one whose body was dropped (``serve.keep_bodies``) has nothing to requeue."""
    if journal.backend != "postgresql":
        raise JournalError(
            f"a webhook is requeued this way in a postgresql:// journal only, not {journal.name}"
        )
    ids, origins = list(rows), list(rows.values())
    requeued = journal._db.execute(
        f"""WITH wanted AS (SELECT * FROM unnest(?::bigint[], ?::text[]) AS w (id, origin)),
                requeued AS (
                    UPDATE inbox SET state = 'pending', lease_owner = NULL, lease_until = NULL, documents = NULL
                    FROM wanted WHERE inbox.id = wanted.id AND inbox.state = 'processed'
                          AND inbox.body_dropped_at IS NULL
                    RETURNING wanted.origin),
                forgotten AS (DELETE FROM rejected WHERE origin IN (SELECT origin FROM requeued)),
                {NOTE_REQUEUE}
           SELECT count(*) FROM requeued""",
        (ids, origins),
    ).fetchone()
    return int(requeued[0])


_COPIED = "id, source, webhook_id, topic, received_at, headers, body, documents, state, processed_at"
_COPIED_DROPPED = "body_dropped_at"  # read from an SQLite inbox of version 2 (version 1 dropped none)


_COPY_PAGE = 1000


def copy_inbox(source: Path, destination: Journal) -> int:
    """Copy every row of the SQLite inbox file ``source`` into the inbox of ``destination``, a PostgreSQL
    journal's database whose inbox is empty: how many rows. Call it inside ``destination.transaction()``,
    with ``copy_journal``, so the journal and the inbox move together or not at all. Rows keep their ids
    (the journal's origins name them), states and responses: pending webhooks are handed to delivery by the
    first service on PostgreSQL, and processed ones keep answering a repeated webhook id as a duplicate."""
    if destination.backend != "postgresql" or destination.path is not None:
        raise JournalError(f"an inbox is copied into a postgresql:// journal only, not {destination.name}")
    held = int(destination._db.execute("SELECT count(*) FROM inbox").fetchone()[0])
    if held:
        raise JournalError(
            f"the inbox in {destination.name} is not empty ({counted(held, 'webhook')}); copy into an empty one"
        )
    marks = ", ".join("?" * (len(_COPIED.split(",")) + 1))
    copied, last_id = 0, None
    with Inbox(source, readonly=True) as inbox:
        dropped = "NULL" if inbox.version == "1" else _COPIED_DROPPED  # version 1: no body was dropped
        cursor = inbox._db.execute(f"SELECT {_COPIED}, {dropped} FROM inbox ORDER BY id")
        # A page at a time: an inbox of a million webhook bodies never sits in memory at once.
        while rows := cursor.fetchmany(_COPY_PAGE):
            destination._db.executemany(
                f"INSERT INTO inbox ({_COPIED}, {_COPIED_DROPPED}) VALUES ({marks})",
                [(*row[:6], bytes(row[6]), *row[7:]) for row in rows],
            )
            copied, last_id = copied + len(rows), rows[-1][0]
    if last_id is not None:  # the next webhook accepted on PostgreSQL gets an id after the copied ones
        destination._db.execute("SELECT setval(pg_get_serial_sequence('inbox', 'id'), ?)", (last_id,))
    analyze(destination, ["inbox"])  # its statistics with the rows, as the journal's (``_copy.analyze``)
    return copied
