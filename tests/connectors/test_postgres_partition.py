"""The journal's and the breaker store's PostgreSQL connections cut off by the network: a statement whose
answer never comes is cut by the statement watchdog (``_store/_pg_watchdog``) a grace past its own timeout,
and the connection is opened again within ``journal.reconnect_deadline`` once the network heals, so the work
completes once. Before, the journal's statement and the store's reread waited for ever (the inbox's
connections had the watchdog already: ``serve/test_serve_inbox_partition.py``)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from pg_forwarder import Forwarder
from shipmap.connectors import Journal
from shipmap.connectors._store._breaker_pg import PostgresStateStore
from shipmap.connectors._store._journal_pg import display_url
from shipmap.connectors._store._pg_watchdog import ANSWER_GRACE_S

# What the test waits, at most, for what the watchdog bounds: a grace past the statement's own timeout, a
# reconnect's connect_timeout (10 s) for an attempt begun during the partition, and a busy machine's margin.
RECOVERY_S = 60.0
FENIX = {"fenix": "http://127.0.0.1:9/"}


@pytest.fixture
def forwarded(postgres_url: str) -> Iterator[tuple[Forwarder, str]]:
    """A forwarder to the test's database (the journal's schema created directly), and the URL through it."""
    with Journal(postgres_url):
        pass
    forwarder, url = Forwarder.to(postgres_url)
    try:
        yield forwarder, url
    finally:
        forwarder.close()


def _cut_line(whose: str, timeout: str) -> str:
    return (
        f"{whose}: a statement had no answer {ANSWER_GRACE_S:g}s after its own {timeout} timeout (the server"
        " did not end it: it is stopped, or the network between acknowledges and forwards nothing); its"
        " connection was cut, and the next statement opens a new one"
    )


def _until(done: Callable[[], bool], what: str) -> None:
    ends = time.monotonic() + RECOVERY_S
    while not done():
        assert time.monotonic() < ends, f"never: {what}"
        time.sleep(0.1)


def _through_partition(
    forwarder: Forwarder,
    caplog: pytest.LogCaptureFixture,
    cut: str,
    work: Callable[[], object],
    *,
    partition: bool = True,
) -> object:
    """``work()`` on a thread begun once the network is partitioned (``partition``; else ``work`` partitions
    it), healed once the watchdog has cut the connection (one cut more than before): what it returned or
    raised. Without the watchdog the statement never returns, and this fails, not hangs."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(work())
        except Exception as error:
            outcome.append(error)

    cuts = caplog.messages.count(cut)
    if partition:
        forwarder.partition()
    working = threading.Thread(target=run, daemon=True)
    working.start()
    _until(lambda: caplog.messages.count(cut) > cuts, "the statement's connection cut")
    forwarder.heal()
    working.join(RECOVERY_S)
    assert not working.is_alive(), "the statement never returned"
    (result,) = outcome
    return result


def test_a_journal_statement_cut_off_by_a_partition_completes_once_on_a_new_session(
    forwarded: tuple[Forwarder, str], postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    forwarder, url = forwarded
    cut = _cut_line(f"journal {display_url(url)}", "1s")
    with (
        caplog.at_level(logging.WARNING),
        Journal(url, statement_timeout=1.0, reconnect_deadline=120.0) as journal,
    ):
        journal.record_rejected("bc#1", "HTTP 404", None)
        # A statement outside a transaction runs again on a new session.
        assert (
            _through_partition(
                forwarder, caplog, cut, lambda: journal.record_rejected("bc#2", "HTTP 404", None)
            )
            is None
        )
        assert f"journal {display_url(url)}: its connection was cut (" in " ".join(caplog.messages)
        # Cut inside a transaction (after its BEGIN): the transaction runs again whole, on a new session.
        runs: list[int] = []

        def body() -> None:
            runs.append(1)
            if len(runs) == 1:
                forwarder.partition()
            journal.record_rejected("bc#3", "HTTP 404", None)

        assert (
            _through_partition(forwarder, caplog, cut, lambda: journal.run_transaction(body), partition=False)
            is None
        )
        assert (len(runs), caplog.messages.count(cut)) == (2, 2)
        assert journal.rejected_origins() == {"bc#1", "bc#2", "bc#3"}
    with psycopg.connect(postgres_url) as db:  # each written once
        assert db.execute(
            "SELECT origin, count(*) FROM rejected GROUP BY origin ORDER BY origin"
        ).fetchall() == [
            ("bc#1", 1),
            ("bc#2", 1),
            ("bc#3", 1),
        ]


def test_a_breaker_store_reread_cut_off_by_a_partition_falls_back_on_its_copy_and_reconnects(
    forwarded: tuple[Forwarder, str], postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    forwarder, url = forwarded
    cut = _cut_line(f"journal {display_url(url)}: breaker and rate state", "2s")

    async def scenario() -> None:
        store = await PostgresStateStore.connect(url, FENIX, lease=30.0, refresh=0.05)
        try:
            await store.refresh("fenix")
            forwarder.partition()
            # Without the watchdog this reread waits for ever: bounded here so that the test fails instead.
            async with asyncio.timeout(RECOVERY_S):
                await store.refresh("fenix")
            assert cut in caplog.messages
            assert not store.connected  # this worker runs on its own copy meanwhile
            forwarder.heal()
            async with asyncio.timeout(RECOVERY_S):
                while not store.connected:
                    await asyncio.sleep(0.1)
            assert store.reconnects == 1
            # Shared again: the slot is claimed in the database.
            await store.claim_rate("fenix", 30.0)
        finally:
            await store.aclose()

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    with psycopg.connect(postgres_url) as db:
        (ahead,) = db.execute(
            "SELECT next_free - EXTRACT(EPOCH FROM clock_timestamp()) FROM connection_state WHERE name = 'fenix'"
        ).fetchone()
    assert ahead > 20.0, ahead  # the claim reached the database: the next slot is 30 s on
