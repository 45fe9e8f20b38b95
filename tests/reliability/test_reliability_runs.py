"""Issue 7, parts 1 and 2 at `make test` size: a fault run and a kill -9 run of a real ``shipmap run``.

Both use the issue's fault schedule unless ``SHIPMAP_FAULTS`` gives another, and print
``sent=… delivered=… dead_lettered=… duplicates=… lost=0``. The full-size runs are in
test_reliability_soak.py (``make soak``).
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from harness import (
    DEFAULT_FAULTS,
    FAULTS_ENV,
    Report,
    ShipmapRun,
    build_workload,
    fault_spec,
    reconcile,
    seed,
)
from shipmap.connectors import Sandbox

FAULT_RUN_EVENTS = 600
KILL_RUN_EVENTS = 400
KILLS = 3


def _default_schedule() -> bool:
    return fault_spec() == DEFAULT_FAULTS


def _assert_faults_exercised(report: Report) -> None:
    """With the issue's schedule every kind of fault must really have happened, or the run proves little."""
    if not _default_schedule():
        return
    faults = report.faults
    assert faults.get("429", 0) > 0, faults
    assert faults.get("drop", 0) > 0, faults
    assert faults.get("slow", 0) > 0, faults
    assert sum(n for code, n in faults.items() if code.startswith("5")) > 0, faults
    assert faults.get("expire", 0) >= 1, faults
    # Slow answers outlive the 1 s read timeout: the retries make real duplicates, all of them explained.
    assert report.duplicate_causes["client timeout on a slow answer"] > 0, report.details()


def _assert_hard_cases(report: Report) -> None:
    """The workload's deliberate failures end as dead letters for their own reasons."""
    for reason in ("invalid payload", "mapping failed", "refused by the server (400)"):
        assert report.dead_reasons[reason] > 0, report.details()
    assert report.rejected == 2
    assert report.unrouted > 0


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX subprocess handling")
def test_fault_run_loses_nothing(
    tmp_path: Path, sandbox_factory: Callable[..., Sandbox], counts: Callable[[str], None]
) -> None:
    workload = build_workload(FAULT_RUN_EVENTS, seed=seed(7))
    sandbox = sandbox_factory(faults=fault_spec())
    run = ShipmapRun(tmp_path, sandbox, workload)
    try:
        code = run.until_done(timeout=180)
    finally:
        run.close()
    report = reconcile(workload, sandbox, run, name=f"fault run, faults {sandbox.faults.spec()}")
    counts(f"fault run: {report.line()}\n{report.details()}")
    report.check()
    assert code == 8, run.log()[-2000:]  # dead letters (the workload's invalid events) exit 8
    assert report.lost == 0
    assert report.delivered + report.dead_lettered == report.expected
    _assert_hard_cases(report)
    _assert_faults_exercised(report)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_kill_minus_9_run_loses_nothing(
    tmp_path: Path, sandbox_factory: Callable[..., Sandbox], counts: Callable[[str], None]
) -> None:
    workload = build_workload(KILL_RUN_EVENTS, seed=seed(11))
    sandbox = sandbox_factory(faults=fault_spec())
    run = ShipmapRun(tmp_path, sandbox, workload)
    try:
        code = run.with_kills(KILLS, random.Random(seed(11)), timeout=240)
    finally:
        run.close()
    report = reconcile(workload, sandbox, run, name=f"kill -9 run, faults {sandbox.faults.spec()}")
    kills = ", ".join(
        f"#{k.number} {k.how} at {k.after:.2f} s, {k.accepted} accepted, {len(k.pending)} pending"
        for k in run.kills
    )
    counts(f"kill -9 run: {report.line()}\n{report.details()}\n  kills: {kills}")
    report.check()
    assert len(run.kills) == KILLS, kills
    assert run.exit_codes[:KILLS] == [-9] * KILLS
    assert code == 8
    assert report.lost == 0
    assert report.delivered + report.dead_lettered == report.expected
    # Journaled pending at a kill (docs/runtime.md, "The journal"): at most `concurrency` (8) in flight, 4 per
    # sender queued, one settled batch (16 events) waiting for the queue, 16 delivered marks not yet
    # committed. Only those in flight or answered can arrive twice: at most 8 + 16 per kill.
    assert all(len(kill.pending) <= 8 + 4 * 8 + 2 * 16 + 16 for kill in run.kills)
    assert report.duplicate_causes["in flight at kill -9"] <= KILLS * (8 + 16)
    # The kills after the first hit the run mid-way: some deliveries were done, many were not.
    assert all(0 < kill.accepted < report.expected for kill in run.kills[1:]), kills
    _assert_hard_cases(report)


def test_fault_spec_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAULTS_ENV, "5xx=0.3:503,seed=99")
    assert fault_spec() == "5xx=0.3:503,seed=99"
    monkeypatch.setenv(FAULTS_ENV, "  ")
    assert fault_spec() == DEFAULT_FAULTS


def test_reconciliation_notices_a_loss_and_a_stranger(
    tmp_path: Path, sandbox_factory: Callable[..., Sandbox]
) -> None:
    """The checker itself can fail: a run that never saw the last events, and a request nobody owed."""
    workload = build_workload(60, seed=5)
    sandbox = sandbox_factory()
    cut = 10
    short = build_workload(60, seed=5)
    short.lines = short.lines[:-cut]
    run = ShipmapRun(tmp_path, sandbox, short)
    try:
        run.until_done(timeout=60)
    finally:
        run.close()
    owed_by_cut = [e for e in workload.expectations if e.line > len(workload.lines) - cut]
    assert owed_by_cut
    stranger = json.loads(next(e.body or "" for e in workload.expectations if e.endpoint == "fenix.orders"))
    stranger["id"] = stranger["number"] = "not-in-the-workload"
    login = httpx.post(
        f"{sandbox.url}/login",
        headers={"username": "demo-user", "password": "demo-pass", "x-api-key": "demo-api-key"},
    ).json()
    headers = {
        "store_name": "demo-store",
        "authToken": login["authToken"],
        "x-api-key": "demo-api-key",
        "x-identity": login["x-identity"],
    }
    posted = httpx.post(
        f"{sandbox.url}/api/v1/orders/not-in-the-workload/created", json=stranger, headers=headers
    )
    assert posted.status_code == 201, posted.text
    report = reconcile(workload, sandbox, run)
    assert report.lost == len(owed_by_cut)
    assert any("nobody owed" in problem for problem in report.problems)
    with pytest.raises(AssertionError, match=r"lost=\d+"):
        report.check()


def test_reconciliation_refuses_a_sandbox_that_let_requests_go(
    tmp_path: Path, sandbox_factory: Callable[..., Sandbox]
) -> None:
    """A sandbox that keeps only its newest requests cannot prove nothing was lost, nor one whose duplicate
    check let keys go count the duplicates: the checker says so."""
    workload = build_workload(30, seed=9)
    sandbox = sandbox_factory(keep=5, duplicate_keys=3)
    run = ShipmapRun(tmp_path, sandbox, workload)
    try:
        run.until_done(timeout=60)
    finally:
        run.close()
    report = reconcile(workload, sandbox, run)
    dropped = sandbox.stats()["dropped"]
    assert dropped > 0
    assert f"the sandbox let go of {dropped} requests (keep=5): start it with keep=0" in report.problems
    forgotten = sandbox.stats()["duplicate_keys_forgotten"]
    assert forgotten > 0
    assert (
        f"the sandbox's duplicate check let go of {forgotten} keys (duplicate_keys=3): start it with a larger"
        " duplicate_keys"
    ) in report.problems
    with pytest.raises(AssertionError):
        report.check()
