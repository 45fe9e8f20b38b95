"""Log lines of the command line: timestamped text, or one JSON object a line with the event's fields."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from shipmap.connectors import Sandbox
from test_runtime_support import order_event, write_config

CLI = [sys.executable, "-c", "import sys; from shipmap.connectors._cli import main; sys.exit(main())"]
TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def run_logged(tmp_path: Path, sandbox: Sandbox, *options: str) -> subprocess.CompletedProcess[str]:
    config = write_config(tmp_path, sandbox.url, delivery={"concurrency": 1})
    events = tmp_path / "events.ndjson"
    events.write_text("".join(json.dumps(order_event(n)) + "\n" for n in range(6)) + "not json\n")
    return subprocess.run(
        [*CLI, *options, "run", str(config), "--input", str(events), "--no-progress"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )


def test_json_logs_are_one_object_a_line_with_the_event_fields(
    tmp_path: Path, sandbox_factory: Callable[..., Sandbox]
) -> None:
    # The first two order posts answer 500: retries are logged with their attempt.
    sandbox = sandbox_factory(faults="schedule=ok,500,500")
    done = run_logged(tmp_path, sandbox, "--log-format", "json")
    assert done.returncode == 8, done.stderr  # the line that is not JSON is rejected
    records = [json.loads(line) for line in done.stderr.splitlines()]
    assert records and all(re.fullmatch(TIMESTAMP, r["time"]) for r in records)
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    delivered = [r for r in records if r["message"].startswith("delivered ")]
    assert len(delivered) == 6
    for record in delivered:
        assert record["level"] == "INFO" and record["logger"].startswith("shipmap.connectors")
        assert record["target"] == "acme-orders.order" and len(record["key"]) >= 32
        assert record["message"].split()[1] == "acme-orders.order" and record["key"][:12] in record["message"]
    retries = [r for r in records if "retrying in" in r["message"]]
    assert [r["attempt"] for r in retries] == [1, 2]
    assert retries[0]["key"] == retries[1]["key"] and retries[0]["target"] == "acme-orders.order"
    assert max(r["attempt"] for r in delivered) == 3
    assert any(r["level"] == "WARNING" and "rejected input record" in r["message"] for r in records)


def test_text_logs_carry_a_timestamp(tmp_path: Path, sandbox_factory: Callable[..., Sandbox]) -> None:
    done = run_logged(tmp_path, sandbox_factory())
    lines = done.stderr.splitlines()
    assert lines
    assert all(
        re.match(rf"{TIMESTAMP} (INFO|WARNING) shipmap\.connectors[\w.]*: ", line) for line in lines
    ), lines


def test_log_format_after_the_command_and_a_bad_value(tmp_path: Path) -> None:
    bad = subprocess.run([*CLI, "validate", "x.yaml", "--log-format", "xml"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "argument --log-format: invalid choice: 'xml'" in bad.stderr
