"""A/B of ``shipmap run`` between checkouts, alternating in the same minutes against one sandbox.

    python benchmarks/journal/ab.py N ROUNDS NAME=PYTHON:CHECKOUT[:VAR=VALUE] ... [--journal-dir DIR]

Each NAME runs ``CHECKOUT/benchmarks/delivery/run_cpu.py`` with PYTHON (a venv whose editable install points at
CHECKOUT), optionally with one environment variable set; rounds rotate the order. Per run: events/s (the
summary line), main and worker CPU per event, the sandbox's CPU per request, and the machine's busy CPU and
iowait per event and idle share from /proc/stat around the run (the kernel's writeback and other processes
count there, not in a process's CPU). Prints each run, then medians and ranges; the runs go to a JSON file.
"""

import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench_delivery as bd
from _bench import ORDER_MAPPING
from bench_memory import generate


def proc_stat() -> tuple[int, int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq = fields[:7]
    steal = fields[7] if len(fields) > 7 else 0
    return user + nice + system + irq + softirq + steal, idle, iowait


def main() -> None:
    args = sys.argv[1:]
    journal_dir = None
    if "--journal-dir" in args:
        i = args.index("--journal-dir")
        journal_dir = Path(args[i + 1])
        del args[i : i + 2]
    count, rounds = int(args[0]), int(args[1])
    trees = [a.split("=", 1) for a in args[2:]]
    trees = [(name, *[*spec.split(":", 2), ""][:3]) for name, spec in trees]
    env = {**os.environ, **bd.CREDENTIALS}
    samples: dict[str, list[dict[str, float]]] = {name: [] for name, *_ in trees}
    tick = os.sysconf("SC_CLK_TCK")
    with tempfile.TemporaryDirectory(prefix="u18j-ab-") as tmp:
        d = Path(tmp)
        jd = journal_dir or d
        events = d / "events.ndjson"
        generate(events, count)
        sandbox = bd.SandboxProcess()
        try:
            for r in range(rounds):
                order = trees[r % len(trees) :] + trees[: r % len(trees)]
                for name, python, tree, extra in order:
                    run_env = dict(env)
                    if extra:
                        k, v = extra.split("=", 1)
                        run_env[k] = v
                    db = jd / f"j-{name}-{r}.db"
                    cfg = d / f"{name}-{r}.yaml"
                    cfg.write_text(
                        bd.CONFIG.format(url=sandbox.url, mapping=ORDER_MAPPING, concurrency=8, journal=db),
                        encoding="utf-8",
                    )
                    argv = [
                        python,
                        str(Path(tree) / "benchmarks/delivery/run_cpu.py"),
                        "--",
                        "run",
                        str(cfg),
                        "--input",
                        str(events),
                        "--no-progress",
                    ]
                    b0, i0, w0 = proc_stat()
                    m = bd.one_run("shipmap", sandbox, argv, run_env, count)
                    b1, i1, w1 = proc_stat()
                    m["sys_busy_ms_per_event"] = 1000 * (b1 - b0) / tick / count
                    m["iowait_ms_per_event"] = 1000 * (w1 - w0) / tick / count
                    m["idle_share"] = (i1 - i0 + w1 - w0) / max(1, (b1 - b0 + i1 - i0 + w1 - w0))
                    m["load"] = os.getloadavg()[0]
                    samples[name].append(m)
                    print(
                        f"r{r} {name:6} {m['events_per_s']:7.0f} ev/s  main {m['main_cpu_ms_per_event']:.3f}"
                        f"  worker {m['worker_cpu_ms_per_event']:.3f}  sandbox {m['server_cpu_ms_per_event']:.3f}"
                        f"  sysbusy {m['sys_busy_ms_per_event']:.3f} iowait {m['iowait_ms_per_event']:.3f}"
                        f" idle {m['idle_share']:.2f} load {m['load']:.2f}",
                        flush=True,
                    )
                    wal = jd / f"j-{name}-{r}.db-wal"
                    m["wal_mb"] = wal.stat().st_size / 1e6 if wal.exists() else -1
                    print(f"   wal {m['wal_mb']:.1f} MB", flush=True)
                    for f in jd.glob(f"j-{name}-{r}.db*"):
                        f.unlink()
        finally:
            sandbox.stop()
    keys = [
        "events_per_s",
        "main_cpu_ms_per_event",
        "worker_cpu_ms_per_event",
        "server_cpu_ms_per_event",
        "sys_busy_ms_per_event",
        "iowait_ms_per_event",
        "idle_share",
    ]
    for name, runs in samples.items():
        parts = []
        for k in keys:
            vals = [x[k] for x in runs]
            parts.append(
                f"{k.replace('_ms_per_event', '')}={statistics.median(vals):.3f}"
                f"({min(vals):.3f}-{max(vals):.3f})"
            )
        print("MEDIAN", name, " ".join(parts))
    out = Path(tempfile.gettempdir()) / f"journal-ab-{os.getpid()}.json"
    out.write_text(json.dumps(samples), encoding="utf-8")
    print(f"runs: {out}")


if __name__ == "__main__":
    main()
