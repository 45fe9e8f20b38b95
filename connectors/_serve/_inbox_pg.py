"""The inbox in PostgreSQL: one queue of accepted webhooks that many ``shipmap serve`` processes share.

It implements :class:`InboxStore`, as the SQLite :class:`Inbox` does, with what sharing needs (its connection
and schema are ``_inbox_pg_connection``'s, the claims' floor ``_inbox_floor``'s):

- ``accept`` is one autocommit ``INSERT ... ON CONFLICT (source, webhook_id) DO NOTHING`` (``accept_many``,
  the service's group commit, one such statement for the webhooks that arrived together): the row is durable
  when it returns (the caller acknowledges only then), and the unique constraint makes a repeated webhook id a
  duplicate whichever process received the first copy, for as long as the row is kept
  (``serve.dedup_window``).
- ``pending`` *claims* rows: it leases up to ``limit`` pending rows that no live process holds
  (``FOR UPDATE SKIP LOCKED``, so two processes never claim the same row at once) to this process for
  ``lease`` seconds. A background thread renews this process's leases; a process that dies (or is stopped)
  stops renewing, its leases lapse, and another process claims its rows. Rows nobody holds are claimed
  whatever their id (ids are not committed in order across processes); ``after`` (the feed's cursor) applies
  to the rows this process already holds: a webhook parked while its source API is down stays claimed, and
  is read again when the feed starts from the beginning, as with the SQLite inbox.
- A row handed over twice (its lease lapsed while its first process was slow) costs work, not a second
  delivery: the runtime keys deliveries by content in the shared journal, which sends each key once.
- A claim starts its scan at a *floor* (``_inbox_floor``), not at the first entry of ``inbox_pending``: a
  processed row leaves dead entries there (its accepted and claimed versions) until VACUUM, and a claim from
  the start stepped over all of them (0.7 ms a claim with 100,000 processed since the last vacuum, 20 ms
  with 1,000,000). Below the floor no row is pending but one requeued since (``NOTE_REQUEUE``, seen within
  a second) or one whose insert took longer than a refresh to commit (found at the next reading, 10 s).
  The queue's gauges (``depth``, ``oldest_pending``: ``/metrics``, ``/readyz``, ``shipmap status``) read from
  the same floor, so a scrape no longer walks those entries either (3.8 ms each with 1,000,000 processed,
  30 ms before their first scan marked them dead); ``depth`` counts up to ``DEPTH_CAP`` rows from there.
- A webhook *parked* while its source API is down (``park``: the feed's) stays claimed by its process for as
  long as the outage lasts, hours maybe. Since schema 4 (``parked_at``) it leaves ``inbox_pending`` for an
  index of its own, ``inbox_parked``, by process and id, so it holds no floor: claims and gauges step over
  nothing processed since it was parked. A claim reads its process's parked rows there past ``after`` (one
  index descent while the feed's cursor is past them; each again when the feed reads from 0, a sweep), the
  gauges count them there, and the floor's reading looks there for a process that is gone: its parked rows
  are made pending again (``_inbox_floor``). A process that closes makes its own pending again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from .._store._journal_pg import CONNECT_TIMEOUT_S, COUNT_SESSIONS, is_database_url
from .._store._reconnect import ReconnectStopped
from ._inbox import (
    BUSY_TIMEOUT_S,
    DEPTH_CAP,
    Accepted,
    HeldRow,
    InboundRow,
    Inbox,
    InboxError,
    InboxStore,
    Incoming,
    NoInboxError,
    inbound_row,
    sources_clause,
)
from ._inbox_floor import NOTE_REQUEUE, PARKED_HEADS, ClaimFloor
from ._inbox_pg_connection import STATEMENT_TIMEOUT_MS, InboxConnection
from ._inbox_pg_schema import INBOX_SCHEMA_VERSION, version_problem

PURGE_CHUNK = 2000  # rows per statement of a purge or a drop of bodies: each a short transaction of its own
# The exact count of what is owed, once at stop: its own bound, whatever the connection's (intake's is its
# webhooks' deadline, seconds at most), so a long queue is counted rather than reported unread.
EXACT_COUNT_TIMEOUT_MS = 30_000
_NOW = "extract(epoch from clock_timestamp())"
_ROW = "id, source, webhook_id, topic, received_at, headers, body, documents"
_log = logging.getLogger("shipmap.connectors.serve.inbox")
# Intake's connection is named so: one per live serve process on the database (how the processes count
# each other to share rate limits, and what an operator finds in pg_stat_activity).
SERVE_APPLICATION_NAME = "shipmap serve"


class PostgresInbox(InboxConnection):
    """The shared inbox in the PostgreSQL database at ``url``. One connection per object (one per thread).

    ``keep_leases``: renew this process's claims on a thread of its own (the delivery side's inbox, which
    claims rows); ``upgrade``: bring an older inbox schema to this version (``shipmap journal migrate``);
    ``create``: make the inbox in a database that has none (a service does; ``migrate`` does not);
    ``statement_timeout_ms``: how long the server lets one statement run (the gauges' reader ends sooner)."""

    # One table for every service: its row ids name a webhook alone, and its origins no inbox (``_origins``).
    inbox_id: str | None = None

    def __init__(
        self,
        url: str,
        *,
        lease: float = 30.0,
        readonly: bool = False,
        upgrade: bool = False,
        create: bool = True,
        keep_leases: bool = False,
        application_name: str | None = None,
        statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
        floor: ClaimFloor | None = None,
        reconnect_deadline: float | None = None,
        stop: threading.Event | None = None,
        wait_to_open: bool = False,
    ) -> None:
        """``floor``: the claims' floor, shared by a process's inboxes on one database (``open_inbox``); its
        own otherwise. ``reconnect_deadline``, ``stop``, ``wait_to_open``: ``InboxConnection``'s."""
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.upgraded_from: int | None = None
        self._keeper: _LeaseKeeper | None = None
        self._floor = floor or ClaimFloor(rescue=not readonly)
        super().__init__(
            url,
            lease=lease,
            readonly=readonly,
            application_name=application_name,
            statement_timeout_ms=statement_timeout_ms,
            reconnect_deadline=reconnect_deadline,
            stop=stop,
            wait_to_open=wait_to_open,
        )
        try:
            version = self.schema_version()
            if not readonly and (
                (version == 0 and create) or (upgrade and 0 < version < INBOX_SCHEMA_VERSION)
            ):
                self.upgraded_from, version = self.migrate()
        except InboxError:
            self.close()
            raise
        problem = version_problem(self.name, version, readonly)
        if problem:
            self.close()
            raise (NoInboxError if version == 0 else InboxError)(problem)
        if keep_leases and not readonly:
            self._keeper = _LeaseKeeper(self)

    def close(self) -> None:
        if self._keeper is not None:
            self._keeper.stop()
            self._keeper = None
            # Rows claimed but not handed over (a drain, a cancelled delivery loop): the others may take
            # them at once instead of after a lease.
            # A parked one among them is pending again, below the others' floors: noted as a requeue, they
            # look within a second (and park it again while its API is down).
            with contextlib.suppress(InboxError):
                self._execute(
                    f"""WITH released AS (UPDATE inbox SET lease_owner = NULL, lease_until = NULL
                                          WHERE lease_owner = %s AND state = 'pending' AND parked_at IS NULL),
                            requeued AS (UPDATE inbox SET lease_owner = NULL, lease_until = NULL, parked_at = NULL
                                         WHERE lease_owner = %s AND state = 'pending' AND parked_at IS NOT NULL
                                         RETURNING id),
                            {NOTE_REQUEUE}
                       SELECT count(*) FROM requeued""",
                    (self.worker, self.worker),
                )
        self.close_connection()

    def __enter__(self) -> PostgresInbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- the interface -------------------------------------------------------------------------------------

    def accept(
        self,
        source: str,
        webhook_id: str,
        topic: str | None,
        headers: Mapping[str, str],
        body: bytes,
        *,
        received_at: float | None = None,
    ) -> Accepted:
        """Commit one webhook (durably, before the caller acknowledges it), or recognise a duplicate that any
        process accepted."""
        row = self._execute(
            "INSERT INTO inbox (source, webhook_id, topic, received_at, headers, body)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (source, webhook_id) DO NOTHING RETURNING id",
            (source, webhook_id, topic, received_at or time.time(), json.dumps(dict(headers)), body),
        ).fetchone()
        if row is not None:
            return Accepted(int(row[0]), duplicate=False)
        found = self._execute(
            "SELECT id FROM inbox WHERE source = %s AND webhook_id = %s", (source, webhook_id)
        ).fetchone()
        return Accepted(int(found[0]) if found else 0, duplicate=True)

    def accept_many(self, incoming: Sequence[Incoming]) -> list[Accepted]:
        """Commit several webhooks in one statement: one round trip and one commit for all of them, all or
        none. A repeated id, within the batch or accepted before by any process, is a duplicate of the
        first copy's row."""
        if not incoming:
            return []
        now = time.time()
        rows = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(incoming))
        parameters = [
            value
            for source, webhook_id, topic, headers, body in incoming
            for value in (source, webhook_id, topic, now, json.dumps(dict(headers)), body)
        ]
        inserted = self._execute(
            "INSERT INTO inbox (source, webhook_id, topic, received_at, headers, body)"
            f" VALUES {rows} ON CONFLICT (source, webhook_id) DO NOTHING RETURNING id, source, webhook_id",
            parameters,
        ).fetchall()
        new = {(source, webhook_id): int(row_id) for row_id, source, webhook_id in inserted}
        earlier = {(item[0], item[1]) for item in incoming} - new.keys()
        known: dict[tuple[str, str], int] = {}
        if earlier:
            pairs = ", ".join(["(%s, %s)"] * len(earlier))
            found = self._execute(
                f"SELECT id, source, webhook_id FROM inbox WHERE (source, webhook_id) IN ({pairs})",
                [value for pair in earlier for value in pair],
            ).fetchall()
            known = {(source, webhook_id): int(row_id) for row_id, source, webhook_id in found}
        results: list[Accepted] = []
        for source, webhook_id, *_ in incoming:
            key = (source, webhook_id)
            if key in new:
                results.append(Accepted(new.pop(key), duplicate=False))
                known[key] = results[-1].id  # a later copy in this batch is its duplicate
            else:
                results.append(Accepted(known.get(key, 0), duplicate=True))
        return results

    def pending(
        self,
        after: int = 0,
        limit: int = 64,
        *,
        source: str | None = None,
        skip_sources: Collection[str] = (),
    ) -> list[InboundRow]:
        """Claim up to ``limit`` pending rows, oldest first: those no live process holds, and those this one
        holds past ``after`` (see the module's docstring); of ``source`` only, or of no source in
        ``skip_sources`` (their rows are not claimed)."""
        where, parameters = sources_clause(source, skip_sources, "%s")
        floor = self._floor.value(self._execute)
        # From the floor, on inbox_pending; and this process's parked rows past ``after``, on inbox_parked
        # (another's are held; when it is gone, the floor's reading makes them pending again).
        rows = self._execute(
            f"""WITH from_floor AS (
                    SELECT id FROM inbox WHERE state = 'pending' AND parked_at IS NULL AND id >= %s
                        AND (lease_until IS NULL OR lease_until < {_NOW} OR (lease_owner = %s AND id > %s)){where}
                    ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED),
                parked AS (
                    SELECT id FROM inbox WHERE state = 'pending' AND parked_at IS NOT NULL AND lease_owner = %s
                        AND id > %s{where}
                    ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)
                UPDATE inbox SET lease_owner = %s, lease_until = {_NOW} + %s
                WHERE id IN (SELECT id FROM from_floor UNION ALL SELECT id FROM parked ORDER BY id LIMIT %s)
                RETURNING {_ROW}""",
            (
                *(floor, self.worker, after, *parameters, limit),
                *(self.worker, after, *parameters, limit),
                *(self.worker, self.lease_seconds, limit),
            ),
        ).fetchall()
        return sorted((inbound_row(row) for row in rows), key=lambda row: row.id)

    def mark_processed(self, ids: Iterable[int]) -> None:
        """Their deliveries are owed in the journal. Whichever process gets here first marks the row."""
        wanted = list(ids)
        if wanted:
            self._execute(
                "UPDATE inbox SET state = 'processed', processed_at = %s, lease_owner = NULL,"
                " lease_until = NULL, parked_at = NULL WHERE id = ANY(%s) AND state = 'pending'",
                (time.time(), wanted),
            )

    def park(self, ids: Iterable[int]) -> None:
        """These rows, claimed by this process, wait for their source API: they stop holding the claims' floor
        at their ids (see the module's docstring). Still claimed, still renewed; handed to this process again
        when it reads from 0. A row parked already keeps its time (no write)."""
        wanted = list(ids)
        if wanted:
            self._execute(
                "UPDATE inbox SET parked_at = %s WHERE id = ANY(%s) AND state = 'pending'"
                " AND lease_owner = %s AND parked_at IS NULL",
                (time.time(), wanted, self.worker),
            )

    def save_documents(self, row_id: int, documents: Mapping[str, Any]) -> None:
        """Keep the enrichment responses with the webhook; the first saved wins, so a process that takes the
        row over maps the same data."""
        self._execute(
            "UPDATE inbox SET documents = COALESCE(documents, %s) WHERE id = %s",
            (json.dumps(documents, ensure_ascii=False), row_id),
        )

    def renew_leases(self) -> int:
        """Extend every claim this process holds; how many it holds."""
        cursor = self._execute(
            f"UPDATE inbox SET lease_until = {_NOW} + %s WHERE lease_owner = %s AND state = 'pending'",
            (self.lease_seconds, self.worker),
        )
        return int(cursor.rowcount)

    def requeue(self, ids: Iterable[int] | None = None, *, refetch: bool = False) -> int:
        """Hand processed rows to delivery again (all, or ``ids``); ``refetch`` forgets their responses. A row
        still ``pending`` is left as it is: some process may hold it now, and clearing its claim would hand it
        to a second one (``requeue_rejected`` takes processed rows alike). A row whose body was dropped stays
        too: there is nothing to map."""
        documents = ", documents = NULL" if refetch else ""
        held = "state = 'processed' AND body_dropped_at IS NULL"
        where = held if ids is None else f"{held} AND id = ANY(%s)"
        row = self._execute(
            f"""WITH requeued AS (UPDATE inbox SET state = 'pending', lease_owner = NULL, lease_until = NULL{documents}
                                  WHERE {where} RETURNING id),
                    {NOTE_REQUEUE}
               SELECT count(*) FROM requeued""",
            None if ids is None else (list(ids),),
        ).fetchone()
        return int(row[0])

    def held(self, ids: Iterable[int]) -> dict[int, HeldRow]:
        """Of these rows, those the inbox holds, each as :class:`HeldRow`."""
        rows = self._execute(
            "SELECT id, source, received_at, state, body_dropped_at IS NOT NULL FROM inbox WHERE id = ANY(%s)",
            (list(ids),),
        ).fetchall()
        return {int(row[0]): HeldRow(str(row[1]), float(row[2]), str(row[3]), bool(row[4])) for row in rows}

    # --- operations ----------------------------------------------------------------------------------------

    def services(self) -> int:
        """The serve processes taking webhooks into this inbox now, by their intake connections (an intake's
        own included, so at least 1 for it; a reader's count may be 0; a process that died counts until the
        server notices its connection gone)."""
        row = self._execute(COUNT_SESSIONS, (SERVE_APPLICATION_NAME,)).fetchone()
        return max(1 if self.application_name == SERVE_APPLICATION_NAME else 0, int(row[0]))

    def depth(self, cap: int | None = DEPTH_CAP) -> int:
        """Webhooks accepted by any process and not yet handed to delivery, counted up to ``cap``
        (``InboxStore.depth``): those on ``inbox_pending`` from the claims' floor (``_inbox_floor.ClaimFloor``),
        not over the dead entries before it, and the parked ones. Every one (``cap`` None, at stop) is counted
        from the start of the index: exact, whatever the floor has yet to see (a requeue in the last second,
        an insert still in flight at its last reading), within ``EXACT_COUNT_TIMEOUT_MS`` whatever this
        connection's own limit."""
        first = 0 if cap is None else self._floor.last_reading(self._execute)
        limit = "" if cap is None else f" LIMIT {int(cap)}"
        row = self._execute(
            f"""SELECT (SELECT count(*) FROM (SELECT 1 FROM inbox WHERE state = 'pending' AND parked_at IS NULL
                                              AND id >= %s{limit}) AS waiting)
                     + (SELECT count(*) FROM (SELECT 1 FROM inbox WHERE state = 'pending'
                                              AND parked_at IS NOT NULL{limit}) AS parked)""",
            (first,),
            timeout_ms=EXACT_COUNT_TIMEOUT_MS if cap is None else None,
        ).fetchone()
        return int(row[0]) if cap is None else min(int(row[0]), cap)

    def oldest_pending(self) -> float | None:
        """When the oldest webhook still waiting was received: the smallest pending id's (ids are drawn at
        accept, so the smallest is the first accepted; a requeued row keeps both), of the first from the claims'
        floor and the first parked row of each process."""
        row = self._execute(
            f"""WITH RECURSIVE {PARKED_HEADS}
                SELECT received_at FROM inbox WHERE id = LEAST(
                    (SELECT id FROM inbox WHERE state = 'pending' AND parked_at IS NULL AND id >= %s
                     ORDER BY id LIMIT 1),
                    (SELECT min(id) FROM parked_heads),
                    (SELECT id FROM inbox WHERE state = 'pending' AND parked_at IS NOT NULL AND lease_owner IS NULL
                     ORDER BY lease_owner, id LIMIT 1))""",
            (self._floor.last_reading(self._execute),),
        ).fetchone()
        return float(row[0]) if row else None

    def counts(self) -> dict[str, int]:
        rows = self._execute("SELECT source, state, count(*) FROM inbox GROUP BY source, state").fetchall()
        return {f"{source}/{state}": int(n) for source, state, n in rows}

    def purge(self, older_than: float, *, chunk: int = PURGE_CHUNK) -> int:
        """Forget processed rows received before ``older_than`` (epoch seconds): the dedup window ends.

        A statement (autocommitted) per ``chunk`` rows, oldest first, as the SQLite inbox does: one DELETE of
        an hour of a busy service's rows (720,000 at 200 a second, each with its body) held their locks for as
        long as it took, and could run into the statement timeout, failing every hour. Processes purging at once
        skip each other's rows. Each reads the index ``inbox_processed`` (schema version 5) from its start, no
        further than the rows it deletes."""
        total = 0
        while True:
            cursor = self._execute(
                "DELETE FROM inbox WHERE id IN (SELECT id FROM inbox WHERE state = 'processed'"
                " AND received_at < %s ORDER BY received_at LIMIT %s FOR UPDATE SKIP LOCKED)",
                (older_than, chunk),
            )
            total += int(cursor.rowcount)
            if cursor.rowcount < chunk:
                return total

    def drop_bodies(self, processed_before: float, keep: Collection[int], *, chunk: int = PURGE_CHUNK) -> int:
        """Empty the bodies of rows processed before ``processed_before`` and forget their documents, but for the
        rows in ``keep`` (those rejected), as the SQLite inbox does: a statement (autocommitted) per ``chunk``
        rows, oldest first."""
        dropped = 0
        after: tuple[float, int] = (-math.inf, 0)
        while True:
            rows = self._execute(
                "SELECT id, processed_at FROM inbox WHERE state = 'processed' AND body_dropped_at IS NULL"
                " AND processed_at < %s AND (processed_at, id) > (%s, %s) ORDER BY processed_at, id LIMIT %s",
                (processed_before, *after, chunk),
            ).fetchall()
            ids = [int(row_id) for row_id, _ in rows if row_id not in keep]
            if ids:
                cursor = self._execute(
                    "UPDATE inbox SET body = ''::bytea, documents = NULL, body_dropped_at = %s WHERE id = ANY(%s)"
                    " AND state = 'processed' AND body_dropped_at IS NULL",
                    (time.time(), ids),
                )
                dropped += int(cursor.rowcount)
            if len(rows) < chunk:
                return dropped
            after = (float(rows[-1][1]), int(rows[-1][0]))


class _LeaseKeeper:
    """Renews one inbox's claims every third of a lease, on a connection and a thread of its own, so a
    delivery loop busy with a slow batch keeps its rows; a process stopped or killed renews nothing."""

    def __init__(self, inbox: PostgresInbox) -> None:
        self._stopped = threading.Event()
        self._inbox = inbox
        self._thread = threading.Thread(target=self._main, name="shipmap-inbox-leases", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        inbox = self._inbox
        renewer: PostgresInbox | None = None
        while not self._stopped.wait(inbox.lease_seconds / 3):
            try:
                if renewer is None:
                    # The delivery side's reconnect policy: a renewal whose session the server ended (a restart)
                    # runs again as soon as the database is back, not a third of a lease later, so a restart
                    # shorter than a lease lapses no claim; the service's stop ends that wait.
                    renewer = PostgresInbox(
                        inbox._url,
                        lease=inbox.lease_seconds,
                        reconnect_deadline=inbox.reconnect_deadline,
                        stop=self._stopped,
                        wait_to_open=inbox.reconnect_deadline is not None,
                    )
                    renewer.worker = inbox.worker
                renewer.renew_leases()
            except InboxError as error:  # the next round tries again; a lapsed claim is taken over, not lost
                _log.warning("cannot renew the inbox's claims: %s", error)
            except ReconnectStopped:  # the service is stopping: nothing more to renew
                break
        if renewer is not None:
            renewer.close()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(CONNECT_TIMEOUT_S + STATEMENT_TIMEOUT_MS / 1000)


def open_inbox(
    location: str | Path,
    *,
    synchronous: Literal["normal", "full"] = "normal",
    lease: float = 30.0,
    intake: bool,
    floor: ClaimFloor | None = None,
    reconnect_deadline: float | None = None,
    stop: threading.Event | None = None,
    wait_to_open: bool = False,
) -> InboxStore:
    """The inbox at ``location``: a ``postgresql://`` URL (shared by every serve process on that database) or
    an SQLite file (one serve process: ``intake`` takes its lock). The delivery side (``intake=False``)
    claims rows, so on PostgreSQL it keeps its claims alive. ``floor``: the claims' floor the service's
    inboxes share (PostgreSQL; None: one of its own). ``reconnect_deadline``: on PostgreSQL, how long a
    statement of the delivery side waits for a session the server ended to open again (intake's never waits);
    ``stop``, once set (the service is stopping), ends that wait; ``wait_to_open``: opening waits within it
    too (the process reached the database before: intake opened it)."""
    if is_database_url(location):
        return PostgresInbox(
            str(location),
            lease=lease,
            keep_leases=not intake,
            application_name=SERVE_APPLICATION_NAME if intake else None,
            floor=floor,
            reconnect_deadline=reconnect_deadline,
            stop=stop,
            wait_to_open=wait_to_open,
        )
    return Inbox(location, synchronous=synchronous, lock=intake)


def open_reader(
    location: str | Path, *, statement_timeout: float | None = None
) -> Inbox | PostgresInbox | None:
    """The inbox at ``location`` opened read-only, beside the services that use it, or None when nothing was
    accepted there yet: no file, a file whose tables a service is creating now, or no inbox in the database.
    ``statement_timeout``: seconds each read may take (PostgreSQL's statement_timeout, SQLite's busy
    timeout; None: ``STATEMENT_TIMEOUT_MS``, ``BUSY_TIMEOUT_S``)."""
    path = Path(location)
    if not is_database_url(location) and not path.exists():
        return None
    try:
        if is_database_url(location):
            limit = (
                STATEMENT_TIMEOUT_MS if statement_timeout is None else max(1, round(statement_timeout * 1000))
            )
            return PostgresInbox(str(location), readonly=True, statement_timeout_ms=limit)
        return Inbox(
            path,
            readonly=True,
            busy_timeout=BUSY_TIMEOUT_S if statement_timeout is None else statement_timeout,
        )
    except NoInboxError:
        return None
