"""What every benchmark shares: paths, interleaved timing, the machine description and the report file.

Benchmarks are scripts, not tests: each prints its figures and ratios and, with ``--json FILE``, writes them
for ``run_all.py`` to summarise.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
ORDER_MAPPING = REPO / "mappings" / "shopify" / "order.yaml"
REAL_SHOPIFY = REPO / "tests" / "fixtures" / "real" / "shopify"
DERIVED_SHOPIFY = REPO / "tests" / "fixtures" / "derived" / "shopify"
# The timed documents: the real Shopify order samples (orders/create is byte-identical to orders/cancelled).
ORDER_FIXTURES = ("order_rest_get_with_fulfillment.json", "orders_cancelled_webhook.json")
# Outside shipmap, pinned in requirements.txt; their versions go into every report.
PACKAGES = (
    "shipmap",
    "jmespath",
    "Jinja2",
    "fastjsonschema",
    "jsonschema",
    "PyYAML",
    "httpx",
    "httpcore",
    "sniffio",  # not a dependency: httpcore tries to import it on every request (see RESULTS.md)
    "anyio",
    "starlette",
    "uvicorn",
    "jq",
    "jsonata-python",
    "glom",
)


def load_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


def canonical(value: Any) -> str:
    """JSON text with sorted keys: two payloads are identical when these are equal."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False)


# -- timing -------------------------------------------------------------------------------------------------


@dataclass
class Timing:
    """Per-operation times of one case over all rounds, in nanoseconds."""

    name: str
    per_op_ns: list[float]
    batch: int

    @property
    def median_ns(self) -> float:
        return statistics.median(self.per_op_ns)

    @property
    def min_ns(self) -> float:
        return min(self.per_op_ns)

    def spread(self) -> float:
        """Interquartile range over the median: how noisy the rounds were."""
        if len(self.per_op_ns) < 4:
            return 0.0
        q1, _, q3 = statistics.quantiles(self.per_op_ns, n=4)
        return (q3 - q1) / self.median_ns


def _batch_size(operation: Callable[[], Any], target_s: float) -> int:
    """How many calls fill about ``target_s`` seconds (after a warm-up)."""
    count = 1
    while True:
        start = time.process_time_ns()
        for _ in range(count):
            operation()
        elapsed = (time.process_time_ns() - start) / 1e9
        if elapsed >= target_s / 4 or count >= 1 << 20:
            return max(1, int(count * target_s / max(elapsed, 1e-9)))
        count *= 2


def interleaved(
    cases: dict[str, Callable[[], Any]], *, rounds: int, batch_s: float = 0.02, warmup_s: float = 0.2
) -> dict[str, Timing]:
    """Time every case in the same process: ``rounds`` rounds, each running one batch of every case, in an
    order that rotates from round to round, so that load from elsewhere on the machine spreads over all cases
    alike. Each batch lasts about ``batch_s`` of this process's CPU time (``process_time_ns``: on a shared
    machine, time spent waiting for a core is not counted, so the ratios hold under load); a collection runs before
    each batch (untimed) so that every batch starts from the same heap."""
    names = list(cases)
    for name in names:  # warm-up: caches, branch predictors, lazily built state
        deadline = time.perf_counter() + warmup_s / len(names)
        while time.perf_counter() < deadline:
            cases[name]()
    batches = {name: _batch_size(cases[name], batch_s) for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            operation = cases[name]
            count = batches[name]
            gc.collect()
            start = time.process_time_ns()
            for _ in range(count):
                operation()
            samples[name].append((time.process_time_ns() - start) / count)
    return {name: Timing(name, samples[name], batches[name]) for name in names}


def median_of_runs(run: Callable[[], float], repeats: int) -> tuple[float, list[float]]:
    values = [run() for _ in range(repeats)]
    return statistics.median(values), values


# -- the machine --------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "cpu": _cpu_model(),
        "nproc": os.cpu_count(),
        "ram": _memory_total(),
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "commit": _git("rev-parse", "--short", "HEAD")
        + (
            " + uncommitted changes"
            if _git("status", "--porcelain", "--", "engine", "connectors", "mappings")
            else ""
        ),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "packages": {package: _version(package) for package in PACKAGES},
    }


# -- output -------------------------------------------------------------------------------------------------


def table(headers: list[str], rows: Iterable[list[Any]]) -> str:
    """A Markdown table (it reads fine in a terminal too)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def us(ns: float) -> str:
    return f"{ns / 1000:,.1f}"


def parser(description: str) -> argparse.ArgumentParser:
    arguments = argparse.ArgumentParser(description=description)
    arguments.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    arguments.add_argument(
        "--quick", action="store_true", help="fewer rounds and smaller counts (a smoke run)"
    )
    return arguments


def write_json(path: str | None, results: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(results, indent=2, default=_default) + "\n", encoding="utf-8")


def _default(value: Any) -> Any:
    if isinstance(value, Timing):
        return asdict(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def heading(text: str) -> None:
    print(f"\n## {text}\n", flush=True)


def python() -> str:
    return sys.executable
