"""A journal on a real PostgreSQL server (started by `make test`), named by URL: in a config (its password
redacted, the section's forms checked), and its errors, which never show the password. The rest of the
journal's tests on PostgreSQL live beside this file by concept: test_journal_backends (both backends alike),
_leases, _conflicts, _migrate, _copy and _moves."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from shipmap.connectors import ConfigError, Journal, JournalError, Runtime
from shipmap.connectors._cli import main
from shipmap.connectors._store._journal import SCHEMA_VERSION
from test_journal_support import PASSWORD, with_password
from test_runtime_support import write_config


def test_an_unreachable_server_is_a_journal_error_without_the_password() -> None:
    url = f"postgresql://shipmap:{PASSWORD}@127.0.0.1:1/shipmap"
    with pytest.raises(
        JournalError, match=r"cannot open journal postgresql://shipmap@127.0.0.1:1/shipmap"
    ) as error:
        Journal(url)
    assert PASSWORD not in str(error.value)


def test_a_read_that_fails_on_a_postgresql_journal_says_nothing_was_changed(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """journal info and dead-letters said 'journal write failed ... sent again by the next run' for a read."""
    with psycopg.connect(postgres_url, autocommit=True) as db:  # a store whose tables are half there
        db.execute("CREATE TABLE meta (k text PRIMARY KEY, v text)")
        db.execute("INSERT INTO meta VALUES ('schema_version', %s)", (str(SCHEMA_VERSION),))
    for command in (["journal", "info", postgres_url], ["dead-letters", "--journal", postgres_url]):
        assert main(command) == 7
        assert capsys.readouterr().err == (
            f'error: journal read failed {postgres_url}: PostgreSQL says: relation "deliveries" does not '
            "exist. Nothing was changed: the journal was only being read\n"
        ), command


def test_a_config_names_a_postgresql_journal_by_url(tmp_path: Path, postgres_url: str) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9", journal={"url": with_password(postgres_url)})
    runtime = Runtime.from_config(config)
    assert runtime.config.journal.location == with_password(postgres_url)
    assert runtime.redactor.redact(with_password(postgres_url)).count(PASSWORD) == 0
    both = write_config(tmp_path, "http://127.0.0.1:9", journal={"url": postgres_url, "path": "j.db"})
    with pytest.raises(ConfigError, match=r"takes path \(an SQLite file\) or url \(PostgreSQL\), not both"):
        Runtime.from_config(both)
    wrong = write_config(tmp_path, "http://127.0.0.1:9", journal="mysql://db/x")
    with pytest.raises(ConfigError, match="journal: must be a postgresql:// URL, or a mapping with path"):
        Runtime.from_config(wrong)
    wrong = write_config(tmp_path, "http://127.0.0.1:9", journal={"url": "mysql://db/x"})
    with pytest.raises(ConfigError, match=r"journal\.url: must be a postgresql:// URL"):
        Runtime.from_config(wrong)
    short = write_config(tmp_path, "http://127.0.0.1:9", journal=postgres_url)  # the whole section as a URL
    assert Runtime.from_config(short).config.journal.url == postgres_url
