"""The worker process's scheduling: SCHED_IDLE while it is ahead, where it can be lifted back, and the guard.

The worker works ahead of the sending; under ``SCHED_IDLE`` it gets a core only when nothing else wants one.
``IdleGuard`` puts it there once the parent has stopped waiting for its batches, and, since a starved worker
would stop the run, lifts it back to the normal policy when the parent waits for batches while the worker
waits for a core. These tests assert on the policy the kernel reports, by events (the guard's windows, a CPU
hog sharing the worker's core), never on how long anything took.
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
def test_the_worker_process_enters_sched_idle_once_the_parent_stops_waiting_for_it() -> None:
    gate_read, gate_write = os.pipe()

    def produce() -> Iterator[list[Any]]:
        yield [os.getpriority(os.PRIO_PROCESS, 0)]
        os.read(gate_read, 1)  # alive until the test has seen its policy

    async def run() -> tuple[int, int, list[Any]]:
        producer = ForkedProducer(produce, starved_window=0.02)
        producer.start()
        assert producer.idle and producer.pid is not None
        at_start = os.sched_getscheduler(producer.pid)  # its start-up is what the run waits for
        seen: list[Any] = []
        policy = -1
        async with asyncio.timeout(DEADLINE):
            async for batch in producer.batches():
                seen.extend(batch)
                assert producer.guard is not None
                while not producer.guard.idle:  # the parent is busy elsewhere: the worker is ahead
                    await asyncio.sleep(0.01)
                policy = os.sched_getscheduler(producer.pid)
                os.write(gate_write, b"x")
        return at_start, policy, seen

    parent = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        at_start, policy, seen = asyncio.run(run())
    finally:
        os.close(gate_read)
        os.close(gate_write)
    # Not lifts == 0: on a loaded machine the worker may wait for a core past starved_window and be lifted
    # once before it is ahead again; what matters is that it is idle once the parent stops waiting.
    assert at_start == os.SCHED_OTHER and policy == os.SCHED_IDLE
    assert seen == [min(parent + WORKER_NICENESS, 19)]


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
    # Once under SCHED_IDLE, the worker is pinned to the core of a CPU hog at normal priority: it gets almost
    # none of it, the parent waits for its batches, and the guard must lift it.
    core = min(os.sched_getaffinity(0))
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])

    def produce() -> Iterator[list[Any]]:
        while True:
            sum(range(20000))  # some work for each batch, as mapping is
            yield [b"x" * 1000]  # ~1 KB: the pipe holds a thousand while the parent is busy

    async def run() -> tuple[int, int, ForkedProducer]:
        producer = ForkedProducer(produce, starved_window=0.05)
        idle = lifted = -1
        async with asyncio.timeout(DEADLINE):
            async for _ in producer.batches():
                assert producer.guard is not None and producer.pid is not None
                if idle == -1:
                    while not producer.guard.idle:  # the parent busy elsewhere: the worker is ahead
                        await asyncio.sleep(0.01)
                    idle = os.sched_getscheduler(producer.pid)
                    os.sched_setaffinity(producer.pid, {core})
                    os.sched_setaffinity(hog.pid, {core})
                elif producer.guard.lifted:
                    lifted = os.sched_getscheduler(producer.pid)
                    break
        return idle, lifted, producer

    try:
        idle, lifted, producer = asyncio.run(run())
    finally:
        hog.kill()
        hog.wait()
    assert idle == os.SCHED_IDLE and lifted == os.SCHED_OTHER
    assert producer.guard is not None and producer.guard.lifts == 1


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
            guard = IdleGuard(worker.pid, 0.02, asyncio.get_running_loop(), idle=True)
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


@liftable
def test_a_lifted_worker_process_goes_back_under_sched_idle_once_it_is_ahead() -> None:
    # A busy worker pinned to a hog's core starves while the parent waits; once the parent no longer waits
    # (the worker is ahead: a start-up or a burst of other work has passed), it is SCHED_IDLE again.
    core = min(os.sched_getaffinity(0))
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    worker = subprocess.Popen([sys.executable, "-c", "while True: pass"])

    async def watch() -> tuple[IdleGuard, int]:
        loop = asyncio.get_running_loop()
        guard = IdleGuard(worker.pid, 0.02, loop, idle=True)
        async with asyncio.timeout(DEADLINE):
            guard.waiting_since = loop.time()  # the parent waits for batches the worker cannot make
            while guard.idle:
                await asyncio.sleep(0.01)
            lifted_to = os.sched_getscheduler(worker.pid)
            guard.got_batch()  # the batches come: the parent waits no more
            while not guard.idle:
                await asyncio.sleep(0.01)
        guard.stop()
        return guard, lifted_to

    try:
        for pid in (hog.pid, worker.pid):
            os.sched_setaffinity(pid, {core})
        os.sched_setscheduler(worker.pid, os.SCHED_IDLE, os.sched_param(0))
        guard, lifted_to = asyncio.run(watch())
        assert lifted_to == os.SCHED_OTHER
        assert guard.lifts == 1 and os.sched_getscheduler(worker.pid) == os.SCHED_IDLE
    finally:
        for process in (hog, worker):
            process.kill()
            process.wait()
