"""Waits that give way to a cancellation even when their wake-up comes in the same instant: the serve feed's
idle wait, a sender's wait for its circuit breaker, and the shared breaker store's reconnect.

A run's TaskGroup stops on a worker's error (a journal failure, sends that keep raising) by cancelling the
run's body, which may be waiting in the feed for webhooks. On Python 3.11, ``asyncio.wait_for`` returned the
wait's result instead when the wake-up and the cancellation came together, and the run then waited for
webhooks, its senders gone, until the service stopped (found by test_serve_send_bug.py, about one run in ten).
A sender waiting for its breaker had the same wait, and the store's reconnect. Here each wake-up and its
cancellation come in the same loop iteration, every time.
"""

from __future__ import annotations

import asyncio
import types
from pathlib import Path
from typing import Any

from shipmap.connectors import Journal, Redactor
from shipmap.connectors._deliver._breaker import BreakerSettings, CircuitBreaker
from shipmap.connectors._serve._feed import InboxFeed
from shipmap.connectors._serve._inbox import Inbox
from shipmap.connectors._store._breaker_pg import PostgresStateStore


def test_a_cancellation_that_comes_with_a_wake_up_stops_the_idle_feed(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "inbox.db")

    # No source enriches (the feed reads which do, for their lanes); it fetches nothing: the inbox is empty.
    async def no_breakers_to_read() -> None:
        return None

    enricher: Any = types.SimpleNamespace(
        enrichments={},
        concurrency=lambda source: None,  # no lane has a cap of its own
        look_at_breakers=no_breakers_to_read,
        breakers_closed=lambda: True,
    )
    feed = InboxFeed(inbox, enricher, Redactor())

    async def cancelled_while_woken() -> None:
        events = feed.events()
        waiting = asyncio.ensure_future(anext(events))
        deadline = asyncio.get_running_loop().time() + 5
        while not feed.idle:  # the empty inbox was read: the feed waits for a wake-up
            # A feed that raised (or never goes idle) fails here, not in an endless wait.
            assert not waiting.done() and asyncio.get_running_loop().time() < deadline, waiting
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)
        feed.wakeup.set()  # a webhook was committed ...
        waiting.cancel()  # ... as the run stops
        done, _ = await asyncio.wait({waiting}, timeout=5)
        assert waiting in done, "the feed went on waiting for webhooks: the cancellation was lost"
        assert waiting.cancelled()
        await events.aclose()

    try:
        asyncio.run(cancelled_while_woken())
    finally:
        inbox.close()


def test_a_cancellation_that_comes_with_a_breaker_change_stops_the_waiting_sender() -> None:
    breaker = CircuitBreaker("fenix", BreakerSettings(failures=3, cooldown=5.0, cooldown_cap=5.0))

    async def cancelled_while_woken() -> None:
        waiting = asyncio.ensure_future(breaker._wait_for_change(30.0))  # what admit() awaits while open
        await asyncio.sleep(0.01)
        breaker._notify()  # another sender's probe answered ...
        waiting.cancel()  # ... as the run stops
        done, _ = await asyncio.wait({waiting}, timeout=5)
        assert waiting in done and waiting.cancelled(), "the sender went on: the cancellation was lost"

    asyncio.run(cancelled_while_woken())


def test_a_cancellation_that_comes_with_a_reconnection_ends_the_reconnecting_task(postgres_url: str) -> None:
    """The shared breaker store's reconnect, cancelled (the store closing) in the instant its new connection
    comes: the task ends cancelled, and the connection it got is not taken up."""

    async def cancelled_while_woken() -> None:
        with Journal(postgres_url):  # the schema
            pass
        store = await PostgresStateStore.connect(postgres_url, {"fenix": "http://127.0.0.1:9"}, lease=30.0)
        arrived: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        asked = asyncio.Event()

        async def reopen() -> Any:
            asked.set()
            return await arrived

        store._reopen = reopen
        try:
            store._lose("a test")  # starts reconnecting: the first try comes after a short pause
            reconnecting = store._reconnecting
            assert reconnecting is not None
            await asyncio.wait_for(asked.wait(), 10)
            fresh = object()
            arrived.set_result(fresh)  # the server answers ...
            reconnecting.cancel()  # ... as the store closes
            done, _ = await asyncio.wait({reconnecting}, timeout=5)
            assert reconnecting in done and reconnecting.cancelled(), (
                "the reconnect went on: the cancellation was lost"
            )
            assert store._conn is not fresh
        finally:
            store._reconnecting = None
            await store.aclose()

    asyncio.run(cancelled_while_woken())
