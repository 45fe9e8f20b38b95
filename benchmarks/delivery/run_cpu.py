"""``shipmap ARGS...`` in this process, then its CPU seconds split by process, as one JSON line on stderr.

    python benchmarks/delivery/run_cpu.py -- run CONFIG --input EVENTS --no-progress

Runs the CLI exactly as the console script does. ``main_cpu_s`` is this process's own CPU (the event loop:
journal, HTTP, logging), start-up included; ``main_run_cpu_s`` the part of it spent while the run delivers
(from the start of ``_Execution.execute``: recovery, the first batch, the login, to the summary), which is what
sets the pace, without the imports and config that precede it; ``worker_cpu_s`` that of the children it reaped
(the forked worker process that reads, maps, validates and encodes). The summary line stays on stdout; the
CPU line is stderr's last line.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any


def _time_the_runs(spent: list[float]) -> None:
    """Add the CPU seconds of each run's delivery to ``spent`` (a benchmark's view into the runtime)."""
    from shipmap.connectors import _runtime

    execute = _runtime._Execution.execute

    async def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.process_time()
        try:
            return await execute(self, *args, **kwargs)
        finally:
            spent.append(time.process_time() - start)

    _runtime._Execution.execute = timed  # type: ignore[method-assign]


def main() -> int:
    argv = sys.argv[sys.argv.index("--") + 1 :]
    from shipmap.connectors._cli import main as cli

    spent: list[float] = []
    _time_the_runs(spent)
    try:
        return cli(argv)
    finally:
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = {
            "main_cpu_s": own.ru_utime + own.ru_stime,
            "main_run_cpu_s": sum(spent),
            "worker_cpu_s": children.ru_utime + children.ru_stime,
        }
        print(json.dumps(cpu), file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
