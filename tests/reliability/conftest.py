"""The reliability suite: fault, kill -9, fuzz, hostile-mapping and secret tests (issue 7).

Registers the ``soak`` marker (the full-size runs of ``make soak``) and skips those tests unless the mark
expression names them (``pytest -m soak``). Every run's counts line is printed by the test (``pytest -s``) and
collected here, so it also appears in the terminal summary of a plain ``pytest -q``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the harness module, imported by its plain name

_COUNTS: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "soak: full-size reliability runs (make soak); skipped unless selected with -m soak"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "soak" in (config.getoption("markexpr", "") or ""):
        return
    skip = pytest.mark.skip(reason="a soak run: select it with -m soak (make soak)")
    for item in items:
        if item.get_closest_marker("soak") is not None:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _COUNTS:
        terminalreporter.section("reliability counts")
        for line in _COUNTS:
            terminalreporter.write_line(line)


@pytest.fixture
def counts() -> Callable[[str], None]:
    """``counts(text)``: print a run's counts now (seen with -s) and again in the terminal summary."""

    def record(text: str) -> None:
        print(text)
        _COUNTS.append(text)

    return record
