"""Issue 7 at full size (``make soak``): 20,000 mixed events through ``shipmap run`` into the faulty sandbox,
once straight through and once with six ``kill -9`` at random points.

    .venv/bin/pytest -q -s -m soak tests/reliability
    SHIPMAP_FAULTS="5xx=0.1,429=0.05,drop=0.03,slow=0.02:3,expire-every=97,seed=4242" SHIPMAP_SEED=99 \\
        .venv/bin/pytest -q -s -m soak tests/reliability      # an independent schedule and event mix

Skipped unless selected with ``-m soak`` (tests/reliability/conftest.py).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import ShipmapRun, build_workload, fault_spec, reconcile, seed, soak_events
from shipmap.connectors import Sandbox

SOAK_KILLS = 6

pytestmark = [pytest.mark.soak, pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")]


def test_soak_fault_run(
    tmp_path: Path, sandbox_factory: Callable[..., Sandbox], counts: Callable[[str], None]
) -> None:
    workload = build_workload(soak_events(), seed=seed(2024))
    sandbox = sandbox_factory(faults=fault_spec(), keep=0)  # reconciled request by request
    run = ShipmapRun(tmp_path, sandbox, workload)
    try:
        run.until_done(timeout=1800)
    finally:
        run.close()
    report = reconcile(workload, sandbox, run, name=f"soak fault run, faults {sandbox.faults.spec()}")
    counts(f"soak fault run: {report.line()}\n{report.details()}")
    report.check()
    assert report.lost == 0
    assert report.delivered + report.dead_lettered == report.expected


def test_soak_kill_run(
    tmp_path: Path, sandbox_factory: Callable[..., Sandbox], counts: Callable[[str], None]
) -> None:
    workload = build_workload(soak_events(), seed=seed(4048))
    sandbox = sandbox_factory(faults=fault_spec(), keep=0)  # reconciled request by request
    run = ShipmapRun(tmp_path, sandbox, workload)
    try:
        run.with_kills(SOAK_KILLS, random.Random(seed(4048)), timeout=2400)
    finally:
        run.close()
    report = reconcile(workload, sandbox, run, name=f"soak kill -9 run, faults {sandbox.faults.spec()}")
    kills = ", ".join(
        f"#{k.number} {k.how} at {k.after:.2f} s, {k.accepted} accepted, {len(k.pending)} in flight"
        for k in run.kills
    )
    counts(f"soak kill -9 run: {report.line()}\n{report.details()}\n  kills: {kills}")
    report.check()
    assert len(run.kills) == SOAK_KILLS, kills
    assert report.lost == 0
    assert report.delivered + report.dead_lettered == report.expected
