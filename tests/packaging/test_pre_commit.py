"""The pre-commit hooks of .pre-commit-hooks.yaml, run by pre-commit itself on a retailer's scratch repository."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
ORDER = ROOT / "mappings" / "shopify" / "order.yaml"
SOURCE = ROOT / "tests" / "fixtures" / "real" / "shopify" / "order_rest_get_with_fulfillment.json"


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def retailer_repo(tmp_path: Path) -> Path:
    """A retailer's mapping repository: one good mapping with a passing case, and YAML that is no mapping."""
    repo = tmp_path / "retailer"
    repo.mkdir()
    shutil.copy(ORDER, repo / "good.yaml")
    shutil.copy(SOURCE, repo / "order.json")
    (repo / "good.cases.yaml").write_text(
        'cases:\n  - name: the REST order\n    source: order.json\n    expect: {order: {id: "450789469"}}\n'
    )
    (repo / "ci.yml").write_text("on: push\n")  # the validate hook skips it
    git(repo, "init", "-q")
    git(repo, "add", ".")
    return repo


def try_repo(repo: Path, home: Path) -> subprocess.CompletedProcess[str]:
    """Both hooks on every file of ``repo``, as `pre-commit try-repo` runs them from this checkout."""
    env = {**os.environ, "PRE_COMMIT_HOME": str(home), "PRE_COMMIT_COLOR": "never"}
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", "try-repo", str(ROOT), "--verbose", "--all-files"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_the_hooks_pass_a_good_mapping_and_fail_a_broken_one(retailer_repo: Path, tmp_path: Path) -> None:
    # One hook environment (pre-commit installs shipmap into it once, from this checkout's commit).
    home = tmp_path / "pre-commit-home"
    good = try_repo(retailer_repo, home)
    assert good.returncode == 0, good.stdout + good.stderr
    assert re.search(r"^shipmap validate\.+Passed$", good.stdout, re.M), good.stdout
    assert re.search(r"^shipmap test\.+Passed$", good.stdout, re.M), good.stdout
    assert "ok good.yaml (order -> fenix.order)" in good.stdout and "1 passed, 0 failed" in good.stdout

    broken = ORDER.read_text(encoding="utf-8").replace("      number: name", "      numbr: name")
    assert broken != ORDER.read_text(encoding="utf-8")
    (retailer_repo / "broken.yaml").write_text(broken)
    (retailer_repo / "broken.cases.yaml").write_text(
        'cases:\n  - name: the REST order\n    source: order.json\n    expect: {order: {id: "1"}}\n'
    )
    git(retailer_repo, "add", ".")
    bad = try_repo(retailer_repo, home)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert re.search(r"^shipmap validate\.+Failed$", bad.stdout, re.M), bad.stdout
    assert "broken.yaml:" in bad.stdout
    assert "order.numbr is not a field of fenix.order; did you mean 'number'?" in bad.stdout
    assert re.search(r"^shipmap test\.+Failed$", bad.stdout, re.M), bad.stdout
    assert "1 passed, 1 failed" in bad.stdout
