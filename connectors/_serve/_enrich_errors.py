"""What an enrichment failure is: a GET failed for good (:class:`EnrichmentError`, the webhook rejected), or its
source API cannot answer now (:class:`SourceUnavailable`: the webhook waits in the inbox), and the three ways
the ``Enricher`` comes to say "later": an open breaker, a reload that replaced or let go the connection."""

from __future__ import annotations

from .._deliver._breaker import CircuitBreaker
from .._errors import ConnectorError


class EnrichmentError(ConnectorError):
    """A declared GET failed for good (after its retries): the event cannot be mapped yet."""


class SourceUnavailable(EnrichmentError):
    """The source API's circuit breaker is open: try the event again once ``retry_in`` seconds have passed.
    Not a verdict on the event: ``shipmap serve`` keeps it in the inbox, it is never dead-lettered there.
    ``by_reload``: a reload replaced the settings the GET went with; try again now, with the new ones."""

    def __init__(
        self,
        connection: str,
        reason: str,
        retry_in: float,
        *,
        why: str = "circuit breaker open",
        by_reload: bool = False,
    ) -> None:
        super().__init__(f"source API {connection} unavailable ({why}: {reason})")
        self.connection = connection
        self.retry_in = retry_in
        self.by_reload = by_reload


def replaced_during_get(connection: str, reason: str) -> SourceUnavailable:
    """A GET that failed through a client a reload replaced: later (now), through the new one."""
    return SourceUnavailable(
        connection, reason, 0.0, why="its settings were replaced by a reload during the GET", by_reload=True
    )


def let_go_by_reload(connection: str) -> SourceUnavailable:
    """A fetch whose connection a reload let go before its GETs went: later (now), with the section in use."""
    return SourceUnavailable(
        connection, "no enrich fetches over it now", 0.0, why="let go by a reload", by_reload=True
    )


def while_open(breaker: CircuitBreaker) -> SourceUnavailable:
    """A GET's answer while its source API's breaker is open: when to try again, on the clock of the record's
    times (a shared record's are the database's)."""
    state = breaker.state
    return SourceUnavailable(breaker.name, state.reason, max(0.0, state.retry_at - breaker.now()))
