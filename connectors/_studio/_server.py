"""Running the studio on 127.0.0.1 (only), in a background thread or the calling one."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from types import TracebackType
from typing import Self

from .._local_server import LocalServer
from ._app import BODY_DEADLINE, REQUEST_DEADLINE, StudioState, build_app
from ._files import Workspace

HOST = "127.0.0.1"  # never anything else: the studio reads and writes files


class Studio:
    """``with Studio("retailers/acme") as studio:`` serves on a free port until the block ends;
    ``studio.url`` is the page's address, token included."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        port: int = 0,
        token: str | None = None,
        deadline: float = REQUEST_DEADLINE,
        body_deadline: float = BODY_DEADLINE,
    ) -> None:
        """``deadline``: seconds within which every API call is answered (503 past it); ``body_deadline``:
        within which its body must have arrived (408 past it)."""
        self.workspace = Workspace(directory)
        self.token = token or secrets.token_urlsafe(24)
        self._state = StudioState(self.workspace, self.token, deadline=deadline, body_deadline=body_deadline)
        self._requested_port = port
        self._server = LocalServer("studio")

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self._server.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/?token={self.token}"

    def start(self) -> Self:
        self._server.start(build_app(self._state), HOST, self._requested_port)
        return self

    def serve_forever(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve in the calling thread until SIGINT/SIGTERM; ``on_ready`` gets the URL once it accepts."""

        def ready() -> None:
            if on_ready is not None:
                on_ready(self.url)

        try:
            self._server.serve_forever(build_app(self._state), HOST, self._requested_port, ready)
        finally:
            self._state.work.close()

    def stop(self) -> None:
        self._server.stop()
        self._state.work.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
