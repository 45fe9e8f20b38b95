"""What ``/readyz`` says of the delivery side beside the inbox: each connection's circuit breaker (delivery's
and enrichment's), a stalled delivery, parked work. None of it makes the service unready (``_service``'s
docstring says why); a probe that wants to alert on an outage reads ``degraded`` and ``outages``.
"""

from __future__ import annotations

import time
from typing import Any

from .._deliver._breaker import BreakerState, store_now
from .._runtime import Runtime
from ._delivery_loop import DeliveryLoop

_FURTHER_FROM_CLOSED = {"closed": 0, "half_open": 1, "open": 2}


def breaker_records(runtime: Runtime, delivery: DeliveryLoop | None) -> dict[str, tuple[BreakerState, float]]:
    """Each connection's breaker record, by connection name, with now on the clock of its times (a
    PostgreSQL store's are the database's). Delivery's live in the runtime's store, which on a PostgreSQL
    journal each run replaces with its own shared one; enrichment's in the store its enricher took at
    start (``delivery``, while it serves). A connection in both (enriched from and delivered to) shows the
    one furthest from closed. A connection a reload added for a source's ``enrich`` is listed from the reload,
    before delivery takes it (closed until its GETs say otherwise)."""
    stores = [runtime.breaker_store]
    enriching = delivery.enrichment_breakers() if delivery is not None else None
    if enriching is not None and enriching is not stores[0]:
        stores.append(enriching)
    names = list(runtime.connections)
    if delivery is not None:
        names += sorted(delivery.enrichment_connections() - runtime.connections.keys())
    return {
        name: max(
            ((store.breaker(name), store_now(store)) for store in stores),
            key=lambda pair: _FURTHER_FROM_CLOSED[pair[0].phase],
        )
        for name in names
    }


def phases(records: dict[str, tuple[BreakerState, float]]) -> dict[str, str]:
    """Each connection's breaker state (closed, half_open, open)."""
    return {name: str(record.phase) for name, (record, _) in records.items()}


def readiness(runtime: Runtime, delivery: DeliveryLoop) -> dict[str, Any]:
    """``/readyz``'s details of the delivery side."""
    now = time.monotonic()  # the stall's clock
    records = breaker_records(runtime, delivery)
    outages = {}
    for name, (record, at) in records.items():
        if record.phase != "closed":
            outages[name] = {
                "state": record.phase,
                "reason": record.reason,
                "open_for_seconds": round(max(0.0, at - record.opened_at), 1),
                "next_probe_in_seconds": round(max(0.0, record.retry_at - at), 1),
                "probes": record.probes,
            }
    stall = delivery.stalled
    stalled = None
    if stall is not None:
        stalled = {
            "reason": stall.reason,
            "for_seconds": round(max(0.0, now - stall.since), 1),
            "next_run_in_seconds": round(max(0.0, stall.retry_at - now), 1),
        }
    parked_here, parked_in_journal = delivery.parked_deliveries()
    return {
        "delivering": delivery.running,
        "delivery_starting": delivery.starting,
        "breakers": phases(records),
        # A destination or source API is down, or sends keep raising: intake still accepts.
        "degraded": bool(outages) or stalled is not None,
        "outages": outages,
        "delivery_stalled": stalled,
        "parked_deliveries": parked_here,
        "journal_parked_deliveries": parked_in_journal,
        "parked_webhooks": delivery.parked_webhooks(),
        "enrichment": delivery.enrichment(),
    }
