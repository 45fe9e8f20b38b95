"""Group commit: the webhooks that arrive together share one inbox transaction, and each is answered only
after the commit that holds its own row."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from shipmap.connectors._serve import Inbox, InboxError
from shipmap.connectors._serve._group_commit import GroupCommit
from shipmap.connectors._serve._inbox import Accepted, Incoming
from shipmap.connectors._serve._inbox_pg import PostgresInbox


def _incoming(webhook_id: str) -> tuple[str, str, str, dict[str, str], bytes]:
    return ("shop", webhook_id, "orders/create", {"X-Shopify-Topic": "orders/create"}, b'{"id": 1}')


def test_webhooks_that_arrive_together_share_one_commit_and_each_gets_its_row(tmp_path: Path) -> None:
    with Inbox(tmp_path / "inbox.db") as inbox:
        committer = GroupCommit(inbox)

        async def arrive() -> list[object]:
            ids = ["a", "b", "c", "a", "d"]  # "a" twice in one batch: one row, one duplicate
            return list(await asyncio.gather(*(committer.accept(_incoming(i)) for i in ids)))

        results = asyncio.run(arrive())
        assert committer.commits == 1
        assert [r.duplicate for r in results] == [False, False, False, True, False]  # type: ignore[attr-defined]
        assert results[3].id == results[0].id  # type: ignore[attr-defined]
    # Committed when answered: another connection sees every row at once.
    with sqlite3.connect(tmp_path / "inbox.db") as db:
        rows = db.execute("SELECT webhook_id FROM inbox ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["a", "b", "c", "d"]


def test_a_failed_commit_fails_every_webhook_of_its_batch_and_stores_none(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "inbox.db")
    committer = GroupCommit(inbox)
    inbox.close()  # the disk is gone, as far as the service can tell

    async def arrive() -> list[object]:
        return list(
            await asyncio.gather(
                *(committer.accept(_incoming(i)) for i in ("x", "y")), return_exceptions=True
            )
        )

    results = asyncio.run(arrive())
    assert all(isinstance(r, InboxError) for r in results), results
    with sqlite3.connect(tmp_path / "inbox.db") as db:
        assert db.execute("SELECT count(*) FROM inbox").fetchone()[0] == 0


def test_accept_many_is_all_or_nothing(tmp_path: Path) -> None:
    with Inbox(tmp_path / "inbox.db") as inbox:
        with pytest.raises(InboxError):
            # The third webhook's body is not bytes a row can hold: the whole transaction rolls back.
            inbox.accept_many([_incoming("p"), _incoming("q"), ("shop", "r", None, {}, object())])  # type: ignore[list-item]
        assert inbox.depth() == 0
        assert [a.duplicate for a in inbox.accept_many([_incoming("p"), _incoming("p")])] == [False, True]
        assert inbox.depth() == 1


def test_the_purge_of_old_webhooks_lets_intake_commit_between_its_chunks(tmp_path: Path) -> None:
    """The hourly purge of processed rows past the dedup window was one DELETE: an hour of a busy service's
    rows (720,000 at 200 a second) held the write lock for seconds, past intake's 5 s busy timeout, so every
    webhook meanwhile was answered 503. It deletes in chunks now, and intake's connection commits between them:
    here a webhook is committed by another connection at the start of each chunk after the first."""
    with Inbox(tmp_path / "inbox.db") as inbox:
        inbox.accept_many([_incoming(f"old-{i}") for i in range(5000)])
        inbox.accept_many([_incoming("recent")])
        with sqlite3.connect(tmp_path / "inbox.db") as db:
            db.execute(
                "UPDATE inbox SET state = 'processed', received_at = 1000 WHERE webhook_id LIKE 'old-%'"
            )
            db.execute("UPDATE inbox SET state = 'processed' WHERE webhook_id = 'recent'")
        intake = sqlite3.connect(tmp_path / "inbox.db", isolation_level=None, timeout=0)  # no waiting
        deletes: list[str] = []
        between: list[str] = []

        def on_statement(sql: str) -> None:
            if sql.startswith("DELETE"):
                deletes.append(sql)
                if len(deletes) > 1:  # the previous chunk is committed: intake may write now
                    webhook = f"between-{len(deletes)}"
                    intake.execute(
                        "INSERT INTO inbox (source, webhook_id, topic, received_at, headers, body)"
                        " VALUES ('shop', ?, 'orders/create', 2e9, '{}', x'7b7d')",
                        (webhook,),
                    )
                    between.append(webhook)

        inbox._db.set_trace_callback(on_statement)
        try:
            assert inbox.purge(2000.0) == 5000
        finally:
            inbox._db.set_trace_callback(None)
            intake.close()
        assert len(deletes) >= 3 and between == [f"between-{n}" for n in range(2, len(deletes) + 1)]
        assert inbox.counts() == {"shop/processed": 1, "shop/pending": len(between)}  # the recent one stays


def test_a_batch_of_marks_and_a_requeue_are_one_transaction_each(tmp_path: Path) -> None:
    """The feed marks its rows processed 32 at a time, and a requeue names many rows: in autocommit mode each
    row was a commit of its own (a WAL append each, an fsync each with ``synchronous: full``). Here another
    connection tries to write before each row's statement after the first: it never gets in, and every row
    of the batch changes."""
    with Inbox(tmp_path / "inbox.db") as inbox:
        ids = [accepted.id for accepted in inbox.accept_many([_incoming(f"w{i}") for i in range(32)])]
        intake = sqlite3.connect(tmp_path / "inbox.db", isolation_level=None, timeout=0)  # no waiting
        got_in: list[str] = []
        updates: list[str] = []

        def on_statement(sql: str) -> None:
            if sql.startswith("UPDATE"):
                updates.append(sql)
                if len(updates) > 1:
                    webhook = f"between-{len(updates)}"
                    with contextlib.suppress(sqlite3.OperationalError):  # database is locked
                        intake.execute(
                            "INSERT INTO inbox (source, webhook_id, topic, received_at, headers, body)"
                            " VALUES ('shop', ?, 'orders/create', 2e9, '{}', x'7b7d')",
                            (webhook,),
                        )
                        got_in.append(webhook)

        inbox._db.set_trace_callback(on_statement)
        try:
            inbox.mark_processed(ids)
            marked = list(updates)
            updates.clear()
            assert inbox.requeue(ids, refetch=True) == 32
        finally:
            inbox._db.set_trace_callback(None)
            intake.close()
        assert len(marked) == len(updates) == 32  # a statement per row, each traced
        assert got_in == []
        assert inbox.depth() == 32 and inbox.counts() == {"shop/pending": 32}


def test_with_a_worker_the_commits_run_there_and_the_webhooks_that_arrive_together_share_one(
    postgres_url: str,
) -> None:
    """A PostgreSQL inbox's commits run on intake's connection thread (the service's ``shipmap-intake``), so
    that a commit waiting on the database holds its own requests only, not the event loop."""
    threads: list[str] = []
    with PostgresInbox(postgres_url) as inbox, ThreadPoolExecutor(1, "shipmap-intake") as worker:
        accept_many = inbox.accept_many

        def recorded(incoming: Sequence[Incoming]) -> list[Accepted]:
            threads.append(threading.current_thread().name)
            return accept_many(incoming)

        inbox.accept_many = recorded  # type: ignore[method-assign]
        committer = GroupCommit(inbox, worker)

        async def arrive() -> list[Accepted]:
            together = await asyncio.gather(*(committer.accept(_incoming(i)) for i in ["a", "b", "a"]))
            later = await committer.accept(_incoming("c"))
            return [*together, later]

        results = asyncio.run(arrive())
        assert [r.duplicate for r in results] == [False, False, True, False]
        assert results[2].id == results[0].id
        assert inbox.depth() == 3
    assert committer.commits == 2
    assert len(threads) == 2 and all(name.startswith("shipmap-intake") for name in threads), threads
