"""Replay requests for a running ``shipmap serve``: how ``shipmap replay`` works without stopping the service.

The service holds its SQLite journal's run lock for as long as it runs, so a second process cannot replay
into it. Instead, ``shipmap replay`` finds the service running (it holds this file's lock) and writes a
request here; the service's delivery loop carries it out between two of its runs, in its own process and
with its own journal connection (the same keys, the same idempotency keys, exactly as a replay run), and
writes the result back; the command waits for it and prints it. One small SQLite file beside the journal:
``<journal>.replays``; beside a PostgreSQL journal (shared: the command replays dead letters there itself),
``<inbox>.replays`` when the inbox is an SQLite file, which the service holds all the same
(:func:`service_requests`).

A request names dead letters (by key prefix), or, for ``shipmap replay --rejected``, inbox rows: webhooks
rejected when their enrichment failed for good, which the service requeues with their documents forgotten, so
its feed fetches them again (``_rejected``).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from .._errors import JournalError
from .._store._journal_pg import is_database_url

POLL_SECONDS = 0.2  # between two looks at a request's (or an inbox row's) state, by the waiting command

try:  # POSIX: an advisory lock the kernel drops when the process dies, even by SIGKILL
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replays (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    keys TEXT,
    refetch INTEGER NOT NULL DEFAULT 0,
    requested_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'waiting' CHECK (state IN ('waiting', 'done', 'failed')),
    result TEXT,
    finished_at REAL,
    rows TEXT
);
"""
# A file made before ``rows`` (replay --rejected) existed gains the column; its requests are dead-letter ones.
_ADD_ROWS = "ALTER TABLE replays ADD COLUMN rows TEXT"
# A request for rows names this as its dead-letter keys: a service that predates ``rows`` reads the request as
# a replay of the dead letters whose key starts so, and there are none (keys are hex digests), so it replays
# nothing instead of every dead letter; ``shipmap replay`` then finds no ``requeued`` in the result.
NO_DEAD_LETTERS = "rejected-webhooks-only"
_FORGET_AFTER = 7 * 24 * 3600.0  # finished requests are kept a week, for the record


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    id: int
    keys: tuple[str, ...] | None  # None: every dead letter
    refetch: bool
    # Inbox rows to requeue with refetch (replay --rejected), not dead letters.
    rows: tuple[int, ...] | None = None


def replays_path(journal: Path) -> Path:
    return journal.with_name(journal.name + ".replays")


def service_requests(journal: Path | None, inbox: Path | str | None) -> Path | None:
    """Where a running service takes ``shipmap replay``'s requests: beside its SQLite ``journal`` (None: a
    PostgreSQL one), or else beside its SQLite ``inbox``. A PostgreSQL journal is shared, so the command
    replays dead letters there itself, beside the services; but an SQLite inbox is still the service's alone
    (it holds the file's lock), so the service requeues ``replay --rejected``'s rows in it. None when both
    are in PostgreSQL: the command does everything itself."""
    if journal is not None:
        return replays_path(journal)
    if inbox is not None and not is_database_url(inbox):
        return replays_path(Path(inbox))
    return None


class ReplayRequests:
    """The request file. ``serving=True``: the service's side, which holds the file's lock while it runs."""

    def __init__(self, path: Path, *, serving: bool = False) -> None:
        self.path = path
        self._lock: Any = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if serving and fcntl is not None:
                self._lock = open(f"{path}.lock", "a+")  # noqa: SIM115 - held for the service's lifetime
                fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._db = sqlite3.connect(path, isolation_level=None, timeout=5.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(replays)").fetchall()}
            if "rows" not in columns:
                try:
                    self._db.execute(_ADD_ROWS)
                except sqlite3.OperationalError:  # another process added it first
                    if "rows" not in {row[1] for row in self._db.execute("PRAGMA table_info(replays)")}:
                        raise
            if serving:
                self._db.execute(
                    "DELETE FROM replays WHERE state != 'waiting' AND finished_at < ?",
                    (time.time() - _FORGET_AFTER,),
                )
        except (sqlite3.Error, OSError) as error:
            self.close()
            raise JournalError(f"cannot open the replay requests {path}: {error}") from None

    @staticmethod
    def service_running(path: Path) -> bool:
        """Whether a ``shipmap serve`` holds this file's lock now."""
        lock = Path(f"{path}.lock")
        if fcntl is None or not lock.exists():
            return False
        with open(lock, "a+") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            return False

    def close(self) -> None:
        if getattr(self, "_db", None) is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> ReplayRequests:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- shipmap replay's side ------------------------------------------------------------------------------

    def submit(self, keys: Sequence[str] | None, *, refetch: bool = False) -> int:
        cursor = self._db.execute(
            "INSERT INTO replays (keys, refetch, requested_at) VALUES (?, ?, ?)",
            (json.dumps(list(keys)) if keys else None, int(refetch), time.time()),
        )
        return int(cursor.lastrowid or 0)

    def submit_rows(self, rows: Sequence[int]) -> int:
        """Ask the service to requeue these inbox rows, their documents to be fetched again."""
        cursor = self._db.execute(
            "INSERT INTO replays (keys, refetch, requested_at, rows) VALUES (?, 1, ?, ?)",
            (json.dumps([NO_DEAD_LETTERS]), time.time(), json.dumps(list(rows))),
        )
        return int(cursor.lastrowid or 0)

    def result(self, request: int) -> tuple[str, dict[str, Any] | None]:
        """The request's state (waiting, done, failed) and, once finished, its result."""
        row = self._db.execute("SELECT state, result FROM replays WHERE id = ?", (request,)).fetchone()
        if row is None:
            return "failed", {"error": "the request is gone"}
        return str(row[0]), json.loads(row[1]) if row[1] else None

    def outcome(self, request: int, deadline: float, waited: float, *, does: str, do: str) -> dict[str, Any]:
        """The service's result of ``request``, asked until ``deadline`` (``time.monotonic()``, ``waited``
        seconds after the wait began). A JournalError when it is still queued then (it stays so: the service
        ``does`` it when it can) or when the service could not ``do`` it."""
        while True:
            state, result = self.result(request)
            if state != "waiting" or time.monotonic() > deadline:
                break
            time.sleep(POLL_SECONDS)
        if state == "waiting":
            raise JournalError(
                f"shipmap serve has not carried out replay request {request} within {waited:g} s; it stays "
                f"queued and the service {does} when it can (see `shipmap dead-letters`)"
            )
        if state == "failed":
            raise JournalError(
                f"shipmap serve could not {do}: {(result or {}).get('error', 'no reason given')}"
            )
        return result or {}

    # --- the service's side ---------------------------------------------------------------------------------

    def waiting(self) -> list[ReplayRequest]:
        rows = self._db.execute(
            "SELECT id, keys, refetch, rows FROM replays WHERE state = 'waiting' ORDER BY id"
        ).fetchall()
        return [
            ReplayRequest(
                int(r[0]),
                tuple(json.loads(r[1])) if r[1] else None,
                bool(r[2]),
                tuple(int(i) for i in json.loads(r[3])) if r[3] is not None else None,
            )
            for r in rows
        ]

    def any_waiting(self) -> bool:
        return (
            self._db.execute("SELECT 1 FROM replays WHERE state = 'waiting' LIMIT 1").fetchone() is not None
        )

    def finish(self, request: int, result: dict[str, Any], *, failed: bool = False) -> None:
        self._db.execute(
            "UPDATE replays SET state = ?, result = ?, finished_at = ? WHERE id = ?",
            ("failed" if failed else "done", json.dumps(result), time.time(), request),
        )
