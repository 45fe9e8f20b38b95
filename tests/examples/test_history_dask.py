"""The Dask example for real: a partitioned NDJSON history mapped and validated on a LocalCluster of worker
processes (the compiled mapping travels to them pickled), every failing document reported at file:line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "history_dask"


def test_dask_maps_the_history_and_reports_every_failing_document(tmp_path: Path) -> None:
    history, out = tmp_path / "history", tmp_path / "payloads"
    made = subprocess.run(
        [sys.executable, str(EXAMPLE / "make_history.py"), str(history)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert len(made.stdout.splitlines()) == 3
    result = subprocess.run(
        [sys.executable, str(EXAMPLE / "check_history.py"), str(history), "--out", str(out), "--workers", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    failures = [line for line in lines if line.startswith("FAIL ")]
    part = str(history / "part-{:04d}.ndjson")
    assert failures == [
        f"FAIL {part.format(0)}:7: order",
        f"FAIL {part.format(1)}:5",
        f"FAIL {part.format(2)}:3: order",
        f"FAIL {part.format(2)}:9: order",
    ]
    text = result.stdout
    assert 'found string "one hundred"' in text and "order.financial_details.total_price.value" in text
    assert f"{part.format(1)}:5:105: error: not JSON" in text
    assert "'each' needs an array, found str" in text and 'order.line_items = "see attachment"' in text
    assert "order.customer.email" in text and "required field has no value" in text
    assert "mappings/shopify/order.yaml:144:16" in text  # the mapping's own line and column
    assert lines[-1] == "3 partitions, 36 documents, 32 valid payloads, 4 failing documents"
    written = [
        json.loads(line) for path in sorted(out.glob("*.ndjson")) for line in path.read_text().splitlines()
    ]
    assert len(written) == 32
    assert written[0]["origin"] == f"{part.format(0)}:1"
    assert written[0]["payloads"]["order"]["id"] == "5100000001"
    assert f"{part.format(0)}:7" not in {entry["origin"] for entry in written}
