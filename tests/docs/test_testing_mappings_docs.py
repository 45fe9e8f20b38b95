"""docs/testing-mappings.md's cases files are real: beside the ready mappings they name, each validates and
every case passes, and the failing cases of its Output section print what the page shows."""

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


def _write_beside_its_mapping(cases: str, root: Path) -> Path:
    """The page's file in place of the real one, beside a copy of its mapping, the fixtures where it reads them."""
    written = root / cases
    written.parent.mkdir(parents=True)
    (root / "mappings" / "_fixtures").symlink_to(ROOT / "mappings" / "_fixtures")
    mapping = cases.replace(".cases.yaml", ".yaml")
    shutil.copy(ROOT / mapping, root / mapping)
    written.write_text(_block(f"# {cases}\n"), encoding="utf-8")
    return written


@pytest.mark.parametrize(
    ("cases", "count"),
    [("mappings/shopify/order.cases.yaml", 3), ("mappings/shopify/order_cancelled.cases.yaml", 1)],
)
def test_the_cases_file_shown_validates_and_passes(
    cases: str, count: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written = _write_beside_its_mapping(cases, tmp_path)
    assert main(["validate", "--strict", str(written)]) == 0, capsys.readouterr()
    capsys.readouterr()
    assert main(["test", str(written)]) == 0, capsys.readouterr().out
    assert capsys.readouterr().out.splitlines()[-1] == f"{count} passed, 0 failed"


def test_the_output_section_is_what_its_cases_print(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = "mappings/shopify/fulfillment.cases.yaml"
    _write_beside_its_mapping(cases, tmp_path)
    monkeypatch.chdir(tmp_path)  # run from the folder above mappings/, as the page does: paths print as given
    assert main(["test", cases]) == 1
    printed = capsys.readouterr().out.splitlines()
    shown = _block(f"{cases}  (mapping ").splitlines()
    # Each run of lines between the page's "..." is printed as it stands, in order, first and last in place.
    runs: list[list[str]] = [[]]
    for line in shown:
        if line.strip() == "...":
            runs.append([])
        else:
            runs[-1].append(line)
    assert printed[: len(runs[0])] == runs[0]
    assert printed[-len(runs[-1]) :] == runs[-1]
    position = 0
    for run in runs:
        found = next(
            (i for i in range(position, len(printed)) if printed[i : i + len(run)] == run),
            None,
        )
        assert found is not None, f"not printed in this order: {run}\n" + "\n".join(printed)
        position = found + len(run)
