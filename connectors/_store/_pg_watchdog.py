"""A bound on a PostgreSQL statement's answer that holds whatever the server and the network do.

A statement is ended by the server at its ``statement_timeout``, and the answer comes at once. TCP's keepalives
and ``TCP_USER_TIMEOUT`` (``connect_arguments``) end a connection whose peer went silent. Neither ends a wait
on a peer that acknowledges everything and answers nothing: a server process stopped (SIGSTOP, a debugger), a
proxy or balancer that lost the flow but keeps the client's side open. :class:`StatementWatchdog` watches one
connection from a thread of its own: a statement still unanswered ``ANSWER_GRACE_S`` past its own timeout has
its connection cut (``shutdown`` of the socket, which wakes the blocked read at once), so it fails, and the
connection's owner opens a new one for the next statement.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time

# How long past a statement's statement_timeout its answer may still come (the server ends it then, and a
# result of many rows may take a moment to arrive).
ANSWER_GRACE_S = 5.0
WATCH_EVERY_S = 1.0  # how often the thread looks: a cut comes at most this late

_log = logging.getLogger("shipmap.connectors.store.watchdog")


class StatementWatchdog:
    """Watches the statements of one connection (``watch`` it after each connect); ``name`` says whose in the
    log. ``begin``/``end`` bracket each statement (a lock each, uncontended: no thread is started per
    statement)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None  # a duplicate of the connection's, to cut it from here
        self._due: float | None = None  # when the running statement's answer is overdue
        self._limit = 0.0
        self._cut = False
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, fileno: int) -> None:
        """A new connection, on the socket ``fileno``, replaces the one watched before."""
        with self._lock:
            self._forget()
            self._socket = socket.socket(fileno=os.dup(fileno))
            self._cut = False
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name="shipmap-pg-watchdog", daemon=True)
            self._thread.start()

    def begin(self, limit: float) -> None:
        """A statement that the server ends after ``limit`` seconds starts now."""
        with self._lock:
            self._limit = limit
            self._due = time.monotonic() + limit + ANSWER_GRACE_S

    def end(self) -> bool:
        """The statement has its answer or its error: whether its connection was cut meanwhile (it is of no
        use any more)."""
        with self._lock:
            self._due = None
            return self._cut

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            self._forget()

    def _forget(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()
            self._socket = None

    def _main(self) -> None:
        while not self._stopped.wait(WATCH_EVERY_S):
            with self._lock:
                if self._due is None or time.monotonic() < self._due or self._socket is None:
                    continue
                with contextlib.suppress(OSError):
                    self._socket.shutdown(socket.SHUT_RDWR)
                self._cut, self._due, limit = True, None, self._limit
            _log.warning(
                "%s: a statement had no answer %gs after its own %gs timeout (the server did not end it:"
                " it is stopped, or the network between acknowledges and forwards nothing); its connection was"
                " cut, and the next statement opens a new one",
                self.name,
                ANSWER_GRACE_S,
                limit,
            )
