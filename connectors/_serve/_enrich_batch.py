"""Enrichment over a sequence of events: ``shipmap run``'s skinny events from files (``enrich_records``) and
``shipmap replay --refetch``'s stored ones (``refetcher``), fetched as ``shipmap serve`` fetches webhooks
(several of a source at once, in their order within it: ``_lanes``), through an :class:`Enricher`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping
from typing import Any, TypeVar

import httpx
from shipmap.engine import SourceDocument

from .._redact import get_logger
from .._runtime import Runtime
from ._enrich import Enricher, concurrency_of, lane_of
from ._enrich_errors import EnrichmentError
from ._lanes import Fetch, through_lanes
from ._settings import Enrichment

T = TypeVar("T")


async def enrich_records(
    runtime: Runtime,
    records: Iterable[Any],
    enrichments: Mapping[str, Enrichment],
    *,
    refetch: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[Any]:
    """``shipmap run`` on skinny events from files: each event whose ``source`` names a source with ``enrich``
    (and whose topic it takes) gains its fetched documents before it is routed. An event that already holds
    them (captured from ``shipmap serve``, say) keeps them unless ``refetch``. A fetch that fails makes the
    event a rejected input record with the reason; the others go on. Events are fetched as ``shipmap serve``
    fetches webhooks: up to their source's ``enrich.concurrency`` at once, handed on in their order within
    their source (``_lanes``)."""

    def plan(record: SourceDocument) -> tuple[str, Fetch[SourceDocument] | None]:
        event = record.document
        if not record.ok or not isinstance(event, dict):
            return "", None
        source = lane_of(event)
        if not enricher.applies(event) or (
            not refetch and all(name in event for name in enrichments[source].fetch)
        ):
            return source, None  # ready, behind its source's events being fetched
        return source, lambda: _enriched(record, event)

    async def _enriched(record: SourceDocument, event: dict[str, Any]) -> SourceDocument:
        try:
            documents = await enricher.documents(event)
        except EnrichmentError as error:
            excerpt = runtime.redactor.excerpt(json.dumps(event, ensure_ascii=False), 500)
            return SourceDocument(record.origin, error=f"enrichment failed: {error.message}", excerpt=excerpt)
        return SourceDocument(record.origin, document={**event, **documents})

    read = (
        item if isinstance(item, SourceDocument) else SourceDocument(f"event[{index}]", document=item)
        for index, item in enumerate(records)
    )
    async with (
        Enricher(runtime, enrichments, transport=transport) as enricher,
        contextlib.aclosing(through_lanes(read, plan, concurrency_of(enrichments))) as enriched,
    ):
        async for record in enriched:
            yield record


def refetcher(
    runtime: Runtime, enricher: Enricher
) -> Callable[[Iterable[tuple[T, Any]]], AsyncGenerator[tuple[T, Any], None]]:
    """``shipmap replay --refetch``: stored enriched events with their documents fetched again, as ``run``
    fetches them (several of a source at once, in their order within it). A document that is not such an
    event (its route's ``body`` kept only part of it) is passed on as it is, and so is one whose fetch fails
    now (with a warning): the replay then maps what was stored."""
    log = get_logger("serve.enrich", runtime.redactor, runtime_name=runtime.name)

    def plan(pair: tuple[T, Any]) -> tuple[str, Fetch[tuple[T, Any]] | None]:
        document = pair[1]
        if not isinstance(document, dict):
            return "", None
        return lane_of(document), (lambda: refetched(pair)) if enricher.applies(document) else None

    async def refetched(pair: tuple[T, Any]) -> tuple[T, Any]:
        key, document = pair
        try:
            return key, {**document, **await enricher.documents(document)}
        except EnrichmentError as error:
            log.warning("refetch failed (%s); replaying the stored documents", error.message)
            return pair

    def refetch(pairs: Iterable[tuple[T, Any]]) -> AsyncGenerator[tuple[T, Any], None]:
        return through_lanes(pairs, plan, concurrency_of(enricher.enrichments))

    return refetch
