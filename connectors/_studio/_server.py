"""Running the studio: uvicorn on a socket of 127.0.0.1 bound here, in a background thread or the calling one."""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import uvicorn

from .._sandbox._server import _bind
from ._app import StudioState, build_app
from ._files import Workspace

log = logging.getLogger("shipmap.studio")

HOST = "127.0.0.1"  # never anything else: the studio reads and writes files
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0


class Studio:
    """``with Studio("retailers/acme") as studio:`` serves on a free port until the block ends;
    ``studio.url`` is the page's address, token included."""

    def __init__(self, directory: str | os.PathLike[str], *, port: int = 0, token: str | None = None) -> None:
        self.workspace = Workspace(directory)
        self.token = token or secrets.token_urlsafe(24)
        self._state = StudioState(self.workspace, self.token)
        self._requested_port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("the studio is not started")
        return f"http://{HOST}:{self._port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/?token={self.token}"

    def _make_server(self) -> Any:
        if self._server is not None:
            raise RuntimeError("the studio is already running")
        sock = _bind(HOST, self._requested_port)
        config = uvicorn.Config(
            build_app(self._state),
            log_config=None,
            access_log=False,
            lifespan="off",
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._port = int(sock.getsockname()[1])
        return self._server, sock

    def start(self) -> Self:
        server, sock = self._make_server()
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"shipmap-studio-{self._port}", daemon=True
        )
        self._thread = thread
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self._server = self._thread = self._port = None
                sock.close()
                raise RuntimeError("the studio server did not start")
            time.sleep(0.005)
        return self

    def serve_forever(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve in the calling thread until SIGINT/SIGTERM; ``on_ready`` gets the URL once it accepts."""
        server, sock = self._make_server()
        url = self.url
        finished = threading.Event()

        def announce() -> None:
            while not server.started:
                if finished.wait(0.005):
                    return
            if on_ready is not None:
                on_ready(url)

        threading.Thread(target=announce, name="shipmap-studio-ready", daemon=True).start()
        try:
            server.run(sockets=[sock])
        finally:
            finished.set()
            sock.close()
            self._server = self._port = None

    def stop(self) -> None:
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
