"""Every core of one machine: an ordered process pool for ``preview``, ``test`` and ``run --dry-run``.

Mapping is pure CPU and holds the GIL, so threads do not help; processes do. :func:`ordered_map` runs a
function over chunks of work in ``jobs`` processes and yields the results **in input order**, holding at
most a few chunks per process in flight, so memory stays flat however long the input is.

Each worker process gets a *context* once, when it starts (the compiled mapping, or the runtime of a dry
run), and every task receives it with its chunk. Where ``os.fork`` exists the workers are forked, so the
context is inherited as it is, nothing compiled again; elsewhere they are spawned and the context is pickled
(a :class:`~shipmap.engine.CompiledMapping` pickles as its YAML text). A chunk of a file is a byte range
that the worker reads itself (:func:`shipmap.engine._chunks.read_chunks`), so reading and parsing happen in
the workers too, and results come back as the finished text the parent only writes out: nothing per event
crosses the process boundary.

``jobs=1`` (or an input that fits in one chunk) runs in this process: no pool, no start-up cost.
"""

from __future__ import annotations

import gc
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

C = TypeVar("C")
T = TypeVar("T")
R = TypeVar("R")

_IN_FLIGHT_PER_JOB = 4  # chunks queued per worker: enough to hide a slow chunk, few enough to bound memory
_context: Any = None  # the worker process's context (set once per worker by _install)


def default_jobs() -> int:
    """The cores this process may use (its CPU affinity where the OS says, else the CPU count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def ordered_map(
    function: Callable[[C, T], R],
    context: C,
    chunks: Iterable[T],
    *,
    jobs: int,
) -> Iterator[R]:
    """``function(context, chunk)`` for every chunk, in ``jobs`` processes; results in the chunks' order.

    ``function`` must be a module-level function (it is pickled by name). An exception raised by one call
    is raised here, at that chunk's place in the order; the pool is shut down before it propagates. With
    ``jobs <= 1``, or when ``chunks`` holds a single chunk, everything runs in this process."""
    iterator = iter(chunks)
    first = next(iterator, None)
    if first is None:
        return
    second = next(iterator, None)
    if jobs <= 1 or second is None:
        yield function(context, first)
        if second is not None:
            yield function(context, second)
            for chunk in iterator:
                yield function(context, chunk)
        return
    # Imported only for a pool: a one-document preview or test starts without asyncio or multiprocessing.
    import concurrent.futures
    import multiprocessing

    from .._intake._pipeline import fork_available

    method = "fork" if fork_available() else "spawn"
    # What forked workers inherit (modules, the compiled mapping) moves out of the collector's reach: their
    # collections then neither walk it nor write to its pages, which would copy them one by one. (A program
    # that froze its own objects already keeps them so.)
    frozen = method == "fork" and gc.get_freeze_count() == 0
    if frozen:
        gc.freeze()
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context(method),
        initializer=_install,
        initargs=(context,),
    )
    pending: deque[concurrent.futures.Future[R]] = deque()
    window = jobs * _IN_FLIGHT_PER_JOB
    try:
        for chunk in _prepend(first, second, iterator):
            pending.append(pool.submit(_call, function, chunk))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        if frozen:
            gc.unfreeze()


def _prepend(first: T, second: T, rest: Iterator[T]) -> Iterator[T]:
    yield first
    yield second
    yield from rest


def _install(context: Any) -> None:  # runs once in each worker process
    from .._intake._pipeline import die_with

    global _context
    _context = context
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool
    # A parent killed outright (SIGTERM, SIGKILL) cannot shut the pool down: its workers die with it.
    die_with(os.getppid())


def _call(function: Callable[[Any, T], R], chunk: T) -> R:
    return function(_context, chunk)
