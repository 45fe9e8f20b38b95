"""Helpers shared by the journal's tests (no tests here; the ``location`` fixture, both backends, is in
conftest.py): a PostgreSQL URL with a password that must never show, and the pending rows as a claim reads
them."""

from __future__ import annotations

from shipmap.connectors import Journal
from shipmap.connectors._store._claims import claim_pending
from shipmap.connectors._store._entries import JournalEntry

PASSWORD = "pg-secret-never-printed"  # the test server trusts loopback, so any password connects


def with_password(url: str) -> str:
    return url.replace("postgres@", f"postgres:{PASSWORD}@", 1)


def claimed_rows(journal: Journal) -> list[JournalEntry]:
    """The pending rows as a claim reads them: nobody's, or (a shared journal) those this worker holds."""
    return claim_pending(journal) or claim_pending(journal, held_here=True)
