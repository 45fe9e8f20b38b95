"""A connection that moved: its pending deliveries follow it to its new ``base_url``.

Each ``pending`` row keeps the exact URL it was journaled with (a re-send is the same request), so a
connection moved to another endpoint would have its parked deliveries re-sent to the old one for good. Three
ways they follow it:

- an SQLite journal (one user) remembers each connection's ``base_url`` at the last run, and a run that finds
  one changed moves that connection's rows (``follow_base_urls``);
- a service's reload moves them, once, in the process that reloaded (any journal);
- ``shipmap journal move-pending`` moves them by hand: the way for a PostgreSQL journal, whose workers may run
  two configs for a while during a rollout, so no run can tell an edit from a worker not yet updated.

``stranded`` counts what is left behind, so that a run on a shared journal can say so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ._journal import Journal

_BASE_URL_KEY = "base_url:"  # meta: a connection's base_url at the last run (``follow_base_urls``)
MOVE_PAGE = 5000  # rows per statement: a day of an outage's pending rows is not one statement past a timeout


def base_prefix(base_url: str) -> str:
    """What every URL journaled for ``base_url`` starts with (``join_url``: one slash between the two)."""
    return base_url.rstrip("/") + "/"


def _base_range(journal: Journal, base_url: str) -> tuple[str, str, str]:
    """The URLs journaled for ``base_url`` as a range of the index of pending rows by URL (schema 7):
    ``(url, first, past)``, ``url`` the column as the index orders it, and ``first <= url < past`` exactly
    when the URL starts with the base's prefix (byte order: the prefix, then its last character, a slash,
    replaced by the next one)."""
    prefix = base_prefix(base_url)
    url = 'url COLLATE "C"' if journal.backend == "postgresql" else "url"
    return url, prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def follow_base_urls(journal: Journal, base_urls: Mapping[str, str]) -> list[tuple[str, int]]:
    """Each connection's ``base_url`` now (``{name: url}``) against the one the last run here recorded: the
    pending deliveries of each that moved go to its new one (``move_pending``), and the new ones are
    recorded. ``(connection, deliveries moved)`` per connection that moved. For a journal with one user
    (SQLite): the workers of a shared one may run with two configs for a while."""
    moved: list[tuple[str, int]] = []
    db = journal._db

    def follow() -> None:
        moved.clear()
        rows = db.execute(
            "SELECT k, v FROM meta WHERE substr(k, 1, ?) = ?", (len(_BASE_URL_KEY), _BASE_URL_KEY)
        ).fetchall()
        recorded = {key[len(_BASE_URL_KEY) :]: url for key, url in rows}
        for name, url in base_urls.items():
            if recorded.get(name, url) != url:
                moved.append((name, move_pending(journal, name, recorded[name], url)))
        db.executemany(
            "INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            [(_BASE_URL_KEY + name, url) for name, url in base_urls.items() if recorded.get(name) != url],
        )

    journal.run_transaction(follow)
    return moved


def move_pending(
    journal: Journal, connection: str, old_base_url: str, new_base_url: str, *, page: int = MOVE_PAGE
) -> int:
    """Point the pending deliveries of ``connection`` journaled for ``old_base_url`` at ``new_base_url`` (the
    rest of each URL kept), their retry budgets and waits started over (attempts at the old endpoint, and the
    waits it asked for, say nothing of the new one); how many were. ``page`` rows per statement, in key order, so a new base that
    extends the old one (``/api`` to ``/api/v2``) moves each row once. Each statement commits by itself
    unless the caller holds a transaction: an interrupted move leaves every row at one base or the other."""
    old_prefix, new_prefix = base_prefix(old_base_url), base_prefix(new_base_url)
    moved, after = 0, ""
    while True:
        keys = journal._db.execute(
            """UPDATE deliveries SET url = ? || substr(url, ?), attempts = 0, not_before = NULL, reason = NULL
               WHERE key IN (
                   SELECT key FROM deliveries WHERE state = 'pending' AND connection = ? AND key > ?
                   AND substr(url, 1, ?) = ? ORDER BY key LIMIT ?)
               RETURNING key""",
            (new_prefix, len(old_prefix) + 1, connection, after, len(old_prefix), old_prefix, page),
        ).fetchall()
        moved += len(keys)
        if len(keys) < page:
            return moved
        after = max(row[0] for row in keys)


def count_pending(journal: Journal, connection: str, base_url: str) -> int:
    """Pending deliveries of ``connection`` journaled for ``base_url`` (what ``move_pending`` would move)."""
    url, first, past = _base_range(journal, base_url)
    row = journal._db.execute(
        f"SELECT COUNT(*) FROM deliveries WHERE state = 'pending' AND connection = ? AND {url} >= ? AND {url} < ?",
        (connection, first, past),
    ).fetchone()
    return int(row[0])


STRANDED_CAP = 100_000  # rows counted at most: a day of an outage leaves millions, and a monitor asks often


@dataclass(frozen=True)
class Stranded:
    """A connection's pending deliveries journaled for another base URL than its own now."""

    connection: str
    count: int  # at most the cap it was counted with
    example_url: str  # one of their URLs, which shows the old base
    capped: bool = False  # there are more than ``count``

    def describe(self) -> str:
        """``3 pending deliveries``, ``100000 or more pending deliveries``."""
        more = " or more" if self.capped else ""
        return f"{self.count}{more} pending deliver{'y' if self.count == 1 else 'ies'}"


def stranded(journal: Journal, base_urls: Mapping[str, str], *, cap: int = STRANDED_CAP) -> list[Stranded]:
    """For each connection (``{name: base_url now}``) whose pending deliveries include some journaled under
    another base: how many (up to ``cap``), with one of their URLs (the first in byte order). Every run asks
    (``shipmap serve`` at each look at parked work), so it reads only those: the URLs before the base's range
    and after it, on the index of pending rows by URL (schema 7); with none, two index lookups a connection."""
    found: list[Stranded] = []
    for name, base_url in base_urls.items():
        url, first, past = _base_range(journal, base_url)
        side = (
            f"SELECT {url} AS url FROM deliveries WHERE state = 'pending' AND connection = ? AND {url} {{}} ?"
        )
        count, example = journal._db.execute(
            f"""SELECT COUNT(*), MIN(url) FROM (
                    SELECT url FROM ({side.format("<")} LIMIT ?) AS before_base
                    UNION ALL SELECT url FROM ({side.format(">=")} LIMIT ?) AS after_base) AS outside""",
            (name, first, cap + 1, name, past, cap + 1),
        ).fetchone()
        if count:
            found.append(Stranded(name, min(int(count), cap), str(example), capped=count > cap))
    return found
