"""Group commit: the webhooks that arrive together share one inbox transaction, and each is answered only
after the commit that holds its own row, or at its deadline; past ``max_waiting`` waiting, at once."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from shipmap.connectors._serve import Inbox, InboxError
from shipmap.connectors._serve._group_commit import GroupCommit, IntakeFull
from shipmap.connectors._serve._inbox import BUSY_TIMEOUT_S, Accepted, InboxTimeout, Incoming
from shipmap.connectors._serve._inbox_pg import PostgresInbox, open_reader


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


def test_a_commit_failing_with_an_error_of_another_kind_answers_its_webhooks_not_leaves_them_waiting(
    tmp_path: Path,
) -> None:
    # An SQLite inbox commits on the loop with no deadline of its own: before, only an InboxError was handed
    # to the waiting requests, and any other (a bug, here a header the inbox cannot store) left them waiting
    # for ever.
    with Inbox(tmp_path / "inbox.db") as inbox:
        committer = GroupCommit(inbox)

        async def arrive() -> list[object]:
            unstorable = ("shop", "a", "orders/create", {"X-Odd": object()}, b"{}")
            accepts = (committer.accept(unstorable), committer.accept(_incoming("b")))  # type: ignore[arg-type]
            return list(await asyncio.wait_for(asyncio.gather(*accepts, return_exceptions=True), 10))

        results = asyncio.run(arrive())
        assert [type(r) for r in results] == [TypeError, TypeError], results  # one batch, one failed commit
        assert "not JSON serializable" in str(results[0])
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


@contextlib.contextmanager
def _inbox_locked(url: str) -> Iterator[psycopg.Connection[Any]]:
    """The inbox table locked by another session, as an ``ALTER TABLE`` or a ``VACUUM FULL`` locks it, until
    the block ends (or the connection's ``rollback()``)."""
    with psycopg.connect(url) as holder:
        holder.execute("SET lock_timeout = '20s'")
        holder.execute("LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE")
        yield holder


def _stored(url: str) -> list[str]:
    with psycopg.connect(url) as db:
        return [row[0] for row in db.execute("SELECT webhook_id FROM inbox ORDER BY id").fetchall()]


def test_past_its_deadline_a_webhook_is_refused_and_one_still_queued_then_is_never_committed(
    postgres_url: str,
) -> None:
    """On a locked inbox, a short-deadline webhook in a commit with a patient one (a source of its own, whose
    longer deadline bounds the batch's INSERT) and a short one queued behind them are both refused at their
    deadline. The lock goes: the commit lands with both of its rows, the refused one's after its refusal (its
    sender's retry is then a duplicate), and the patient one is accepted; the queued one, refused while
    still queued, is never committed."""
    deadline, patient = 0.5, 10.0
    with PostgresInbox(postgres_url) as inbox, ThreadPoolExecutor(1, "shipmap-intake") as worker:
        committer = GroupCommit(inbox, worker, deadline=deadline)
        with _inbox_locked(postgres_url) as holder:

            async def arrive() -> tuple[list[tuple[object, float]], object]:
                async def timed(webhook_id: str, after: float) -> tuple[object, float]:
                    if after:  # else in this turn of the loop, in the patient one's batch
                        await asyncio.sleep(after)
                    started = time.monotonic()
                    try:
                        result: object = await committer.accept(_incoming(webhook_id))
                    except InboxError as error:
                        result = error
                    return result, time.monotonic() - started

                waiting = asyncio.ensure_future(committer.accept(_incoming("patient"), patient))
                answers = await asyncio.gather(timed("in-commit", 0), timed("queued", 0.1))
                # Both answered while the patient one waits on: at their deadline, not when the INSERT that
                # holds the patient one ends (at the lock's end below, or at its 10 s limit).
                assert not waiting.done() and committer.waiting == 1
                assert inbox.statement_timeout_ms == 10_000  # the batch's longest deadline
                # The lock goes: the INSERT, still waiting on the worker, commits; its batch is settled on
                # this loop, which then takes the next batch, if any is left to take.
                await asyncio.get_running_loop().run_in_executor(None, holder.rollback)
                stored = await waiting
                await asyncio.sleep(0.2)  # a batch taken would be committing, or committed, by now
                assert not committer._committing
                return answers, stored

            answers, stored = asyncio.run(arrive())
        for result, took in answers:
            assert isinstance(result, InboxTimeout), result
            assert result.message == "the inbox did not store the webhook within 500ms"
            assert took > deadline - 0.05, took  # not before it
        assert stored == Accepted(stored.id, duplicate=False)  # type: ignore[attr-defined]
    assert sorted(_stored(postgres_url)) == ["in-commit", "patient"]
    assert committer.commits == 1  # the queued one's batch was never taken


def test_each_commit_runs_under_the_longest_deadline_of_its_batch(postgres_url: str) -> None:
    """The connection's limit follows its batches: a long one's, then a short one's alone, so a locked
    table holds a batch of a short source's webhooks no longer than their deadline."""
    with PostgresInbox(postgres_url) as inbox, ThreadPoolExecutor(1, "shipmap-intake") as worker:
        committer = GroupCommit(inbox, worker, deadline=0.5)

        def server_limit() -> str:
            return str(inbox._execute("SHOW statement_timeout").fetchone()[0])

        async def arrive() -> list[str]:
            limits = []
            await asyncio.gather(committer.accept(_incoming("a"), 4.0), committer.accept(_incoming("b")))
            limits.append(await asyncio.get_running_loop().run_in_executor(worker, server_limit))
            await committer.accept(_incoming("c"))
            limits.append(await asyncio.get_running_loop().run_in_executor(worker, server_limit))
            return limits

        assert asyncio.run(arrive()) == ["4s", "500ms"]
        with _inbox_locked(postgres_url):
            with pytest.raises(InboxTimeout) as refused:
                asyncio.run(committer.accept(_incoming("d"), 0.3))
            # Its INSERT ended under its own 300 ms, the table still locked: the worker, free again, reads
            # that limit (a limit left at 4 s or 500 ms would read so; an INSERT left waiting for the lock
            # would hold the worker until the block's end, past this bounded wait).
            assert worker.submit(server_limit).result(timeout=30) == "300ms"
            assert inbox._execute("SELECT 1").fetchone()[0] == 1
        assert refused.value.message == "the inbox did not store the webhook within 300ms"
    assert _stored(postgres_url) == ["a", "b", "c"]


def test_past_max_waiting_a_webhook_is_refused_at_once_and_the_waiting_ones_are_stored(
    postgres_url: str,
) -> None:
    with PostgresInbox(postgres_url) as inbox, ThreadPoolExecutor(1, "shipmap-intake") as worker:
        committer = GroupCommit(inbox, worker, deadline=20.0, max_waiting=2)
        with _inbox_locked(postgres_url) as holder:

            async def arrive() -> tuple[list[Accepted], int]:
                waiting = [asyncio.ensure_future(committer.accept(_incoming(i))) for i in ("a", "b")]
                await asyncio.sleep(0.2)
                assert committer.waiting == 2
                # At once: its first step raises, before it has waited for anything (the commit, a timer).
                third = committer.accept(_incoming("c"))
                with pytest.raises(IntakeFull) as refused:
                    third.send(None)
                assert str(refused.value) == "2 webhooks are waiting for the inbox already"
                full = committer.waiting
                assert not any(w.done() for w in waiting)  # the two waiting still wait
                await asyncio.get_running_loop().run_in_executor(None, holder.rollback)  # the lock goes
                return list(await asyncio.gather(*waiting)), full

            accepted, full = asyncio.run(arrive())
        assert full == 2, full
        assert [a.duplicate for a in accepted] == [False, False]
        assert committer.waiting == 0
    assert _stored(postgres_url) == ["a", "b"]


def test_the_service_and_a_reader_beside_it_open_an_sqlite_inbox_with_the_one_busy_timeout(
    tmp_path: Path,
) -> None:
    """The busy timeout an SQLite inbox opens with is one setting, ``BUSY_TIMEOUT_S``: the service's
    connection and a reader beside it (``shipmap status``, ``replay-rejected``: ``open_reader``) both wait
    that long for a lock, and a reader given its own deadline waits that instead."""
    with Inbox(tmp_path / "inbox.db") as inbox:
        assert inbox._db.execute("PRAGMA busy_timeout").fetchone()[0] == round(BUSY_TIMEOUT_S * 1000)
        asyncio.run(GroupCommit(inbox, deadline=1.0).accept(_incoming("a")))  # its own limit from now on
        reader = open_reader(tmp_path / "inbox.db")
        assert isinstance(reader, Inbox)
        with reader:
            assert reader._db.execute("PRAGMA busy_timeout").fetchone()[0] == round(BUSY_TIMEOUT_S * 1000)
            assert reader.counts() == {"shop/pending": 1}
        bounded = open_reader(tmp_path / "inbox.db", statement_timeout=0.25)
        assert isinstance(bounded, Inbox)
        with bounded:
            assert bounded._db.execute("PRAGMA busy_timeout").fetchone()[0] == 250


def test_an_sqlite_inbox_whose_write_lock_is_held_refuses_a_webhook_within_its_limit(tmp_path: Path) -> None:
    """Without a worker SQLite commits on the event loop: ``limit_waits`` (the batch's deadline, set by the
    committer) is its busy timeout, so the loop waits that long at most, and the webhook is refused as timed
    out, not as a failed inbox."""
    with Inbox(tmp_path / "inbox.db") as inbox:
        committer = GroupCommit(inbox, deadline=0.3)
        holder = sqlite3.connect(tmp_path / "inbox.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            started = time.monotonic()
            with pytest.raises(InboxTimeout) as refused:
                asyncio.run(committer.accept(_incoming("a")))
            took = time.monotonic() - started
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert took > 0.25, took  # it waited for the lock, up to its limit
        # That limit is the connection's busy timeout, not the 5 s it opened with.
        assert inbox._db.execute("PRAGMA busy_timeout").fetchone()[0] == 300
        assert refused.value.message.startswith(
            "the inbox did not take the webhooks in time: database is locked"
        )
        assert asyncio.run(committer.accept(_incoming("a"))).duplicate is False  # the sender's retry
        assert inbox.counts() == {"shop/pending": 1}


def test_an_sqlite_inbox_commits_on_the_loop_while_it_can_and_waits_for_a_held_write_lock_on_the_worker(
    tmp_path: Path,
) -> None:
    """With a worker, an SQLite commit that would wait for the write lock (another program holds it) waits on
    the worker, so the loop goes on meanwhile; one whose lock is free commits on the loop, with no hand-off.
    A webhook queued behind the waiting commit is refused at its deadline and never committed, the waiting
    one is stored when the lock goes, and a repeated webhook id is still a duplicate."""
    threads: list[tuple[str, str]] = []
    with Inbox(tmp_path / "inbox.db") as inbox, ThreadPoolExecutor(1, "shipmap-intake") as worker:
        at_once, accept_many = inbox.accept_at_once, inbox.accept_many

        def tried(incoming: Sequence[Incoming]) -> list[Accepted] | None:
            threads.append(("at_once", threading.current_thread().name))
            return at_once(incoming)

        def waited(incoming: Sequence[Incoming]) -> list[Accepted]:
            threads.append(("many", threading.current_thread().name))
            return accept_many(incoming)

        inbox.accept_at_once = tried  # type: ignore[method-assign]
        inbox.accept_many = waited  # type: ignore[method-assign]
        committer = GroupCommit(inbox, worker, deadline=0.3)
        holder = sqlite3.connect(tmp_path / "inbox.db", isolation_level=None)

        async def arrive() -> tuple[Accepted, Accepted, BaseException | None, Accepted]:
            first = await committer.accept(_incoming("a"))
            holder.execute("BEGIN IMMEDIATE")  # the write lock, as a backup tool takes it
            patient = asyncio.ensure_future(committer.accept(_incoming("patient"), 20.0))
            async with asyncio.timeout(10):
                while committer.waiting < 1:  # the loop turns while the commit waits
                    await asyncio.sleep(0.01)
            try:
                await committer.accept(_incoming("queued"))
                refused: BaseException | None = None
            except InboxTimeout as error:
                refused = error
            assert not patient.done()
            holder.execute("ROLLBACK")  # the lock goes: the patient one's commit lands
            stored = await patient
            again = await committer.accept(_incoming("a"))
            return first, stored, refused, again

        try:
            first, stored, refused, again = asyncio.run(arrive())
        finally:
            holder.close()
        assert first.duplicate is False and stored.duplicate is False
        assert isinstance(refused, InboxTimeout), refused
        assert refused.message == "the inbox did not store the webhook within 300ms"
        assert again == Accepted(first.id, duplicate=True)
        assert inbox.counts() == {"shop/pending": 2}
        stored_ids = [row.webhook_id for row in inbox.pending()]
    assert stored_ids == ["a", "patient"]  # the queued one, refused, never committed
    assert threads[0] == ("at_once", "MainThread")  # the lock free: on the loop, no hand-off
    assert threads[1] == ("at_once", "MainThread")  # tried first, found the lock held
    assert threads[2][0] == "many" and threads[2][1].startswith("shipmap-intake"), threads
    assert threads[3:] == [("at_once", "MainThread")], threads  # "a" again: on the loop
