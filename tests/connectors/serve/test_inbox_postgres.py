"""The PostgreSQL inbox on the real server `make test` starts: shared deduplication, claims under leases,
its schema version and `shipmap journal migrate`, `shipmap journal copy` of an SQLite inbox, and
`shipmap status` and the serve settings that point at it."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from shipmap.connectors import Journal
from shipmap.connectors._cli import main
from shipmap.connectors._config import load_config
from shipmap.connectors._errors import JournalError
from shipmap.connectors._redact import Redactor, get_logger
from shipmap.connectors._serve import (
    Inbox,
    InboxError,
    PostgresInbox,
    _inbox,
    _inbox_floor,
    _inbox_journal,
    _inbox_pg_schema,
    serve_settings,
)
from shipmap.connectors._serve._group_commit import GroupCommit
from shipmap.connectors._serve._inbox import (
    Accepted,
    GroupCommitting,
    InboundRow,
    InboxTimeout,
    NoInboxError,
)
from shipmap.connectors._serve._inbox_journal import copy_inbox, requeue_rejected
from shipmap.connectors._serve._inbox_pg import INBOX_SCHEMA_VERSION, open_reader
from shipmap.connectors._serve._inbox_retention import Purged, Retention, purge_inbox
from shipmap.connectors._serve._totals import owed_at_stop

from .harness import SERVE_FIXTURES, environment

PASSWORD = "pg-inbox-secret-never-printed"  # the test server trusts loopback, so any password connects
BODY = b'{"id": 1}'


def _with_password(url: str) -> str:
    return url.replace("postgres@", f"postgres:{PASSWORD}@", 1)


def _wait_for(predicate: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_repeated_webhook_id_is_a_duplicate_whichever_process_took_the_first(postgres_url: str) -> None:
    with PostgresInbox(postgres_url) as a, PostgresInbox(postgres_url) as b:
        first = a.accept("shop", "wh-1", "orders/create", {"x-shopify-topic": "orders/create"}, BODY)
        again = b.accept("shop", "wh-1", "orders/create", {}, b'{"id": 2}')
        other_source = b.accept("woo", "wh-1", None, {}, BODY)  # ids are unique per source
        assert (first.duplicate, again.duplicate, other_source.duplicate) == (False, True, False)
        assert again.id == first.id != other_source.id
        (row,) = [r for r in b.pending() if r.source == "shop"]
        assert (row.webhook_id, row.topic, row.body, row.headers) == (
            "wh-1", "orders/create", BODY, {"x-shopify-topic": "orders/create"},
        )  # fmt: skip
        assert a.depth() == 2 and a.counts() == {"shop/pending": 1, "woo/pending": 1}


def test_webhooks_that_arrive_together_share_one_statement_and_each_gets_its_row(postgres_url: str) -> None:
    with PostgresInbox(postgres_url) as intake, PostgresInbox(postgres_url) as other:
        earlier = other.accept("shop", "wh-0", None, {}, BODY)  # taken first by another process
        assert isinstance(intake, GroupCommitting)  # the service commits a batch in one statement
        committer = GroupCommit(intake)

        async def arrive() -> list[Accepted]:
            ids = ["wh-1", "wh-0", "wh-2", "wh-1", "wh-3"]
            return list(
                await asyncio.gather(*(committer.accept(("shop", i, None, {"n": i}, BODY)) for i in ids))
            )

        results = asyncio.run(arrive())
        assert committer.commits == 1
        assert [r.duplicate for r in results] == [False, True, False, True, False]
        assert results[1].id == earlier.id and results[3].id == results[0].id
        assert len({results[0].id, results[2].id, results[4].id, earlier.id}) == 4
        # Committed when answered: the other process's connection sees every row, each with its own headers.
        rows = {row.webhook_id: row for row in other.pending(limit=10)}
        assert sorted(rows) == ["wh-0", "wh-1", "wh-2", "wh-3"]
        assert rows["wh-2"].id == results[2].id and rows["wh-2"].headers == {"n": "wh-2"}
        with pytest.raises(InboxError):  # all or none: a body no row can hold fails the whole batch
            intake.accept_many([("shop", "wh-4", None, {}, BODY), ("shop", "wh-5", None, {}, object())])  # type: ignore[list-item]
        assert intake.depth() == 4


def test_both_inboxes_read_one_source_or_all_but_some_and_claim_only_what_they_read(
    postgres_url: str, tmp_path: Path
) -> None:
    """The feed reads a source whose webhooks wait for a slow API apart (``source=``) and the others past it
    (``skip_sources=``): both inboxes give the same rows, oldest first, and PostgreSQL claims none it left
    out (another process may take them)."""
    arrivals = ["bc", "shop", "bc", "woo", "shop", "bc"]
    with Inbox(tmp_path / "inbox.db") as sqlite, PostgresInbox(postgres_url) as postgres:
        for inbox in (sqlite, postgres):
            for index, source in enumerate(arrivals):
                inbox.accept(source, f"wh-{index}", None, {}, BODY)
        for inbox in (sqlite, postgres):
            first = min(row.id for row in inbox.pending(limit=10))

            def read(rows: list[InboundRow], first: int = first) -> list[tuple[int, str]]:
                return [(row.id - first, row.source) for row in rows]

            assert read(inbox.pending(after=first, limit=10, source="bc")) == [(2, "bc"), (5, "bc")]
            assert read(inbox.pending(limit=2, source="bc")) == [(0, "bc"), (2, "bc")]
            assert read(inbox.pending(limit=10, skip_sources={"bc", "woo"})) == [(1, "shop"), (4, "shop")]
            assert read(inbox.pending(limit=10, skip_sources={"shop"})) == [
                (0, "bc"), (2, "bc"), (3, "woo"), (5, "bc"),
            ]  # fmt: skip
    with PostgresInbox(postgres_url) as postgres, PostgresInbox(postgres_url) as other:
        for index, source in enumerate(["slow", "fast", "slow"]):  # the rows above stay claimed
            postgres.accept(source, f"later-{index}", None, {}, BODY)
        assert [row.source for row in postgres.pending(limit=10, skip_sources={"slow"})] == ["fast"]
        # The slow source's rows were left out, not claimed: another process takes them.
        assert [row.webhook_id for row in other.pending(limit=10)] == ["later-0", "later-2"]


def test_claims_never_overlap_and_every_row_is_claimed_once(postgres_url: str) -> None:
    with PostgresInbox(postgres_url) as intake:
        for n in range(200):
            intake.accept("shop", f"wh-{n}", None, {}, BODY)
    claimed: list[list[int]] = [[] for _ in range(4)]

    def claim(slot: int) -> None:
        with PostgresInbox(postgres_url) as inbox:
            cursor = 0  # as the feed reads: rows this claimer holds are claimed again only past its cursor
            while rows := inbox.pending(after=cursor, limit=7):
                claimed[slot].extend(row.id for row in rows)
                cursor = rows[-1].id

    threads = [threading.Thread(target=claim, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    every = [row_id for ids in claimed for row_id in ids]
    assert len(every) == len(set(every)) == 200  # SKIP LOCKED: no row handed to two claimers


def _processed_then_pending(url: str, processed: int, pending: int) -> None:
    """``processed`` webhooks gone through accept, claim and processed (each leaves dead entries in
    ``inbox_pending`` until VACUUM, which nothing runs here), then ``pending`` accepted after them."""
    PostgresInbox(url).close()
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("ALTER TABLE inbox SET (autovacuum_enabled = off)")
        db.execute(
            "INSERT INTO inbox (source, webhook_id, received_at, headers, body)"
            " SELECT 'shop', 'old' || n, n, '{}', %s FROM generate_series(1, %s) AS n",
            (BODY, processed),
        )
        db.execute("UPDATE inbox SET lease_owner = 'gone', lease_until = 4e9")
        db.execute(
            "UPDATE inbox SET state = 'processed', processed_at = 1, lease_owner = NULL, lease_until = NULL"
        )
        db.execute(
            "INSERT INTO inbox (source, webhook_id, received_at, headers, body)"
            " SELECT 'shop', 'new' || n, 1e9 + n, '{}', %s FROM generate_series(1, %s) AS n",
            (BODY, pending),
        )


def _claim_until(inbox: PostgresInbox, wanted: set[int]) -> list[int]:
    """Claim (and mark processed) until every row of ``wanted`` was claimed: a requeue is seen within
    ``REQUEUES_CHECK_S``, a row below the floor at its next reading."""
    claimed: list[int] = []

    def found() -> bool:
        rows = inbox.pending(limit=64)
        claimed.extend(row.id for row in rows)
        inbox.mark_processed(row.id for row in rows)
        return wanted <= set(claimed)

    _wait_for(found, f"rows {sorted(wanted - set(claimed))[:5]} claimed")
    return claimed


def test_claims_start_past_the_processed_rows_and_still_find_rows_made_pending_below(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim scans ``inbox_pending`` from the smallest pending id, not over the dead entries of the rows
    processed before it; rows requeued below that floor (``requeue``, ``replay --rejected``) are claimed, and so is
    a row that commits below it (an insert in flight while the floor was read)."""
    monkeypatch.setattr(_inbox_floor, "FLOOR_REFRESH_S", 0.0)  # a reading at each claim, to begin with
    _processed_then_pending(postgres_url, processed=5000, pending=100)
    with Journal(postgres_url) as journal, PostgresInbox(postgres_url) as inbox:
        first = inbox.pending(limit=64)
        assert [row.webhook_id for row in first] == [f"new{n}" for n in range(1, 65)]
        inbox.mark_processed(row.id for row in first)
        # The smaller of the last two readings: the smallest pending id before the claim, and after it.
        assert inbox._floor.value(inbox._execute) == 5001
        monkeypatch.setattr(
            _inbox_floor, "FLOOR_REFRESH_S", 3600.0
        )  # from here, requeues are seen by their count

        assert inbox.requeue([17, 4000]) == 2  # the command's statement counts the requeue in meta
        requeued = requeue_rejected(journal, {2500: "shop#2500"})
        assert requeued == 1
        claimed = _claim_until(inbox, {17, 2500, 4000})
        assert len(claimed) == len(set(claimed))
        assert set(range(5065, 5101)) <= set(claimed)  # the new ones too

        monkeypatch.setattr(
            _inbox_floor, "FLOOR_REFRESH_S", 0.2
        )  # a late row waits for a reading; not 10 s here
        _wait_for(lambda: inbox._floor.value(inbox._execute) > 5050, "the floor past row 5050")
        with psycopg.connect(postgres_url, autocommit=True) as db:  # committed after the floor passed it
            db.execute("DELETE FROM inbox WHERE id = 5050")  # its id free, as a row in flight holds its own
            db.execute(
                "INSERT INTO inbox (id, source, webhook_id, received_at, headers, body)"
                " VALUES (5050, 'shop', 'late', 3e9, '{}', %s)",
                (BODY,),
            )
        assert 5050 in _claim_until(inbox, {5050})
        with psycopg.connect(postgres_url, autocommit=True) as db:
            assert db.execute("SELECT count(*) FROM inbox WHERE state = 'pending'").fetchone() == (0,)


def test_two_processes_claiming_from_floors_never_claim_one_row_and_take_requeued_rows_once(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes, each with its own floor, drain 3,000 webhooks behind 20,000 processed ones while 500 old
    ones are requeued below both floors: every row is claimed exactly once."""
    monkeypatch.setattr(_inbox_floor, "FLOOR_REFRESH_S", 0.05)  # floors rise within the drain, not after 20 s
    _processed_then_pending(postgres_url, processed=20_000, pending=3000)
    claimed: list[list[int]] = [[], []]
    floors = [0, 0]
    started = threading.Barrier(3)

    def claim(slot: int) -> None:
        with PostgresInbox(postgres_url) as inbox:
            started.wait(60)
            idle_since: float | None = None
            while idle_since is None or time.monotonic() - idle_since < 3 * _inbox_floor.REQUEUES_CHECK_S:
                rows = inbox.pending(limit=16)
                floors[slot] = min(inbox._floor._readings)
                claimed[slot].extend(row.id for row in rows)
                inbox.mark_processed(row.id for row in rows)
                idle_since = (idle_since or time.monotonic()) if not rows else None

    threads = [threading.Thread(target=claim, args=(slot,)) for slot in range(2)]
    for thread in threads:
        thread.start()
    started.wait(60)
    _wait_for(lambda: min(floors) > 20_000, "both floors past the processed rows")
    with PostgresInbox(postgres_url) as command:
        assert command.requeue(range(1, 1001, 2)) == 500
    for thread in threads:
        thread.join(120)
    every = [row_id for ids in claimed for row_id in ids]
    assert all(claimed)  # both took part
    assert len(every) == len(set(every)) == 3500
    assert set(every) == set(range(1, 1001, 2)) | set(range(20_001, 23_001))


def test_queue_depth_and_oldest_are_exact_behind_processed_rows_with_old_rows_requeued_and_held(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queue's gauges read from the claims' floor, past the dead entries of 5,000 processed rows, and are
    exact: rows held by a live claim count, rows requeued below the floor count (and the oldest is theirs), and
    a drained inbox reads 0 and None. A reader (``shipmap status``) gives what the service gives."""
    monkeypatch.setattr(
        _inbox_floor, "REQUEUES_CHECK_S", 0.0
    )  # each gauge looks for requeues: no waiting here
    _processed_then_pending(postgres_url, processed=5000, pending=40)  # received_at: old n, new 1e9 + n
    with (
        PostgresInbox(postgres_url) as gauges,
        PostgresInbox(postgres_url) as claimer,
        PostgresInbox(postgres_url) as command,
    ):
        assert (gauges.depth(), gauges.oldest_pending()) == (40, 1e9 + 1)
        assert gauges._floor.last_reading(gauges._execute) == 5001  # from there, not over the 5,000 before

        held = claimer.pending(limit=10)  # held by a live claim: still waiting
        assert (gauges.depth(), gauges.oldest_pending()) == (40, 1e9 + 1)
        claimer.mark_processed(row.id for row in held)
        assert (gauges.depth(), gauges.oldest_pending()) == (30, 1e9 + 11)

        assert command.requeue([17, 4000]) == 2  # old rows, far below the floor: counted in meta
        assert (gauges.depth(), gauges.oldest_pending()) == (32, 17.0)
        with open_reader(postgres_url) as status:  # type: ignore[union-attr]
            assert (status.depth(), status.oldest_pending()) == (32, 17.0)

        claimer.mark_processed([17, 4000, *range(5011, 5041)])
        monkeypatch.setattr(_inbox_floor, "FLOOR_REFRESH_S", 0.0)  # the floor read at each call (not in 10 s)
        assert (gauges.depth(), gauges.oldest_pending()) == (0, None)
        accepted = command.accept("shop", "after-all", None, {}, BODY, received_at=3e9)
        assert (gauges.depth(), gauges.oldest_pending()) == (1, 3e9)
        assert gauges._floor.last_reading(gauges._execute) == accepted.id


@pytest.fixture(params=["sqlite", "postgresql"])
def backlog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Inbox | PostgresInbox, Any]]:
    """An inbox of either backend holding 1,000 processed rows (ids 1-1000), then 20,000 pending (1001-21000),
    and a connection that runs a statement on it beside the inbox."""
    if request.param == "sqlite":
        with Inbox(tmp_path / "inbox.db") as inbox:
            inbox._db.execute(
                "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 21000)"
                " INSERT INTO inbox (source, webhook_id, received_at, headers, body)"
                " SELECT 'shop', 'wh' || n, n, '{}', ? FROM g",
                (BODY,),
            )
            inbox._db.execute("UPDATE inbox SET state = 'processed', processed_at = 1 WHERE id <= 1000")
            yield inbox, inbox._db.execute
        return
    url = request.getfixturevalue("postgres_url")
    _processed_then_pending(url, processed=1000, pending=20_000)
    with PostgresInbox(url) as inbox, psycopg.connect(url, autocommit=True) as db:
        yield inbox, db.execute


def test_queue_depth_is_exact_below_its_cap_and_the_cap_when_at_least_that_many_wait(
    backlog: tuple[Inbox | PostgresInbox, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gauge counts up to a cap (``DEPTH_CAP`` unless told), the same on both backends: exact below it,
    the cap when at least that many wait, and the same count whichever rows wait; without a cap, every one."""
    monkeypatch.setattr(_inbox_floor, "FLOOR_REFRESH_S", 0.0)  # the PostgreSQL floor read at each call
    inbox, execute = backlog
    cap = _inbox.DEPTH_CAP
    assert cap < 20_000  # the backlog is past the default cap
    assert inbox.depth() == cap and _inbox.depth_capped(inbox.depth())
    assert _inbox.depth_text(inbox.depth()) == f"{cap} or more"
    assert (inbox.depth(cap=30_000), inbox.depth(cap=20_001), inbox.depth(cap=None)) == (20_000,) * 3
    assert (inbox.depth(cap=20_000), inbox.depth(cap=7)) == (20_000, 7)  # at least that many

    execute("UPDATE inbox SET state = 'processed' WHERE id BETWEEN 1002 AND 20900 AND id % 3 <> 0")
    exact = int(execute("SELECT count(*) FROM inbox WHERE state = 'pending'").fetchone()[0])
    assert exact == 1 + 6633 + 100  # the oldest row, every third between, the last 100
    assert inbox.depth() == inbox.depth(cap=None) == exact and not _inbox.depth_capped(exact)
    assert _inbox.depth_text(inbox.depth()) == str(exact)
    assert (inbox.depth(cap=exact + 1), inbox.depth(cap=exact), inbox.depth(cap=exact - 1)) == (
        exact,
        exact,
        exact - 1,
    )
    assert [inbox.depth() for _ in range(5)] == [exact] * 5  # the same at each scrape

    execute("UPDATE inbox SET state = 'processed'")
    assert (inbox.depth(), inbox.depth(cap=None), inbox.oldest_pending()) == (0, 0, None)


def test_what_is_owed_at_stop_counts_every_waiting_webhook_past_the_gauges_cap(
    backlog: tuple[Inbox | PostgresInbox, Any],
) -> None:
    """The stop report says the exact number waiting, not the gauges' capped one."""
    inbox, execute = backlog
    then = "the next start sends them, nothing acknowledged is lost"
    assert owed_at_stop(None, inbox) == f"owed at stop: 20000 webhooks waiting in the inbox; {then}"
    execute("UPDATE inbox SET state = 'processed' WHERE id > 1001")
    then = then.replace("sends them", "sends it")  # one webhook: "it"
    assert owed_at_stop(None, inbox) == f"owed at stop: 1 webhook waiting in the inbox; {then}"


def test_the_exact_count_at_stop_waits_past_intakes_deadline_within_its_own_bound(postgres_url: str) -> None:
    """The stop report counts on intake's connection, whose statements end at its webhooks' deadline (here
    200 ms): the exact count has a bound of its own (``EXACT_COUNT_TIMEOUT_MS``), so a table locked for a
    second is waited for and counted, not reported unread; the connection's own limit stays as it was."""
    _processed_then_pending(postgres_url, processed=10, pending=50)
    then = "the next start sends them, nothing acknowledged is lost"
    with PostgresInbox(postgres_url) as intake, psycopg.connect(postgres_url) as holder:
        intake.limit_waits(0.2)
        holder.execute("LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE")
        threading.Timer(1.0, holder.rollback).start()  # the lock goes a second in
        started = time.monotonic()
        owed = owed_at_stop(None, intake)
        took = time.monotonic() - started
        assert owed == f"owed at stop: 50 webhooks waiting in the inbox; {then}"  # counted, not unread
        assert took > 0.9, took  # after the lock went
        assert intake._execute("SHOW statement_timeout").fetchone()[0] == "200ms"  # SET LOCAL: gone with it
        holder.execute("LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE")
        # Intake's own statements still end at 200 ms: the server's own cancellation, the lock still held.
        with pytest.raises(InboxTimeout) as refused:
            intake.accept("shop", "late", None, {}, BODY)
        assert "no answer within 200ms" in refused.value.message, refused.value.message
        assert "canceling statement due to statement timeout" in refused.value.message
        holder.rollback()


def test_the_exact_count_at_stop_sees_a_requeue_below_the_floor_at_once(postgres_url: str) -> None:
    """The gauges count from the claims' floor, which sees a requeue within ``REQUEUES_CHECK_S``; the count at
    stop reads the whole index, so a row requeued this instant is in it."""
    _processed_then_pending(postgres_url, processed=3000, pending=5)
    with PostgresInbox(postgres_url) as gauges, PostgresInbox(postgres_url) as command:
        assert gauges.depth() == 5 and gauges._floor.last_reading(gauges._execute) == 3001
        assert command.requeue([17, 2000]) == 2
        assert gauges.depth(cap=None) == 7


def test_the_sqlite_queue_depth_and_oldest_are_exact_with_old_rows_requeued(tmp_path: Path) -> None:
    with Inbox(tmp_path / "inbox.db") as inbox:
        ids = [inbox.accept("shop", f"wh{n}", None, {}, BODY, received_at=1000.0 + n).id for n in range(50)]
        inbox.mark_processed(ids[:45])
        assert (inbox.depth(), inbox.oldest_pending()) == (5, 1045.0)
        assert inbox.requeue([ids[3], ids[30]]) == 2
        assert (inbox.depth(), inbox.oldest_pending()) == (7, 1003.0)


def test_a_lapsed_claim_is_taken_over_a_kept_one_renewed_and_a_closed_one_released(postgres_url: str) -> None:
    with PostgresInbox(postgres_url, lease=0.5) as stalled, PostgresInbox(postgres_url) as survivor:
        row_id = stalled.accept("shop", "lapses", None, {}, BODY).id
        assert [r.webhook_id for r in stalled.pending()] == ["lapses"]
        assert survivor.pending() == []  # held under a live lease
        taken: list[str] = []
        _wait_for(lambda: taken.extend(r.webhook_id for r in survivor.pending()) or taken, "the takeover")
        assert taken == ["lapses"]
        survivor.mark_processed([row_id])
        stalled.mark_processed([row_id])  # the late mark of a row already processed changes nothing
        assert survivor.counts() == {"shop/processed": 1}

    with (
        PostgresInbox(postgres_url, lease=1.0, keep_leases=True) as keeper,
        PostgresInbox(postgres_url) as other,
    ):
        keeper.accept("shop", "kept", None, {}, BODY)
        (row,) = keeper.pending()
        assert keeper.pending(after=row.id) == []  # handed over: past the feed's cursor
        assert keeper.pending() == [row]  # a parked webhook: read again when the feed starts from 0

        def lease_until() -> float:
            with psycopg.connect(postgres_url) as db:
                found = db.execute("SELECT lease_until FROM inbox WHERE id = %s", (row.id,)).fetchone()
            assert found is not None
            return float(found[0])

        claimed_until = lease_until()
        _wait_for(lambda: lease_until() > claimed_until, "the keeper's renewal")
        keeper.close()  # a drain: the claims it still holds go back at once, not after a lease
        assert [r.webhook_id for r in other.pending()] == ["kept"]


def test_a_requeue_takes_processed_rows_and_leaves_a_row_another_process_holds(postgres_url: str) -> None:
    """A service requeues on request (``replay --rejected`` through its replay requests) while other processes
    work on the same table: a row still ``pending`` is held by one of them, and a requeue that cleared its
    claim would let a third process take it too. Only processed rows are handed back, as
    ``requeue_rejected`` does."""
    with PostgresInbox(postgres_url) as intake, PostgresInbox(postgres_url) as worker:
        ids = [intake.accept("bc", f"w{n}", None, {}, BODY).id for n in range(3)]
        assert [row.id for row in worker.pending()] == ids  # the worker claims all three
        worker.save_documents(ids[0], {"order": {"id": 1}})
        worker.save_documents(ids[2], {"order": {"id": 3}})
        worker.mark_processed(ids[:2])  # the third is still being worked on
        with PostgresInbox(postgres_url) as service:
            assert service.requeue(ids, refetch=True) == 2
            assert service.requeue(refetch=True) == 0  # all: the same rows, none processed now
        with psycopg.connect(postgres_url) as db:
            rows = db.execute("SELECT id, state, documents, lease_owner FROM inbox ORDER BY id").fetchall()
        assert rows == [
            (ids[0], "pending", None, None),  # handed back, its documents forgotten: fetched again
            (ids[1], "pending", None, None),
            (ids[2], "pending", json.dumps({"order": {"id": 3}}), worker.worker),  # still the worker's
        ]
        with PostgresInbox(postgres_url) as third:  # takes the rows handed back, not the one held
            assert [row.id for row in third.pending()] == ids[:2]


def test_the_sqlite_inbox_requeues_processed_rows_alike(tmp_path: Path) -> None:
    """One process holds an SQLite inbox, but its feed's lanes keep pending rows (and their fetches) across
    runs, and the service requeues between two runs: a pending row keeps its documents, and the count says
    what was handed back."""
    with Inbox(tmp_path / "inbox.db") as inbox:
        ids = [inbox.accept("bc", f"w{n}", None, {}, BODY).id for n in range(3)]
        inbox.save_documents(ids[0], {"order": {"id": 1}})
        inbox.save_documents(ids[2], {"order": {"id": 3}})
        inbox.mark_processed(ids[:2])
        assert inbox.requeue(ids, refetch=True) == 2
        assert inbox.requeue(refetch=True) == 0
        assert [(row.id, row.documents) for row in inbox.pending()] == [
            (ids[0], None), (ids[1], None), (ids[2], {"order": {"id": 3}}),
        ]  # fmt: skip


def test_the_inbox_schema_is_versioned_and_upgraded_by_journal_migrate(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(NoInboxError, match="holds no shipmap inbox"):
        PostgresInbox(postgres_url, readonly=True)
    with Journal(postgres_url):
        pass
    assert main(["journal", "migrate", _with_password(postgres_url)]) == 0
    out = capsys.readouterr().out
    assert "inbox" not in out  # a database of `run` workers only gets no inbox
    PostgresInbox(postgres_url).close()  # the first service creates it
    assert main(["journal", "migrate", _with_password(postgres_url)]) == 0
    out = capsys.readouterr().out
    assert f"{postgres_url}: inbox schema version {INBOX_SCHEMA_VERSION}, up to date" in out
    assert PASSWORD not in out
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("UPDATE meta SET v = '99' WHERE k = 'inbox_schema_version'")
    with pytest.raises(InboxError, match="has schema version 99, written by a newer shipmap"):
        PostgresInbox(postgres_url)


def test_journal_copy_carries_the_sqlite_inbox_into_postgresql(
    tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The copy reads a page at a time: here, each row its own.
    monkeypatch.setattr(_inbox_journal, "_COPY_PAGE", 1)
    journal_path = tmp_path / ".shipmap" / "journal.db"
    with Journal(journal_path) as journal:
        journal.put_source("d" * 64, '{"id":1}')
    with Inbox(journal_path.parent / "inbox.db") as inbox:  # where serve keeps it: beside the journal
        done = inbox.accept("shop", "wh-done", "orders/create", {"a": "1"}, BODY)
        inbox.save_documents(done.id, {"order": {"id": 1}})
        inbox.mark_processed([done.id])
        waiting = inbox.accept("shop", "wh-waiting", "orders/create", {}, b'{"id": 2}')
    url = _with_password(postgres_url)
    assert main(["journal", "copy", str(journal_path), url]) == 0
    assert capsys.readouterr().out.strip() == (
        f"copied {journal_path} -> {postgres_url}: 1 source, 0 deliveries, 0 unrouted, 0 rejected,"
        " 2 inbox webhooks"
    )
    with psycopg.connect(postgres_url) as db:  # the copy gathered the planner's statistics of what it filled
        analyzed = db.execute(
            "SELECT relname, reltuples FROM pg_class WHERE relname IN ('sources', 'inbox') ORDER BY relname"
        ).fetchall()
        assert analyzed == [("inbox", 2.0), ("sources", 1.0)]  # -1 (never analyzed) before
        assert db.execute("SELECT count(*) FROM pg_stats WHERE tablename = 'inbox'").fetchone()[0] > 0
    with PostgresInbox(postgres_url) as shared:
        (row,) = shared.pending()  # the pending webhook is handed to the first service on PostgreSQL
        assert (row.id, row.webhook_id, row.body) == (waiting.id, "wh-waiting", b'{"id": 2}')
        assert shared.accept("shop", "wh-done", None, {}, BODY) == type(done)(done.id, duplicate=True)
        assert shared.accept("shop", "wh-new", None, {}, BODY).id > waiting.id  # ids go on after the copy
        assert shared.counts() == {"shop/pending": 2, "shop/processed": 1}
    assert main(["journal", "copy", str(journal_path), url]) != 0  # into a store that is not empty
    assert "not empty" in capsys.readouterr().err
    assert main(["journal", "copy", str(journal_path), str(tmp_path / "j2.db"), "--inbox", "x.db"]) != 0
    assert "an inbox is copied into a postgresql:// journal only" in capsys.readouterr().err


def test_an_inbox_is_copied_into_an_empty_one_only_and_says_what_it_holds(
    tmp_path: Path, postgres_url: str
) -> None:
    with Inbox(tmp_path / "inbox.db") as inbox:
        inbox.accept("shop", "wh-1", "orders/create", {}, BODY)
    with PostgresInbox(postgres_url) as shared:
        shared.accept("shop", "wh-there", None, {}, BODY)
    with Journal(postgres_url) as destination, pytest.raises(JournalError) as refused:
        copy_inbox(tmp_path / "inbox.db", destination)
    assert str(refused.value).endswith("is not empty (1 webhook); copy into an empty one"), refused.value


def test_serve_shares_intake_through_the_journals_database_and_status_reads_it(
    tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in environment("http://127.0.0.1:9").items():
        monkeypatch.setenv(name, value)
    for item in SERVE_FIXTURES.glob("*.yaml"):
        (tmp_path / item.name).write_text(item.read_text())
    config = tmp_path / "serve.yaml"
    text = config.read_text()
    config.write_text(
        text.replace("  path: .shipmap/journal.db\n", f"  url: {_with_password(postgres_url)}\n")
    )
    settings = serve_settings(load_config(config))
    assert settings.inbox == _with_password(postgres_url)  # no serve.inbox: the journal's database
    with PostgresInbox(postgres_url) as inbox:
        inbox.accept("shop", "wh-1", "orders/create", {}, BODY)
    assert main(["status", str(config), "--json", "--url", "http://127.0.0.1:9"]) == 0
    printed = capsys.readouterr().out
    report = json.loads(printed)
    assert (report["inbox"], report["queue_depth"], report["queue_depth_capped"], report["webhooks"]) == (
        postgres_url,
        1,
        False,
        {"shop/pending": 1},
    )
    assert PASSWORD not in printed
    with psycopg.connect(postgres_url, autocommit=True) as db:  # with wh-1, one more than the cap waits
        db.execute(
            "INSERT INTO inbox (source, webhook_id, received_at, headers, body)"
            " SELECT 'shop', 'wh-more-' || n, 1e9 + n, '{}', %s FROM generate_series(1, %s) AS n",
            (BODY, _inbox.DEPTH_CAP),
        )
    assert main(["status", str(config), "--json", "--url", "http://127.0.0.1:9"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["queue_depth"], report["queue_depth_capped"]) == (_inbox.DEPTH_CAP, True)
    assert main(["status", str(config), "--url", "http://127.0.0.1:9"]) == 0
    assert f"queue       {_inbox.DEPTH_CAP} or more waiting, oldest " in capsys.readouterr().out
    local = text.replace("serve:\n", "serve:\n  inbox: .shipmap/here.db\n")
    config.write_text(local.replace("  path: .shipmap/journal.db\n", f"  url: {postgres_url}\n"))
    assert serve_settings(load_config(config)).inbox == tmp_path / ".shipmap" / "here.db"  # named: kept
    assert main(["status", str(config), "--json", "--url", "http://127.0.0.1:9"]) == 0
    assert json.loads(capsys.readouterr().out)["queue_depth"] == 0
    assert not (tmp_path / ".shipmap" / "here.db").exists()  # status never creates an inbox


def test_a_connection_the_server_dropped_fails_one_accept_and_the_next_one_reconnects(
    postgres_url: str,
) -> None:
    with PostgresInbox(postgres_url) as inbox:
        inbox.accept("shop", "before", None, {}, BODY)
        with psycopg.connect(
            postgres_url, autocommit=True
        ) as admin:  # a server restart, as the inbox sees it
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        with pytest.raises(InboxError, match="PostgreSQL says"):  # intake answers 503: nothing acknowledged
            inbox.accept("shop", "during", None, {}, BODY)
        assert inbox.accept("shop", "during", None, {}, BODY).duplicate is False
        assert inbox.writable() and inbox.depth() == 2


def test_keep_bodies_drops_processed_bodies_in_chunks_and_keeps_rejected_ones(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The journal and the inbox in one database, as a service on PostgreSQL has them: the rejection is read
    from the journal's table, the bodies are dropped a chunk (one statement) at a time."""
    with Journal(postgres_url) as journal, PostgresInbox(postgres_url) as inbox:
        rows = [inbox.accept("shop", f"wh-{i}", None, {}, BODY).id for i in range(5)]
        waiting = inbox.accept("shop", "waiting", None, {}, BODY).id
        inbox.pending()
        inbox.mark_processed(rows)
        inbox._execute("UPDATE inbox SET processed_at = processed_at - 7200")
        for row in rows[:2]:
            inbox.save_documents(row, {"order": {"id": row}})
        journal.record_rejected(f"shop#{rows[1]}", "enrichment failed: HTTP 404", None)
        statements: list[str] = []
        execute = inbox._execute

        def counting(sql: str, parameters: object = None) -> object:
            statements.append(sql.split()[0])
            return execute(sql, parameters)

        inbox._execute = counting  # type: ignore[method-assign]
        assert inbox.drop_bodies(time.time() - 3600, {rows[1]}, chunk=2) == 4
        inbox._execute = execute  # type: ignore[method-assign]
        assert statements == ["SELECT", "UPDATE", "SELECT", "UPDATE", "SELECT", "UPDATE"]  # 2, 1, 1 dropped
        with psycopg.connect(postgres_url) as db:
            held = dict(
                db.execute("SELECT webhook_id, body FROM inbox WHERE body_dropped_at IS NULL").fetchall()
            )
            documents = dict(db.execute("SELECT webhook_id, documents IS NOT NULL FROM inbox").fetchall())
        assert held == {"wh-1": BODY, "waiting": BODY}  # the rejected one, and the one not processed yet
        # Their documents go with their bodies, but the rejected one's (it is fetched and mapped again).
        assert {name for name, kept in documents.items() if kept} == {"wh-1"}
        assert inbox.accept("shop", "wh-0", None, {}, BODY).duplicate  # its id is remembered all the same
        assert inbox.requeue([rows[0], rows[1]]) == 1  # a row with no body is not handed over again
        assert [row.id for row in inbox.pending()] == [rows[1], waiting]
        inbox.mark_processed([waiting, rows[1]])
        log = get_logger("serve", Redactor())
        with caplog.at_level(logging.INFO, logger="shipmap.connectors.serve"):
            # Through the journal: the rejected row keeps its body, the waiting one was processed just now.
            assert purge_inbox(inbox, Retention(keep_bodies=0), journal=postgres_url, log=log) == Purged(0, 1)
        assert caplog.messages == [
            "inbox: forgot 0 webhooks received more than 7d ago (serve.dedup_window); dropped 1 body of webhooks"
            " processed more than 0s ago (serve.keep_bodies)"
        ]
        with psycopg.connect(postgres_url) as db:
            held = dict(
                db.execute("SELECT webhook_id, body FROM inbox WHERE body_dropped_at IS NULL").fetchall()
            )
        assert held == {"wh-1": BODY}


def test_an_inbox_of_version_1_is_upgraded_by_journal_migrate_only(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with Journal(postgres_url):
        pass
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(_inbox_pg_schema.MIGRATIONS[0])
        db.execute("INSERT INTO meta (k, v) VALUES ('inbox_schema_version', '1')")
        db.execute(
            "INSERT INTO inbox (source, webhook_id, received_at, headers, body, state, processed_at)"
            " VALUES ('shop', 'before', 1000, '{}', %s, 'processed', 1000)",
            (BODY,),
        )
    with pytest.raises(InboxError) as refused:
        PostgresInbox(postgres_url)
    assert refused.value.message == (
        f"the inbox in {postgres_url} has schema version 1; this shipmap needs {INBOX_SCHEMA_VERSION}: run"
        f" `shipmap journal migrate {postgres_url}` (with its password) once, then start the services"
    )
    assert main(["journal", "migrate", _with_password(postgres_url)]) == 0
    assert f"{postgres_url}: inbox schema version 1 -> {INBOX_SCHEMA_VERSION}" in capsys.readouterr().out
    with PostgresInbox(postgres_url) as inbox:
        assert inbox.accept("shop", "before", None, {}, BODY).duplicate
        assert inbox.drop_bodies(2000.0, set()) == 1


def test_an_inbox_of_version_2_gains_the_index_of_claimed_rows_and_renews_and_releases_on_it(
    postgres_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 3: a process renews its claims (every third of a lease) and gives them up (when it closes) on an
    index of the claimed pending rows: each read every pending row to find its few (55-80 ms with 100,000
    pending). `shipmap journal migrate` adds it; a process's statements touch its rows only, on that index."""
    with Journal(postgres_url):
        pass
    with psycopg.connect(postgres_url, autocommit=True) as db:
        for step in _inbox_pg_schema.MIGRATIONS[:2]:
            db.execute(step)
        db.execute("INSERT INTO meta (k, v) VALUES ('inbox_schema_version', '2')")
        db.execute(
            "INSERT INTO inbox (source, webhook_id, received_at, headers, body, lease_owner, lease_until)"
            " SELECT 'shop', 'w' || n, n, '{}', %s, CASE WHEN n <= 3 THEN 'other' END,"
            " CASE WHEN n <= 3 THEN 4e9 END FROM generate_series(1, 3000) AS n",
            (BODY,),
        )
    with pytest.raises(InboxError, match=f"has schema version 2; this shipmap needs {INBOX_SCHEMA_VERSION}"):
        PostgresInbox(postgres_url)
    assert main(["journal", "migrate", _with_password(postgres_url)]) == 0
    out = capsys.readouterr().out
    assert f"{postgres_url}: inbox schema version 2 -> {INBOX_SCHEMA_VERSION}" in out
    assert PASSWORD not in out
    with psycopg.connect(postgres_url, autocommit=True) as db:
        [(indexed,)] = db.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'inbox_leased'")
        assert indexed.endswith(
            "USING btree (lease_owner) WHERE ((state = 'pending'::text) AND (lease_owner IS NOT NULL))"
        ), indexed
        db.execute("ANALYZE inbox")
    statements: list[tuple[str, object]] = []
    with PostgresInbox(postgres_url, keep_leases=True) as inbox:
        assert [row.webhook_id for row in inbox.pending(limit=2)] == ["w4", "w5"]  # the others hold w1-w3
        execute = inbox._execute

        def recording(sql: str, parameters: object = None) -> object:
            statements.append((sql, parameters))
            return execute(sql, parameters)

        monkeypatch.setattr(inbox, "_execute", recording)
        assert inbox.renew_leases() == 2
    [renew, release] = [sql.split(" SET ")[1].split()[0] for sql, _ in statements]
    assert (renew, release) == ("lease_until", "lease_owner")  # close() gave its claims up
    for statement in statements:
        plan = _plan(postgres_url, statement)
        assert "Index Scan using inbox_leased on inbox" in plan, plan
        assert "Seq Scan" not in plan, plan
    with psycopg.connect(postgres_url) as db:
        held = db.execute("SELECT webhook_id FROM inbox WHERE lease_owner IS NOT NULL ORDER BY id").fetchall()
    assert held == [("w1",), ("w2",), ("w3",)]  # the other process's claims stay


def _plan(url: str, statement: tuple[str, object]) -> str:
    """EXPLAIN of an inbox statement, on a connection of its own."""
    sql, parameters = statement
    with psycopg.connect(url) as db:
        return "\n".join(str(row[0]) for row in db.execute(f"EXPLAIN {sql}", parameters))


def test_the_purge_past_the_dedup_window_deletes_a_chunk_at_a_time(postgres_url: str) -> None:
    with PostgresInbox(postgres_url) as inbox:
        old = [inbox.accept("shop", f"old-{i}", None, {}, BODY, received_at=1000.0).id for i in range(5)]
        recent = inbox.accept("shop", "recent", None, {}, BODY).id
        parked = inbox.accept("shop", "parked", None, {}, BODY, received_at=1000.0).id  # still pending
        inbox.pending()
        inbox.mark_processed([*old, recent])
        statements: list[str] = []
        execute = inbox._execute

        def counting(sql: str, parameters: object = None) -> object:
            statements.append(sql.split()[0])
            return execute(sql, parameters)

        inbox._execute = counting  # type: ignore[method-assign]
        assert inbox.purge(2000.0, chunk=2) == 5
        inbox._execute = execute  # type: ignore[method-assign]
        assert statements == ["DELETE", "DELETE", "DELETE"]  # 2, 2, 1
        assert inbox.counts() == {"shop/processed": 1, "shop/pending": 1}  # the recent one stays
        assert [row.id for row in inbox.pending()] == [parked]  # a pending row is never purged, however old


def test_purge_inbox_forgets_the_rows_past_serve_dedup_window(postgres_url: str) -> None:
    """A window of an hour: the row received 2 h ago is forgotten (its id is new again), the one received 30
    min ago is still a duplicate, and a pending row is owed, however old."""
    now = time.time()
    with PostgresInbox(postgres_url) as inbox:
        old = inbox.accept("shop", "old", None, {}, BODY, received_at=now - 7200).id
        recent = inbox.accept("shop", "recent", None, {}, BODY, received_at=now - 1800).id
        inbox.accept("shop", "waiting", None, {}, BODY, received_at=now - 7200)
        inbox.pending()
        inbox.mark_processed([old, recent])
        log = get_logger("serve", Redactor())
        window = Retention(dedup_window=3600.0, keep_bodies=3600.0)
        assert purge_inbox(inbox, window, journal=postgres_url, log=log) == Purged(1, 0)
        assert inbox.counts() == {"shop/processed": 1, "shop/pending": 1}
        assert not inbox.accept("shop", "old", None, {}, BODY).duplicate
        assert inbox.accept("shop", "recent", None, {}, BODY).duplicate
