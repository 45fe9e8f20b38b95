"""The journal on both backends (an SQLite file, then a database on the real PostgreSQL server `make test`
starts): the same states, keys and records; a pending row's retry budget and cut wait; dead letters and
rejected records a page at a time, counted and resolved in bulk."""

from __future__ import annotations

import time

import pytest
from shipmap.connectors import Journal
from shipmap.connectors._store._journal import SCHEMA_VERSION
from shipmap.connectors._store._moves import move_pending
from test_journal import pending
from test_journal_support import claimed_rows


def test_both_backends_resolve_by_hand_alike(location: str) -> None:
    from shipmap.connectors._store._resolve import resolve_by_hand

    with Journal(location) as journal:
        for key in ("abc123aa", "abc123bb", "ffff0000"):
            pending(journal, key)
            journal.mark_dead(key, source_digest="d" * 64, mapping="m", target="t", reason="HTTP 400")
        journal.record_rejected("in.ndjson:7", "not JSON", "{x")
        done = resolve_by_hand(journal, ["abc123", "in.ndjson:7", "in.ndjson:8", "ffff0000"], "test orders")
        assert done.dead == {"abc123": ["abc123aa", "abc123bb"], "ffff0000": ["ffff0000"]}
        assert done.dead_count == {"abc123": 2, "ffff0000": 1}
        assert (done.rejected, done.unmatched) == (["in.ndjson:7"], ["in.ndjson:8"])
        entry = journal.get("abc123bb")
        assert entry is not None and entry.state == "resolved"
        assert entry.reason == "resolved by hand: test orders; its dead letter's reason: HTTP 400"
        assert journal.counts() == {"resolved": 3} and journal.rejected() == []
        assert resolve_by_hand(journal, ["abc123"], "again").unmatched == [
            "abc123"
        ]  # only what is still dead


def test_both_backends_keep_a_pending_rows_attempts_as_its_retry_budget_until_a_replay_or_a_move(
    location: str,
) -> None:
    """A run that ends while a delivery waits to retry adds the attempts it made to its pending row; the next
    run goes on from there. A replay of a dead letter and a move to another base_url start it over."""
    with Journal(location) as journal:
        pending(journal, "k")
        journal.add_attempts("k", 2)
        pending(journal, "k")  # the same event journaled again while it is pending: the budget stays
        assert (entry := journal.get("k")) is not None and (entry.state, entry.attempts) == ("pending", 2)
        assert move_pending(journal, "fenix", "http://127.0.0.1", "http://127.0.0.2") == 1
        assert (entry := journal.get("k")) is not None
        assert (entry.url, entry.attempts) == ("http://127.0.0.2/x", 0)
        journal.add_attempts("k", 1)
        journal.mark_dead("k", source_digest="d" * 64, mapping="m", target="t", reason="x", attempts=2)
        journal.add_attempts("k", 5)  # a dead row is no budget: left as it is
        assert (entry := journal.get("k")) is not None and (entry.state, entry.attempts) == ("dead", 3)
        pending(journal, "k")  # a replay
        assert (entry := journal.get("k")) is not None and (entry.state, entry.attempts) == ("pending", 0)


def test_both_backends_keep_the_rest_of_a_pending_rows_wait_until_a_replay_or_a_move(location: str) -> None:
    """A run's end or a stop that cuts a delivery's wait short records when it ends (``not_before``) and the
    failure it retries; the worker that claims the row next reads them (``Outbox.recover`` waits out the
    rest). The same event journaled again keeps them; a move to another base_url or a replay drops them."""
    with Journal(location) as journal:
        pending(journal, "k")
        [claimed] = claimed_rows(journal)
        assert (claimed.not_before, claimed.reason) == (None, None)
        journal.add_attempts("k", 1, not_before=4e9, failed="HTTP 503 Service Unavailable")
        pending(journal, "k")  # the same event again while it is pending
        [claimed] = claimed_rows(journal)
        assert (claimed.attempts, claimed.not_before, claimed.reason) == (
            1,
            4e9,
            "HTTP 503 Service Unavailable",
        )
        assert journal.get("k") is not None  # an entry read elsewhere does not need the column
        assert move_pending(journal, "fenix", "http://127.0.0.1", "http://127.0.0.2") == 1
        [claimed] = claimed_rows(journal)
        assert (claimed.attempts, claimed.not_before, claimed.reason) == (0, None, None)
        journal.add_attempts("k", 2, not_before=4e9)  # a Retry-After's hold: no failure of its own
        journal.mark_dead("k", source_digest="d" * 64, mapping="m", target="t", reason="x", attempts=1)
        pending(journal, "k")  # a replay: its budget and its wait start over
        [claimed] = claimed_rows(journal)
        assert (claimed.state, claimed.attempts, claimed.not_before, claimed.reason) == (
            "pending",
            0,
            None,
            None,
        )


def test_both_backends_keep_the_same_states_keys_and_records(location: str) -> None:
    with Journal(location) as journal:
        pending(journal, "k1")
        pending(journal, "abc123", idempotency_key="first")
        assert journal.state("k1") == "pending"
        journal.mark_delivered_many([("k1", 201, 2)])
        entry = journal.get("k1")
        assert entry is not None and (entry.state, entry.status, entry.attempts) == ("delivered", 201, 2)
        assert entry.payload == {"id": "1"} and entry.idempotency_key == "sm-1"
        journal.mark_dead("abc123", source_digest="d" * 64, mapping="m", target="t", reason="HTTP 400",
                          status=400, response_excerpt="{}", attempts=1)  # fmt: skip
        pending(journal, "abc123", idempotency_key="second")  # a replay keeps the recorded key
        assert journal.lookup(["k1", "abc123", "nope"]) == {
            "k1": ("delivered", "sm-1"),
            "abc123": ("pending", "first"),
        }
        journal.mark_dead("abc123", source_digest="d" * 64, mapping="m", target="t", reason="again")
        assert [d.key for d in journal.dead_letters(["abc"])] == ["abc123"]
        journal.mark_resolved("abc123", "replayed")
        assert journal.counts() == {"delivered": 1, "resolved": 1}
        journal.put_source("a" * 64, "{}")
        journal.record_unrouted("a" * 64, "in:1")
        journal.record_unrouted("a" * 64, "in:2")
        journal.record_rejected("in:3", "not JSON", "{oops")
        assert journal.unrouted_count() == 1
        assert [(r.origin, r.excerpt) for r in journal.rejected()] == [("in:3", "{oops")]
        assert journal.source("d" * 64) == {"id": 1}
        with pytest.raises(RuntimeError), journal.transaction():  # one commit, or nothing
            pending(journal, "rolled-back")
            raise RuntimeError("stop")
        assert journal.state("rolled-back") is None
        assert journal.schema_version() == SCHEMA_VERSION


def test_both_backends_hand_a_replay_its_dead_letters_a_page_at_a_time(location: str) -> None:
    """A replay pages through the dead letters there were when it started, by (updated_at, key): one that
    dies again during it (written later) is not handed over twice. The same query on SQLite and PostgreSQL."""
    with Journal(location) as journal:
        for number in range(5):
            pending(journal, f"dead{number}")
            journal.mark_dead(f"dead{number}", source_digest="d" * 64, mapping="m", target="t", reason="400")
        pages = journal.dead_letter_pages(limit=2)
        first = next(pages)
        assert [entry.key for entry in first] == ["dead0", "dead1"]
        time.sleep(0.01)  # the replay dies again on dead0: rewritten after the replay started
        pending(journal, "dead0")
        journal.mark_dead("dead0", source_digest="d" * 64, mapping="m", target="t", reason="400 again")
        rest = [entry.key for page in pages for entry in page]
        assert rest == ["dead2", "dead3", "dead4"]
        only = journal.dead_letter_pages(["dead3"], limit=2)
        assert [[entry.key for entry in page] for page in only] == [["dead3"]]


def test_both_backends_count_dead_letters_by_key_prefix_and_page_rejected_records(location: str) -> None:
    """What `shipmap dead-letters` and `shipmap replay` read: a count (not the rows) and the rejected input
    records a page at a time, in the order they were recorded."""
    with Journal(location) as journal:
        for key in ("abc1", "abc2", "abd3", "x_%4"):
            pending(journal, key)
            journal.mark_dead(key, source_digest="d" * 64, mapping="m", target="t", reason="400")
        pending(journal, "abc9")  # pending, not dead: not counted
        assert journal.dead_letter_count() == 4
        assert journal.dead_letter_count(["abc"]) == 2
        assert journal.dead_letter_count(["abc", "abd3", "abc1"]) == 3  # overlapping prefixes count once
        assert journal.dead_letter_count(["x_%"]) == 1  # a prefix is text, not a LIKE pattern
        assert journal.dead_letter_count(["x_"]) == 1 and journal.dead_letter_count(["x%"]) == 0
        assert journal.dead_letter_count(["zzz"]) == 0
        for line in range(1, 6):
            journal.record_rejected(f"in.ndjson:{line}", "not JSON", "{broken")
        pages = [[bad.origin for bad in page] for page in journal.rejected_pages(limit=2)]
        assert pages == [["in.ndjson:1", "in.ndjson:2"], ["in.ndjson:3", "in.ndjson:4"], ["in.ndjson:5"]]


def test_both_backends_resolve_rejections_in_one_statement_per_500_origins(location: str) -> None:
    """A run that reads many rejected records again (``replay --rejected`` of a store API's outage) resolves
    them together. One DELETE per origin, on a table with no index on ``origin``, read the whole table once
    per origin: 10,000 took 3.1 s on PostgreSQL. One statement per 500 now, on both backends."""
    with Journal(location) as journal:
        with journal.transaction():
            for row in range(1, 1202):
                journal.record_rejected(f"bc#{row}", "enrichment failed: HTTP 404", None)
            journal.record_rejected("bc#1", "enrichment failed: HTTP 403", None)  # two reasons, one origin
            journal.record_rejected("bc#12020", "enrichment failed: HTTP 404", None)
            journal.record_rejected("events.ndjson:3", "not JSON", "{broken")
        statements: list[str] = []
        execute, executemany = journal._db.execute, journal._db.executemany

        def counted(sql: str, parameters: object = ()) -> object:
            statements.append(sql)
            return execute(sql, parameters)

        def counted_many(sql: str, rows: list[object]) -> object:
            statements.extend(sql for _ in rows)
            return executemany(sql, rows)

        journal._db.execute = counted  # type: ignore[method-assign]
        journal._db.executemany = counted_many  # type: ignore[method-assign]
        with journal.transaction():
            journal.resolve_rejections({f"bc#{row}" for row in range(1, 1202)})
        assert [sql.split()[0] for sql in statements] == ["BEGIN", "DELETE", "DELETE", "DELETE", "COMMIT"]
        assert sorted(journal.rejected_origins()) == ["bc#12020", "events.ndjson:3"]
        statements.clear()
        journal.resolve_rejections(set())
        assert statements == []
