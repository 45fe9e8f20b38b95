"""``shipmap ARGS...`` in this process, then its CPU seconds split by process, as one JSON line on stderr.

    python benchmarks/delivery/run_cpu.py -- run CONFIG --input EVENTS --no-progress

Runs the CLI exactly as the console script does. ``main_cpu_s`` is this process's own CPU (the event loop:
journal, HTTP, logging); ``worker_cpu_s`` that of the children it reaped (the forked worker process that
reads, maps, validates and encodes). The summary line stays on stdout; the CPU line is stderr's last line.
"""

from __future__ import annotations

import json
import resource
import sys


def main() -> int:
    argv = sys.argv[sys.argv.index("--") + 1 :]
    from shipmap.connectors._cli import main as cli

    try:
        return cli(argv)
    finally:
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = {
            "main_cpu_s": own.ru_utime + own.ru_stime,
            "worker_cpu_s": children.ru_utime + children.ru_stime,
        }
        print(json.dumps(cpu), file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
