"""A forked worker process that produces batches for the event loop: ``shipmap run``'s second core.

The runtime's event loop thread sends the requests; everything before that (reading and parsing the input,
routing, mapping, validating, encoding) is pure CPU and holds the GIL, so in one process it comes straight off
the sending. :class:`ForkedProducer` forks a child that runs a ``produce`` function, which yields lists of
picklable items, and hands those lists to the parent's event loop through a pipe, in order, as an async
iterator. The child starts from a copy of the parent (``os.fork``): the runtime, its compiled mappings and
the input iterator are already there, nothing is pickled but the results.

The child never touches the journal, the network or the parent's threads. It ignores SIGINT (the parent
decides how a run stops) and dies with its parent: on Linux by ``PR_SET_PDEATHSIG``, elsewhere when its next
write finds the pipe closed. It runs at a lower priority than its parent (``WORKER_NICENESS``). It closes
its copy of the journal's lock file at once, so a parent killed with ``kill -9`` releases the lock for the
next run even while the child is still winding down. Bounded memory: the pipe's buffer (1 MiB on Linux, room
for a whole batch) and the reader's limit hold back a child that runs ahead of the sender.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import struct
import sys
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


def fork_available() -> bool:
    return hasattr(os, "fork") and sys.platform != "win32"


class ForkedProducer:
    """Run ``produce()`` in a forked child; iterate its lists in the parent with ``async for``.

    ``start()`` forks (call it from the thread that runs the event loop); ``batches()`` yields each list;
    ``close()`` kills and reaps the child if it is still there. An exception raised in the child is raised
    again in the parent (a ShipmapError with its message when it cannot be pickled).
    """

    def __init__(
        self, produce: Callable[[], Iterator[list[Any]]], *, close_in_child: Iterable[int] = ()
    ) -> None:
        self._produce = produce
        self._close_in_child = tuple(close_in_child)
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
            _child(self._produce, write_fd, parent, self._close_in_child)
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
        try:
            while True:
                try:
                    header = await reader.readexactly(_HEADER.size)
                    message = await reader.readexactly(_HEADER.unpack(header)[0])
                except asyncio.IncompleteReadError:
                    status = self._reap(block=True)
                    raise ShipmapError(
                        f"the worker process that reads and maps the input stopped ({_describe(status)})"
                    ) from None
                kind, value = pickle.loads(message)
                if kind == "batch":
                    yield value
                elif kind == "end":
                    return
                else:
                    raise value
        finally:
            transport.close()
            self.close()

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


def _describe(status: int | None) -> str:
    if status is None:
        return "still running"
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _child(
    produce: Callable[[], Iterator[list[Any]]], write_fd: int, parent: int, close: tuple[int, ...]
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
                _send(out, ("end", None))
            except (BrokenPipeError, ConnectionResetError):
                code = 0  # the parent is gone or stopped reading: nothing left to do
            except BaseException as error:
                _send(out, ("error", _portable(error)))
                code = 1
    except BaseException:
        code = 1
    finally:
        os._exit(code)  # no atexit handlers, no flushing of the parent's buffers, no finalizers


def _send(out: Any, message: tuple[str, Any]) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_HEADER.pack(len(data)))
    out.write(data)
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
