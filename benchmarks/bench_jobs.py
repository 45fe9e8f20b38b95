"""``--jobs 2`` against ``--jobs 1``: preview and run --dry-run on 100,000 events (issue 16).

Each command runs as a real ``shipmap`` subprocess, its output to a file, alternating ``--jobs 1`` and
``--jobs 2`` round by round so that both see the same background load. Before any figure is trusted, the
two outputs are checked byte for byte. Reported: wall time, events per second, the speed-up (target
>= 1.7x on two cores), and the CPU seconds each spent: what the pool adds over ``--jobs 1`` bounds the
speed-up on free cores at cores x CPU(--jobs 1) / CPU(--jobs 2), a figure a loaded machine does not blur.

    .venv/bin/python benchmarks/bench_jobs.py [--quick] [--events 100000] [--rounds 3] [--json FILE]
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _bench import REPO, heading, machine, parser, table, write_json

SHIPMAP = [sys.executable, "-c", "from shipmap.connectors._cli import entry; entry()"]
ACME = REPO / "examples" / "acme_outfitters"
TARGET = 1.7


def make_inputs(folder: Path, events: int) -> dict[str, Path]:
    """Shopify orders with distinct ids (preview), and the Acme day's webhooks with distinct ids (dry run)."""
    order = json.loads(
        (REPO / "tests/fixtures/real/shopify/order_rest_get_with_fulfillment.json").read_text()
    )
    orders = folder / "orders.ndjson"
    with orders.open("w", encoding="utf-8") as out:
        for n in range(events):
            order["order"]["id"] = 4_000_000_000 + n
            order["order"]["name"] = f"#{n}"
            out.write(json.dumps(order) + "\n")
    day = [json.loads(line) for line in (ACME / "events.ndjson").read_text(encoding="utf-8").splitlines()]
    webhooks = folder / "webhooks.ndjson"
    with webhooks.open("w", encoding="utf-8") as out:
        for n in range(events):
            event = day[n % len(day)]
            event["id"] = f"bench-{n}"
            out.write(json.dumps(event) + "\n")
    return {"orders": orders, "webhooks": webhooks}


def timed(argv: list[str], output: Path) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (the command and its workers) and the sha256 of what it printed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with output.open("wb") as out:
        completed = subprocess.run(argv, stdout=out, stderr=subprocess.PIPE, cwd=REPO, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode not in (0, 8):
        raise SystemExit(
            f"{' '.join(argv[3:])} failed ({completed.returncode}): {completed.stderr[-2000:]!r}"
        )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    digest = hashlib.sha256(output.read_bytes()).hexdigest()
    return wall, cpu, digest


def bench(name: str, argv: list[str], events: int, rounds: int, folder: Path) -> dict[str, Any]:
    walls: dict[int, list[float]] = {1: [], 2: []}
    cpus: dict[int, list[float]] = {1: [], 2: []}
    digests: set[str] = set()
    for _ in range(rounds):
        for jobs in (1, 2):
            wall, cpu, digest = timed([*argv, "--jobs", str(jobs)], folder / f"{name}-{jobs}.out")
            walls[jobs].append(wall)
            cpus[jobs].append(cpu)
            digests.add(digest)
    if len(digests) != 1:
        raise SystemExit(f"{name}: --jobs 2 printed something else than --jobs 1")
    one, two = statistics.median(walls[1]), statistics.median(walls[2])
    return {
        "events": events,
        "rounds": rounds,
        "wall_s": {"jobs 1": walls[1], "jobs 2": walls[2]},
        "cpu_s": {"jobs 1": statistics.median(cpus[1]), "jobs 2": statistics.median(cpus[2])},
        "events_per_s": {"jobs 1": events / one, "jobs 2": events / two},
        "speedup": one / two,
        "ceiling": min(2, os.cpu_count() or 1),
        # What the pool adds to the work: with N free cores, --jobs N takes at least its CPU / N.
        "pool_cpu": statistics.median(cpus[2]) / statistics.median(cpus[1]) - 1,
        "cpu_bound": min(2, os.cpu_count() or 1) * statistics.median(cpus[1]) / statistics.median(cpus[2]),
        "met": one / two >= TARGET,
    }


def main() -> None:
    arguments = parser(__doc__ or "")
    arguments.add_argument("--events", type=int, default=100_000)
    arguments.add_argument("--rounds", type=int, default=3)
    args = arguments.parse_args()
    events = 10_000 if args.quick else args.events
    rounds = 1 if args.quick else args.rounds
    info = machine()
    print(f"machine: {info['cpu']}, {info['nproc']} cores, load average {info['load_average']}")
    results: dict[str, Any] = {"machine": info}
    with tempfile.TemporaryDirectory(prefix="shipmap-bench-jobs-") as tmp:
        folder = Path(tmp)
        inputs = make_inputs(folder, events)
        commands = {
            "preview": [*SHIPMAP, "preview", "shopify/order", str(inputs["orders"])],
            "dry-run": [
                *SHIPMAP,
                "run",
                str(ACME / "config.yaml"),
                "-i",
                str(inputs["webhooks"]),
                "--dry-run",
                "--journal",
                str(folder / "absent.db"),
            ],
        }
        for name, argv in commands.items():
            heading(f"{name}: {events:,} events, {rounds} rounds")
            results[name] = found = bench(name, argv, events, rounds, folder)
            print(
                table(
                    ["", "median wall s", "events/s", "CPU s"],
                    [
                        [
                            f"--jobs {jobs}",
                            f"{statistics.median(found['wall_s'][f'jobs {jobs}']):.2f}",
                            f"{found['events_per_s'][f'jobs {jobs}']:,.0f}",
                            f"{found['cpu_s'][f'jobs {jobs}']:.2f}",
                        ]
                        for jobs in (1, 2)
                    ],
                )
            )
            verdict = "MET" if found["met"] else "NOT MET"
            print(
                f"\nspeed-up {found['speedup']:.2f}x (target >= {TARGET}x, ceiling {found['ceiling']}x): {verdict}"
            )
            print(
                f"the pool's extra CPU: {found['pool_cpu'] * 100:+.1f}%, so on {found['ceiling']} free cores the "
                f"speed-up is at most {found['cpu_bound']:.2f}x"
            )
    print(f"\nload average at the end: {os.getloadavg()}")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
