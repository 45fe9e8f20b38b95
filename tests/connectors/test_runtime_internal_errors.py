"""A send that raises inside shipmap (a bug, or a broken custom transport or auth flow of an embedding
program) instead of getting an answer: alone it is that delivery's dead letter and the run goes on; ten in a
row stop the run, and they stay pending with everything not yet sent, so a bug costs no dead letters. Real
sandbox over HTTP; the fault is the transport's, as an embedding program would pass it."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from pathlib import Path

import httpx
import pytest
from shipmap.connectors import DeliveryError, Runtime, Sandbox, SendingStopped
from shipmap.connectors._deliver._workers import INTERNAL_ERRORS_TO_STOP
from shipmap.connectors._redact import RedactingFilter
from shipmap.connectors._store._journal import Journal
from test_runtime_support import SECRETS, environ, order_event, write_config


class BrokenTransport(httpx.AsyncHTTPTransport):
    """Raises, instead of sending, for the orders whose ids it is given (every order, if none)."""

    def __init__(self, failing: Collection[int] | None = None) -> None:
        super().__init__()
        self.failing = failing

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if "/orders/" in request.url.path:
            order = int(request.url.path.split("/")[-2])
            if self.failing is None or order in self.failing:
                raise RuntimeError(f"transport bug for order {order}; password demo-pass")
        return await super().handle_async_request(request)


class BrokenFromOrder(httpx.AsyncHTTPTransport):
    """Sends every order; from order ``first_broken`` on, raises on the answer (a bug that shows after a real
    round trip, ``raise_after`` s in). The five orders before it answer ``slow_answer`` s late, so their
    answers come in between the first raises, as answers already in flight do when a bug appears."""

    def __init__(self, first_broken: int, raise_after: float = 0.05, slow_answer: float = 0.12) -> None:
        super().__init__()
        self.first_broken, self.raise_after, self.slow_answer = first_broken, raise_after, slow_answer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if "/orders/" in request.url.path:
            order = int(request.url.path.split("/")[-2])
            if order >= self.first_broken:
                await response.aclose()
                await asyncio.sleep(self.raise_after)
                raise RuntimeError("transport bug reading the answer")
            if order >= self.first_broken - 5:
                await asyncio.sleep(self.slow_answer)
        return response


def runtime(
    directory: Path, sandbox: Sandbox, transport: httpx.AsyncBaseTransport | None, concurrency: int
) -> Runtime:
    config = write_config(directory, sandbox.url, delivery={"concurrency": concurrency})
    return Runtime.from_config(config, environ=environ(sandbox.url), transport=transport)


def counts(directory: Path) -> dict[str, int]:
    with Journal(directory / "journal.db", readonly=True) as journal:
        return journal.counts()


@pytest.mark.parametrize(
    ("failing", "dead"),
    [
        pytest.param({1005, 1017}, 2, id="two poison requests"),
        pytest.param(set(range(1000, 1040, 2)), 20, id="every other request"),
        pytest.param(set(range(1035, 1040)), 5, id="the last five: the input ends first"),
        pytest.param(
            set(range(1010, 1010 + INTERNAL_ERRORS_TO_STOP - 1)),
            INTERNAL_ERRORS_TO_STOP - 1,
            id="one short of the streak that stops",
        ),
    ],
)
def test_a_request_that_raises_is_its_own_dead_letter_and_the_run_goes_on(
    tmp_path: Path, sandbox: Sandbox, failing: set[int], dead: int
) -> None:
    summary = runtime(tmp_path, sandbox, BrokenTransport(failing), concurrency=1).run(
        [order_event(n) for n in range(40)]
    )
    assert (summary.delivered, summary.dead) == (40 - dead, dead)
    assert counts(tmp_path) == {"delivered": 40 - dead, "dead": dead}
    arrived = {int(r.order_id or 0) for r in sandbox.requests(endpoint="fenix.orders")}
    assert arrived == set(range(1000, 1040)) - failing
    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        reasons = [entry.reason or "" for entry in journal.dead_letters()]
    assert len(reasons) == dead
    for reason in reasons:
        assert reason.startswith("internal error while sending: RuntimeError: transport bug for order 10")
        assert not any(secret in reason for secret in SECRETS)


@pytest.mark.parametrize("concurrency", [1, 8])  # 8: several senders reach the tenth at once, one error
def test_requests_that_keep_raising_stop_the_run_and_the_rest_stays_pending(
    tmp_path: Path, sandbox: Sandbox, caplog: pytest.LogCaptureFixture, concurrency: int
) -> None:
    events = [order_event(n) for n in range(40)]
    broken = runtime(tmp_path, sandbox, BrokenTransport(), concurrency)
    caplog.handler.addFilter(RedactingFilter(broken.redactor))  # as the CLI's handler does
    with caplog.at_level("DEBUG", logger="shipmap"), pytest.raises(DeliveryError) as stopped:
        broken.run(events)

    error = stopped.value
    assert isinstance(error, SendingStopped) and error.exit_code == 6
    assert error.message.startswith(
        f"sending stopped: {INTERNAL_ERRORS_TO_STOP} requests in a row raised RuntimeError at"
        " test_runtime_internal_errors.py:"
    )
    assert "They, and everything not sent yet, stay pending for the next run" in error.message
    assert isinstance(error.__cause__, RuntimeError)
    assert "demo-pass" not in str(error)  # the type and the place, never the message
    # The tracebacks are logged, for -vv; the handler's filter masks the secret in them.
    tracebacks = [
        r for r in caplog.records if r.exc_info and "internal error while sending" in r.getMessage()
    ]
    assert len(tracebacks) >= INTERNAL_ERRORS_TO_STOP
    # Each names the line that logged it (an embedding program's format may show %(filename)s:%(lineno)d).
    assert {(r.filename, r.funcName) for r in tracebacks} == {("_workers.py", "_send")}
    assert "demo-pass" not in caplog.text

    at_stop = counts(tmp_path)
    assert set(at_stop) == {"pending"}  # no dead letters: the streak's sends and the rest wait for the fix
    assert INTERNAL_ERRORS_TO_STOP <= at_stop["pending"] <= 40
    assert sandbox.requests(endpoint="fenix.orders") == []

    # Fixed, the next run sends what stayed pending, then the rest of the input: each order exactly once.
    summary = runtime(tmp_path, sandbox, None, concurrency).run(events)
    assert summary.recovered == at_stop["pending"]
    assert (summary.delivered, summary.dead) == (40, 0)
    assert counts(tmp_path) == {"delivered": 40}
    arrived = [r.order_id for r in sandbox.requests(endpoint="fenix.orders")]
    assert sorted(arrived) == sorted(str(1000 + n) for n in range(40))


def test_a_bug_that_starts_mid_run_dead_letters_nothing_even_with_answers_still_in_flight(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """The send path breaks for every request from some point on (a deploy, a token format), while earlier
    requests are still in flight at concurrency 8. Their answers come after the first raises, yet they prove
    nothing about the send path since: only an answer to a request sent after the one that raised makes that
    raise its own request's problem. So the run stops with nothing dead, and the next one sends the rest."""
    events = [order_event(n) for n in range(80)]
    broken = runtime(tmp_path, sandbox, BrokenFromOrder(1040), concurrency=8)
    with pytest.raises(SendingStopped):
        broken.run(events)
    at_stop = counts(tmp_path)
    assert "dead" not in at_stop, at_stop
    assert at_stop["pending"] >= INTERNAL_ERRORS_TO_STOP, at_stop

    summary = runtime(tmp_path, sandbox, None, concurrency=8).run(events)
    assert (summary.dead, counts(tmp_path)) == (0, {"delivered": 80})
