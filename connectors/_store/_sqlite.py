"""The journal's SQLite connection: every failure becomes a JournalError that says what to do."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .._errors import JournalError

_FAULTS = (
    ("full", "the disk holding the journal is full; free some space"),
    ("readonly", "the journal is read-only; make the file and its directory writable"),
    ("read-only", "the journal is read-only; make the file and its directory writable"),
    ("locked", "the journal is locked by another process; stop it or wait for it"),
    ("busy", "the journal is locked by another process; stop it or wait for it"),
    ("malformed", "the journal file is corrupt; move it aside (a fresh journal re-sends everything once)"),
    ("not a database", "the file is not a journal, or it is corrupt; move it aside"),
    ("unable to open", "the journal file cannot be opened; check its directory and permissions"),
    ("i/o error", "an I/O error on the journal's disk; check the disk"),
)


# What a fault costs, by who met it: a run (or any writer) loses nothing, because what is not recorded as
# delivered is sent again; a read-only opening (journal info, dead-letters, status) changed nothing at all.
AFTER_A_WRITE = "Nothing is lost: deliveries not recorded as delivered are sent again, under the same keys, by the next run"
AFTER_A_READ = "Nothing was changed: the journal was only being read"


class JournalFault(JournalError):
    """The journal's file or disk failed: ``headline`` says what and what to do about it, the message adds what
    the fault cost (``AFTER_A_WRITE`` or ``AFTER_A_READ``); a command that knows better says it with
    ``costing``."""

    def __init__(self, headline: str, cost: str) -> None:
        super().__init__(f"{headline}. {cost}")
        self.headline = headline

    def costing(self, cost: str) -> JournalFault:
        return JournalFault(self.headline, cost)


def journal_fault(
    path: Path, error: BaseException, *, opening: bool = False, readonly: bool = False
) -> JournalError:
    """A JournalError that says what went wrong with the journal's file or disk and what to do; it never
    carries data. A run stops there: nothing is lost (pending rows are re-sent), and the next run, once the
    cause is fixed, resumes. A ``readonly`` opening (an inspection) changed nothing, and says so."""
    if isinstance(error, JournalError):
        return error
    text = str(error).lower()
    if _is_directory(path):  # SQLite says "unable to open" or "disk I/O error", depending on the call
        diagnosis = "the journal path is a directory, not a file; name a file (such as journal.db) in it"
    else:
        diagnosis = next((advice for needle, advice in _FAULTS if needle in text), f"SQLite says: {error}")
    if opening:
        action = "cannot open journal"
    else:
        action = "journal read failed" if readonly else "journal write failed"
    return JournalFault(f"{action} {path}: {diagnosis}", AFTER_A_READ if readonly else AFTER_A_WRITE)


def _is_directory(path: Path) -> bool:
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):
        return False


class _Guarded:
    """The journal's SQLite connection, whose failures become JournalErrors with a diagnosis. A text value
    that SQLite cannot take (a lone surrogate, from a bad file name) is stored with it escaped."""

    def __init__(self, db: sqlite3.Connection, path: Path, *, readonly: bool = False) -> None:
        self._db = db
        self._path = path
        self._readonly = readonly
        self.opening = True  # until the journal's schema is checked: errors say "cannot open"

    @property
    def in_transaction(self) -> bool:
        return self._db.in_transaction

    def close(self) -> None:
        self._db.close()

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, parameters)
        except UnicodeEncodeError:
            return self.execute(sql, _escaped(parameters))
        except sqlite3.Error as error:
            raise journal_fault(self._path, error, opening=self.opening, readonly=self._readonly) from None

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
        rows = list(rows)
        try:
            return self._db.executemany(sql, rows)
        except UnicodeEncodeError:
            return self.executemany(sql, [_escaped(row) for row in rows])
        except sqlite3.Error as error:
            raise journal_fault(self._path, error, opening=self.opening, readonly=self._readonly) from None

    def executescript(self, script: str) -> sqlite3.Cursor:
        try:
            return self._db.executescript(script)
        except sqlite3.Error as error:
            raise journal_fault(self._path, error, opening=self.opening, readonly=self._readonly) from None


def _escaped(row: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(
        item.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(item, str) else item
        for item in row
    )
