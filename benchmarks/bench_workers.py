"""1, 2 and 4 ``shipmap run`` workers sharing one PostgreSQL journal, against a sink that answers after 50 ms
(issue 16).

The sink is the sandbox (its own process) with every answer held 50 ms (``--faults slow=1:0.05``): a vendor
API's latency, so one worker's throughput is bounded by ``concurrency / 50 ms`` and more workers should add
throughput until something else saturates. The input is split in as many parts as there are workers (as
webhooks spread over hosts would be); every worker journals to the same PostgreSQL database (a fresh one per
run, on the server ``make postgres`` starts) under leases.

Two throughputs per worker count, because a short run is mostly start-up:
- **steady**: deliveries per second at the sink, from the first delivery it received to the last (the
  sandbox records when each request arrived). This is what N workers sustain once they run, and the ratio
  the target (>= 1.8x from 1 to 2) is read from.
- **end to end**: deliveries per second from the first worker's start to the last one's exit, start-up
  (interpreter, imports, login, journal) and the end of a shared run (waiting for the other workers'
  leases) included.

Also reported: the CPU seconds of the workers, of the sink and of PostgreSQL (read from /proc) per delivery,
the cores the three keep busy, and the journal round trips per delivery (each worker counts its PostgreSQL
calls: one per statement, one per pipelined batch of statements). What limits 4 workers on this machine is read from those figures.

    .venv/bin/python benchmarks/bench_workers.py [--events 4000] [--concurrency 8] [--rounds 2] [--quick]
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from _bench import ORDER_MAPPING, REPO, heading, machine, parser, table, write_json
from bench_memory import generate

SHIPMAP = Path(sys.executable).with_name("shipmap")
# A worker is `shipmap run`, counting its journal's round trips to PostgreSQL into the file $BENCH_COUNTS.
COUNTED_RUN = """
import atexit, json, os, sys
from shipmap.connectors import Journal
PostgresConnection = sys.modules[Journal.__module__].PostgresConnection  # wherever the store keeps it
counts = {"round_trips": 0, "statements": 0}
execute, executemany = PostgresConnection.execute, PostgresConnection.executemany
def counted_execute(self, sql, parameters=()):
    counts["round_trips"] += 1
    counts["statements"] += 1
    return execute(self, sql, parameters)
def counted_executemany(self, sql, rows):
    rows = list(rows)
    if rows:  # psycopg pipelines the statements of one executemany: one round trip
        counts["round_trips"] += 1
        counts["statements"] += len(rows)
    return executemany(self, sql, rows)
PostgresConnection.execute, PostgresConnection.executemany = counted_execute, counted_executemany
atexit.register(lambda: open(os.environ["BENCH_COUNTS"], "w").write(json.dumps(counts)))
sys.argv = ["shipmap", *sys.argv[1:]]
from shipmap.connectors._cli import entry
entry()
"""
LATENCY_S = 0.05
TARGET = 1.8
ENV = {
    "BENCH_FENIX_USERNAME": "demo-user",
    "BENCH_FENIX_PASSWORD": "demo-pass",
    "BENCH_FENIX_API_KEY": "demo-api-key",
}
CONFIG = """\
version: 1
env_file: false
connections:
  fenix:
    api: fenix
    base_url: {url}
    auth:
      scheme: fenix_session
      username: ${{BENCH_FENIX_USERNAME}}
      password: ${{BENCH_FENIX_PASSWORD}}
      api_key: ${{BENCH_FENIX_API_KEY}}
      store_name: demo-store
mappings:
  - mapping: {mapping}
delivery:
  concurrency: {concurrency}
  workers: 0
journal:
  url: {journal}
  lease: 30s
"""


def postgres_server() -> str:
    subprocess.run([str(REPO / ".ci" / "postgres"), "start"], check=True, cwd=REPO)
    return (REPO / ".postgres-url").read_text(encoding="utf-8").splitlines()[0]


def _cpu_s(stat: str, *, children: bool) -> float:
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_cpu_s() -> float:
    """The CPU seconds the server has used: the postmaster, its live processes, and (through the
    postmaster's children times) every session that has ended (Linux: read from /proc)."""
    data = Path((REPO / ".postgres-url").read_text(encoding="utf-8").splitlines()[1])
    postmaster = (data / "postmaster.pid").read_text(encoding="utf-8").split()[0]
    total = _cpu_s(Path(f"/proc/{postmaster}/stat").read_text(), children=True)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended meanwhile: its time is in the postmaster's children times
            continue
        if text.rsplit(")", 1)[1].split()[1] == postmaster:
            total += _cpu_s(text, children=False)
    return total


def fresh_database(server: str) -> str:
    import psycopg

    name = f"shipmap_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return server.rsplit("/", 1)[0] + "/" + name


def drop_database(server: str, url: str) -> None:
    import psycopg

    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


class Sink:
    """The sandbox in its own process, every answer held ``LATENCY_S`` after the request was handled."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [
                str(SHIPMAP),
                "sandbox",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--faults",
                f"slow=1:{LATENCY_S}",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            self.stop()
            raise SystemExit(f"the sandbox did not start (first line {self.url!r})")

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/_sandbox/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()

    def delivery_times(self) -> list[float]:
        """When each delivery (every API request but the logins) arrived, in seconds, sorted."""
        with urllib.request.urlopen(f"{self.url}/_sandbox/requests", timeout=60) as response:
            found = json.load(response)["requests"]
        return sorted(
            datetime.fromisoformat(r["received_at"].replace("Z", "+00:00")).timestamp()
            for r in found
            if not r["endpoint"].endswith(".login")
        )

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def split(events: Path, parts: int, folder: Path) -> list[Path]:
    lines = events.read_text(encoding="utf-8").splitlines(keepends=True)
    paths = []
    for part in range(parts):
        path = folder / f"part-{parts}-{part}.ndjson"
        path.write_text("".join(lines[part::parts]), encoding="utf-8")
        paths.append(path)
    return paths


def one_run(
    workers: int, sink: Sink, server: str, events: Path, folder: Path, concurrency: int
) -> dict[str, Any]:
    url = fresh_database(server)
    try:
        config = folder / f"workers-{workers}.yaml"
        config.write_text(
            CONFIG.format(url=sink.url, mapping=ORDER_MAPPING, concurrency=concurrency, journal=url),
            encoding="utf-8",
        )
        subprocess.run([str(SHIPMAP), "journal", "migrate", url], check=True, capture_output=True)
        parts = split(events, workers, folder)
        env = {**os.environ, **ENV}
        sink.reset()
        sink_cpu = sink.cpu_s()
        server_cpu = postgres_cpu_s()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", COUNTED_RUN, "run", str(config), "-i", str(part), "--no-progress"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env={**env, "BENCH_COUNTS": str(folder / f"counts-{workers}-{n}.json")},
                cwd=folder,
            )
            for n, part in enumerate(parts)
        ]
        outputs = [process.communicate(timeout=600)[0].decode() for process in processes]
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if any(process.returncode != 0 for process in processes):
            raise SystemExit(f"a worker failed: {[p.returncode for p in processes]}\n{outputs}")
        import psycopg

        with psycopg.connect(url) as db:
            delivered = db.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'delivered'").fetchone()[0]
        arrivals = sink.delivery_times()
        counts = [json.loads((folder / f"counts-{workers}-{n}.json").read_text()) for n in range(workers)]
        round_trips = sum(count["round_trips"] for count in counts)
        return {
            "workers": workers,
            "delivered": delivered,
            "wall_s": wall,
            "per_s": delivered / wall,
            # Deliveries between the first and the last arrival, over the time between them.
            "steady_per_s": (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]),
            "sink_requests": len(arrivals),
            "round_trips": round_trips,
            "statements": sum(count["statements"] for count in counts),
            "round_trips_per_delivery": round_trips / delivered,
            "workers_cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "sink_cpu_s": sink.cpu_s() - sink_cpu,
            "postgres_cpu_s": postgres_cpu_s() - server_cpu,
        }
    finally:
        drop_database(server, url)


def _busy(run: dict[str, Any]) -> float:
    """The cores the workers, the sink and PostgreSQL kept busy, on average over the run."""
    return (run["workers_cpu_s"] + run["sink_cpu_s"] + run["postgres_cpu_s"]) / run["wall_s"]


def main() -> None:
    arguments = parser(__doc__ or "")
    arguments.add_argument("--events", type=int, default=4000)
    arguments.add_argument("--concurrency", type=int, default=8)
    arguments.add_argument("--rounds", type=int, default=2)
    args = arguments.parse_args()
    events_count = 600 if args.quick else args.events
    rounds = 1 if args.quick else args.rounds
    info = machine()
    print(f"machine: {info['cpu']}, {info['nproc']} cores, load average {info['load_average']}")
    server = postgres_server()
    results: dict[str, Any] = {"machine": info, "runs": []}
    ceiling = args.concurrency / LATENCY_S
    with tempfile.TemporaryDirectory(prefix="shipmap-bench-workers-") as tmp:
        folder = Path(tmp)
        events = folder / "events.ndjson"
        generate(events, events_count)
        sink = Sink()
        try:
            for _ in range(rounds):
                for workers in (1, 2, 4):
                    run = one_run(workers, sink, server, events, folder, args.concurrency)
                    if run["delivered"] != events_count:
                        raise SystemExit(f"{workers} workers delivered {run['delivered']} of {events_count}")
                    results["runs"].append(run)
        finally:
            sink.stop()

    def median(n: int, field: str) -> float:
        return statistics.median(r[field] for r in results["runs"] if r["workers"] == n)

    steady = {n: median(n, "steady_per_s") for n in (1, 2, 4)}
    end_to_end = {n: median(n, "per_s") for n in (1, 2, 4)}
    heading(f"{events_count:,} deliveries, concurrency {args.concurrency} per worker, sink latency 50 ms")
    rows = []
    for n in (1, 2, 4):
        runs = [r for r in results["runs"] if r["workers"] == n]
        rows.append([
            n, f"{steady[n]:,.0f}", f"{steady[n] / steady[1]:.2f}x",
            f"{end_to_end[n]:,.0f}", f"{end_to_end[n] / end_to_end[1]:.2f}x", f"{n * ceiling:,.0f}",
            f"{median(n, 'round_trips_per_delivery'):.2f}",
            f"{median(n, 'workers_cpu_s') / events_count * 1000:.2f}",
            f"{median(n, 'sink_cpu_s') / events_count * 1000:.2f}",
            f"{median(n, 'postgres_cpu_s') / events_count * 1000:.2f}",
            f"{statistics.median(_busy(r) for r in runs):.2f}",
        ])  # fmt: skip
    print(
        table(
            [
                "workers",
                "steady deliveries/s",
                "vs 1",
                "end-to-end deliveries/s",
                "vs 1",
                "latency bound",
                "journal round trips/delivery",
                "worker CPU ms/delivery",
                "sink CPU ms/delivery",
                "PostgreSQL CPU ms/delivery",
                "cores busy",
            ],
            rows,
        )
    )
    ratio = steady[2] / steady[1]
    results.update(
        steady=steady,
        end_to_end=end_to_end,
        ratio_2=ratio,
        ratio_4=steady[4] / steady[1],
        end_to_end_ratio_2=end_to_end[2] / end_to_end[1],
        met=ratio >= TARGET,
    )
    print(
        f"\n1 -> 2 workers, steady: {ratio:.2f}x (target >= {TARGET}x): {'MET' if ratio >= TARGET else 'NOT MET'}"
        f"; end to end: {end_to_end[2] / end_to_end[1]:.2f}x"
    )
    print(f"load average at the end: {os.getloadavg()}")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
