"""The PostgreSQL inbox's claims' floor on the real server `make test` starts: a process that is gone hands
back every parked row it held in one sweep."""

from __future__ import annotations

import psycopg
import pytest
from shipmap.connectors._serve import PostgresInbox, _inbox_floor

from .test_inbox_postgres import BODY


def test_a_gone_process_hands_back_every_parked_row_in_one_sweep_not_only_those_whose_lease_lapsed(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process parks three webhooks, claimed at different times, then dies. Its first parked row's lease has
    lapsed; the two it claimed after its last renewal are leased a while longer (an hour here). The first
    sweep that finds it gone hands all three back: another process claims them at once (before, the first
    only, and the others each at a later sweep once their own lease lapsed, up to a third of a lease late)."""
    monkeypatch.setattr(_inbox_floor, "FLOOR_REFRESH_S", 0.0)  # a reading, and its sweep, at each claim
    with PostgresInbox(postgres_url, lease=3600) as dies, PostgresInbox(postgres_url) as survivor:
        ids = [dies.accept("shop", f"parked-{n}", None, {}, BODY).id for n in range(3)]
        assert [row.id for row in dies.pending()] == ids
        dies.park(ids)
        with psycopg.connect(postgres_url, autocommit=True) as db:  # what it left when it died
            db.execute(
                "UPDATE inbox SET lease_until = extract(epoch from clock_timestamp()) - 1 WHERE id = %s",
                (ids[0],),
            )
        taken = [row.webhook_id for row in survivor.pending()]  # one reading: one sweep
        assert taken == ["parked-0", "parked-1", "parked-2"]
        with psycopg.connect(postgres_url) as db:
            owners = db.execute("SELECT lease_owner, parked_at FROM inbox ORDER BY id").fetchall()
        assert owners == [(survivor.worker, None)] * 3
