"""Memory: peak RSS while streaming 1,000,000 NDJSON events through the ready Shopify order mapping, dry.

The events are made on the fly into a temporary directory from the real Shopify REST order sample, each with
its own order id and name (so each has its own delivery key). Two subprocesses then stream them, at the same
time, one core each:

- ``shipmap preview MAPPING events.ndjson --json > /dev/null``, the engine's streaming dry run (read, map,
  validate, print), through all 1,000,000 events;
- ``shipmap run CONFIG --dry-run --input events.ndjson > /dev/null``, the runtime's dry run (routing, delivery
  keys, journal lookups, the redacted requests it prints), through 100,000: it prints every request as
  indented JSON, which makes it ~2x slower per event, and 1,000,000 of them would not fit the benchmark's
  time budget.

Each child's peak RSS is its own ``ru_maxrss``, read with ``os.wait4``. While they run, their RSS (VmRSS, VmHWM)
and how far each has read its input (``/proc/PID/fdinfo``) are sampled, so the same runs show the peak after
the first 10,000 and 100,000 events as well: a flat curve means memory does not grow with the count.

    .venv/bin/python benchmarks/bench_memory.py [--events 1000000] [--run-events 100000] [--quick] [--json F]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _bench
from _bench import ORDER_MAPPING, REAL_SHOPIFY, REPO, table

TARGET_MB = 150
SHIPMAP = Path(sys.executable).with_name("shipmap")
MARKS = (10_000, 100_000, 1_000_000)
_ID = 987654321987654  # placeholders in the template, replaced per event
_NAME = "#SENTINEL-NAME"


def event_template() -> tuple[str, str, str]:
    """The REST order sample as one NDJSON line, split around its order id and its name."""
    document = _bench.load_json(REAL_SHOPIFY / "order_rest_get_with_fulfillment.json")
    document["order"]["id"] = _ID
    document["order"]["name"] = _NAME
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    head, rest = text.split(str(_ID), 1)
    middle, tail = rest.split(_NAME, 1)
    return head, middle, tail


def generate(path: Path, count: int) -> int:
    """``count`` events, ids 1000000000.. and names #100000.., one per line; returns the file size."""
    head, middle, tail = event_template()
    with path.open("w", encoding="utf-8", buffering=1 << 22) as handle:
        write = handle.write
        for index in range(count):
            write(f"{head}{1_000_000_000 + index}{middle}#{100_000 + index}{tail}\n")
    return path.stat().st_size


CONFIG = """\
# Dry run only: nothing is sent, no login happens; the address is never contacted.
version: 1
env_file: false
connections:
  fenix:
    api: fenix
    base_url: http://127.0.0.1:9
    auth:
      scheme: fenix_session
      username: ${{BENCH_FENIX_USERNAME}}
      password: ${{BENCH_FENIX_PASSWORD}}
      api_key: ${{BENCH_FENIX_API_KEY}}
      store_name: demo-store
mappings:
  - mapping: {mapping}
journal:
  path: {journal}
"""


def write_config(directory: Path) -> Path:
    path = directory / "bench-runtime.yaml"
    path.write_text(CONFIG.format(mapping=ORDER_MAPPING, journal=directory / "journal.db"), encoding="utf-8")
    return path


def command(path_kind: str, config: Path, events: Path) -> list[str]:
    if path_kind == "dry-run":
        return [str(SHIPMAP), "run", str(config), "--dry-run", "--no-progress", "--input", str(events)]
    return [str(SHIPMAP), "preview", str(ORDER_MAPPING), str(events), "--json"]


@dataclass
class Sample:
    seconds: float
    events_read: int
    rss_mb: float
    peak_mb: float


@dataclass
class Run:
    events: int
    wall_s: float
    peak_mb: float
    samples: list[Sample] = field(default_factory=list)
    stderr_tail: str = ""


def _status_mb(pid: int) -> tuple[float, float] | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            values[line.split(":")[0]] = int(line.split()[1]) / 1024
    if "VmRSS" not in values:
        return None
    return values["VmRSS"], values.get("VmHWM", values["VmRSS"])


def _read_position(pid: int, events: Path) -> int | None:
    """How many bytes of ``events`` the process has read: the offset of its open file."""
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == str(events):
                    for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines():
                        if line.startswith("pos:"):
                            return int(line.split()[1])
            except OSError:
                continue
    except OSError:
        return None
    return None


class Measured:
    """One subprocess, sampled while it runs; ``finish`` waits for it and reads its own peak RSS."""

    def __init__(self, argv: list[str], events: Path, count: int, env: dict[str, str]) -> None:
        self.argv, self.events, self.count = argv, events, count
        self.size = events.stat().st_size
        self.samples: list[Sample] = []
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115  (closed in finish(): it outlives __init__)
        self._stop = threading.Event()
        self.start = time.perf_counter()
        self.process = subprocess.Popen(
            argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=self._stderr, env=env
        )
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        self._exit: tuple[int, Any, float] | None = None
        self._waiter = threading.Thread(target=self._wait, daemon=True)
        self._waiter.start()

    def _wait(self) -> None:
        # Reaped as soon as it exits, so that its wall time is its own even when another run is longer.
        _, status, usage = os.wait4(self.process.pid, 0)
        self._exit = (status, usage, time.perf_counter() - self.start)
        self._stop.set()

    def _sample(self) -> None:
        last_position = 0
        while not self._stop.wait(0.25):
            status = _status_mb(self.process.pid)
            position = _read_position(self.process.pid, self.events)
            if status is None:
                continue
            if position is not None:
                last_position = position
            read = round(self.count * last_position / self.size)
            self.samples.append(Sample(time.perf_counter() - self.start, read, status[0], status[1]))

    def finish(self) -> Run:
        self._waiter.join()
        self._sampler.join()
        assert self._exit is not None
        status, usage, wall = self._exit
        self.process.returncode = os.waitstatus_to_exitcode(status)
        self._stderr.seek(0)
        tail = self._stderr.read()[-3000:].decode("utf-8", "replace")
        self._stderr.close()
        if self.process.returncode != 0:
            raise SystemExit(f"FAIL: {' '.join(self.argv)} exited {self.process.returncode}:\n{tail}")
        return Run(self.count, wall, usage.ru_maxrss / 1024, self.samples, tail)


def peak_by(samples: list[Sample], events: int) -> float | None:
    """The highest RSS seen (VmHWM) by the time ``events`` events had been read, or None if not sampled."""
    reached = [s for s in samples if s.events_read >= events]
    return reached[0].peak_mb if reached else None


def _report(label: str, shown: str, run: Run) -> dict[str, Any]:
    count = run.events
    marks = [mark for mark in MARKS if mark < count] + [count]
    rows = []
    for mark in marks:
        peak = run.peak_mb if mark == count else peak_by(run.samples, mark)
        where = "ru_maxrss of the child (os.wait4)" if mark == count else "its VmHWM when that many were read"
        rows.append([f"{mark:,}", "n/a" if peak is None else f"{peak:.1f}", where])
    early_mark = min(100_000, count // 10)
    early = peak_by(run.samples, early_mark)
    growth = None if early is None else run.peak_mb - early
    met = run.peak_mb < TARGET_MB and growth is not None and growth < 10
    print(f"\n### {label}: {count:,} events\n")
    print(f"`{shown} > /dev/null`\n")
    print(table(["events read", "peak RSS MB", "measured as"], rows))
    print(f"\nwall {run.wall_s:.1f} s, {count / run.wall_s:,.0f} events/s")
    print(
        f"target: flat and under {TARGET_MB} MB: peak {run.peak_mb:.1f} MB, "
        + (
            "growth not measured"
            if growth is None
            else f"{growth:+.1f} MB after the first {early_mark:,} events"
        )
        + f": {'MET' if met else 'NOT MET'}"
    )
    return {
        "events": count,
        "command": shown,
        "wall_s": run.wall_s,
        "peak_mb": run.peak_mb,
        "marks": {
            str(mark): (run.peak_mb if mark == count else peak_by(run.samples, mark)) for mark in marks
        },
        "growth_mb": growth,
        "met": met,
        "samples": [sample.__dict__ for sample in run.samples[:: max(1, len(run.samples) // 200)]],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    arguments = _bench.parser(__doc__.splitlines()[0])
    arguments.add_argument(
        "--events", type=int, default=1_000_000, help="events streamed through preview (default 1,000,000)"
    )
    arguments.add_argument(
        "--run-events",
        type=int,
        default=100_000,
        help="events streamed through shipmap run --dry-run, at the same time (default 100,000; 0: skip)",
    )
    args = arguments.parse_args(argv)
    count = 20_000 if args.quick else args.events
    run_count = min(args.run_events, 10_000) if args.quick else args.run_events

    _bench.heading("Memory: peak RSS while streaming NDJSON events through a dry run")
    env = {
        **os.environ,
        "BENCH_FENIX_USERNAME": "demo-user",
        "BENCH_FENIX_PASSWORD": "demo-pass",
        "BENCH_FENIX_API_KEY": "demo-api-key",
    }
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="shipmap-bench-memory-") as temporary:
        directory = Path(temporary)
        started = time.perf_counter()
        events = directory / "events.ndjson"
        size = generate(events, count)
        run_events = directory / "run-events.ndjson"
        if run_count:
            generate(run_events, run_count)
        print(
            f"generated {count:,} events ({size / 1e9:.2f} GB, {size // count:,} bytes each; "
            f"{run_count:,} more for the runtime) in {time.perf_counter() - started:.1f} s into a temporary "
            "directory.\nThe two commands run at the same time (one core each); each is measured on its own."
        )
        config = write_config(directory)

        def shown(argv: list[str]) -> str:
            return " ".join(argv).replace(str(directory), "$TMP").replace(str(REPO) + "/", "")

        preview_argv = command("preview", config, events)
        measured = {"preview": Measured(preview_argv, events, count, env)}
        if run_count:
            run_argv = command("dry-run", config, run_events)
            measured["dry-run"] = Measured(run_argv, run_events, run_count, env)
        finished = {name: item.finish() for name, item in measured.items()}
        results["preview"] = _report(
            "shipmap preview (the engine's streaming dry run)", shown(preview_argv), finished["preview"]
        )
        if run_count:
            results["dry-run"] = _report(
                "shipmap run --dry-run (the runtime's dry run: routing, keys, redacted requests)",
                shown(run_argv),
                finished["dry-run"],
            )
    results["met"] = all(entry["met"] for entry in results.values() if isinstance(entry, dict))
    _bench.write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
