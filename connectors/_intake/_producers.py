"""Intake for ``run`` and ``replay``: the events of an input, in order, as batches of expanded events.

A producer pulls inbound events (documents, or the SourceDocuments of ``read_inputs``), hands each to the map
stage, and yields batches for the store to settle. :func:`produce` runs in the event loop's process (a sync
input is read on a worker thread); :func:`produce_packed` runs in the forked worker process
(``_pipeline.ForkedProducer``), and :func:`unpack_batches` turns its output back into steps. Replay's
producer reads its events from the journal's dead letters instead of an input.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from typing import Any, TypeVar

from shipmap.engine import SourceDocument

from .._map._mapper import EventMapper
from .._map._steps import Item, pack, unpack
from .._store._entries import JournalEntry
from .._store._journal import Journal

T = TypeVar("T")
BATCH = 16  # events settled (journaled in one transaction) at a time
_CHUNK = 256


async def produce(
    mapper: EventMapper, events: Iterable[Any] | AsyncIterable[Any]
) -> AsyncGenerator[list[Item], None]:
    """Batches of expanded events. The journal is not read here: the run decides what to skip when it
    settles each batch, against the journal as it is then (``Outbox.settle``)."""
    index = 0
    async for chunk in aiter_batches(events, BATCH):
        batch: list[Item] = []
        for item in chunk:
            record = as_record(item, index)
            index += 1
            batch.append(mapper.expand_event(record, None))
        yield batch


def produce_packed(mapper: EventMapper, events: Iterable[Any]) -> Iterator[list[tuple[Any, ...]]]:
    """``produce`` in the worker process: batches (small at first, so sending starts at once) of events
    packed as tuples, which cross the pipe and unpickle faster than the step objects."""
    mapper.prepare()  # the checked code at once: the first payloads need no kind check compiled for them
    batch: list[tuple[Any, ...]] = []
    size = 2
    for index, item in enumerate(events):
        record = as_record(item, index)
        batch.append(pack(mapper.expand_event(record, None)))
        if len(batch) >= size:
            yield batch
            batch = []
            size = min(size * 2, BATCH)
    if batch:
        yield batch


async def unpack_batches(
    batches: AsyncGenerator[list[tuple[Any, ...]], None],
) -> AsyncGenerator[list[Item], None]:
    async with contextlib.aclosing(batches):
        async for batch in batches:
            yield [unpack(packed) for packed in batch]


# Replaces stored source documents before a replay maps them: takes the (dead letter, document) pairs in
# journal order and gives each back with its document, fetched again, say (``shipmap replay --refetch``), in
# an order of its choosing.
Refresh = Callable[[Iterable[tuple[JournalEntry, Any]]], AsyncGenerator[tuple[JournalEntry, Any], None]]


async def produce_replay(
    mapper: EventMapper,
    journal: Journal,
    keys: Sequence[str] | None,
    refresh: Refresh | None,
) -> AsyncGenerator[list[Item], None]:
    """The dead letters (all, or those whose key starts with one of ``keys``), one batch each, re-mapped from
    their stored source documents (``refresh`` may replace the documents first)."""
    stored = (
        (entry, journal.source(entry.source_hash))
        for page in journal.dead_letter_pages(keys)
        for entry in page
    )
    if refresh is None:
        for entry, source in stored:
            yield [mapper.expand_replay(entry, journal, source)]
        return
    async with contextlib.aclosing(refresh(stored)) as refreshed:
        async for entry, source in refreshed:
            yield [mapper.expand_replay(entry, journal, source)]


def as_record(item: Any, index: int) -> SourceDocument:
    return item if isinstance(item, SourceDocument) else SourceDocument(f"event[{index}]", document=item)


async def aiter_batches(events: Iterable[T] | AsyncIterable[T], size: int) -> AsyncIterator[list[T]]:
    """Lists of at most ``size`` items of a sync or async iterable. Sync ones are pulled in chunks on a worker
    thread, so a slow stdin or a large file never blocks the event loop while deliveries are in flight; an
    async one's items come one at a time, as they arrive."""
    if isinstance(events, AsyncIterable):
        async for item in events:
            yield [item]
        return
    if isinstance(events, list | tuple):
        for start in range(0, len(events), size):
            yield list(events[start : start + size])
        return
    iterator = iter(events)

    def take() -> list[T]:
        chunk: list[T] = []
        for item in iterator:
            chunk.append(item)
            if len(chunk) >= _CHUNK:
                break
        return chunk

    while True:
        chunk = await asyncio.to_thread(take)
        if not chunk:
            return
        for start in range(0, len(chunk), size):
            yield chunk[start : start + size]
