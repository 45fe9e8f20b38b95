"""examples/scale_out runs for real: three `shipmap run` processes on one PostgreSQL journal, one killed with
SIGKILL mid-run and started again, against the sandbox; nothing is lost and nothing is sent under a new key."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO_SECRETS = ("demo-pass", "demo-api-key")


def test_three_workers_on_one_postgresql_journal_deliver_every_order_through_a_kill(
    postgres_server: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "scale_out" / "run_workers.py"),
            "--postgres",
            postgres_server,
            "--orders",
            "1200",
            "--state",
            str(tmp_path / "state"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "1200 Shopify orders in 3 shares" in out
    killed = re.search(r"worker 1 killed with SIGKILL after (\d+) orders had arrived", out)
    assert killed is not None and 300 <= int(killed.group(1)) < 1200, out
    assert re.search(r"  worker 1: exit \[-9, 0\], events \d+ ", out), out
    assert re.search(r"  worker 2: exit \[0\], events 400 ", out), out
    arrived = re.search(r"arrived: 1200 of 1200 orders, (\d+) requests; (\d+) orders twice", out)
    assert arrived is not None, out
    requests, twice = int(arrived.group(1)), int(arrived.group(2))
    # Re-sent: what worker 1 had in flight (concurrency 4) and answered but not yet marked (16 at most).
    assert requests == 1200 + twice and twice <= 4 + 16
    assert "each with the same Idempotency-Key" in out
    assert "the journal: delivered 1200" in out
    assert out.rstrip().endswith("OK: every order arrived, none lost to the kill")
    logs = "".join(path.read_text(errors="replace") for path in (tmp_path / "state").glob("worker-*"))
    for secret in DEMO_SECRETS:
        assert secret not in out + result.stderr + logs
    # The database is dropped afterwards: a rerun starts from an empty journal.
    assert "is kept" not in out
