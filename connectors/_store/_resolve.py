"""Dead letters and rejected input records closed by hand: what an operator decides is owed no more.

A dead letter is a to-do: replay it, or resolve it here (a test order, an order deleted at the store, a duplicate
sent another way). Resolving keeps the row, ``resolved``, with the dead letter's reason after the operator's, so
``journal info`` still counts it and retention forgets it like a delivered one; a rejected input record (a line
that was not JSON, a webhook whose enrichment failed for good) is forgotten, as when its record reads again.

Each statement is one transaction that changes only rows still ``dead``: safe beside a run or ``shipmap serve``
on the same journal (SQLite waits for their commit; a replay that took the row first wins).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ._journal import Journal, _key_prefixes

# Characters of a key that name a dead letter: a shorter prefix would close many by mistake.
MIN_KEY_PREFIX = 6
SHOWN_KEYS = 20  # keys a resolve names, per name given; the count says the rest


@dataclass
class Resolved:
    """What one ``resolve_by_hand`` closed, by the name that matched it."""

    dead: dict[str, list[str]] = field(default_factory=dict)  # name -> dead letter keys (at most SHOWN_KEYS)
    dead_count: dict[str, int] = field(default_factory=dict)  # name -> dead letters closed
    rejected: list[str] = field(default_factory=list)  # rejected input origins forgotten
    unmatched: list[str] = field(default_factory=list)  # names that matched nothing still open


def resolve_by_hand(journal: Journal, names: Sequence[str], reason: str) -> Resolved:
    """Close the dead letters whose key starts with each name (at least ``MIN_KEY_PREFIX`` characters) and
    forget the rejected input records whose origin is a name exactly. ``reason`` is the operator's: it goes
    before the dead letter's own, which stays readable."""
    resolved = Resolved()
    db = journal._db
    for name in dict.fromkeys(names):
        if len(name) >= MIN_KEY_PREFIX:
            condition, parameters = _key_prefixes([name])
            keys = [
                row[0]
                for row in db.execute(
                    f"SELECT key FROM deliveries WHERE state = 'dead'{condition} ORDER BY key LIMIT ?",
                    (*parameters, SHOWN_KEYS),
                ).fetchall()
            ]
            if keys:
                closed = db.execute(
                    f"""UPDATE deliveries SET state = 'resolved', updated_at = ?, lease_until = NULL,
                            reason = ? || COALESCE(reason, '(none)')
                        WHERE state = 'dead'{condition}""",
                    (time.time(), f"resolved by hand: {reason}; its dead letter's reason: ", *parameters),
                ).rowcount
                if closed:
                    resolved.dead[name], resolved.dead_count[name] = keys, int(closed)
                    continue
        if db.execute("DELETE FROM rejected WHERE origin = ?", (name,)).rowcount:
            resolved.rejected.append(name)
            continue
        resolved.unmatched.append(name)
    return resolved
