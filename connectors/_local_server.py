"""A local HTTP server for one ASGI app: uvicorn on a socket bound here, in a background thread or in the
calling one. The sandbox and the studio both run on it."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0
MAX_HEAD = 64 * 1024  # a request's target and header lines, together: past it the request is refused (431)


class _HeadTooLarge(Exception):
    """Raised from the parser's callback: stops parsing a head past ``MAX_HEAD``."""


class _CappedHead(HttpToolsProtocol):
    """uvicorn's httptools protocol with a cap on a request's head: llhttp has none, and uvicorn keeps every
    header line it is sent (its h11 protocol stops at 16 KiB, at a third of the speed)."""

    _head_size = 0
    _head_too_large = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._head_size += size
        if self._head_size > MAX_HEAD:
            self._head_too_large = True
            raise _HeadTooLarge  # uvicorn answers a parser error with send_400_response, below

    def send_400_response(self, msg: str) -> None:
        if not self._head_too_large:
            super().send_400_response(msg)
            return
        text = f"the request's head (target and headers) is larger than {MAX_HEAD // 1024} KiB".encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(text), text)
        )
        self.transport.close()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; binding here (not in uvicorn) makes port 0 usable: the port is known at once."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def url_host(host: str) -> str:
    """The host part of a URL that reaches the server: wildcards become loopback, IPv6 gets brackets."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.is_unspecified:
        return "127.0.0.1" if address.version == 4 else "[::1]"
    return f"[{host}]" if address.version == 6 else host


class LocalServer:
    """Serves ``app`` on ``host:port`` (port 0: a free one) until stopped. ``name`` names its thread."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def running(self) -> bool:
        return self._server is not None and self._port is not None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"the {self._name} is not started")
        return self._port

    def _make(self, app: Any, host: str, port: int) -> tuple[Any, socket.socket]:
        if self._server is not None:
            raise RuntimeError(f"the {self._name} is already running")
        sock = bind(host, port)
        # log_config=None and no log_level: a library must not reconfigure the process's logging.
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=1,
            http=_CappedHead,
        )
        self._server = uvicorn.Server(config)
        self._port = int(sock.getsockname()[1])
        return self._server, sock

    def start(self, app: Any, host: str, port: int) -> None:
        """Serve in a background thread; returns once the server accepts requests."""
        server, sock = self._make(app, host, port)
        thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [sock]},
            name=f"shipmap-{self._name}-{self._port}",
            daemon=True,
        )
        self._thread = thread
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self._server = self._thread = self._port = None
                sock.close()
                raise RuntimeError(f"the {self._name} server did not start")
            time.sleep(0.005)

    def serve_forever(
        self, app: Any, host: str, port: int, on_ready: Callable[[], None] | None = None
    ) -> None:
        """Serve in the calling thread until stopped (SIGINT/SIGTERM in the main thread, or ``stop()``).

        ``on_ready`` is called, from another thread, once the server accepts requests.
        """
        server, sock = self._make(app, host, port)
        finished = threading.Event()

        def announce() -> None:
            # Only once uvicorn runs (and holds SIGINT/SIGTERM), so whoever reads the URL can also stop it.
            while not server.started:
                if finished.wait(0.005):
                    return
            if on_ready is not None:
                on_ready()

        threading.Thread(target=announce, name=f"shipmap-{self._name}-ready", daemon=True).start()
        try:
            server.run(sockets=[sock])
        finally:
            finished.set()
            sock.close()
            self._server = self._port = None

    def stop(self) -> None:
        """Stop serving and wait for the server thread; in-flight slow responses get one second."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.should_exit = True
        if thread is not None:
            thread.join(_STOP_TIMEOUT)
            if thread.is_alive():
                server.force_exit = True
                thread.join(_STOP_TIMEOUT)
        self._server = self._thread = self._port = None
