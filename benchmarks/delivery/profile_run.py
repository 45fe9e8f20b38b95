"""``shipmap run`` under cProfile, every thread included (the runtime reads its input on a worker thread).

    python benchmarks/delivery/profile_run.py OUT.pstats -- run CONFIG --input EVENTS --no-progress

Runs the CLI in this process exactly as the console script does, profiles the main thread and every thread
started meanwhile, and writes the merged statistics to OUT.pstats. Wall and CPU seconds go to stdout as JSON.
"""

from __future__ import annotations

import cProfile
import json
import pstats
import sys
import threading
import time
from typing import Any

_thread_profiles: list[cProfile.Profile] = []


def _start_in_thread(frame: Any, event: str, arg: Any) -> None:
    # Called on the first profiling event of each new thread: hand the thread over to its own profiler.
    sys.setprofile(None)
    profile = cProfile.Profile()
    _thread_profiles.append(profile)
    profile.enable()


def main() -> None:
    out = sys.argv[1]
    argv = sys.argv[sys.argv.index("--") + 1 :]
    from shipmap.connectors._cli import main as cli

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
    print(json.dumps({"exit": code, "elapsed_s": elapsed, "cpu_s": cpu, "threads": len(_thread_profiles)}))


if __name__ == "__main__":
    main()
