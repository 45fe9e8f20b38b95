"""``shipmap ARGS...`` in this process, then its CPU seconds split by process and thread, as one JSON line on stderr.

    python benchmarks/delivery/run_cpu.py -- run CONFIG --input EVENTS --no-progress

Runs the CLI exactly as the console script does. ``main_cpu_s`` is this process's own CPU (the event loop:
journal, HTTP, logging), start-up included; ``main_run_cpu_s`` the part of it spent while the run delivers
(from the start of ``_Execution.execute``: recovery, the first batch, the login, to the summary), which is what
sets the pace, without the imports and config that precede it; ``worker_cpu_s`` that of the children it reaped
(the forked worker process that reads, maps, validates and encodes). The summary line stays on stdout; the
CPU line is stderr's last line.

Why, not only how much (Linux; ``null`` where /proc has no schedstat): ``threads`` gives each part's CPU
seconds and the seconds it waited in the run queue for a core (``/proc/self/task/TID/schedstat``, read just
before the thread ends): ``loop`` (the main thread, which runs the event loop), ``journal writer`` (the
SQLite writer thread of trees that had one, 83b700d to 7b44aa8), ``other threads`` of the main process, and ``worker`` (the forked process, read just
before it is reaped). ``switches`` counts the context switches of the whole client (this process and its
worker): ``voluntary`` (it blocked: epoll, a lock, a full pipe) and ``involuntary`` (preempted for another
runnable task). ``worker_lifts`` is how many times the worker's guard lifted it out of ``SCHED_IDLE`` (it
starved) and ``worker_idle_at_end`` whether it was under ``SCHED_IDLE`` when it ended; both are absent where
the worker runs at nice +5 only (no permission to lift it back, or another checkout).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

_WRITER_PREFIX = "shipmap-journal"


def schedstat(path: str) -> tuple[float, float] | None:
    """CPU seconds and run-queue wait seconds of one task, from its ``schedstat`` (Linux), else None."""
    try:
        fields = Path(path, "schedstat").read_text().split()
        return int(fields[0]) / 1e9, int(fields[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def _sample_threads(into: dict[str, list[float]]) -> None:
    """Add each live thread of this process, by part, to ``into`` (a thread's last reading wins)."""
    pid = os.getpid()
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return
    for tid in tasks:
        stat = schedstat(f"/proc/self/task/{tid}")
        if stat is None:
            continue
        name = names.get(int(tid), "")
        part = "loop" if int(tid) == pid else "journal writer" if name.startswith(_WRITER_PREFIX) else ""
        into[f"{part or 'other threads'}/{tid}"] = list(stat)


def _watch(spent: list[float], threads: dict[str, list[float]], policy: dict[str, Any]) -> None:
    """Add the CPU seconds of each run's delivery to ``spent`` and the threads' readings to ``threads``
    (a benchmark's view into the runtime)."""
    from shipmap.connectors._intake._pipeline import ForkedProducer
    from shipmap.connectors._store._outbox import Outbox

    try:
        from shipmap.connectors._run._execution import Execution
    except ImportError:  # a checkout from before the run's execution left _runtime.py
        from shipmap.connectors._runtime import _Execution as Execution  # type: ignore[attr-defined,no-redef]

    execute = Execution.execute

    async def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.process_time()
        try:
            return await execute(self, *args, **kwargs)
        finally:
            spent.append(time.process_time() - start)
            _sample_threads(threads)

    stop_writer = getattr(Outbox, "stop_writer", None)  # a checkout without a writer thread has none

    def stop_writer_sampled(self: Any) -> None:
        _sample_threads(threads)  # the writer thread is joined and gone once stopped
        if stop_writer is not None:
            stop_writer(self)

    reap = ForkedProducer._reap

    def reap_sampled(self: Any, *, block: bool) -> int | None:
        if self.pid is not None and self.exit_status is None:
            stat = schedstat(f"/proc/{self.pid}")  # a zombie keeps its figures until it is reaped
            if stat is not None:
                threads[f"worker/{self.pid}"] = list(stat)
            guard = getattr(self, "guard", None)
            if guard is not None:
                policy["worker_lifts"] = guard.lifts
                policy["worker_idle_at_end"] = guard.idle
        return reap(self, block=block)

    Execution.execute = timed  # type: ignore[method-assign]
    if stop_writer is not None:
        Outbox.stop_writer = stop_writer_sampled  # type: ignore[method-assign]
    ForkedProducer._reap = reap_sampled  # type: ignore[method-assign]


def by_part(threads: dict[str, list[float]]) -> dict[str, list[float]] | None:
    if not threads:
        return None
    parts: dict[str, list[float]] = {}
    for key, (cpu, wait) in threads.items():
        total = parts.setdefault(key.split("/", 1)[0], [0.0, 0.0])
        total[0] += cpu
        total[1] += wait
    return parts


def main() -> int:
    argv = sys.argv[sys.argv.index("--") + 1 :]
    from shipmap.connectors._cli import main as cli

    spent: list[float] = []
    threads: dict[str, list[float]] = {}
    policy: dict[str, Any] = {}
    _watch(spent, threads, policy)
    try:
        return cli(argv)
    finally:
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = {
            "main_cpu_s": own.ru_utime + own.ru_stime,
            "main_run_cpu_s": sum(spent),
            "worker_cpu_s": children.ru_utime + children.ru_stime,
            "threads": by_part(threads),
            **policy,
            "switches": {
                "voluntary": own.ru_nvcsw + children.ru_nvcsw,
                "involuntary": own.ru_nivcsw + children.ru_nivcsw,
            },
        }
        print(json.dumps(cpu), file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
