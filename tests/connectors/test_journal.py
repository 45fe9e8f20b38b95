"""The SQLite journal: states, keys, durability settings, the run lock, read-only access."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from shipmap.connectors import Journal, JournalError
from shipmap.connectors._cli import main
from shipmap.connectors._store._claims import claim_pending
from shipmap.connectors._store._journal import canonical_json, delivery_key, source_hash


def pending(journal: Journal, key: str, digest: str = "d" * 64, **extra: object) -> None:
    journal.put_source(digest, '{"id":1}')
    options: dict[str, object] = dict(
        source_digest=digest,
        mapping="m",
        target="t",
        connection="fenix",
        method="POST",
        url="http://127.0.0.1/x",
        payload={"id": "1"},
        idempotency_key="sm-1",
        origin="in.ndjson:1",
    )
    options.update(extra)
    journal.mark_pending(key, **options)  # type: ignore[arg-type]


def test_keys_are_stable_and_distinguish_mapping_target_and_document() -> None:
    a = source_hash({"b": 1, "a": [1, 2]})
    assert a == source_hash({"a": [1, 2], "b": 1})  # key order does not matter
    assert a != source_hash({"a": [2, 1], "b": 1})
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'
    key = delivery_key("m", "t", a)
    assert len(key) == 32 and key == delivery_key("m", "t", a)
    assert len({key, delivery_key("m", "u", a), delivery_key("n", "t", a), delivery_key("m", "t", "x")}) == 4


def test_wal_mode_and_the_lifecycle_of_a_delivery(tmp_path: Path) -> None:
    path = tmp_path / "j" / "journal.db"
    with Journal(path) as journal:
        pending(journal, "k1")
        assert journal.state("k1") == "pending"
        assert [e.key for e in journal.entries("pending")] == ["k1"]
        journal.mark_delivered("k1", status=201, attempts=2)
        entry = journal.get("k1")
        assert (
            entry is not None and entry.state == "delivered" and entry.status == 201 and entry.attempts == 2
        )
        assert entry.payload == {"id": "1"} and entry.idempotency_key == "sm-1"
        assert journal.lookup(["k1", "k2", "k1"]) == {"k1": ("delivered", "sm-1")}
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_dead_letters_keep_status_reason_and_excerpt_and_match_key_prefixes(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db") as journal:
        pending(journal, "abc123")
        journal.mark_dead("abc123", source_digest="d" * 64, mapping="m", target="t", reason="HTTP 400",
                          status=400, response_excerpt='{"message": "bad"}', attempts=1)  # fmt: skip
        journal.put_source("e" * 64, "{}")
        journal.mark_dead("fff000", source_digest="e" * 64, mapping="m", target="", reason="mapping failed")
        dead = journal.dead_letters()
        assert [d.key for d in dead] == ["abc123", "fff000"]
        assert dead[0].status == 400 and dead[0].response_excerpt == '{"message": "bad"}'
        assert dead[1].target == "" and dead[1].method is None
        assert [d.key for d in journal.dead_letters(["abc"])] == ["abc123"]
        journal.mark_resolved("fff000", "replayed")
        assert journal.counts() == {"dead": 1, "resolved": 1}
        assert journal.source("d" * 64) == {"id": 1}


def test_a_second_pending_keeps_the_first_idempotency_key(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db") as journal:
        pending(journal, "k", idempotency_key="first")
        journal.mark_dead("k", source_digest="d" * 64, mapping="m", target="t", reason="x", status=400)
        pending(journal, "k", idempotency_key="second")
        entry = journal.get("k")
        assert entry is not None and entry.state == "pending" and entry.idempotency_key == "first"
        assert entry.reason is None and entry.status is None


def test_unrouted_and_rejected_records(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db") as journal:
        journal.put_source("a" * 64, "{}")
        journal.record_unrouted("a" * 64, "in:1")
        journal.record_unrouted("a" * 64, "in:2")
        journal.record_rejected("in:3", "not JSON: Expecting value, column 1", "{oops")
        assert journal.unrouted_count() == 1
        [bad] = journal.rejected()
        assert (bad.origin, bad.excerpt) == ("in:3", "{oops")


def test_only_one_run_may_write_a_journal_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with Journal(path, exclusive=True):
        with pytest.raises(JournalError, match="in use by another shipmap run"):
            Journal(path, exclusive=True)
        with Journal(path, readonly=True) as reader:  # readers are never blocked
            assert reader.counts() == {}
    with Journal(path, exclusive=True):  # the lock went with the first journal
        pass


def test_read_only_journal_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    Journal(path).close()
    # A journal fault is a JournalError (exit 7) that says what is wrong, never an sqlite3 traceback.
    with Journal(path, readonly=True) as journal, pytest.raises(JournalError, match="read-only") as caught:
        journal.put_source("a", "{}")
    assert caught.value.exit_code == 7


def test_a_file_that_is_not_a_journal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('schema_version', '99')")
    db.commit()
    db.close()
    with pytest.raises(JournalError, match="not a shipmap journal"):
        Journal(path)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(JournalError, match="cannot open journal"):
        Journal(garbage)


def test_another_applications_database_is_refused_and_left_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A journal path that names another application's SQLite file (a typo, a shared data directory) would
    have had five tables added and its journal mode switched to WAL."""
    path = tmp_path / "shop.db"
    db = sqlite3.connect(path)
    for table in ("orders", "customers", "settings", "line_items"):
        db.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY)")
    db.commit()
    db.close()
    before = path.read_bytes()
    message = (
        f"{path} is not a shipmap journal: it holds other tables (customers, line_items, orders and 1 more); "
        "give the journal a file of its own (nothing was written to this one)"
    )
    with pytest.raises(JournalError) as caught:
        Journal(path, exclusive=True)
    assert str(caught.value) == f"error: {message}" and caught.value.exit_code == 7
    assert main(["journal", "migrate", str(path)]) == 7
    assert capsys.readouterr().err == f"error: {message}\n"
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["shop.db"]


def test_a_journal_written_before_versioning_is_still_upgraded(tmp_path: Path) -> None:
    """The refusal above reads tables, not the schema version: the first journals had no `meta` table."""
    from shipmap.connectors._store._schema import MIGRATIONS, SCHEMA_VERSION

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        MIGRATIONS["sqlite"][0].replace(
            "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);", ""
        )
    )
    db.execute("INSERT INTO sources VALUES ('abc', '{}')")
    db.commit()
    db.close()
    with Journal(path) as journal:
        assert journal.upgraded_from == 0 and journal.schema_version() == SCHEMA_VERSION
        assert journal.source("abc") == {}


@pytest.mark.parametrize(
    "action",
    [
        ["copy", "{missing}", "{other}"],
        ["migrate", "{missing}"],
        ["info", "{missing}"],
        ["prune", "{missing}"],
    ],
)
def test_journal_commands_refuse_a_missing_sqlite_file_and_create_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], action: list[str]
) -> None:
    """A mistyped path is said to be one (not a run's advice about permissions and re-sends), and no empty
    journal appears there, nor at copy's destination."""
    missing, other = tmp_path / "journl.db", tmp_path / "copy.db"
    argv = [part.format(missing=missing, other=other) for part in action]
    assert main(["journal", *argv]) == 7
    assert capsys.readouterr().err == (
        f"error: no journal at {missing}: no such file (a run creates it; check the path)\n"
    )
    assert sorted(tmp_path.iterdir()) == []


def test_full_synchronous_mode_is_applied(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db", synchronous="full") as journal:
        assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with Journal(tmp_path / "k.db") as journal:
        assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_an_exclusive_journal_hands_its_pending_rows_over_a_page_at_a_time(tmp_path: Path) -> None:
    """After a long outage millions of rows may be pending: a run takes them over a page at a time, each once,
    in the order they were last written, instead of reading every payload into memory at once."""
    keys = [f"k{n:05d}" for n in range(2345)]
    with Journal(tmp_path / "journal.db") as journal:
        with journal.transaction():
            journal.put_source("d" * 64, '{"id":1}')
            rows = [(key, "d" * 64, "m", "t", "fenix", f"i-{key}", "POST", "http://127.0.0.1/x", "{}", None)
                    for key in reversed(keys)]  # fmt: skip
            assert journal.mark_pending_many(rows) == set(keys)
            journal.mark_delivered("k00007", status=201, attempts=1)
        pages: list[list[str]] = []
        after = None
        while True:
            page = claim_pending(journal, limit=1000, after=after)
            pages.append([entry.key for entry in page])
            if len(page) < 1000:
                break
            after = (page[-1].updated_at, page[-1].key)
    assert [len(page) for page in pages] == [1000, 1000, 344]
    claimed = [key for page in pages for key in page]
    assert claimed == sorted(claimed) and set(claimed) == set(keys) - {"k00007"}  # each once, none delivered


def test_a_journal_path_that_is_a_directory_is_said_to_be_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """journal info called it 'an I/O error on the journal's disk', run 'cannot be opened; check its
    directory and permissions': SQLite words a directory differently by call. Both now say what it is."""
    from test_runtime_support import order_event, write_config

    directory = tmp_path / "journal.db"
    directory.mkdir()
    config = write_config(tmp_path, "http://127.0.0.1:9", journal={"path": "journal.db"})
    events = tmp_path / "events.ndjson"
    events.write_text(json.dumps(order_event(1)) + "\n")
    diagnosis = "the journal path is a directory, not a file; name a file (such as journal.db) in it. "
    run_cost = "Nothing is lost: deliveries not recorded as delivered are sent again, under the same keys, by the next run"
    read_cost = "Nothing was changed: the journal was only being read"
    for command, cost in (
        (["journal", "info", str(directory)], read_cost),
        (["run", str(config), "--input", str(events)], run_cost),
        (["dead-letters", str(config)], read_cost),
    ):
        assert main(command) == 7
        assert capsys.readouterr().err == f"error: cannot open journal {directory}: {diagnosis}{cost}\n", (
            command
        )
    assert sorted(directory.iterdir()) == []


def test_a_journal_fault_says_what_it_cost_the_command_that_met_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """journal info, dead-letters and status ended a fault with the run's advice ('sent again ... by the next
    run'), which they have nothing to do with: they only read. Each command now says what the fault cost it."""
    from test_runtime_support import write_config

    bad = tmp_path / "journal.db"
    bad.write_bytes(b"not a database, not even close: " * 8)
    config = write_config(tmp_path, "http://127.0.0.1:9", journal={"path": "journal.db"})
    headline = (
        f"error: cannot open journal {bad}: the file is not a journal, or it is corrupt; move it aside. "
    )
    read = "Nothing was changed: the journal was only being read"
    for command, cost in (
        (["journal", "info", str(bad)], read),
        (["dead-letters", "--journal", str(bad)], read),
        (["status", str(config)], read),
        (["journal", "prune", "--dry-run", str(bad)], read),
        (
            ["journal", "prune", str(bad)],
            "Nothing is lost: prune forgets only rows that are done with; run it again once that is fixed",
        ),
        (
            ["journal", "copy", str(bad), str(tmp_path / "copy.db")],
            "Nothing was copied: the copy is one transaction, and SRC is only read; run it again once that is "
            "fixed",
        ),
        (
            ["journal", "migrate", str(bad)],
            "Nothing was changed: the upgrade is one transaction; run it again once that is fixed",
        ),
        (
            ["journal", "move-pending", str(bad), "fenix", "--from", "http://a", "--to", "http://b"],
            "Nothing is lost: each pending delivery is at its old base_url or its new one; run it again to move "
            "the rest once that is fixed",
        ),
    ):
        assert main(command) == 7, command
        assert capsys.readouterr().err == f"{headline}{cost}\n", command
    assert bad.read_bytes() == b"not a database, not even close: " * 8


def test_the_config_given_to_a_journal_command_is_named_with_the_journal_it_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`shipmap journal info shipmap.yaml` (status, dead-letters and replay take the config) said the file is
    not a journal or is corrupt, "move it aside": advice to move the config away. It now names the journal."""
    from test_runtime_support import write_config

    config = write_config(tmp_path, "http://127.0.0.1:9", journal={"path": "state/journal.db"})
    before = config.read_bytes()
    for command in (
        ["journal", "info", str(config)],
        ["journal", "prune", "--dry-run", str(config)],
        ["journal", "migrate", str(config)],
        ["journal", "copy", str(config), str(tmp_path / "copy.db")],
    ):
        assert main(command) == 7, command
        assert capsys.readouterr().err == (
            f"error: {config} is a config, not a journal: `shipmap journal` takes the journal's path or URL,"
            f" here {tmp_path / 'state' / 'journal.db'}\n"
        ), command
    assert config.read_bytes() == before
    assert not (tmp_path / "copy.db").exists() and not (tmp_path / "state").exists()
