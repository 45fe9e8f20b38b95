"""``shipmap run`` under cProfile, every thread and the worker process included.

    python benchmarks/delivery/profile_run.py OUT.pstats -- run CONFIG --input EVENTS --no-progress

Runs the CLI in this process exactly as the console script does, profiles the main thread and every thread
started meanwhile, and writes the merged statistics to OUT.pstats. With a worker process (``workers: 1``, the
default on two CPUs), the forked worker turns off the profilers it inherited, profiles itself and writes
OUT.pstats.worker. Wall and CPU seconds (this process's, and the worker's) go to stdout as JSON.
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import resource
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

_thread_profiles: list[cProfile.Profile] = []


def _start_in_thread(frame: Any, event: str, arg: Any) -> None:
    # Called on the first profiling event of each new thread: hand the thread over to its own profiler.
    sys.setprofile(None)
    profile = cProfile.Profile()
    _thread_profiles.append(profile)
    profile.enable()


def _profile_the_worker(out: str) -> None:
    """Wrap what the forked worker process runs so that it profiles itself into ``out``."""
    from shipmap.connectors._intake import _pipeline

    original = _pipeline.ForkedProducer.__init__

    def init(self: Any, produce: Any, **options: Any) -> None:
        def profiled() -> Iterator[Any]:
            # In the forked child: the parent's profilers were copied, still on; this one replaces them.
            sys.setprofile(None)
            threading.setprofile(None)  # type: ignore[arg-type]
            profile = cProfile.Profile()
            profile.enable()
            try:
                yield from produce()
            finally:
                profile.disable()
                profile.dump_stats(out)

        original(self, profiled, **options)

    _pipeline.ForkedProducer.__init__ = init  # type: ignore[method-assign]


def main() -> None:
    out = sys.argv[1]
    argv = sys.argv[sys.argv.index("--") + 1 :]
    from shipmap.connectors._cli import main as cli

    worker_out = f"{out}.worker"
    if os.path.exists(worker_out):
        os.remove(worker_out)
    _profile_the_worker(worker_out)

    threading.setprofile(_start_in_thread)
    profile = cProfile.Profile()
    cpu = time.process_time()
    start = time.perf_counter()
    profile.enable()
    try:
        code = cli(argv)
    finally:
        profile.disable()
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    threading.setprofile(None)  # type: ignore[arg-type]
    stats = pstats.Stats(profile)
    for thread_profile in _thread_profiles:
        thread_profile.create_stats()
        stats.add(thread_profile)
    stats.dump_stats(out)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        json.dumps(
            {
                "exit": code,
                "elapsed_s": elapsed,
                "cpu_s": cpu,
                "threads": len(_thread_profiles),
                "worker_stats": worker_out if os.path.exists(worker_out) else None,
                "worker_cpu_s": children.ru_utime + children.ru_stime,
            }
        )
    )


if __name__ == "__main__":
    main()
