"""Three ``shipmap run`` workers on one PostgreSQL journal, under the issue's fault schedule, one of them
killed with SIGKILL again and again: nothing lost, every duplicate explained (issue 16).

All three read the same input. A delivery is sent by the worker that holds its lease; the others skip it.
A killed worker's leases expire and the survivors (or its restart) take its deliveries over, under the same
idempotency keys: those are the only re-sends, and the harness's reconciliation explains each as in flight
at a kill.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import Kill, ShipmapRun, build_workload, fault_spec, reconcile, seed
from shipmap.connectors import Sandbox

EVENTS = 300
WORKERS = 3
KILLS = 3
LEASE = "3s"  # long enough that a live worker on a loaded 2-core machine renews in time


class WorkersRun(ShipmapRun):
    """``WORKERS`` processes over one workload and one PostgreSQL journal; worker 0 is the one killed."""

    def __init__(self, directory: Path, sandbox: Sandbox, workload: Any, url: str) -> None:
        super().__init__(directory, sandbox, workload)
        config = yaml.safe_load(self.config.read_text(encoding="utf-8"))
        config["journal"] = {"url": url, "lease": LEASE}
        self.config.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        self.journal = url
        self.others: list[subprocess.Popen[bytes]] = []

    def with_worker_kills(self, kills: int, rng: random.Random, *, timeout: float = 240.0) -> list[int]:
        owed = sum(1 for e in self.workload.expectations if e.outcome == "deliver")
        marks = sorted(rng.uniform(0.1, 0.8) * owed for _ in range(kills))
        started = time.monotonic()
        deadline = started + timeout
        self.others = [self._start() for _ in range(WORKERS - 1)]
        accepted = cursor = 0
        for number, mark in enumerate(marks, start=1):
            victim = self._start()
            born = time.monotonic()
            while accepted < mark and victim.poll() is None and time.monotonic() < deadline:
                new = self.sandbox.requests(since=cursor)
                if new:
                    cursor = new[-1].seq
                    accepted += sum(1 for r in new if r.endpoint != "fenix.login")
                time.sleep(0.002)
            if victim.poll() is not None:
                self._finish(victim, 5)
                continue
            victim.send_signal(signal.SIGKILL)
            victim.communicate(timeout=10)
            self._process = None
            self.exit_codes.append(victim.returncode)
            self.kills.append(Kill(number, "mid-run", time.monotonic() - born, accepted, self.pending()))
        codes = [self._finish(self._start(), max(deadline - time.monotonic(), 30.0))]
        for process in self.others:
            self._process = process
            codes.append(self._finish(process, max(deadline - time.monotonic(), 30.0)))
        self.elapsed += time.monotonic() - started
        return codes

    def close(self) -> None:
        for process in self.others:
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=10)
        super().close()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_three_workers_one_killed_again_and_again_lose_nothing(
    tmp_path: Path,
    sandbox_factory: Callable[..., Sandbox],
    postgres_url: str,
    counts: Callable[[str], None],
) -> None:
    workload = build_workload(EVENTS, seed=seed(16))
    sandbox = sandbox_factory(faults=fault_spec())
    run = WorkersRun(tmp_path, sandbox, workload, postgres_url)
    try:
        codes = run.with_worker_kills(KILLS, random.Random(seed(16)))
    finally:
        run.close()
    report = reconcile(
        workload, sandbox, run, name=f"{WORKERS} workers, kill -9, faults {sandbox.faults.spec()}"
    )
    kills = ", ".join(f"#{k.number} at {k.accepted} accepted, {len(k.pending)} pending" for k in run.kills)
    counts(f"{WORKERS} workers: {report.line()}\n{report.details()}\n  kills: {kills}")
    report.check()  # nothing lost, nothing unowed accepted, every duplicate explained
    assert report.lost == 0
    assert report.delivered + report.dead_lettered == report.expected
    assert len(run.kills) >= 2, kills  # the victim really was killed mid-run, more than once
    assert all(code in (0, 8) for code in codes), (codes, run.log()[-3000:])
    assert run.exit_codes.count(-9) == len(run.kills)
