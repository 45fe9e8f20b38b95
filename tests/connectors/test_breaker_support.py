"""A late failure under a half-open breaker, played over the real sandbox: shared by the breaker's tests on the
in-memory store (tests/reliability/test_breaker.py) and on the PostgreSQL one (test_breaker_shared.py); and
the clock a test moves, which the breaker's and the rate limiter's unit tests (test_rate_limiter.py) run on."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import httpx
from shipmap.connectors import Sandbox
from shipmap.connectors._deliver._breaker import Admission, BreakerState, CircuitBreaker

DG_EXAMPLE = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "seeds" / "dg_execution_example.json").read_text()
)
DG_AUTH = ("demo-key", "demo-secret")
FAR = float("inf")
# Arrival order: the request sent while closed (held past its deadline), the failure that opens the breaker,
# then the probe, answered after two seconds: still in flight when the first one fails.
LATE_FAILURE_PLAN = "schedule=slow:3,503,slow:2"


class Clock:
    """A clock that a sleep moves forward, as time would pass."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class LateFailure:
    """What the breaker was just after the late failure, and once its probe was answered."""

    after_late_failure: BreakerState
    probe_in_flight: bool
    after_probe: BreakerState


async def _post(client: httpx.AsyncClient, sandbox: Sandbox, external_id: str) -> int:
    response = await client.post(
        f"{sandbox.url}/execution", auth=DG_AUTH, json={**DG_EXAMPLE, "external_id": external_id}
    )
    return response.status_code


async def _accepted(sandbox: Sandbox, count: int) -> None:
    """Until the sandbox has taken ``count`` requests in (a slow one is recorded before its wait)."""
    async with asyncio.timeout(30.0):
        while len(sandbox.requests(endpoint="dg.execution")) < count:
            await asyncio.sleep(0.01)


async def late_failure_under_the_probe(
    sandbox: Sandbox, late: CircuitBreaker, prober: CircuitBreaker, look: CircuitBreaker | None = None
) -> LateFailure:
    """``late`` sends a request while the breaker is closed, which the sandbox holds; ``prober`` opens the
    breaker with a 503 (``failures=1``), waits out the cooldown and sends the probe, which the sandbox holds
    two seconds; only once the sandbox holds the probe too does the first request hit its deadline (an
    ``asyncio.timeout`` moved to now: the order does not depend on the machine's speed), and ``late`` reports
    its failure. The same breaker for both, or two workers' breakers on one shared store."""
    sandbox.set_faults(LATE_FAILURE_PLAN, api="dg")
    look = look or prober
    async with httpx.AsyncClient(trust_env=False, timeout=60.0) as client:
        sent_closed = await late.admit(FAR)
        assert sent_closed == Admission(opened=0)
        deadline_of_late: asyncio.Timeout | None = None

        async def late_request() -> None:
            nonlocal deadline_of_late
            try:
                async with asyncio.timeout(None) as deadline_of_late:
                    await _post(client, sandbox, "late")
            except TimeoutError:
                await late.failure("Timeout: no answer within the deadline (timeout.total)", sent_closed)
                return
            raise AssertionError("the held request was answered before its deadline")

        late_task = asyncio.create_task(late_request())
        await _accepted(sandbox, 1)
        opener = await prober.admit(FAR)
        assert await _post(client, sandbox, "opener") == 503
        await prober.failure("HTTP 503 Service Unavailable", opener)
        assert (await look.look()).phase == "open"
        probe = await prober.admit(FAR)  # after the cooldown
        assert probe.is_probe

        async def probe_request() -> None:
            status = await _post(client, sandbox, "probe")
            assert status == 200, status
            await prober.success(probe)

        probe_task = asyncio.create_task(probe_request())
        await _accepted(sandbox, 2)  # the probe is in the sandbox, held for two seconds
        assert deadline_of_late is not None
        deadline_of_late.reschedule(asyncio.get_running_loop().time())
        await late_task
        in_flight = not probe_task.done()
        after_late = await _record(look)
        await probe_task
        return LateFailure(after_late, in_flight, await _record(look))


async def _record(breaker: CircuitBreaker) -> BreakerState:
    """The breaker's record now (a shared store's read again: another worker may have written it)."""
    store = breaker._shared
    if store is not None:
        await store.refresh(breaker.name)
    return dataclasses.replace(breaker.state)
