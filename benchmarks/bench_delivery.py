"""Delivery: events per second that ``shipmap run`` delivers to the sandbox, journal on, against the machine.

The sandbox (``shipmap sandbox --port 0``, 127.0.0.1 only) runs in its own process. The same N Shopify orders
(the real REST sample with varying ids) are delivered, in rounds whose order rotates, by four clients:

- ``benchmarks/delivery/raw_socket.py``: HTTP/1.1 written and read by hand on asyncio streams, no HTTP library:
  what the machine and the sandbox allow (the limit, not a target);
- ``benchmarks/delivery/raw_aiohttp.py``: one ``aiohttp.ClientSession``;
- ``benchmarks/delivery/raw_loop.py``: one ``httpx.AsyncClient`` on httpx's default transport (httpcore, h11);
- ``shipmap run CONFIG --input events.ndjson --no-progress``: routing, the ready Shopify order mapping,
  validation, the SQLite journal (pending, then delivered, per delivery), the Fenix session, retries (none
  needed), its log off a terminal (problems and a progress line every 10 s; a line per delivery only with -v).

The raw loops post the very payloads shipmap produces (computed beforehand) at the same concurrency, after one
login, with nothing else to do. Each run gets a fresh journal and a reset sandbox, and must deliver all N
(checked in the sandbox's stats). Throughput is N over the run's own duration (shipmap's summary line; each raw
loop times itself the same way, from login to last answer). Ratios are taken within each round, then reported
as their median and range. The sandbox's ceiling is the fastest run of any client, with the sandbox's CPU per
request beside it, so the reader sees what limits each row. Then one more ``shipmap run`` and one raw httpx
loop, under cProfile, say where the time goes: in shipmap's main process and in its worker process
(``delivery.workers``, on by default with two CPUs), each profiled. Client CPU is the whole client's: ``shipmap
run``'s includes its worker process; ``delivery/run_cpu.py`` runs the CLI and splits it into the main
process (the event loop: journal, HTTP, logging) and the worker, so each column says which process a change
saved in. Each includes its start-up (~0.35 s of CPU for the main process, 0.2 s for a raw loop); the main
process's CPU while it delivers (from recovery and the first batch to the summary) is a column of its own.
"machine busy" is the share of both cores busy during the run, from /proc/stat: CPU that no process is
charged for (the kernel writing the journal back to disk) shows there, and idle cores show what the
pipeline leaves unused. A second table says why: the CPU of shipmap's event loop thread, journal writer thread
("-" since 763669e: the journal's writes run on the loop) and worker process, each with its wait in the run queue for a core (``/proc/.../schedstat``, read by
run_cpu.py as each ends), the sandbox's run-queue wait per request (its threads' schedstat, read around each
run: how long a request that has arrived waits for a core before the sandbox can serve it) and the client's
context switches per event, voluntary (it blocked: epoll, a lock, a pipe) and involuntary (preempted). These
come from Linux's /proc and are "-" elsewhere. shipmap's own modules are byte-compiled first, as an
installed package is: with PYTHONDONTWRITEBYTECODE set (as in some shells and CI images) every run would
compile them again (~0.1 s).

``--hogs N`` runs N busy-loop processes at normal priority through every round: on a busy host the worker
process, which yields the core (``SCHED_IDLE`` with a guard, or nice +5), must still keep the run going.

``--variant-arg ARG`` and ``--variant-env NAME=VALUE`` (each repeatable) add a fifth client to every round: ``shipmap
run`` again, with those extra arguments or environment variables (e.g. ``--variant-arg=--workers=0``). Within one
round the runs are minutes apart at most, so "variant ÷ shipmap" per round is the A/B that the VM's drift from
one benchmark run to the next (a quarter, some hours) does not blur.

    .venv/bin/python benchmarks/bench_delivery.py [--events 10000] [--concurrency 8] [--rounds 3] [--quick]
    [--hogs N] [--variant-arg ARG]... [--variant-env NAME=VALUE]...
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import _bench
from _bench import BENCH, ORDER_MAPPING, REPO, table
from bench_memory import generate

TARGET_RATIO = 0.8
SHIPMAP = Path(sys.executable).with_name("shipmap")
CREDENTIALS = {
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
journal:
  path: {journal}
"""


class SandboxProcess:
    """``shipmap sandbox --port 0`` in a subprocess, on 127.0.0.1."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [str(SHIPMAP), "sandbox", "--host", "127.0.0.1", "--port", "0"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            self.stop()
            raise SystemExit(f"FAIL: the sandbox did not start on 127.0.0.1 (first line: {self.url!r})")

    def call(self, method: str, path: str) -> Any:
        request = urllib.request.Request(
            self.url + path, method=method, data=b"" if method == "POST" else None
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def run_queue_wait_s(self) -> float | None:
        """Seconds the sandbox's threads have waited in the run queue for a core so far (the second field
        of each ``/proc/PID/task/TID/schedstat``; Linux with schedstats), else None."""
        try:
            tasks = os.listdir(f"/proc/{self.process.pid}/task")
            waits = [
                int(Path(f"/proc/{self.process.pid}/task/{tid}/schedstat").read_text().split()[1])
                for tid in tasks
            ]
        except (OSError, IndexError, ValueError):
            return None
        return sum(waits) / 1e9

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def prepare(directory: Path, count: int) -> tuple[Path, Path]:
    """The events, and the payloads shipmap makes of them (for the raw loop), with their URL paths."""
    from shipmap.engine import load_mapping

    events = directory / "events.ndjson"
    generate(events, count)
    mapping = load_mapping(ORDER_MAPPING)
    items = []
    with events.open(encoding="utf-8") as handle:
        for line in handle:
            payload = mapping.transform(json.loads(line))["order"]
            items.append((f"/api/v1/orders/{payload['id']}/created", payload))
    payloads = directory / "payloads.json"
    payloads.write_text(json.dumps(items, separators=(",", ":")), encoding="utf-8")
    return events, payloads


_SUMMARY = re.compile(r"^events (\d+) .* in ([0-9.]+) s$", re.M)


def run_child(argv: list[str], env: dict[str, str]) -> tuple[str, str, float, Any]:
    """stdout, stderr tail, wall seconds and resource usage (CPU, context switches: os.wait4) of one child."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read()[-3000:].decode("utf-8", "replace")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"FAIL: {' '.join(argv)} exited {code}:\n{stdout[-2000:]}\n{stderr}")
    return stdout, stderr, wall, usage


def machine_ticks() -> tuple[int, int]:
    """All CPU ticks of the machine so far, and the idle ones (idle and iowait), from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[3] + fields[4]


# run_cpu.py's parts of shipmap run, by the names of their columns.
THREAD_PARTS = {
    "loop": "loop",
    "journal writer": "writer",
    "worker": "worker_thread",
    "other threads": "other",
}


def one_run(
    kind: str, sandbox: SandboxProcess, argv: list[str], env: dict[str, str], count: int
) -> dict[str, float]:
    sandbox.call("POST", "/_sandbox/reset")
    server_cpu = sandbox.cpu_s()
    server_wait = sandbox.run_queue_wait_s()
    ticks, idle = machine_ticks()
    stdout, stderr, wall, usage = run_child(argv, env)
    ticks_after, idle_after = machine_ticks()
    busy = 1 - (idle_after - idle) / max(ticks_after - ticks, 1)
    server_cpu = sandbox.cpu_s() - server_cpu
    server_wait_after = sandbox.run_queue_wait_s()
    cpu = usage.ru_utime + usage.ru_stime
    # Which thread spent what, and waited how long for a core (shipmap only: run_cpu.py reads its threads).
    threads: dict[str, list[float]] = {}
    policy = None
    delivered = sandbox.call("GET", "/_sandbox/stats")["by_endpoint"].get("fenix.orders", 0)
    if delivered != count:
        raise SystemExit(f"FAIL: {kind} delivered {delivered} of {count} events")
    if kind == "shipmap":
        found = _SUMMARY.search(stdout)
        if found is None or int(found.group(1)) != count:
            raise SystemExit(
                f"FAIL: no summary line for {count} events in shipmap's output:\n{stdout[-2000:]}"
            )
        elapsed = float(found.group(2))
        split = json.loads(stderr.strip().splitlines()[-1])  # run_cpu.py's line: main and worker CPU
        main_cpu, worker_cpu = split["main_cpu_s"], split["worker_cpu_s"]
        main_run_cpu = split["main_run_cpu_s"]
        threads = split.get("threads") or {}  # an older run_cpu.py (another checkout) has none
        policy = split.get("worker_lifts")
    else:
        elapsed = json.loads(stdout.strip().splitlines()[-1])["elapsed_s"]
        main_cpu, worker_cpu = cpu, 0.0
        main_run_cpu = json.loads(stdout.strip().splitlines()[-1])[
            "cpu_s"
        ]  # from the login to the last answer
    measured = {
        "events_per_s": count / elapsed,
        "elapsed_s": elapsed,
        "wall_s": wall,
        "client_cpu_ms_per_event": 1000 * cpu / count,
        "main_cpu_ms_per_event": 1000 * main_cpu / count,
        "main_run_cpu_ms_per_event": 1000 * main_run_cpu / count,
        "worker_cpu_ms_per_event": 1000 * worker_cpu / count,
        "server_cpu_ms_per_event": 1000 * server_cpu / count,
        "machine_busy": busy,
        # The client's context switches (its worker's included): it blocked / it was preempted.
        "voluntary_switches_per_event": usage.ru_nvcsw / count,
        "involuntary_switches_per_event": usage.ru_nivcsw / count,
    }
    if kind == "shipmap" and policy is not None:  # how often the guard lifted a starving worker
        measured["worker_lifts"] = float(policy)
    if server_wait is not None and server_wait_after is not None:
        measured["server_wait_us_per_request"] = 1e6 * (server_wait_after - server_wait) / count
    for part, (part_cpu, part_wait) in threads.items():
        name = THREAD_PARTS.get(part, part)
        measured[f"{name}_cpu_ms_per_event"] = 1000 * part_cpu / count
        measured[f"{name}_wait_ms_per_event"] = 1000 * part_wait / count
    return measured


# -- where the time goes ----------------------------------------------------------------------------------

IDLE = "waiting, not CPU (epoll for the network, a queue or lock, the worker's full pipe to the main process)"
SNIFFIO = "HTTP client: httpcore retrying `import sniffio` (not installed) on every call"
BUCKETS = (
    # Module bodies run once: start-up. Import machinery itself is generic: its time goes to the importer.
    (
        "start-up: imports, config, schema compilation",
        ("<module>", "import_module", "/yaml/", "/fastjsonschema/"),
    ),
    (SNIFFIO, ("current_async_library",)),
    ("payload validation (fastjsonschema code, kinds)", ("validate_https", "engine/_kinds.py")),
    ("mapping (shipmap.engine, jinja2, jmespath)", ("/engine/", "/jinja2/", "/jmespath/", "<template>")),
    (
        "journal (sqlite3, connectors/_store/_journal.py, _database.py, _sqlite.py, _schema.py, delivery keys)",
        (
            "_journal.py",
            "_store/_database.py",
            "_store/_sqlite.py",
            "_store/_schema.py",
            "_store/_keys.py",
            "sqlite3",
        ),
    ),
    (
        "HTTP client (httpx, httpcore, h11, aiohttp, the direct path's connections)",
        (
            "/httpx/",
            "/httpcore/",
            "/h11/",
            "/aiohttp/",
            "/yarl/",
            "/multidict/",
            "_http11.py",
            "_transport.py",
            "_deliver/_aiohttp.py",
            "_deadline.py",
        ),
    ),
    (
        "event loop and sockets (asyncio, selectors, anyio)",
        ("/asyncio/", "selectors.py", "/anyio/", "_socket"),
    ),
    ("logging and redaction", ("/logging/", "_redact.py", "_cli/_logging.py")),
    ("JSON encode/decode", ("/json/",)),
    ("runtime, delivery, auth, inputs (connectors)", ("/connectors/",)),
    ("threads and queues", ("threading.py", "queue.py", "concurrent/")),
)
_WAITS = ("SimpleQueue' objects>", "epoll' objects>", "lock' objects>", "select.select", "time.sleep")
# The worker process writes its batches into a pipe: a write blocks while the main process is behind.
WORKER_WAITS = ("'write' of '_io.BufferedWriter' objects>",)


def direct_bucket(filename: str, function: str, waits: tuple[str, ...] = _WAITS) -> str | None:
    """The part a function belongs to by its own file, or None for generic code (builtins, the standard
    library's helpers) whose time belongs to whoever called it."""
    text = f"{filename}:{function}"
    if filename == "~" and any(wait in function for wait in waits):
        return IDLE
    for name, needles in BUCKETS:
        if any(needle in text for needle in needles):
            return name
    return None


def _is_import_machinery(function: Any) -> bool:
    return (
        function[0].startswith(("<frozen importlib", "<frozen zipimport")) or "_distutils_hack" in function[0]
    )


def where_the_time_goes(stats_file: Path, waits: tuple[str, ...] = _WAITS) -> list[tuple[str, float]]:
    """Own time (tottime) of every profiled function, summed by the part it belongs to. The time of
    generic functions (``isinstance``, ``dict.get``, ``contextlib``...) goes to their callers' parts, in
    proportion to the time each caller spent in them; the import machinery's, to whoever imported."""
    stats: dict[Any, Any] = pstats.Stats(str(stats_file)).stats  # type: ignore[attr-defined]
    memo: dict[Any, dict[str, float]] = {}
    importing: dict[str, dict[str, float]] = {}

    def mix(weighted: list[tuple[Any, float]], depth: int) -> dict[str, float]:
        total = sum(weight for _, weight in weighted)
        if not total:
            return {"other": 1.0}
        out: dict[str, float] = {}
        for function, weight in weighted:
            for name, part in shares(function, depth + 1).items():
                out[name] = out.get(name, 0.0) + weight / total * part
        return out

    def import_shares(depth: int) -> dict[str, float]:
        # The machinery is one recursive block: split it by the cumulative time of its callers outside it.
        if "done" not in importing:
            importing["done"] = {"other": 1.0}  # guards against an import reached again from inside
            entries = [
                (caller, edge[3])
                for function, entry in stats.items()
                if _is_import_machinery(function)
                for caller, edge in entry[4].items()
                if not _is_import_machinery(caller)
            ]
            importing["done"] = mix(entries, depth)
        return importing["done"]

    def shares(function: Any, depth: int) -> dict[str, float]:
        if function in memo:
            return memo[function]
        if _is_import_machinery(function):
            return import_shares(depth)
        direct = direct_bucket(function[0], function[2], waits)
        if direct is not None:
            return {direct: 1.0}
        callers = stats[function][4] if function in stats else {}
        column = 2 if any(edge[2] for edge in callers.values()) else 3  # own time, else cumulative
        if depth > 60 or not callers:
            return {"other": 1.0}
        memo[function] = {"other": 1.0}  # a recursion back here counts as other
        memo[function] = mix([(caller, edge[column]) for caller, edge in callers.items()], depth)
        return memo[function]

    totals: dict[str, float] = {}
    for function, (_, _, tottime, _, _) in stats.items():
        for name, part in shares(function, 0).items():
            totals[name] = totals.get(name, 0.0) + tottime * part
    return sorted(totals.items(), key=lambda item: -item[1])


def top_functions(stats_file: Path, limit: int = 12) -> list[tuple[str, int, float, float]]:
    stats = pstats.Stats(str(stats_file))
    rows = []
    for (filename, line, function), (_, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        short = filename.replace(str(REPO) + "/", "")
        short = re.sub(r".*/site-packages/", "", short)
        short = re.sub(r".*/lib/python3\.\d+/", "", short)
        rows.append((f"{short}:{line}({function})", calls, tottime, cumtime))
    rows.sort(key=lambda row: -row[2])
    return rows[:limit]


# The clients, fastest first: the raw loops post the payloads shipmap produced, with nothing else to do.
RAW_LOOPS = {
    "socket": ("raw asyncio socket loop (no HTTP library: the machine's limit)", "raw_socket.py"),
    "aiohttp": ("raw aiohttp loop", "raw_aiohttp.py"),
    "httpx": ("raw httpx loop (httpcore, h11)", "raw_loop.py"),
}
# The target is against the fastest raw loop that uses an HTTP library, not against the socket loop.
TARGET_AGAINST = ("aiohttp", "httpx")


def _worker_policy(measured: dict[str, float]) -> str:
    """How shipmap's worker ran (run_cpu.py's worker_lifts), as the round's line says it."""
    if "worker_lifts" not in measured:
        return ""
    return f", worker lifted out of SCHED_IDLE {measured['worker_lifts']:.0f} time(s)"


def _figure(median: dict[str, float], key: str, form: str) -> str:
    """A median formatted, or "-" where the run could not measure it (not Linux, or not that client)."""
    return form.format(median[key]) if key in median else "-"


def _cpu_and_wait(median: dict[str, float], part: str) -> str:
    if f"{part}_cpu_ms_per_event" not in median:
        return "-"
    return f"{median[f'{part}_cpu_ms_per_event']:.3f} / {median[f'{part}_wait_ms_per_event']:.3f}"


def spread(values: list[float]) -> str:
    """min-max of a few runs, as a percentage of their median."""
    middle = statistics.median(values)
    return f"{min(values):.2f}-{max(values):.2f} (±{50 * (max(values) - min(values)) / middle:.0f}%)"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    arguments = _bench.parser(__doc__.splitlines()[0])
    arguments.add_argument("--events", type=int, default=10000, help="events per run (default 10000)")
    arguments.add_argument("--concurrency", type=int, default=8, help="requests in flight, every client (8)")
    arguments.add_argument("--rounds", type=int, default=3, help="rounds of every client, alternating (3)")
    arguments.add_argument("--profile-events", type=int, default=2000, help="events of the profiled run")
    arguments.add_argument("--no-profile", action="store_true", help="skip the profiled runs")
    arguments.add_argument(
        "--hogs",
        type=int,
        default=0,
        metavar="N",
        help="run N busy-loop processes beside every round (a busy host: does the run keep a fair rate?)",
    )
    arguments.add_argument(
        "--extra-path",
        metavar="PATH",
        help="prepend PATH to PYTHONPATH of every client (an experiment: e.g. another transport's wheel)",
    )
    arguments.add_argument(
        "--variant-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="add a 'variant' client: shipmap run with this extra argument too (repeatable)",
    )
    arguments.add_argument(
        "--variant-env",
        action="append",
        default=[],
        type=_assignment,
        metavar="NAME=VALUE",
        help="add a 'variant' client: shipmap run with this environment variable too (repeatable)",
    )
    args = arguments.parse_args(argv)
    count = 1000 if args.quick else args.events
    rounds = 1 if args.quick else args.rounds
    profile_count = min(count, 500 if args.quick else args.profile_events)
    concurrency = args.concurrency

    _bench.heading(
        f"Delivery: shipmap run against raw socket, aiohttp and httpx loops, {count:,} events,"
        f" concurrency {concurrency}"
    )
    env = {**os.environ, **CREDENTIALS}
    # Byte-compiled, as an installed package is (an editable install under PYTHONDONTWRITEBYTECODE is not).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    compiled = [sys.executable, "-m", "compileall", "-q", str(REPO / "engine"), str(REPO / "connectors")]
    subprocess.run(compiled, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
    if args.extra_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.extra_path, env.get("PYTHONPATH")]))
        print(f"every client runs with PYTHONPATH={env['PYTHONPATH']}")
    results: dict[str, Any] = {"events": count, "concurrency": concurrency, "rounds": rounds, "runs": []}
    results["hogs"] = args.hogs
    variant = bool(args.variant_arg or args.variant_env)
    kinds = [*RAW_LOOPS, "shipmap", *(["variant"] if variant else [])]
    variant_env = {**env, **dict(args.variant_env)}
    variant_label = "shipmap run, variant: " + " ".join(
        [*(f"{name}={value}" for name, value in args.variant_env), *args.variant_arg]
    )
    samples: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory(prefix="shipmap-bench-delivery-") as temporary:
        directory = Path(temporary)
        events, payloads = prepare(directory, count)
        sandbox = SandboxProcess()
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.hogs)]
        try:
            if hogs:
                print(
                    f"{len(hogs)} CPU hog(s) at normal priority beside every run: pids {[h.pid for h in hogs]}"
                )
            print(
                f"sandbox: {sandbox.url} (its own process); {rounds} round(s) of {len(kinds)} clients, the order"
                f" rotating from round to round; load average {os.getloadavg()[0]:.2f} at the start"
            )

            def config(journal: str, events_url: str = sandbox.url) -> Path:
                path = directory / f"{journal}.yaml"
                path.write_text(
                    CONFIG.format(
                        url=events_url,
                        mapping=ORDER_MAPPING,
                        concurrency=concurrency,
                        journal=directory / f"{journal}.db",
                    ),
                    encoding="utf-8",
                )
                return path

            def raw_argv(kind: str) -> list[str]:
                script = BENCH / "delivery" / RAW_LOOPS[kind][1]
                return [sys.executable, str(script), sandbox.url, str(payloads), str(concurrency)]

            for index in range(rounds):
                order = kinds[index % len(kinds) :] + kinds[: index % len(kinds)]
                for kind in order:
                    if kind in RAW_LOOPS:
                        measured = one_run(kind, sandbox, raw_argv(kind), env, count)
                    else:
                        cfg = config(f"journal-{kind}-{index}")
                        argv = [sys.executable, str(BENCH / "delivery" / "run_cpu.py"), "--", "run"]
                        argv += [str(cfg), "--input", str(events), "--no-progress"]
                        if kind == "variant":
                            argv += args.variant_arg
                        measured = one_run(
                            "shipmap", sandbox, argv, variant_env if kind == "variant" else env, count
                        )
                    measured["round"] = index
                    measured["load_average"] = os.getloadavg()[0]
                    samples[kind].append(measured)
                    results["runs"].append({"kind": kind, **measured})
                    print(
                        f"  round {index + 1}: {kind:8} {measured['events_per_s']:7,.0f} events/s,"
                        f" client CPU {measured['client_cpu_ms_per_event']:.2f} ms/event (main"
                        f" {measured['main_cpu_ms_per_event']:.3f}, delivering"
                        f" {measured['main_run_cpu_ms_per_event']:.3f}; worker"
                        f" {measured['worker_cpu_ms_per_event']:.3f}), sandbox CPU"
                        f" {measured['server_cpu_ms_per_event']:.2f} ms/event (run-queue wait"
                        f" {measured.get('server_wait_us_per_request', float('nan')):.0f} us), machine busy"
                        f" {measured['machine_busy']:.0%}, load {measured['load_average']:.2f}"
                        + _worker_policy(measured),
                        flush=True,
                    )
            if not args.no_profile:
                profile = profile_runs(
                    directory, sandbox, config, raw_argv("httpx"), payloads, profile_count, env
                )
        finally:
            for hog in hogs:  # by their own pids
                hog.kill()
                hog.wait()
            sandbox.stop()

    medians = {
        kind: {
            key: statistics.median(run[key] for run in runs)
            for key in runs[0]
            if all(key in run for run in runs)  # a figure /proc gave in every run
        }
        for kind, runs in samples.items()
    }
    # Ratios within each round (the runs of a round are minutes apart at most), then their median and range.
    per_round: dict[str, list[float]] = {}
    for kind in kinds:
        for other in kinds:
            if kind != other:
                per_round[f"{kind}/{other}"] = [
                    mine["events_per_s"] / theirs["events_per_s"]
                    for mine, theirs in zip(samples[kind], samples[other], strict=True)
                ]
    fastest = max(TARGET_AGAINST, key=lambda kind: medians[kind]["events_per_s"])
    ratios = per_round[f"shipmap/{fastest}"]
    ratio = statistics.median(ratios)
    # The sandbox's ceiling: the most requests/s any client got out of it, and what one of its cores would
    # serve at its measured CPU per request (uvicorn serves on one thread).
    ceiling = max(run["events_per_s"] for runs in samples.values() for run in runs)
    sandbox_cpu = statistics.median(
        run["server_cpu_ms_per_event"] for runs in samples.values() for run in runs
    )
    rows = []
    why_rows = []
    for kind in kinds:
        median = medians[kind]
        label = RAW_LOOPS[kind][0] if kind in RAW_LOOPS else "shipmap run (journal on)"
        if kind == "variant":
            label = variant_label
        rates = [run["events_per_s"] for run in samples[kind]]
        rows.append(
            [
                label,
                f"{median['events_per_s']:,.0f}",
                f"{min(rates):,.0f}-{max(rates):,.0f}",
                f"{median['client_cpu_ms_per_event']:.2f}",
                f"{median['main_cpu_ms_per_event']:.3f}",
                f"{median['main_run_cpu_ms_per_event']:.3f}",
                f"{median['worker_cpu_ms_per_event']:.3f}",
                f"{median['server_cpu_ms_per_event']:.2f}",
                f"{median['machine_busy']:.0%}",
                f"{median['events_per_s'] * median['server_cpu_ms_per_event'] / 1000:.2f}",
                f"{median['events_per_s'] / ceiling:.2f}",
            ]
        )
        why_rows.append(
            [
                label,
                *(_cpu_and_wait(median, part) for part in ("loop", "writer", "worker_thread")),
                _figure(median, "server_wait_us_per_request", "{:.0f}"),
                f"{median['voluntary_switches_per_event']:.2f} / {median['involuntary_switches_per_event']:.2f}",
            ]
        )
    print()
    print(
        table(
            [
                "client",
                "events/s (median)",
                "range",
                "client CPU ms/event",
                "main process",
                "main, delivering",
                "worker process",
                "sandbox CPU ms/request",
                "machine busy",
                "sandbox cores busy",
                "× sandbox ceiling",
            ],
            rows,
        )
    )
    print(
        "\nWhy (medians): each part's CPU ms/event and, after the slash, the ms/event it waited in the run"
        " queue for a core (schedstat; shipmap only); the sandbox's run-queue wait per request; the client's"
        " context switches per event, voluntary (it blocked) / involuntary (preempted):\n"
    )
    print(
        table(
            [
                "client",
                "event loop thread",
                "journal writer thread",
                "worker process",
                "sandbox run-queue wait us/request",
                "client switches/event",
            ],
            why_rows,
        )
    )
    print(
        f"\nsandbox ceiling: {ceiling:,.0f} requests/s (the fastest run of any client); its CPU"
        f" {sandbox_cpu:.2f} ms/request (median of all runs), so one core of it serves at most"
        f" {1000 / sandbox_cpu:,.0f} requests/s"
    )
    print(f"\nratios, per round (median, min-max over {rounds} round(s)):\n")
    ratio_rows = []
    names = ["shipmap/aiohttp", "shipmap/httpx", "shipmap/socket", "aiohttp/socket", "httpx/aiohttp"]
    if variant:
        names += ["variant/shipmap", "variant/aiohttp"]
    for name in names:
        values = per_round[name]
        ratio_rows.append([name.replace("/", " ÷ "), f"{statistics.median(values):.2f}", spread(values)])
    print(table(["ratio", "median", "min-max (spread)"], ratio_rows))
    if variant:
        wins = sum(value > 1 for value in per_round["variant/shipmap"])
        print(f"\n{variant_label}: faster than shipmap run in {wins} of {rounds} round(s)")
    met = ratio >= TARGET_RATIO
    print(
        f"\ntarget: shipmap run at least {TARGET_RATIO}x the fastest raw HTTP-library loop ({fastest}):"
        f" {ratio:.2f}x ({spread(ratios)}), {'MET' if met else 'NOT MET'}"
    )
    results.update(
        {
            "medians": medians,
            "per_round": per_round,
            "fastest_library": fastest,
            "ratio": ratio,
            "ratio_spread": [min(ratios), max(ratios)],
            "ratio_socket": statistics.median(per_round["shipmap/socket"]),
            "sandbox_ceiling": ceiling,
            "sandbox_cpu_ms": sandbox_cpu,
            "met": met,
        }
    )
    if not args.no_profile:
        print_profile(profile, profile_count)
        results["profile"] = profile
    _bench.write_json(args.json, results)
    return results


def _assignment(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def profile_runs(
    directory: Path,
    sandbox: SandboxProcess,
    config: Any,
    raw_argv: list[str],
    payloads: Path,
    profile_count: int,
    env: dict[str, str],
) -> dict[str, Any]:
    """One more ``shipmap run`` and one raw httpx loop, under cProfile (not timed: the profiler slows both)."""
    sandbox.call("POST", "/_sandbox/reset")
    profile_events = directory / "profile-events.ndjson"
    generate(profile_events, profile_count)
    stats_file = directory / "run.pstats"
    profile_argv = [
        sys.executable,
        str(BENCH / "delivery" / "profile_run.py"),
        str(stats_file),
        "--",
        "run",
        str(config("journal-profile")),
        "--input",
        str(profile_events),
        "--no-progress",
    ]
    stdout, _, _, _ = run_child(profile_argv, env)
    profiled = json.loads(stdout.strip().splitlines()[-1])
    worker_stats = profiled.get("worker_stats")
    sandbox.call("POST", "/_sandbox/reset")
    raw_items = json.loads(payloads.read_text(encoding="utf-8"))[:profile_count]
    raw_payloads = directory / "profile-payloads.json"
    raw_payloads.write_text(json.dumps(raw_items, separators=(",", ":")), encoding="utf-8")
    raw_stats = directory / "raw.pstats"
    raw_script, url = raw_argv[1:3]
    profile_raw = [sys.executable, "-m", "cProfile", "-o", str(raw_stats), raw_script, url]
    run_child([*profile_raw, str(raw_payloads), raw_argv[-1]], env)
    return {
        "events": profile_count,
        **profiled,
        "buckets": where_the_time_goes(stats_file),
        "top": top_functions(stats_file),
        "worker_buckets": (
            dict(where_the_time_goes(Path(worker_stats), _WAITS + WORKER_WAITS)) if worker_stats else {}
        ),
        "worker_top": top_functions(Path(worker_stats), limit=8) if worker_stats else [],
        "raw_buckets": dict(where_the_time_goes(raw_stats)),
    }


def print_profile(profile: dict[str, Any], profile_count: int) -> None:
    buckets, worker_buckets, raw_buckets = (
        profile["buckets"],
        profile["worker_buckets"],
        profile["raw_buckets"],
    )
    top, worker_top, profiled = profile["top"], profile["worker_top"], profile
    busy = sum(seconds for name, seconds in buckets if name != IDLE)
    worker_busy = sum(seconds for name, seconds in worker_buckets.items() if name != IDLE)
    print(
        f"\n### Where shipmap run's time goes (cProfile, all threads and the worker process, {profile_count:,}"
        f" events: {profiled['elapsed_s']:.1f} s wall, {profiled['cpu_s']:.1f} s CPU in the main process and"
        f" {profiled.get('worker_cpu_s', 0.0):.1f} s in the worker, under the profiler)\n"
    )
    if not worker_buckets:
        print("(no worker process: `workers: 0`, or one CPU; everything ran in the main process)\n")
    raw_busy = sum(seconds for name, seconds in raw_buckets.items() if name != IDLE)
    names = [name for name, _ in buckets] + [name for name in worker_buckets if name not in dict(buckets)]
    main_buckets = dict(buckets)
    rows = [
        [
            name,
            f"{1000 * main_buckets.get(name, 0.0) / profile_count:.2f}",
            f"{1000 * worker_buckets.get(name, 0.0) / profile_count:.2f}",
            ""
            if name == IDLE
            else f"{(main_buckets.get(name, 0.0) + worker_buckets.get(name, 0.0)) / (busy + worker_busy):.0%}",
            f"{1000 * raw_buckets.get(name, 0.0) / profile_count:.2f}",
        ]
        for name in names
    ]
    rows.append(
        [
            "CPU in all",
            f"{1000 * busy / profile_count:.2f}",
            f"{1000 * worker_busy / profile_count:.2f}",
            "100%",
            f"{1000 * raw_busy / profile_count:.2f}",
        ]
    )
    print(
        "Own time per event by part: shipmap run's main process (the event loop: journal, HTTP), its worker"
        " process (input, routing, mapping, validation, encoding) and the raw loop, under the same profiler."
        " The main process's time is what limits throughput; the worker's runs on the other core.\n"
    )
    print(
        table(
            ["part", "shipmap main ms/event", "shipmap worker ms/event", "share of CPU", "raw loop ms/event"],
            rows,
        )
    )
    for title, functions in (("main process", top), ("worker process", worker_top)):
        if not functions:
            continue
        print(f"\nTop functions by own time, {title}:\n")
        print(
            table(
                ["function", "calls", "own s", "cumulative s"],
                [[name, f"{calls:,}", f"{own:.3f}", f"{cum:.3f}"] for name, calls, own, cum in functions],
            )
        )


if __name__ == "__main__":
    main()
