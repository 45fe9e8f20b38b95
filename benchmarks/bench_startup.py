"""Start-up: the wall time of ``shipmap --help`` and of a one-document ``shipmap preview``.

Each command runs N times in a fresh subprocess (the installed ``shipmap`` console script, as a user runs it);
the median is compared with the 0.3 s target. ``python -c pass`` is the interpreter's own floor. Then
``python -X importtime`` shows which imports the time goes to, and which module pulled each one in.

    .venv/bin/python benchmarks/bench_startup.py [--runs 15] [--quick] [--json FILE]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _bench
from _bench import ORDER_FIXTURES, ORDER_MAPPING, REAL_SHOPIFY, REPO, table

# Median wall time per command: --help since issue 6, a one-document preview since issue 18.
TARGETS_S = {"shipmap --help": 0.3, "shipmap preview (1 document)": 0.2}
SHIPMAP = Path(sys.executable).with_name("shipmap")
ONE_DOCUMENT = REAL_SHOPIFY / ORDER_FIXTURES[0]


def commands() -> dict[str, list[str]]:
    mapping = str(ORDER_MAPPING.relative_to(REPO))
    document = str(ONE_DOCUMENT.relative_to(REPO))
    return {
        "python -c pass (floor)": [sys.executable, "-c", "pass"],
        "shipmap --help": [str(SHIPMAP), "--help"],
        "shipmap preview (1 document)": [str(SHIPMAP), "preview", mapping, document, "--json"],
    }


# What each command imports, run in-process under -X importtime (the same entry point as the console script).
IMPORT_PROBES = {
    "shipmap --help": ["--help"],
    "shipmap preview (1 document)": [
        "preview",
        str(ORDER_MAPPING.relative_to(REPO)),
        str(ONE_DOCUMENT.relative_to(REPO)),
        "--json",
    ],
}


def cached_environment(cache: str) -> dict[str, str]:
    """Bytecode cached as after a normal install, but kept in ``cache`` rather than in the source tree."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = cache
    return env


def uncached_environment() -> dict[str, str]:
    """No bytecode written or read from a prefix: every module without a __pycache__ is compiled at start."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPYCACHEPREFIX"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def wall_time(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """The wall time of one run, and its CPU time (user + system, from the kernel's accounting of the child):
    on a shared machine the CPU time is the steadier figure."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = process.stderr.read() if process.stderr is not None else b""
    if process.stderr is not None:
        process.stderr.close()
    if process.returncode != 0:
        raise SystemExit(f"FAIL: {' '.join(argv)} exited {process.returncode}: {stderr[-2000:]!r}")
    return elapsed, usage.ru_utime + usage.ru_stime


# -- -X importtime ------------------------------------------------------------------------------------------


@dataclass
class Import:
    name: str
    self_us: int
    cumulative_us: int
    depth: int
    children: list[Import] = field(default_factory=list)
    parent: Import | None = None


def import_tree(args: list[str], env: dict[str, str]) -> list[Import]:
    """The import tree of one CLI run (roots in import order), parsed from ``-X importtime``."""
    code = (
        "import sys; sys.argv = ['shipmap', *sys.argv[1:]]\n"
        "from shipmap.connectors._cli import entry\n"
        "try:\n    entry()\nexcept SystemExit:\n    pass\n"
    )
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code, *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
        env=env,
    )
    pending: dict[int, list[Import]] = {}
    roots: list[Import] = []
    for line in completed.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line[len("import time:") :].split("|")
        name = name[1:]  # one space after the bar, then two per level of nesting
        depth = (len(name) - len(name.lstrip(" "))) // 2
        node = Import(name.strip(), int(self_us), int(cumulative_us), depth)
        node.children = pending.pop(depth + 1, [])
        for child in node.children:
            child.parent = node
        if depth == 0:
            roots.append(node)
        else:
            pending.setdefault(depth, []).append(node)
    return roots


def _walk(nodes: list[Import]) -> list[Import]:
    out: list[Import] = []
    for node in nodes:
        out.append(node)
        out.extend(_walk(node.children))
    return out


def _is_shipmap(name: str) -> bool:
    return name == "shipmap" or name.startswith("shipmap.")


def heavy_imports(roots: list[Import], limit: int = 15) -> list[tuple[str, str, float]]:
    """The non-shipmap modules a shipmap module imports directly, heaviest first:
    (importer, module, cumulative ms). Only the first importer of a module pays for it, and is named."""
    found = []
    for node in _walk(roots):
        if _is_shipmap(node.name) or node.parent is None or not _is_shipmap(node.parent.name):
            continue
        found.append((node.parent.name, node.name, node.cumulative_us / 1000))
    found.sort(key=lambda item: -item[2])
    return found[:limit]


def shipmap_chain(roots: list[Import], limit: int = 12) -> list[tuple[str, str, float, float]]:
    """shipmap's own modules by cumulative import time: (module, imported by, cumulative ms, self ms)."""
    rows = []
    for node in _walk(roots):
        if _is_shipmap(node.name):
            parent = node.parent.name if node.parent else "(entry)"
            rows.append((node.name, parent, node.cumulative_us / 1000, node.self_us / 1000))
    rows.sort(key=lambda item: -item[2])
    return rows[:limit]


def total_import_ms(roots: list[Import]) -> float:
    return sum(root.cumulative_us for root in roots) / 1000


def main(argv: list[str] | None = None) -> dict[str, Any]:
    arguments = _bench.parser(__doc__.splitlines()[0])
    arguments.add_argument("--runs", type=int, default=15, help="subprocess runs per command (default 15)")
    args = arguments.parse_args(argv)
    runs = 5 if args.quick else args.runs
    if not SHIPMAP.exists():
        raise SystemExit(
            f"FAIL: no console script at {SHIPMAP}; install shipmap into this interpreter's venv"
        )

    _bench.heading("Start-up: shipmap --help and a one-document shipmap preview")
    goals = ", ".join(f"{name} < {target} s" for name, target in TARGETS_S.items())
    print(f"{runs} runs each in fresh subprocesses, interleaved; targets (median): {goals}.")
    print("With bytecode cached (as after `pip install`; kept in a temporary PYTHONPYCACHEPREFIX, not in the")
    print(
        "tree), and without it (PYTHONDONTWRITEBYTECODE=1 with an editable install: every shipmap module is"
    )
    print("compiled from source at each start).")
    results: dict[str, Any] = {"runs": runs, "commands": {}, "imports": {}}
    with tempfile.TemporaryDirectory(prefix="shipmap-pycache-") as cache:
        cached = cached_environment(cache)
        modes = {"": cached, " [no bytecode cache]": uncached_environment()}
        timed = {
            name + suffix: (argv, env)
            for suffix, env in modes.items()
            for name, argv in commands().items()
            if not (suffix and name.startswith("python"))
        }
        for argv, env in timed.values():
            wall_time(argv, env)  # warm-up: fills the bytecode cache and the page cache
        samples: dict[str, list[float]] = {name: [] for name in timed}
        cpu: dict[str, list[float]] = {name: [] for name in timed}
        for _ in range(runs):  # interleaved, so that load from elsewhere hits every command alike
            for name, (argv, env) in timed.items():
                wall, used = wall_time(argv, env)
                samples[name].append(wall)
                cpu[name].append(used)
        rows = []
        floor = statistics.median(samples["python -c pass (floor)"])
        for name, values in samples.items():
            median = statistics.median(values)
            cpu_median = statistics.median(cpu[name])
            target = TARGETS_S.get(name)
            verdict = "" if target is None else "MET" if median < target else "NOT MET"
            results["commands"][name] = {
                "median_s": median,
                "min_s": min(values),
                "max_s": max(values),
                "runs_s": values,
                "over_floor_s": median - floor,
                "cpu_median_s": cpu_median,
                "cpu_runs_s": cpu[name],
                "target_s": target,
                "verdict": verdict,
            }
            rows.append(
                [
                    name,
                    f"{median:.3f}",
                    f"{min(values):.3f}",
                    f"{max(values):.3f}",
                    f"{median - floor:+.3f}",
                    f"{cpu_median:.3f} ({min(cpu[name]):.3f}-{max(cpu[name]):.3f})",
                    f"< {target} s: {verdict}" if target else "",
                ]
            )
        print()
        headers = ["command", "median s", "min s", "max s", "over python -c pass", "CPU s: median (range)"]
        print(table([*headers, "target (wall median)"], rows))
        trees = {name: import_tree(probe, cached) for name, probe in IMPORT_PROBES.items()}

    for name, roots in trees.items():
        total = total_import_ms(roots)
        heavy = heavy_imports(roots)
        chain = shipmap_chain(roots)
        results["imports"][name] = {"total_ms": total, "heavy": heavy, "shipmap": chain}
        print(f"\n### Imports of `{name}` (-X importtime, bytecode cached, one run: {total:.0f} ms in all)\n")
        print(
            "Other packages, by the shipmap module that imports them first (cumulative ms, importtime's own"
        )
        print("overhead included; making one lazy moves its cost to the next importer, if any):\n")
        print(
            table(["shipmap module", "imports", "cumulative ms"], [[a, b, f"{c:.1f}"] for a, b, c in heavy])
        )
        print("\nshipmap's own modules (cumulative ms includes everything they import):\n")
        print(
            table(
                ["module", "imported by", "cumulative ms", "self ms"],
                [[a, b, f"{c:.1f}", f"{d:.1f}"] for a, b, c, d in chain],
            )
        )
    results["met"] = all(
        entry["verdict"] == "MET" for name, entry in results["commands"].items() if entry["verdict"]
    )
    _bench.write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
