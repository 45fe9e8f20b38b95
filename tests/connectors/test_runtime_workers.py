"""The worker process (``workers=1``) and the batched journal writes: the same deliveries, nothing lost."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from shipmap.connectors import Runtime, Sandbox
from shipmap.connectors._intake._pipeline import WORKER_NICENESS, ForkedProducer, fork_available
from shipmap.connectors._store._journal import Journal
from shipmap.engine import SourceError, read_documents
from test_runtime_support import environ, order_event, shipment_event, write_config

pytestmark = pytest.mark.skipif(not fork_available(), reason="the worker process needs os.fork")


def runtime_in(directory: Path, sandbox: Sandbox, **delivery: Any) -> Runtime:
    directory.mkdir(exist_ok=True)
    config = write_config(directory, sandbox.url, delivery={"concurrency": 1, **delivery})
    return Runtime.from_config(config, environ=environ(sandbox.url))


def mixed_input(directory: Path) -> Path:
    """Orders, shipments (two deliveries each), an unrouted event, repeats, an invalid payload, a bad line."""
    invalid = order_event(90)
    del invalid["payload"]["email"]
    lines = [json.dumps(order_event(n)) for n in range(12)]
    lines += [json.dumps(shipment_event(n)) for n in range(12)]
    lines.insert(5, json.dumps({"topic": "customers/update", "payload": {"id": 7}}))
    lines.insert(9, json.dumps(order_event(3)))  # a repeat of an event already delivered
    lines.insert(10, '{"topic": "orders/create", "payload": {')
    lines.insert(15, json.dumps(invalid))
    lines.append(json.dumps(invalid))  # the same dead letter again: skipped, not dead twice
    path = directory / "events.ndjson"
    path.write_text("\n".join(lines) + "\n")
    return path


def sent(sandbox: Sandbox) -> list[tuple[str, str, str, str]]:
    return [
        (r.method, r.path, r.headers.get("idempotency-key", ""), json.dumps(r.body, sort_keys=True))
        for r in sandbox.requests()
        if r.endpoint != "fenix.login"
    ]


def journal_rows(path: Path) -> list[tuple[Any, ...]]:
    with Journal(path, readonly=True) as journal:
        return sorted(
            (
                e.key,
                e.state,
                e.mapping,
                e.target,
                e.url,
                e.idempotency_key,
                json.dumps(e.payload, sort_keys=True),
            )
            for e in journal.entries()
        )


def test_the_worker_process_sends_the_same_requests_and_journals_the_same_rows(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    events = mixed_input(tmp_path)
    results = {}
    for workers in (0, 1):
        sandbox.reset()
        runtime = runtime_in(tmp_path / f"w{workers}", sandbox)
        summary = runtime.run(read_documents([events]), workers=workers)
        results[workers] = (summary, sent(sandbox), journal_rows(tmp_path / f"w{workers}" / "journal.db"))
    (one, one_sent, one_rows), (two, two_sent, two_rows) = results[0], results[1]
    assert two_sent == one_sent  # concurrency 1: the very same requests, in the same order
    assert len(one_sent) == 12 + 2 * 12
    assert two_rows == one_rows
    for field in ("events", "unrouted", "rejected", "delivered", "dead", "skipped", "retried"):
        assert getattr(two, field) == getattr(one, field), field
    assert (one.events, one.unrouted, one.rejected, one.dead, one.skipped) == (29, 1, 1, 1, 2)


def test_a_rerun_with_the_worker_process_skips_what_was_delivered(tmp_path: Path, sandbox: Sandbox) -> None:
    events = mixed_input(tmp_path)
    runtime_in(tmp_path, sandbox).run(read_documents([events]), workers=1)
    accepted = sandbox.stats()["accepted"]
    again = runtime_in(tmp_path, sandbox).run(read_documents([events]), workers=1)
    assert again.delivered == 0 and again.dead == 0
    assert again.skipped == 12 + 2 * 12 + 1 + 2  # all deliveries, the repeat, the dead letter twice
    assert sandbox.stats()["accepted"] == accepted  # not even a login


def test_an_input_error_in_the_worker_process_stops_the_run_with_that_error(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    def events() -> Iterator[dict[str, Any]]:
        yield order_event(1)
        raise SourceError("cannot open input later.ndjson: Permission denied")

    runtime = runtime_in(tmp_path, sandbox)
    with pytest.raises(SourceError, match="Permission denied"):
        runtime.run(events(), workers=1)
    # What was settled before the error is journaled; a re-run (the error fixed) sends only the rest.
    summary = runtime_in(tmp_path, sandbox).run([order_event(1), order_event(2)], workers=1)
    assert summary.get("acme-orders.order").delivered + summary.get("acme-orders.order").skipped == 2
    assert sorted(r.order_id or "" for r in sandbox.requests(endpoint="fenix.orders")) == ["1001", "1002"]


def test_the_worker_process_is_gone_after_the_run(
    tmp_path: Path, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[ForkedProducer] = []
    original = ForkedProducer.start

    def start(self: ForkedProducer) -> None:
        original(self)
        started.append(self)

    monkeypatch.setattr(ForkedProducer, "start", start)
    runtime_in(tmp_path, sandbox).run([order_event(n) for n in range(5)], workers=1)
    [producer] = started
    assert producer.pid is not None and producer.exit_status is not None
    assert os.WIFEXITED(producer.exit_status) and os.WEXITSTATUS(producer.exit_status) == 0
    with pytest.raises(ChildProcessError):
        os.waitpid(producer.pid, os.WNOHANG)  # reaped: no zombie left behind


def test_a_worker_process_that_dies_is_an_error_not_a_silent_short_run() -> None:
    def produce() -> Iterator[list[Any]]:
        yield [1, 2]
        os.kill(os.getpid(), signal.SIGKILL)
        yield [3]  # pragma: no cover - never reached

    async def collect() -> list[Any]:
        producer = ForkedProducer(produce)
        producer.start()
        seen: list[Any] = []
        async for batch in producer.batches():
            seen.extend(batch)
        return seen

    with pytest.raises(Exception, match=r"worker process .* stopped \(killed by signal 9\)"):
        asyncio.run(collect())


def test_the_worker_process_yields_the_core_to_the_process_that_sends() -> None:
    def produce() -> Iterator[list[Any]]:
        yield [os.getpriority(os.PRIO_PROCESS, 0)]

    async def collect() -> list[Any]:
        producer = ForkedProducer(produce)
        seen: list[Any] = []
        async for batch in producer.batches():
            seen.extend(batch)
        return seen

    parent = os.getpriority(os.PRIO_PROCESS, 0)
    assert asyncio.run(collect()) == [min(parent + WORKER_NICENESS, 19)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="F_SETPIPE_SZ is Linux's")
def test_the_pipe_from_the_worker_process_holds_whole_batches() -> None:
    # A batch is 16 events of ~8.4 KB: a 64 KiB pipe made both processes block and wake several times each.
    import fcntl

    from shipmap.connectors._intake import _pipeline

    allowed = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    items = [{"text": "x" * 8400, "index": index} for index in range(200)]  # ~1.7 MB: more than the pipe

    async def collect() -> tuple[int, list[Any]]:
        producer = ForkedProducer(lambda: iter([items[:100], items[100:]]))
        producer.start()
        assert producer._read_fd is not None
        size = fcntl.fcntl(producer._read_fd, fcntl.F_GETPIPE_SZ)
        seen: list[Any] = []
        async for batch in producer.batches():
            seen.extend(batch)
        return size, seen

    size, seen = asyncio.run(collect())
    assert size == min(_pipeline._PIPE_SIZE, allowed) or allowed < _pipeline._PIPE_SIZE
    assert _pipeline._PIPE_SIZE >= 16 * 8400 and seen == items


class _Interrupt(BaseException):
    """Stands for the process dying: nothing after it runs (a BaseException, so no handler catches it)."""


def test_a_run_that_dies_between_batches_loses_nothing(tmp_path: Path, sandbox: Sandbox) -> None:
    """Delivered marks are committed in batches: a death before the commit leaves rows pending, and the next
    run re-sends exactly those; every event ends delivered once in the journal."""
    events = [order_event(n) for n in range(40)]
    answered = 0

    class DyingTransport(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            nonlocal answered
            response = await super().handle_async_request(request)
            if request.url.path.endswith("/created"):
                answered += 1
                if answered == 21:  # mid-batch: some marks committed, some not, some rows only pending
                    raise _Interrupt
            return response

    config = write_config(tmp_path, sandbox.url, delivery={"concurrency": 2})
    dying = Runtime.from_config(config, environ=environ(sandbox.url), transport=DyingTransport())
    with pytest.raises(_Interrupt):
        dying.run(events)
    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        at_death = journal.counts()
    assert at_death.get("pending", 0) > 0 and at_death.get("delivered", 0) < 21

    summary = Runtime.from_config(config, environ=environ(sandbox.url)).run(events)
    assert summary.recovered == at_death["pending"]
    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        assert journal.counts() == {"delivered": 40}
    arrived = [r.order_id for r in sandbox.requests(endpoint="fenix.orders")]
    assert set(arrived) == {str(1000 + n) for n in range(40)}
    assert len(arrived) - 40 <= 2 + 16  # re-sent: what was in flight, and answered but not yet marked


def test_a_repeat_right_after_its_delivery_is_skipped_before_the_mark_is_committed(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    # With concurrency 1 the first copy is delivered long before the repeat is settled, but its delivered
    # mark waits for the batch commit: the run must still know it is delivered.
    events = [order_event(1)] + [order_event(n) for n in range(2, 40)] + [order_event(1)]
    summary = runtime_in(tmp_path, sandbox).run(events)
    assert summary.get("acme-orders.order").skipped == 1
    assert [r.order_id for r in sandbox.requests(endpoint="fenix.orders")].count("1001") == 1


@pytest.mark.parametrize(("setting", "flag", "expected"), [("auto", None, None), (0, None, 0), (0, "1", 1)])
def test_shipmap_run_takes_its_workers_from_the_config_or_the_flag(
    tmp_path: Path,
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    setting: Any,
    flag: str | None,
    expected: int | None,
) -> None:
    from shipmap.connectors._cli import main

    seen: list[int] = []
    original = Runtime.run

    def run(self: Runtime, events: Any, **options: Any) -> Any:
        seen.append(options["workers"])
        return original(self, events, **options)

    monkeypatch.setattr(Runtime, "run", run)
    config = write_config(tmp_path, sandbox.url, delivery={"workers": setting})
    events = tmp_path / "events.ndjson"
    events.write_text(json.dumps(order_event(1)) + "\n")
    argv = ["run", str(config), "--input", str(events), "--no-progress"]
    assert main([*argv, "--workers", flag] if flag else argv) == 0
    auto = 1 if sys.platform.startswith("linux") and (os.cpu_count() or 1) >= 2 else 0
    assert seen == [auto if expected is None else expected]
    assert len(sandbox.requests(endpoint="fenix.orders")) == 1


def test_shipmap_run_reads_a_piped_stdin_in_its_worker_process(tmp_path: Path, sandbox: Sandbox) -> None:
    config = write_config(tmp_path, sandbox.url)
    lines = "".join(json.dumps(order_event(n)) + "\n" for n in range(30))
    command = "import sys; from shipmap.connectors._cli import main; sys.exit(main())"
    done = subprocess.run(
        [sys.executable, "-c", command, "run", str(config), "--workers", "1", "--no-progress"],
        input=lines.encode(),
        capture_output=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert "events 30  unrouted 0" in done.stdout.decode()
    assert len({r.order_id for r in sandbox.requests(endpoint="fenix.orders")}) == 30
