"""Every benchmark of issue 6, one after the other, then the targets in one table. ``make bench`` runs this.

Each benchmark runs in its own process (so that none inherits another's heap or imports) and prints its own
figures and ratios, all measured within that one process or run; this script prints the machine first and the
verdicts last. Nothing is sent anywhere but the sandbox on 127.0.0.1.

    .venv/bin/python benchmarks/run_all.py [--quick] [--only transform,startup,delivery,memory,serve]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _bench import BENCH, REPO, machine, table

# profile_transform.py explains the transform figures (per field type); the longest runs last.
BENCHMARKS = ("startup", "transform", "profile", "delivery", "memory", "serve")
SCRIPTS = {name: f"bench_{name}.py" for name in BENCHMARKS} | {"profile": "profile_transform.py"}


def run(name: str, quick: bool, results_dir: Path) -> dict[str, Any]:
    out = results_dir / f"{name}.json"
    argv = [sys.executable, str(BENCH / SCRIPTS[name]), "--json", str(out)]
    if quick:
        argv.append("--quick")
    started = time.perf_counter()
    completed = subprocess.run(argv, cwd=REPO, check=False)
    elapsed = time.perf_counter() - started
    if completed.returncode != 0 or not out.exists():
        return {"failed": True, "seconds": elapsed}
    results: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    results["seconds"] = elapsed
    return results


def verdicts(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = []
    transform = results.get("transform")
    if transform and not transform.get("failed"):
        summary = transform["summary"]
        produce = summary["vs_hand"]["shipmap (no validation)"]
        rows.append(
            [
                "transform: within 2x of hand-written Python (no validation)",
                f"{produce:.2f}x ({summary['us_per_order']['shipmap (no validation)']:.0f} µs vs "
                f"{summary['us_per_order']['hand-written Python']:.0f} µs per order)",
                "MET" if summary["target_vs_hand_met"] else "NOT MET",
            ]
        )
        validated = summary["vs_hand"]["shipmap transform (validated)"]
        rows.append(
            [
                "transform: validated within 2x of hand-written Python",
                f"{validated:.2f}x ({summary['us_per_order']['shipmap transform (validated)']:.0f} µs vs "
                f"{summary['us_per_order']['hand-written Python']:.0f} µs per order)",
                "MET" if summary["validated_vs_hand_met"] else "NOT MET",
            ]
        )
        closest = min(summary["shipmap_speedup"].items(), key=lambda item: item[1])
        rows.append(
            [
                "transform: faster than jq, jsonata-python and glom",
                f"closest: {closest[0]}, {closest[1]:.1f}x slower than shipmap",
                "MET" if summary["faster_than_every_other_tool"] else "NOT MET",
            ]
        )
    delivery = results.get("delivery")
    if delivery and not delivery.get("failed"):
        medians = delivery["medians"]
        fastest = delivery["fastest_library"]
        low, high = delivery["ratio_spread"]
        rows.append(
            [
                f"delivery: shipmap run >= 0.8x the fastest raw HTTP-library loop ({fastest})",
                f"{delivery['ratio']:.2f}x (range {low:.2f}-{high:.2f}; {medians['shipmap']['events_per_s']:,.0f}"
                f" vs {medians[fastest]['events_per_s']:,.0f} events/s)",
                "MET" if delivery["met"] else "NOT MET",
            ]
        )
        rows.append(
            [
                "delivery: against the machine (not a target)",
                f"{delivery['ratio_socket']:.2f}x the raw socket loop; sandbox ceiling"
                f" {delivery['sandbox_ceiling']:,.0f} requests/s at {delivery['sandbox_cpu_ms']:.2f} ms CPU each",
                "(info)",
            ]
        )
    memory = results.get("memory")
    if memory and not memory.get("failed"):
        for key in ("preview", "dry-run"):
            if key in memory:
                entry = memory[key]
                growth = entry["growth_mb"]
                rows.append(
                    [
                        f"memory: flat, < 150 MB ({key}, {entry['events']:,} events)",
                        f"peak {entry['peak_mb']:.0f} MB"
                        + ("" if growth is None else f", {growth:+.1f} MB after the first tenth"),
                        "MET" if entry["met"] else "NOT MET",
                    ]
                )
    serve = results.get("serve")
    if serve and not serve.get("failed"):
        burst, steady = serve["burst"], serve["steady"]
        rows.append(
            [
                "serve: >= 1,000 signed webhooks accepted per second (durable, delivery alongside)",
                f"{burst['accepted_per_second']:,.0f}/s ({burst['accepted']:,} in {burst['seconds']:.2f} s;"
                f" intake {burst['intake_cpu_ms_per_webhook']:.2f} ms CPU per webhook)",
                "MET" if burst["met"] else "NOT MET",
            ]
        )
        rows.append(
            [
                "serve: acknowledgement p99 < 50 ms at a steady 200 webhooks/s",
                f"p99 {steady['p99_ms']:.1f} ms (p50 {steady['p50_ms']:.1f}, max {steady['max_ms']:.1f};"
                f" {steady['rate_achieved']:.0f}/s achieved)",
                "MET" if steady["met"] else "NOT MET",
            ]
        )
    startup = results.get("startup")
    if startup and not startup.get("failed"):
        for name, entry in startup["commands"].items():
            if entry["verdict"]:
                rows.append(
                    [
                        f"start-up: {name} < {entry['target_s']} s",
                        f"{entry['median_s']:.3f} s (median; range {entry['min_s']:.3f}-{entry['max_s']:.3f},"
                        f" {entry['over_floor_s']:+.3f} s over the interpreter's start;"
                        f" CPU {entry['cpu_median_s']:.3f} s)",
                        entry["verdict"],
                    ]
                )
    for name, entry in results.items():
        if entry.get("failed"):
            rows.append([name, "the benchmark failed (see its output above)", "FAILED"])
    return rows


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--quick", action="store_true", help="small counts and few rounds: a smoke run")
    arguments.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    arguments.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    args = arguments.parse_args()
    chosen = [name for name in BENCHMARKS if not args.only or name in args.only.split(",")]

    about = machine()
    print("# shipmap benchmarks\n")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}{' (quick)' if args.quick else ''}")
    print(f"date: {about['date']}; commit {about['commit']}")
    print(
        f"machine: {about['cpu']}, {about['nproc']} CPUs, {about['ram']} RAM; {about['os']}; {about['python']}"
    )
    print(f"load average at start: {about['load_average']}")
    print("versions: " + ", ".join(f"{name} {version}" for name, version in about["packages"].items()))
    started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="shipmap-bench-") as temporary:
        for name in chosen:
            results[name] = run(name, args.quick, Path(temporary))
    total = time.perf_counter() - started

    print("\n## Targets\n")
    print(table(["target", "measured", "verdict"], verdicts(results)))
    print(
        "\nbenchmark times: "
        + ", ".join(f"{name} {entry['seconds']:.0f} s" for name, entry in results.items())
        + f"; total {total / 60:.1f} min"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": about, **results}, indent=2) + "\n", encoding="utf-8"
        )
    if any(entry.get("failed") for entry in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
