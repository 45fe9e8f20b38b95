"""The worker process's scheduling: SCHED_IDLE where it can be lifted back, and the guard that lifts it.

The worker works ahead of the sending; under ``SCHED_IDLE`` it gets a core only when nothing else wants one.
A starved worker would stop the run, so ``IdleGuard`` lifts it back to the normal policy once the parent
waits for batches while the worker waits for a core. These tests assert on the policy the kernel reports,
by events (the guard's windows, a CPU hog sharing the worker's core), never on how long anything took.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from shipmap.connectors._intake._pipeline import (
    WORKER_NICENESS,
    ForkedProducer,
    IdleGuard,
    fork_available,
    idle_policy_liftable,
)

pytestmark = [
    pytest.mark.skipif(not fork_available(), reason="the worker process needs os.fork"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_IDLE and schedstat are Linux's"),
]
DEADLINE = 120.0  # seconds any one of these may wait for the worker, however loaded the machine
liftable = pytest.mark.skipif(
    not idle_policy_liftable(), reason="this user may not lift a process out of SCHED_IDLE"
)


async def collect(producer: ForkedProducer) -> list[Any]:
    seen: list[Any] = []
    async for batch in producer.batches():
        seen.extend(batch)
    return seen


def policy_and_niceness() -> tuple[int, int]:
    return os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0)


@liftable
def test_the_worker_process_runs_under_sched_idle_at_its_niceness() -> None:
    gate_read, gate_write = os.pipe()

    def produce() -> Iterator[list[Any]]:
        os.read(gate_read, 1)
        yield [policy_and_niceness()]

    async def run() -> tuple[int, list[Any]]:
        producer = ForkedProducer(produce)
        producer.start()  # sets the policy before it returns: no lift can come before it
        assert producer.idle and producer.pid is not None
        policy = os.sched_getscheduler(producer.pid)
        os.write(gate_write, b"x")
        return policy, await asyncio.wait_for(collect(producer), DEADLINE)

    parent = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        policy, seen = asyncio.run(run())
    finally:
        os.close(gate_read)
        os.close(gate_write)
    assert policy == os.SCHED_IDLE
    assert seen == [(os.SCHED_IDLE, min(parent + WORKER_NICENESS, 19))]


def test_where_it_could_not_be_lifted_back_the_worker_process_keeps_the_normal_policy() -> None:
    producer = ForkedProducer(lambda: iter([[policy_and_niceness()]]), idle=False)
    parent = os.getpriority(os.PRIO_PROCESS, 0)
    assert asyncio.run(collect(producer)) == [(os.SCHED_OTHER, min(parent + WORKER_NICENESS, 19))]
    assert producer.guard is None


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv to drop a capability"
)
def test_without_cap_sys_nice_the_probe_says_sched_idle_cannot_be_lifted() -> None:
    # The usual unprivileged case (RLIMIT_NICE 0): a process may enter SCHED_IDLE but not leave it.
    probe = "from shipmap.connectors._intake._pipeline import idle_policy_liftable as p; print(p())"
    argv = ["setpriv", "--inh-caps=-sys_nice", "--bounding-set=-sys_nice", sys.executable, "-c", probe]
    dropped = subprocess.run(argv, capture_output=True, text=True, timeout=DEADLINE, check=True)
    assert dropped.stdout.strip() == "False"
    # The probe ran on a thread of its own: this process's policy and niceness are what they were.
    assert idle_policy_liftable() is (os.sched_getscheduler(0) == os.SCHED_OTHER)


@liftable
def test_a_starved_worker_process_is_lifted_out_of_sched_idle() -> None:
    # A CPU hog at normal priority on the one core the worker may use: under SCHED_IDLE the worker gets
    # almost none of it, the parent waits for its batches, and the guard must lift it.
    core = min(os.sched_getaffinity(0))
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])

    def produce() -> Iterator[list[Any]]:
        while os.sched_getscheduler(0) == os.SCHED_IDLE:
            sum(range(20000))  # some work for each batch, as mapping is
            yield [os.SCHED_IDLE]
        yield [os.sched_getscheduler(0)]

    async def run() -> tuple[list[Any], ForkedProducer]:
        producer = ForkedProducer(produce, starved_window=0.05)
        producer.start()
        assert producer.pid is not None
        os.sched_setaffinity(producer.pid, {core})
        return await asyncio.wait_for(collect(producer), DEADLINE), producer

    try:
        os.sched_setaffinity(hog.pid, {core})
        seen, producer = asyncio.run(run())
    finally:
        hog.kill()
        hog.wait()
    assert producer.guard is not None and producer.guard.lifted
    assert seen[-1] == os.SCHED_OTHER and set(seen[:-1]) <= {os.SCHED_IDLE}


@liftable
def test_a_worker_process_asleep_waiting_for_its_input_is_not_lifted() -> None:
    # The parent waits for a batch, but the worker is asleep (its input is slow): not starved of a core.
    reads = "import sys; print('ready', flush=True); sys.stdin.read(1)"
    worker = subprocess.Popen(
        [sys.executable, "-c", reads], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert worker.stdin is not None and worker.stdout is not None

    async def watch() -> IdleGuard:
        async with asyncio.timeout(DEADLINE):
            while _state(worker.pid) != "S":  # past 'ready': asleep in its read
                await asyncio.sleep(0.01)
            os.sched_setscheduler(worker.pid, os.SCHED_IDLE, os.sched_param(0))
            guard = IdleGuard(worker.pid, 0.02, asyncio.get_running_loop())
            guard.waiting_since = asyncio.get_running_loop().time()  # a batch that does not come
            while guard.looks < 3 and not guard.lifted:  # three windows of waiting
                await asyncio.sleep(0.01)
            guard.stop()
            return guard

    try:
        assert worker.stdout.readline() == "ready\n"
        guard = asyncio.run(watch())
        assert not guard.lifted and os.sched_getscheduler(worker.pid) == os.SCHED_IDLE
    finally:
        worker.kill()
        worker.wait()


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0]
