"""The PostgreSQL journal's reads of pending rows keep their index scans, statistics or none, while the pending-row
indexes still hold the entries of rows delivered since the last VACUUM (docs/scale.md, "Plans and statistics"):
a bitmap scan would visit the table for every such entry at every call."""

from __future__ import annotations

from typing import Any

import pytest
from shipmap.connectors import Journal
from shipmap.connectors._store._claims import (
    claim_pending,
    pending_counts,
    pending_elsewhere,
    pending_holders,
)
from shipmap.connectors._store._moves import Stranded, count_pending, stranded
from test_runtime_support import recorded_statements


def _delivered_since_vacuum(journal: Journal) -> None:
    """20,000 deliveries over 4 connections journaled pending then delivered (their entries left in the
    pending-row indexes, autovacuum off), and 200 pending: 100 nobody holds, 100 that worker 'w1' leases."""
    execute = journal._db.execute
    execute("ALTER TABLE deliveries SET (autovacuum_enabled = off)")
    execute("INSERT INTO sources (hash, doc) VALUES ('h', '{}')")
    execute(
        "INSERT INTO deliveries (key, source_hash, mapping, target, connection, state, url, payload, created_at,"
        " updated_at) SELECT 'k' || n, 'h', 'm', 't', 'c' || (n % 4), 'pending', 'https://x.example/' || (n % 4),"
        " '{}', n, n FROM generate_series(1, 20000) n"
    )
    execute("UPDATE deliveries SET state = 'delivered', updated_at = updated_at + 1")
    execute(
        "INSERT INTO deliveries (key, source_hash, mapping, target, connection, state, url, payload, created_at,"
        " updated_at, lease_owner, lease_until) SELECT 'p' || n, 'h', 'm', 't', 'c' || (n % 4), 'pending',"
        " 'https://x.example/' || (n % 4), '{}', 1e6 + n, 1e6 + n, CASE WHEN n > 100 THEN 'w1' END,"
        " CASE WHEN n > 100 THEN 4e9 END FROM generate_series(1, 200) n"
    )


@pytest.mark.parametrize("statistics", [False, True], ids=["never-analyzed", "analyzed"])
def test_reads_of_pending_rows_scan_their_indexes_statistics_or_none(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, statistics: bool
) -> None:
    with Journal(postgres_url) as journal:
        _delivered_since_vacuum(journal)
        if statistics:
            journal._db.execute("ANALYZE deliveries")
        statements = recorded_statements(journal, monkeypatch)
        assert pending_counts(journal) == {"c0": 50, "c1": 50, "c2": 50, "c3": 50}
        assert pending_counts(journal, ["c1"]) == {"c1": 50}
        assert pending_elsewhere(journal) == 200
        assert pending_holders(journal) == [("w1", 100, 4e9), (None, 100, None)]  # ties: a holder first
        assert stranded(journal, {"c1": "https://y.example/"}) == [Stranded("c1", 50, "https://x.example/1")]
        assert count_pending(journal, "c1", "https://x.example/") == 50
        assert sorted(entry.key for entry in claim_pending(journal, limit=10)) == [
            f"p{n}" for n in sorted(range(1, 11), key=str)
        ]
        assert [entry.key for entry in claim_pending(journal, limit=3, connections=["c1"])] == [
            "p13",
            "p17",
            "p21",
        ]
        recorded = list(statements)
        monkeypatch.undo()
        explain = journal._db.execute
        plans: dict[str, Any] = {
            sql: "\n".join(str(row[0]) for row in explain(f"EXPLAIN {sql}", parameters).fetchall())
            for sql, parameters in recorded
        }
    assert len(plans) >= 8
    for sql, plan in plans.items():
        assert "Bitmap" not in plan, f"{sql}\n{plan}"
        assert "Seq Scan" not in plan, f"{sql}\n{plan}"
