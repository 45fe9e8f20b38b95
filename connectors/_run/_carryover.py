"""What one run of a ``Runtime`` leaves for the next: :class:`Carryover`.

A ``Runtime`` keeps one for as long as it lives. A reload (``Runtime.use_mapper``) adds to it between runs, and
each ``Execution`` takes what is owed to it as it starts, so a reload's work is done once, by the next run.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Carryover:
    """What carries from one run of a runtime to the next.

    ``moves``: connections a reload moved to another base_url, in order, as (name, old base_url, new
    base_url): the next run points their pending deliveries there too. ``close_shared``: connections whose
    credentials or headers a reload changed: the next run closes their shared (PostgreSQL) breakers, which
    saw the old ones. ``stranded_named``: the (connection, base_url) pairs whose deliveries pending for another
    base a run has named in the log: once per runtime is enough.
    """

    moves: list[tuple[str, str, str]] = field(default_factory=list)
    close_shared: set[str] = field(default_factory=set)
    stranded_named: set[tuple[str, str]] = field(default_factory=set)

    def take_moves(self) -> list[tuple[str, str, str]]:
        """The moves owed to the run starting now; the next run owes none unless a reload adds some."""
        moves, self.moves = self.moves, []
        return moves

    def take_close_shared(self) -> set[str]:
        """The shared breakers the run starting now closes; the next run closes none unless a reload adds some."""
        closing, self.close_shared = self.close_shared, set()
        return closing

    def first_naming(self, connection: str, base_url: str) -> bool:
        """Whether deliveries stranded on ``connection`` at ``base_url`` are named for the first time (and
        from now on they count as named)."""
        pair = (connection, base_url)
        if pair in self.stranded_named:
            return False
        self.stranded_named.add(pair)
        return True
