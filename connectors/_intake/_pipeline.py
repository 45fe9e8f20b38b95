"""A forked worker process that produces batches for the event loop: ``shipmap run``'s second core.

The runtime's event loop thread sends the requests; everything before that (reading and parsing the input,
routing, mapping, validating, encoding) is pure CPU and holds the GIL, so in one process it comes straight off
the sending. :class:`ForkedProducer` forks a child that runs a ``produce`` function, which yields lists of
picklable items, and hands those lists to the parent's event loop through a pipe, in order, as an async
iterator. The child starts from a copy of the parent (``os.fork``): the runtime, its compiled mappings and
the input iterator are already there, nothing is pickled but the results.

The child never touches the journal, the network or the parent's threads. It ignores SIGINT (the parent
decides how a run stops) and dies with its parent: on Linux by ``PR_SET_PDEATHSIG``, elsewhere when its next
write finds the pipe closed. It runs at a lower priority than its parent (``WORKER_NICENESS``), and on Linux,
where this process may lift it back, under ``SCHED_IDLE`` once it is ahead: it gets a core only when nothing
else wants one, so the destination and the event loop never wait behind it. A ``SCHED_IDLE`` process can
starve on a busy host; :class:`IdleGuard` watches for that (the parent waiting for a batch while the worker
waits for a core) and lifts it back to the normal policy at its niceness until it is ahead again. It closes
its copy of the journal's lock file at once, so a parent killed with ``kill -9`` releases the lock for the
next run even while the child is still winding down. Bounded memory: the pipe's buffer (1 MiB on Linux, room
for a whole batch) and the reader's limit hold back a child that runs ahead of the sender.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import os
import pickle
import signal
import struct
import sys
import threading
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from typing import Any, NoReturn

from shipmap.engine import ShipmapError

_HEADER = struct.Struct("<I")
_READ_LIMIT = 1024 * 1024  # about how far the parent's reader buffers ahead before it stops reading the pipe
# The pipe's own buffer (Linux: F_SETPIPE_SZ; 1 MiB is what an unprivileged process may ask for). The default
# 64 KiB holds less than half a batch (16 events of ~8.4 KB), so each batch cost both processes several
# blocked writes, wake-ups and reads.
_PIPE_SIZE = 1024 * 1024
# The child works ahead and mostly waits on a full pipe, while the parent's sending is what sets the pace:
# when both want the same core, the parent goes first. (Measured on two cores with the sandbox alongside:
# about 10% more events per second than at equal priority; benchmarks/RESULTS.md.)
WORKER_NICENESS = 5
_EXIT_GRACE = 5.0  # seconds a worker that sent its last message has to exit before it is killed
# IdleGuard's window, and the share of it that the parent waiting for batches and the worker waiting for a
# core must each reach for the worker to count as starved. A worker with a core sends a batch every ~2 ms
# and mostly waits on a full pipe: the parent then never waits its share, however busy the machine.
STARVED_WINDOW = 0.25
# Half: a worker under SCHED_IDLE on two cores shared with the destination gets only the idle moments, and the
# parent then waits 1-33% of a window for its batches; lifting it at a quarter took cores from the destination
# (its run-queue wait 20-30 -> 40-50 us a request) and cost more than those waits (benchmarks/RESULTS.md,
# session 6). A worker that really starves, behind busy processes, leaves the parent waiting most of the window.
STARVED_SHARE = 0.5
# The worker starts under the normal policy (its start-up, compiling and the first batches, is what the run
# waits for) and enters SCHED_IDLE after this many windows in a row in which the parent waited for batches
# less than CALM_SHARE of the time: it is ahead. After a lift, it takes _CALM_GROWTH times as many calm windows
# to go back (0.5 s, then 2 s, 8 s, 32 s...), so on a host that stays busy the worker soon stays lifted.
_CALM_WINDOWS = 2
_CALM_GROWTH = 4
CALM_SHARE = 0.05
_log = logging.getLogger("shipmap.connectors.worker")


def fork_available() -> bool:
    return hasattr(os, "fork") and sys.platform != "win32"


class ForkedProducer:
    """Run ``produce()`` in a forked child; iterate its lists in the parent with ``async for``.

    ``start()`` forks (call it from the thread that runs the event loop); ``batches()`` yields each list;
    ``close()`` kills and reaps the child if it is still there. An exception raised in the child is raised
    again in the parent (a ShipmapError with its message when it cannot be pickled).
    """

    def __init__(
        self,
        produce: Callable[[], Iterator[list[Any]]],
        *,
        close_in_child: Iterable[int] = (),
        idle: bool | None = None,
        starved_window: float = STARVED_WINDOW,
    ) -> None:
        self._produce = produce
        self._close_in_child = tuple(close_in_child)
        # SCHED_IDLE only where the guard can lift the worker back (a process without CAP_SYS_NICE and with
        # RLIMIT_NICE 0, the usual unprivileged case, cannot): else the niceness alone.
        self.idle = idle_policy_liftable() if idle is None else idle
        self.starved_window = starved_window
        self.guard: IdleGuard | None = None
        self.pid: int | None = None
        self._read_fd: int | None = None
        self.exit_status: int | None = None

    def start(self) -> None:
        read_fd, write_fd = os.pipe()
        with contextlib.suppress(OSError, AttributeError, ImportError):  # a smaller pipe only costs speed
            import fcntl

            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; its coverage is not collected
            os.close(read_fd)
            _child(self._produce, write_fd, parent, self._close_in_child, self.idle)
        os.close(write_fd)
        self.pid, self._read_fd = pid, read_fd

    async def batches(self) -> AsyncGenerator[list[Any], None]:
        if self._read_fd is None:
            self.start()
        assert self._read_fd is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_READ_LIMIT, loop=loop)
        pipe = os.fdopen(self._read_fd, "rb", buffering=0)
        self._read_fd = -1  # the transport owns it now
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
        guard = self.guard = (
            IdleGuard(self.pid, self.starved_window, loop) if self.idle and self.pid else None
        )
        try:
            while True:
                try:
                    if guard is not None:
                        guard.waiting_since = loop.time()
                    header = await reader.readexactly(_HEADER.size)
                    message = await reader.readexactly(_HEADER.unpack(header)[0])
                    if guard is not None:
                        guard.got_batch()
                except asyncio.IncompleteReadError:
                    status = self._reap(block=True)
                    raise ShipmapError(
                        f"the worker process that reads and maps the input stopped ({_describe(status)})"
                    ) from None
                kind, value = pickle.loads(message)
                if kind == "batch":
                    yield value
                elif kind == "end":
                    if guard is not None:
                        guard.stop()  # the worker left SCHED_IDLE itself to exit at once
                    await self._exited(reader)
                    return
                else:
                    raise value
        finally:
            if guard is not None:
                guard.stop()
            transport.close()
            self.close()

    async def _exited(self, reader: asyncio.StreamReader) -> None:
        """After its last message the child only exits: give it until ``_EXIT_GRACE`` to do so (its end of
        the pipe closes, then it can be reaped) before ``close`` kills it, so a worker that had no core at
        that moment (low priority, a busy machine) ends with its own exit status."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _EXIT_GRACE
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await reader.read()  # to the end of the pipe
                while self._reap(block=False) is None:
                    await asyncio.sleep(0.001)

    def close(self) -> None:
        """Kill the child if it still runs, and reap it. Idempotent."""
        if self._read_fd is not None and self._read_fd >= 0:
            os.close(self._read_fd)
            self._read_fd = -1
        if self.pid is None or self.exit_status is not None:
            return
        if self._reap(block=False) is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self._reap(block=True)

    def _reap(self, *, block: bool) -> int | None:
        if self.pid is None:
            return None
        if self.exit_status is None:
            try:
                pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, 0
            if pid:
                self.exit_status = status
        return self.exit_status


class IdleGuard:
    """Puts the worker under ``SCHED_IDLE`` while it is ahead, and lifts it back to the normal policy (at its
    niceness) while it starves.

    Every ``window`` seconds it looks at the time the parent spent waiting for a batch in that window. When
    that reaches ``STARVED_SHARE`` of it and the worker was starved meanwhile, i.e. it waited in the run
    queue for a core for that share too, or it is runnable now and ran for less than that share (the kernel
    counts a wait only once it ends: ``/proc/PID/schedstat``, ``/proc/PID/stat``), the run is being held
    back by a worker that other processes keep off the cores, and the guard lifts it. A large batch leaves
    the worker running and a slow input leaves it asleep: neither is starving. Where /proc cannot be read,
    the parent's wait alone decides (``STARVED_SHARE`` of the window). The worker starts under the normal policy and enters
    ``SCHED_IDLE`` once it is ahead (the parent waited less than ``CALM_SHARE`` of each window for
    ``_CALM_WINDOWS`` windows in a row); each lift multiplies the calm it needs to go back by
    ``_CALM_GROWTH``. Every change is made here, on the parent's event loop, so none can overtake another.
    The parent sets ``waiting_since`` when it starts reading the pipe and calls ``got_batch`` when a batch
    has come.
    """

    def __init__(
        self, pid: int, window: float, loop: asyncio.AbstractEventLoop, *, idle: bool = False
    ) -> None:
        self.pid = pid
        self.window = window
        self.waiting_since: float | None = None
        # Whether the worker is under SCHED_IDLE (a forked worker starts under the normal policy).
        self.idle = idle
        self.lifts = 0
        self.looks = 0  # windows in which the parent waited its share (tests read it)
        self._calm_needed = _CALM_WINDOWS
        self._calm = 0  # windows in a row, since the last lift, in which the parent hardly waited
        self._loop = loop
        self._waited = 0.0  # the parent's wait for batches in this window so far
        self._sched = schedstat(pid)  # (CPU, run-queue wait) seconds at the last look
        self._last = loop.time()
        self._handle: asyncio.TimerHandle | None = loop.call_later(window, self._look)

    @property
    def lifted(self) -> bool:
        """Whether the worker was lifted out of ``SCHED_IDLE`` at least once."""
        return self.lifts > 0

    def got_batch(self) -> None:
        if self.waiting_since is not None:
            self._waited += self._loop.time() - self.waiting_since
            self.waiting_since = None

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _look(self) -> None:
        now = self._loop.time()
        waited, self._waited = self._waited, 0.0
        if self.waiting_since is not None:  # a wait still going on counts up to now, the rest in the next
            waited += now - self.waiting_since
            self.waiting_since = now
        sched, before = schedstat(self.pid), self._sched
        span = max(now - self._last, 1e-9)
        share = span * STARVED_SHARE
        self._sched, self._last = sched, now
        self._handle = self._loop.call_later(self.window, self._look)
        if waited >= share:
            self.looks += 1
        if not self.idle:
            self._calm = self._calm + 1 if waited < span * CALM_SHARE else 0
            if self._calm >= self._calm_needed and self._set(os.SCHED_IDLE):
                self.idle, self._calm = True, 0
                _log.debug("the worker process is ahead: under SCHED_IDLE from now")
            return
        if waited < share:
            return
        if sched is None or before is None:  # no /proc: the parent's wait alone decides
            starved = True
        else:
            ran, queued = sched[0] - before[0], sched[1] - before[1]
            starved = queued >= share or (ran < share and _runnable(self.pid))
        if starved and self._set(os.SCHED_OTHER):
            self.idle = False
            self.lifts += 1
            self._calm_needed *= _CALM_GROWTH
            (_log.info if self.lifts == 1 else _log.debug)(
                "the worker process waited for a core while the run waited for its batches (%.0f%% of the"
                " last %.2f s): it runs at niceness +%d instead of SCHED_IDLE until it is ahead again",
                100 * waited / span,
                span,
                WORKER_NICENESS,
            )

    def _set(self, policy: int) -> bool:
        try:
            os.sched_setscheduler(self.pid, policy, os.sched_param(0))
        except OSError as error:  # gone, or no longer permitted
            _log.debug("the worker process's scheduling policy could not be changed: %s", error)
            self.stop()
            return False
        return True


def schedstat(pid: int) -> tuple[float, float] | None:
    """Seconds ``pid`` has run on a core and waited in the run queue for one so far (Linux), else None."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as handle:
            fields = handle.read().split()
        return int(fields[0]) / 1e9, int(fields[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def _runnable(pid: int) -> bool:
    """Whether ``pid`` is running or waiting for a core (state R), not asleep."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] == b"R"
    except (OSError, IndexError):
        return False


@functools.cache
def idle_policy_liftable() -> bool:
    """Whether a process at ``WORKER_NICENESS`` under ``SCHED_IDLE`` may be set back to ``SCHED_OTHER`` by
    this user (Linux: CAP_SYS_NICE, or an RLIMIT_NICE that allows the niceness). Tried on a short-lived
    thread, whose policy and niceness are its own, so this process keeps its own whatever the answer."""
    if not hasattr(os, "SCHED_IDLE") or not sys.platform.startswith("linux"):
        return False
    answer: list[bool] = []

    def probe() -> None:
        try:
            me = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, me, os.getpriority(os.PRIO_PROCESS, me) + WORKER_NICENESS)
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
            answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=probe, name="shipmap-sched-probe", daemon=True)
    thread.start()
    thread.join()
    return bool(answer and answer[0])


def _describe(status: int | None) -> str:
    if status is None:
        return "still running"
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _child(
    produce: Callable[[], Iterator[list[Any]]],
    write_fd: int,
    parent: int,
    close: tuple[int, ...],
    idle: bool,
) -> NoReturn:  # pragma: no cover - runs in the forked child
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for fd in close:
            with contextlib.suppress(OSError):
                os.close(fd)
        die_with(parent)
        with contextlib.suppress(OSError):
            os.nice(WORKER_NICENESS)
        with os.fdopen(write_fd, "wb") as out:
            try:
                for batch in produce():
                    _send(out, ("batch", batch))
                _leave_idle(idle)
                _send(out, ("end", None))
            except (BrokenPipeError, ConnectionResetError):
                code = 0  # the parent is gone or stopped reading: nothing left to do
            except BaseException as error:
                _leave_idle(idle)
                _send(out, ("error", _portable(error)))
                code = 1
    except BaseException:
        code = 1
    finally:
        os._exit(code)  # no atexit handlers, no flushing of the parent's buffers, no finalizers


def _leave_idle(idle: bool) -> None:  # pragma: no cover - runs in the forked child
    """Before its last message: the parent reaps the worker right after it, and kills one that has not exited
    yet, which a SCHED_IDLE worker on a busy machine may not have (a lift it is allowed: see ``idle``)."""
    if idle:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def _send(out: Any, message: tuple[str, Any]) -> None:
    """One write per message: a header written alone woke the parent for 4 bytes, then again for the rest."""
    buffer = io.BytesIO()
    buffer.write(bytes(_HEADER.size))
    pickle.dump(message, buffer, protocol=pickle.HIGHEST_PROTOCOL)
    with buffer.getbuffer() as view:
        _HEADER.pack_into(view, 0, len(view) - _HEADER.size)
        out.write(view)
    out.flush()


def _portable(error: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return ShipmapError(f"{type(error).__name__}: {error}")
    return error


def die_with(parent: int) -> None:  # pragma: no cover - runs in the forked child
    """Have the kernel kill this process when its parent dies (Linux); stop now if it already has."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(0)
