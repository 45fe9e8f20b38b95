"""The delivery's overall deadline on one timer per task (connectors/_deliver/_deadline.py): what a request sees
is what asyncio.timeout gives, whichever request armed the timer."""

from __future__ import annotations

import asyncio

import pytest
from shipmap.connectors._deliver._deadline import TaskDeadline


async def answered() -> str:
    return "answer"


async def never_answered() -> None:
    await asyncio.get_running_loop().create_future()  # nobody ever sets it


def test_a_request_past_its_deadline_raises_timeout_error_even_when_an_earlier_request_armed_the_timer() -> (
    None
):
    async def main() -> list[str]:
        task = asyncio.current_task()
        assert task is not None
        deadline = TaskDeadline(task)
        seen = []
        for _ in range(3):  # quick answers: the timer armed by the first stays armed for the later ones
            with deadline.limit(0.2):
                seen.append(await answered())
        with pytest.raises(TimeoutError), deadline.limit(0.2):
            await never_answered()
        with deadline.limit(0.2):  # the expiry is over: the next request is not cancelled
            seen.append(await answered())
        assert task.cancelling() == 0
        deadline.close()
        return seen

    assert asyncio.run(main()) == ["answer"] * 4


def test_a_shorter_deadline_after_a_longer_one_is_kept() -> None:
    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        deadline = TaskDeadline(task)
        with deadline.limit(3600):
            await answered()
        with pytest.raises(TimeoutError), deadline.limit(0.1):
            await never_answered()
        deadline.close()

    asyncio.run(main())


def test_a_cancellation_from_elsewhere_passes_through_and_no_deadline_means_none() -> None:
    async def request(deadline_seconds: float | None, started: asyncio.Event) -> None:
        task = asyncio.current_task()
        assert task is not None
        deadline = TaskDeadline(task)
        try:
            with deadline.limit(deadline_seconds):
                started.set()
                await never_answered()
        finally:
            deadline.close()

    async def main() -> None:
        for seconds in (3600.0, None):
            started = asyncio.Event()
            task = asyncio.create_task(request(seconds, started))
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())


def test_one_request_at_a_time() -> None:
    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        deadline = TaskDeadline(task)
        with deadline.limit(1.0), pytest.raises(RuntimeError, match="one request at a time"):
            deadline.limit(1.0)
        deadline.close()

    asyncio.run(main())
