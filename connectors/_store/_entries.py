"""The journal's rows as a program reads them: a delivery (``JournalEntry``) and a rejected input record
(``RejectedInput``), the columns a query selects for an entry, and the orders the journal's
reads share. Both backends return the same tuples, so one decoding serves both."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ._schema import State


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One row of the journal, as stored."""

    key: str
    source_hash: str
    mapping: str
    target: str
    connection: str | None
    state: State
    idempotency_key: str | None
    method: str | None
    url: str | None
    payload: Any
    attempts: int
    status: int | None
    reason: str | None
    response_excerpt: str | None
    origin: str | None
    created_at: float
    updated_at: float
    # When a pending row may be sent again (epoch seconds; None: at once). Read by claims only (``CLAIM_COLUMNS``):
    # other reads leave it None, so a journal of an older schema version can still be read.
    not_before: float | None = None


@dataclass(frozen=True, slots=True)
class RejectedInput:
    """An input record that could not be read as JSON."""

    origin: str
    reason: str
    excerpt: str | None
    at: float


ENTRY_COLUMNS = (  # a JournalEntry's, in its order
    "key, source_hash, mapping, target, connection, state, idempotency_key, method, url, payload, attempts, "
    "status, reason, response_excerpt, origin, created_at, updated_at"
)
CLAIM_COLUMNS = (
    ENTRY_COLUMNS + ", not_before"
)  # a claimed row's: a writer's journal is of the current version


def by_creation(entry: JournalEntry) -> tuple[float, str]:
    return entry.created_at, entry.key


def by_last_write(entry: JournalEntry) -> tuple[float, str]:
    return entry.updated_at, entry.key


def entry_of(row: tuple[Any, ...]) -> JournalEntry:
    values = list(row)
    values[9] = json.loads(values[9]) if values[9] is not None else None
    return JournalEntry(*values)
