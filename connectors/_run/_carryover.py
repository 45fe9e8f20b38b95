"""What one run of a ``Runtime`` leaves for the next, and for the runtime: :class:`Carryover`.

A ``Runtime`` keeps one for as long as it lives. A reload (``Runtime.use_mapper``) adds to it between runs, and
each ``Execution`` takes what is owed to it as it starts, so a reload's work is done once, by the next run. As
it ends, the execution hands back what the runtime keeps between runs (``Carryover.keep``): its summary and its
breaker store. The execution owns both while it runs; no run writes the runtime's attributes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from .._config import Connection
from .._deliver._breaker import MemoryStore, StateStore
from .._deliver._rate_limiter import Server, server_of
from .._summary import RunSummary


@dataclass
class Carryover:
    """What carries from one run of a runtime to the next.

    ``moves``: connections a reload moved to another base_url, in order, as (name, old base_url, new
    base_url): the next run points their pending deliveries there too. ``close_shared``: connections whose
    credentials or headers a reload changed: the next run closes their shared (PostgreSQL) breakers, which
    saw the old ones. ``stranded_named``: the (connection, base_url) pairs whose deliveries pending for another
    base a run has named in the log: once per runtime is enough.

    ``resume``: the deliveries a run's end interrupted while they waited out a backoff or a Retry-After, by
    key: when the wait ends (monotonic) and the failure they retry ("" for a hold). The next run that sends
    one waits out the rest first (``Deliverer``). The journal keeps it too (the row's ``not_before``): a run
    adds the waits of the rows it recovers, which a restart or another worker left (``Outbox.recover``).

    ``holds``: by connection, the Retry-After that held its requests as the last run ended: the server that
    asked for it (scheme, host, port) and when it ends (monotonic). The next run's limiters take it while the
    connection is on that server (``holds_to_carry``); a reload that moved it to another starts it without.

    ``summary``: the last run's (None before the first), which ``Runtime.live`` gives between runs.
    ``breaker_store``: the breaker and rate-limit state the next run starts from, which outlives a run like the
    auth sessions: this process's own, until a run on a PostgreSQL journal hands back the shared store it used
    (its records, as last read, are what ``Runtime.breaker_store`` says between runs).
    """

    moves: list[tuple[str, str, str]] = field(default_factory=list)
    close_shared: set[str] = field(default_factory=set)
    stranded_named: set[tuple[str, str]] = field(default_factory=set)
    resume: dict[str, tuple[float, str]] = field(default_factory=dict)
    holds: dict[str, tuple[Server, float]] = field(default_factory=dict)
    summary: RunSummary | None = None
    breaker_store: StateStore = field(default_factory=MemoryStore)

    def keep(self, summary: RunSummary, breaker_store: StateStore) -> None:
        """What a run hands back as it ends, however it ends: its summary and the breaker store it used."""
        self.summary = summary
        self.breaker_store = breaker_store

    def waits_to_resume(self) -> dict[str, tuple[float, str]]:
        """``resume`` for the run starting now, the waits already over dropped: a key no run sends again
        (delivered by another worker, say) is forgotten once its wait is over, so the map stays small."""
        now = time.monotonic()
        for key in [key for key, (until, _) in self.resume.items() if until <= now]:
            del self.resume[key]
        return self.resume

    def keep_holds(self, held: Mapping[str, float], connections: Mapping[str, Connection]) -> None:
        """The holds a run leaves as it ends (``held``: seconds left by connection, ``Deliverer.holds``), each
        with the server of its connection (``connections``: the run's)."""
        now = time.monotonic()
        self.holds = {
            name: (server_of(connections[name].base_url), now + seconds) for name, seconds in held.items()
        }

    def holds_to_carry(self, connections: Mapping[str, Connection]) -> dict[str, float]:
        """The seconds left of each hold, for the run starting now over ``connections``: a Retry-After speaks
        for the server that sent it, so not for a connection a reload moved to another server (nor one it
        dropped), and not once it is over."""
        now = time.monotonic()
        return {
            name: until - now
            for name, (server, until) in self.holds.items()
            if until > now and name in connections and server_of(connections[name].base_url) == server
        }

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
