"""Parked webhooks in the PostgreSQL inbox (schema 4), on the real server `make test` starts: a webhook parked
for hours (its source API down) no longer holds the claims' floor at its id, and is still claimed when it is
due: by its process when its feed reads from 0, by another when its process dies or gives it up. A process's
two inboxes share one floor."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import psycopg
import pytest
from shipmap.connectors import Journal
from shipmap.connectors._cli import main
from shipmap.connectors._serve import InboxError, PostgresInbox, _inbox_floor, _inbox_pg_schema
from shipmap.connectors._serve._inbox_floor import ClaimFloor
from shipmap.connectors._serve._inbox_gauges import open_gauge_reader
from shipmap.connectors._serve._inbox_pg import INBOX_SCHEMA_VERSION, open_inbox

from .test_inbox_postgres import BODY, _wait_for

PROCESSED = 5000


@pytest.fixture
def parked(postgres_url: str) -> Iterator[tuple[PostgresInbox, int]]:
    """A process (``holder``) holding one parked webhook, row 1, then 5,000 rows processed after it and two
    accepted after those (ids 5002, 5003)."""
    with PostgresInbox(postgres_url, lease=3600) as holder:
        row_id = holder.accept("shop", "parked", None, {}, BODY, received_at=10.0).id
        assert [row.id for row in holder.pending()] == [row_id] == [1]
        holder.park([row_id])
        _processed(postgres_url, PROCESSED)
        for n in range(2):
            holder.accept("shop", f"after-{n}", None, {}, BODY, received_at=2e9 + n)
        yield holder, row_id


def _processed(url: str, count: int) -> None:
    """``count`` webhooks accepted and processed (each leaves dead entries in ``inbox_pending`` until VACUUM,
    which nothing runs here)."""
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("ALTER TABLE inbox SET (autovacuum_enabled = off)")
        first = db.execute(
            "INSERT INTO inbox (source, webhook_id, received_at, headers, body)"
            " SELECT 'shop', 'old' || gen_random_uuid(), n, '{}', %s FROM generate_series(1, %s) AS n RETURNING id",
            (BODY, count),
        ).fetchall()[0][0]
        db.execute("UPDATE inbox SET state = 'processed', processed_at = 1 WHERE id >= %s", (first,))


def test_a_parked_webhook_does_not_hold_the_floor_and_is_counted_and_handed_back_to_its_process(
    parked: tuple[PostgresInbox, int], postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_inbox_floor, "FLOOR_REFRESH_S", 0.0)  # the floor read at each call
    holder, row_id = parked
    with PostgresInbox(postgres_url) as other:
        assert [row.webhook_id for row in other.pending(limit=1)] == ["after-0"]
        floor = other._floor.value(other._execute)
        assert floor == PROCESSED + 2  # past the parked row and the rows processed since, not at row 1
        assert [row.webhook_id for row in other.pending(after=floor)] == ["after-1"]
        assert other.pending(after=PROCESSED + 3) == []  # the parked row is held: not the other process's
        # The gauges count it on the index of parked rows: still waiting, and the oldest.
        assert (other.depth(), other.oldest_pending(), other.depth(cap=None)) == (3, 10.0, 3)
        assert other.depth(cap=2) == 2

    assert holder.pending(after=PROCESSED + 3) == []  # the feed's cursor is past it
    # A sweep (the feed reads from 0) hands it to its process again.
    assert [row.webhook_id for row in holder.pending(after=0, limit=1)] == ["parked"]
    assert [row.id for row in holder.pending(after=0, source="other")] == []  # of its source only
    assert holder._floor.value(holder._execute) == PROCESSED + 2  # its own floor passes it too
    holder.mark_processed([row_id])
    with psycopg.connect(postgres_url) as db:
        state = db.execute("SELECT state, parked_at FROM inbox WHERE id = %s", (row_id,)).fetchone()
    assert state == ("processed", None)  # not parked once processed: a requeue makes it claimable
    assert holder.requeue([row_id]) == 1
    with PostgresInbox(postgres_url) as third:
        assert [row.id for row in third.pending(limit=1)] == [row_id]


def test_claims_and_gauges_behind_a_parked_webhook_read_inbox_pending_from_past_the_rows_processed_since(
    parked: tuple[PostgresInbox, int], postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each statement of a claim and of a scrape, as the server plans it: ``inbox_pending`` is read from the
    floor, past the parked row and the 5,000 processed since (before, from the parked row's id, over their dead
    entries), and the parked rows on their own index."""
    monkeypatch.setattr(_inbox_floor, "FLOOR_REFRESH_S", 0.0)
    with PostgresInbox(postgres_url) as other:
        assert other.pending(limit=1) and other.depth() == 3  # two readings: the floor settled
        monkeypatch.setattr(_inbox_floor, "FLOOR_REFRESH_S", 3600.0)
        statements: list[tuple[str, object]] = []
        execute = other._execute

        def recording(sql: str, parameters: object = None, **options: object) -> object:
            statements.append((sql, parameters))
            return execute(sql, parameters, **options)

        monkeypatch.setattr(other, "_execute", recording)
        other.pending(after=PROCESSED + 2)
        other.depth()
        other.oldest_pending()
    plans = [_plan(postgres_url, statement) for statement in statements if "meta" not in statement[0]]
    assert len(plans) == 3
    for plan in plans:
        lines = plan.splitlines()
        assert "Seq Scan" not in plan, plan
        assert "inbox_parked" in plan, plan
        starts = [
            int(re.sub(r"\D", "", after.split("id >=")[1]))
            for line, after in itertools.pairwise(lines)
            if "using inbox_pending" in line
        ]
        assert starts and all(start == PROCESSED + 2 for start in starts), plan


def _plan(url: str, statement: tuple[str, object]) -> str:
    sql, parameters = statement
    with psycopg.connect(url) as db:
        return "\n".join(str(row[0]) for row in db.execute(f"EXPLAIN {sql}", parameters))


def test_a_parked_webhook_is_claimed_by_another_process_when_its_process_dies_or_gives_it_up(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_inbox_floor, "FLOOR_REFRESH_S", 0.0)
    PostgresInbox(postgres_url).close()
    with PostgresInbox(postgres_url, lease=1.0) as dies, PostgresInbox(postgres_url) as survivor:
        lapses = dies.accept("shop", "lapses", None, {}, BODY).id
        assert [row.id for row in dies.pending()] == [lapses]
        dies.park([lapses])
        _processed(postgres_url, 2000)
        later = survivor.accept("shop", "later", None, {}, BODY).id
        assert [row.webhook_id for row in survivor.pending()] == ["later"]
        assert survivor._floor.value(survivor._execute) == later  # past the parked row, held under its lease
        survivor.mark_processed([later])
        taken: list[str] = []
        # Its process stops renewing (it died): once its lease lapses, the survivor's floor reading finds it
        # gone and makes its parked row pending again, below the floor, noted as a requeue: it is claimed.
        _wait_for(lambda: taken.extend(r.webhook_id for r in survivor.pending()) or taken, "the takeover")
        assert taken == ["lapses"]
        survivor.mark_processed([lapses])

    with PostgresInbox(postgres_url) as other, PostgresInbox(postgres_url, keep_leases=True) as drains:
        given_up = drains.accept("shop", "given up", None, {}, BODY).id
        assert [row.id for row in drains.pending()] == [given_up]
        drains.park([given_up])
        _processed(postgres_url, 100)
        assert other.pending() == [] and other.pending() == []  # two readings, past the parked row
        monkeypatch.setattr(_inbox_floor, "FLOOR_REFRESH_S", 3600.0)  # not read again on its own now
        monkeypatch.setattr(_inbox_floor, "REQUEUES_CHECK_S", 0.0)
        assert other._floor.value(other._execute) > given_up
        drains.close()
        # Its process closed, giving its claims up: noted as a requeue, so the other looks below its floor.
        assert [row.webhook_id for row in other.pending()] == ["given up"]


def test_a_services_gauges_and_delivery_inboxes_share_one_floor_read_once(
    parked: tuple[PostgresInbox, int], postgres_url: str
) -> None:
    floor = ClaimFloor()  # what a service makes once and hands to each of its inboxes
    gauges = open_gauge_reader(postgres_url, floor=floor)
    delivery = open_inbox(postgres_url, intake=False, floor=floor)
    try:
        assert isinstance(gauges, PostgresInbox) and isinstance(delivery, PostgresInbox)
        assert gauges._floor is delivery._floor is floor
        readings: list[str] = []
        for inbox in (gauges, delivery):
            execute = inbox._execute

            def recording(
                sql: str, parameters: object = None, execute: object = execute, **options: object
            ) -> object:
                if "max(id) + 1" in sql:
                    readings.append(sql)
                return execute(sql, parameters, **options)  # type: ignore[operator]

            inbox._execute = recording  # type: ignore[method-assign]
        assert gauges.depth() == 3  # the gauges read the floor ...
        assert [row.webhook_id for row in delivery.pending()] == ["after-0", "after-1"]  # ... claims use it
        assert gauges.oldest_pending() == 10.0
        assert len(readings) == 1
        with PostgresInbox(postgres_url) as alone:  # a command's inbox: its own floor
            assert alone._floor is not gauges._floor
    finally:
        gauges.close()
        delivery.close()


def test_an_inbox_of_version_3_is_refused_until_journal_migrate_adds_the_parked_rows_index(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with Journal(postgres_url):
        pass
    with psycopg.connect(postgres_url, autocommit=True) as db:
        for step in _inbox_pg_schema.MIGRATIONS[:3]:
            db.execute(step)
        db.execute("INSERT INTO meta (k, v) VALUES ('inbox_schema_version', '3')")
        db.execute(
            "INSERT INTO inbox (source, webhook_id, received_at, headers, body) VALUES ('shop', 'kept', 1, '{}', %s)",
            (BODY,),
        )
    with pytest.raises(InboxError) as refused:
        PostgresInbox(postgres_url)
    assert refused.value.message == (
        f"the inbox in {postgres_url} has schema version 3; this shipmap needs {INBOX_SCHEMA_VERSION}: run"
        f" `shipmap journal migrate {postgres_url}` (with its password) once, then start the services"
    )
    assert INBOX_SCHEMA_VERSION == 5  # 4 added the parked rows' index; 5 the purge's (test_inbox_purge_index)
    assert main(["journal", "migrate", postgres_url]) == 0
    assert f"{postgres_url}: inbox schema version 3 -> 5" in capsys.readouterr().out
    with psycopg.connect(postgres_url, autocommit=True) as db:
        [(indexed,)] = db.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'inbox_parked'")
        [(pending,)] = db.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'inbox_pending'")
    assert pending.endswith("USING btree (id) WHERE ((state = 'pending'::text) AND (parked_at IS NULL))"), (
        pending
    )
    assert indexed.endswith(
        "USING btree (lease_owner, id) WHERE ((state = 'pending'::text) AND (parked_at IS NOT NULL))"
    ), indexed
    with PostgresInbox(postgres_url) as inbox:
        (row,) = inbox.pending()
        assert row.webhook_id == "kept"
        inbox.park([row.id])
        assert (inbox.depth(), inbox.oldest_pending()) == (1, 1.0)
