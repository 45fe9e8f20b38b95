"""docs/tutorial.md, command by command: its outputs, its diffs, and a real run against the sandbox.

The tutorial's reader works from the repository root; this test works in a temporary directory holding the
same relative paths, so every path in the outputs is the one the tutorial prints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from shipmap.connectors import Sandbox

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "tutorial.md").read_text(encoding="utf-8")
FINISHED = REPO / "examples" / "woocommerce_tutorial"
SHIPMAP = Path(sys.executable).with_name("shipmap")


def shipmap(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "NO_COLOR": "1", **(env or {})}
    return subprocess.run(
        [str(SHIPMAP), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False, env=environ
    )


def console(command: str) -> str:
    """The output the tutorial shows under ``$ command`` (up to the next prompt or the end of the block)."""
    for block in re.findall(r"```console\n(.*?)```", DOC, flags=re.S):
        lines = block.splitlines()
        if f"$ {command}" in lines:
            start = lines.index(f"$ {command}") + 1
            end = next((i for i in range(start, len(lines)) if lines[i].startswith("$ ")), len(lines))
            return "\n".join(lines[start:end]) + "\n"
    raise AssertionError(f"the tutorial has no `$ {command}`")


def apply_diff(block: str, root: Path) -> None:
    """Apply one ```diff block of the tutorial: each hunk's old lines must be found once, exactly."""
    name = re.search(r"^\+\+\+ (\S+)$", block, flags=re.M)
    assert name is not None
    path = root / name.group(1)
    text = path.read_text(encoding="utf-8")
    for hunk in re.split(r"^@@.*@@$", block, flags=re.M)[1:]:
        lines = hunk.strip("\n").split("\n")
        old = "\n".join(line[1:] for line in lines if line[:1] in (" ", "-")) + "\n"
        new = "\n".join(line[1:] for line in lines if line[:1] in (" ", "+")) + "\n"
        assert text.count(old) == 1, f"hunk does not apply to {path.name}:\n{hunk}"
        text = text.replace(old, new)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    samples = tmp_path / "examples" / "woocommerce_tutorial" / "samples"
    samples.mkdir(parents=True)
    for sample in (FINISHED / "samples").glob("*.json"):
        shutil.copy(sample, samples / sample.name)
    return tmp_path


def test_the_tutorial_from_init_to_the_sandbox(workdir: Path) -> None:
    # 1. Scaffold: the output is the tutorial's, byte for byte.
    init = "shipmap init examples/woocommerce_tutorial/samples/order.json --name driftwood --kind fenix.order"
    result = shipmap(*init.split()[1:], cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert result.stdout == console(init)
    retailer = workdir / "driftwood"
    assert (retailer / "samples" / "order.json").read_bytes() == (
        FINISHED / "samples" / "order.json"
    ).read_bytes()
    for name in ("config.yaml", ".env.example", ".gitignore"):
        assert (retailer / name).read_text() == (FINISHED / name).read_text(), name
    # The TODOs fail the scaffolded test, as shown.
    result = shipmap("test", "driftwood/driftwood.yaml", cwd=workdir)
    assert result.returncode == 1
    assert result.stdout == console("shipmap test driftwood/driftwood.yaml").split("\n$ ")[0]

    # 2. and 4. The tutorial's diffs, applied in order, give the finished files.
    diffs = re.findall(r"```diff\n(.*?)```", DOC, flags=re.S)
    assert len(diffs) == 4
    shutil.copy(
        workdir / "examples" / "woocommerce_tutorial" / "samples" / "order_completed.json",
        retailer / "samples",
    )
    for block in diffs:
        apply_diff(block, workdir)
    assert (retailer / "driftwood.yaml").read_text() == (FINISHED / "driftwood.yaml").read_text()
    assert (retailer / "driftwood.cases.yaml").read_text() == (FINISHED / "driftwood.cases.yaml").read_text()

    # 3. Preview: what the tutorial shows is in the payload, in that order.
    result = shipmap(
        "preview", "driftwood/driftwood.yaml", "driftwood/samples/order.json", "--json", cwd=workdir
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)["order"]
    shown = console("shipmap preview driftwood/driftwood.yaml driftwood/samples/order.json").splitlines()
    assert shown[0] == "order (fenix.order) -> POST /api/v1/orders/5237/created"
    actual = [line.rstrip(",") for line in json.dumps(payload, indent=2).splitlines()]
    position = 0
    for line in (line.rstrip(",") for line in shown[1:]):
        if line.strip() == "…":
            continue
        assert line in actual[position:], f"preview line not in the payload (or out of order): {line}"
        position = actual.index(line, position) + 1
    result = shipmap("validate", "driftwood/driftwood.yaml", cwd=workdir)
    assert result.returncode == 0
    assert result.stdout == console("shipmap validate driftwood/driftwood.yaml")

    # 4. The finished cases pass, output as shown.
    result = shipmap("test", "driftwood/driftwood.yaml", cwd=workdir)
    assert result.returncode == 0, result.stdout
    shown_runs = [
        block
        for block in re.findall(r"```console\n(.*?)```", DOC, flags=re.S)
        if "3 passed, 0 failed" in block
    ]
    assert result.stdout == shown_runs[0].split("$ shipmap test driftwood/driftwood.yaml\n", 1)[1]

    # 5. A real run against the sandbox (on a free port: .env points there instead of 8765).
    with Sandbox() as sandbox:
        env_text = (retailer / ".env.example").read_text().replace("http://127.0.0.1:8765", sandbox.url)
        (retailer / ".env").write_text(env_text)
        result = shipmap("run", "driftwood/config.yaml", "--input", "driftwood/samples/", cwd=workdir)
        assert result.returncode == 0, result.stdout + result.stderr
        assert re.search(r"^driftwood\.order +2 +0 +0 +0 ", result.stdout, flags=re.M)
        assert "events 2  unrouted 0  rejected input records 0  recovered 0" in result.stdout
        # The log line as shown (standard error), at this run's time and on the sandbox's port.
        shown_log = console("shipmap run driftwood/config.yaml --input driftwood/samples/").splitlines()[0]
        stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
        assert re.sub(stamp, "TIME", result.stderr.strip()) == re.sub(stamp, "TIME", shown_log).replace(
            "http://127.0.0.1:8765", sandbox.url
        )
        assert "delivered driftwood.order" not in result.stderr  # -v adds it
        for secret in ("demo-pass", "demo-api-key"):
            assert secret not in result.stdout + result.stderr
        # What arrived, read the way the tutorial does.
        arrived = httpx.get(f"{sandbox.url}/_sandbox/requests", params={"endpoint": "fenix.orders"}).json()
        assert arrived["count"] == 2
        bodies = sorted((r["body"]["fulfillment_status"], r["path"], r["kind"]) for r in arrived["requests"])
        assert bodies == [
            ("FULFILLED", "/api/v1/orders/5237/created", "fenix.order"),
            ("NOT_FILLED", "/api/v1/orders/5237/created", "fenix.order"),
        ]
        assert all(r["headers"]["authtoken"] == "***" for r in arrived["requests"])
        stats = httpx.get(f"{sandbox.url}/_sandbox/stats").json()
        assert stats == json.loads(console("curl -s http://127.0.0.1:8765/_sandbox/stats"))
        assert stats["by_endpoint"] == {"fenix.login": 1, "fenix.orders": 2}
        assert stats["rejected"] == {}
        assert [
            (d["key"], d["count"], d["distinct_bodies"]) for d in stats["duplicates"]["fenix_order_id"]
        ] == [("5237", 2, 2)]
        # Again: the journal knows both were delivered.
        result = shipmap("run", "driftwood/config.yaml", "--input", "driftwood/samples/", cwd=workdir)
        assert result.returncode == 0
        assert re.search(r"^driftwood\.order +0 +0 +0 +2 ", result.stdout, flags=re.M)
        assert len(sandbox.requests(endpoint="fenix.orders")) == 2


def test_the_finished_example_as_committed(tmp_path: Path) -> None:
    """examples/woocommerce_tutorial itself: validate, test, and a run with credentials from the environment."""
    assert shipmap("validate", "examples/woocommerce_tutorial/driftwood.yaml", cwd=REPO).returncode == 0
    result = shipmap("test", "examples/woocommerce_tutorial", cwd=REPO)
    assert result.returncode == 0, result.stdout
    assert "3 passed, 0 failed" in result.stdout
    with Sandbox() as sandbox:
        env = dict(
            line.split("=", 1)
            for line in (FINISHED / ".env.example").read_text().splitlines()
            if line and not line.startswith("#")
        )
        env["FENIX_BASE_URL"] = sandbox.url
        result = shipmap(
            "run",
            "examples/woocommerce_tutorial/config.yaml",
            "--input",
            "examples/woocommerce_tutorial/samples/",
            "--journal",
            str(tmp_path / "journal.db"),
            cwd=REPO,
            env=env,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert [r.kind for r in sandbox.requests(endpoint="fenix.orders")] == ["fenix.order", "fenix.order"]
    assert not (FINISHED / ".shipmap").exists()
