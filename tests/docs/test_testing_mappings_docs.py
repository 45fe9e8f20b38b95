"""docs/testing-mappings.md's cases files are real: beside the ready mappings they name, each validates and
every case passes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from shipmap.connectors._cli import main

ROOT = Path(__file__).parents[2]
PAGE = (ROOT / "docs" / "testing-mappings.md").read_text(encoding="utf-8")


def _block(first_line: str) -> str:
    start = PAGE.index(first_line)
    return PAGE[start : PAGE.index("```", start)]


@pytest.mark.parametrize(
    ("cases", "count"),
    [("mappings/shopify/order.cases.yaml", 3), ("mappings/shopify/order_cancelled.cases.yaml", 1)],
)
def test_the_cases_file_shown_validates_and_passes(
    cases: str, count: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The page's file in place of the real one, beside a copy of its mapping, fixtures where the real one reads them.
    written = tmp_path / cases
    written.parent.mkdir(parents=True)
    (tmp_path / "mappings" / "_fixtures").symlink_to(ROOT / "mappings" / "_fixtures")
    mapping = cases.replace(".cases.yaml", ".yaml")
    shutil.copy(ROOT / mapping, tmp_path / mapping)
    written.write_text(_block(f"# {cases}\n"), encoding="utf-8")
    assert main(["validate", "--strict", str(written)]) == 0, capsys.readouterr()
    capsys.readouterr()
    assert main(["test", str(written)]) == 0, capsys.readouterr().out
    assert capsys.readouterr().out.splitlines()[-1] == f"{count} passed, 0 failed"
