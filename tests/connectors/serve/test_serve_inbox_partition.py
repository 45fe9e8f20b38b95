"""PostgreSQL inbox connections cut off by the network fail within a stated bound, and the next opens anew.

Between the inbox and PostgreSQL runs a TCP forwarder on 127.0.0.1 (``Forwarder``). Partitioned, it forwards
nothing either way and closes nothing: a connection stays open, its writes acknowledged by the forwarder's
kernel, its reads unanswered. Neither the server's ``statement_timeout`` (the statement never reaches it) nor
TCP's keepalives (the forwarder's kernel answers them) end such a wait; a server process that is stopped looks
the same. Before the statement watchdog (``_pg_watchdog``), the reader behind ``/readyz`` and ``/metrics``
waited for ever on such a connection, so the gauges stayed stale after the network came back, and intake's
commit never returned. Now each is cut a grace past its own statement timeout, and the next reading or commit
opens a new connection. Healed, the forwarder forwards new connections; those open during the partition stay
silent, as flows a long partition lost.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator

import pytest
from pg_forwarder import Forwarder
from shipmap.connectors._serve import PostgresInbox
from shipmap.connectors._serve._inbox import InboxTimeout
from shipmap.connectors._serve._inbox_gauges import InboxGauges, open_gauge_reader
from shipmap.connectors._store._journal_pg import display_url
from shipmap.connectors._store._pg_watchdog import ANSWER_GRACE_S

STALE = "inbox did not answer within 2s"
# What the test waits, at most, for what the watchdog bounds: a grace past the statement's own timeout, a
# reconnect's connect_timeout (10 s) when a reading began during the partition, and a busy machine's margin.
RECOVERY_S = 60.0


@pytest.fixture
def forwarded(postgres_url: str) -> Iterator[tuple[Forwarder, str]]:
    """A forwarder to the test's database, and the database's URL through it."""
    with PostgresInbox(postgres_url):  # the inbox's schema, created directly
        pass
    forwarder, url = Forwarder.to(postgres_url)
    try:
        yield forwarder, url
    finally:
        forwarder.close()


def _cut_line(url: str, timeout: str) -> str:
    return (
        f"inbox {display_url(url)}: a statement had no answer {ANSWER_GRACE_S:g}s after its own {timeout} timeout"
        " (the server did not end it: it is stopped, or the network between acknowledges and forwards nothing);"
        " its connection was cut, and the next statement opens a new one"
    )


def test_the_gauges_answer_stale_through_a_partition_and_fresh_again_after_it(
    forwarded: tuple[Forwarder, str], caplog: pytest.LogCaptureFixture
) -> None:
    forwarder, url = forwarded

    async def scenario() -> None:
        gauges = InboxGauges(lambda: open_gauge_reader(url))
        try:
            fresh = await gauges.read()
            assert (fresh.problem, fresh.reading is not None and fresh.reading.writable) == (None, True)

            forwarder.partition()
            # Each read answers at its deadline (asyncio's), stale, with the last reading, while the reader's
            # statement waits; past its 3 s statement timeout and the grace, its connection is cut.
            cut = _cut_line(url, "3s")
            ends = time.monotonic() + RECOVERY_S
            while cut not in caplog.messages:
                assert time.monotonic() < ends, caplog.messages
                stale = await gauges.read()
                assert (stale.problem, stale.reading) == (STALE, fresh.reading)

            forwarder.heal()
            ends = time.monotonic() + RECOVERY_S
            while (again := await gauges.read()).stale:
                assert again.problem == STALE
                assert time.monotonic() < ends, "the gauges never read the inbox again"
                await asyncio.sleep(0.5)
            assert again.reading is not None and again.reading.writable
        finally:
            gauges.close()

    with caplog.at_level(logging.WARNING, logger="shipmap.connectors.store.watchdog"):
        asyncio.run(scenario())


def test_a_commit_cut_off_by_a_partition_fails_as_a_timeout_and_the_next_lands_on_a_new_connection(
    forwarded: tuple[Forwarder, str], caplog: pytest.LogCaptureFixture
) -> None:
    forwarder, url = forwarded
    outcome: list[object] = []
    with PostgresInbox(url, keep_leases=False) as intake:
        intake.limit_waits(1.0)  # intake's deadline for its batch: the server would end the INSERT at 1 s
        assert not intake.accept("shop", "p-1", None, {}, b"{}").duplicate

        forwarder.partition()

        def commit() -> None:
            try:
                outcome.append(intake.accept("shop", "p-2", None, {}, b"{}"))
            except InboxTimeout as error:
                outcome.append(error)

        # On a thread: without the watchdog the commit never returns, and the test fails rather than hang.
        with caplog.at_level(logging.WARNING, logger="shipmap.connectors.store.watchdog"):
            committing = threading.Thread(target=commit, daemon=True)
            committing.start()
            committing.join(RECOVERY_S)
        assert not committing.is_alive(), "the commit never returned"
        (failed,) = outcome
        assert isinstance(failed, InboxTimeout), failed
        assert failed.message.startswith(
            f"inbox {display_url(url)}: no answer within 1s, nor {ANSWER_GRACE_S:g}s after; the connection was cut"
            " (PostgreSQL says: "
        ), failed
        assert caplog.messages == [_cut_line(url, "1s")]

        forwarder.heal()
        assert not intake.accept("shop", "p-2", None, {}, b"{}").duplicate  # not stored before: accepted now
        assert intake.accept("shop", "p-1", None, {}, b"{}").duplicate
