"""Fixtures shared by the connectors' tests in this folder (the sandbox and PostgreSQL ones are in
tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A journal's location on each backend in turn: an SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield str(tmp_path / "journal.db")
    else:
        yield request.getfixturevalue("postgres_url")
