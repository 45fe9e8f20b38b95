"""Running the sandbox: uvicorn on a socket bound here, in a background thread or in the calling one."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import uvicorn

from ._app import SandboxState, build_app
from ._config import SandboxConfig, SandboxCredentials
from ._faults import FaultPlan
from ._recorder import RecordedRequest

log = logging.getLogger("shipmap.sandbox")

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0


def _bind(host: str, port: int) -> socket.socket:
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


def _url_host(host: str) -> str:
    """The host part of a URL that reaches the server: wildcards become loopback, IPv6 gets brackets."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.is_unspecified:
        return "127.0.0.1" if address.version == 4 else "[::1]"
    return f"[{host}]" if address.version == 6 else host


class Sandbox:
    """A local Fenix + Digital Genius API server.

    ``with Sandbox(token_ttl=2) as sb:`` serves on a free port of 127.0.0.1 in a background thread until the
    block ends; ``sb.url`` is its base URL. Keyword arguments override fields of ``config``.
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        token_ttl: float | None = None,
        credentials: SandboxCredentials | None = None,
        faults: FaultPlan | str | None = None,
        record: str | os.PathLike[str] | None = None,
        source_documents: str | os.PathLike[str] | None = None,
        source_token: str | None = None,
    ) -> None:
        config = config or SandboxConfig()
        changes: dict[str, Any] = {}
        if host is not None:
            changes["host"] = host
        if port is not None:
            changes["port"] = port
        if token_ttl is not None:
            changes["token_ttl"] = token_ttl
        if credentials is not None:
            changes["credentials"] = credentials
        if faults is not None:
            changes["faults"] = FaultPlan.parse(faults) if isinstance(faults, str) else faults
        if record is not None:
            changes["record"] = Path(record)
        if source_documents is not None:
            changes["source_documents"] = Path(source_documents)
        if source_token is not None:
            changes["source_token"] = source_token
        self._config = replace(config, **changes)
        self._state = SandboxState(self._config)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    # ------------------------------------------------------------------------------------------ lifecycle

    @property
    def config(self) -> SandboxConfig:
        return self._config

    @property
    def running(self) -> bool:
        return self._server is not None and self._port is not None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the sandbox is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:51234`` (no trailing slash)."""
        return f"http://{_url_host(self._config.host)}:{self.port}"

    def _make_server(self) -> tuple[Any, socket.socket]:
        if self._server is not None:
            raise RuntimeError("the sandbox is already running")
        sock = _bind(self._config.host, self._config.port)
        # log_config=None and no log_level: a library must not reconfigure the process's logging.
        uv_config = uvicorn.Config(
            build_app(self._state),
            log_config=None,
            access_log=False,
            lifespan="off",
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(uv_config)
        self._port = int(sock.getsockname()[1])
        return self._server, sock

    def start(self) -> Self:
        """Serve in a background thread; returns once the server accepts requests."""
        server, sock = self._make_server()
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"shipmap-sandbox-{self._port}", daemon=True
        )
        self._thread = thread
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self._server = self._thread = self._port = None
                sock.close()
                raise RuntimeError("the sandbox server did not start")
            time.sleep(0.005)
        log.info("sandbox serving on %s", self.url)
        return self

    def serve_forever(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve in the calling thread until stopped (SIGINT/SIGTERM in the main thread, or ``stop()``).

        ``on_ready`` gets the base URL, from another thread, once the server accepts requests.
        """
        server, sock = self._make_server()
        url = self.url
        finished = threading.Event()

        def announce() -> None:
            # Only once uvicorn runs (and holds SIGINT/SIGTERM), so whoever reads the URL can also stop it.
            while not server.started:
                if finished.wait(0.005):
                    return
            log.info("sandbox serving on %s", url)
            if on_ready is not None:
                on_ready(url)

        threading.Thread(target=announce, name="shipmap-sandbox-ready", daemon=True).start()
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------------------------- recorder, faults

    def requests(
        self,
        *,
        api: str | None = None,
        endpoint: str | None = None,
        kind: str | None = None,
        since: int = 0,
    ) -> list[RecordedRequest]:
        """Accepted requests in arrival order (headers redacted). ``api`` is ``"fenix"`` or ``"dg"``;
        ``endpoint`` one of ``fenix.login``, ``fenix.orders``, ``fenix.fulfillment``, ``dg.execution``."""
        return self._state.recorder.requests(api=api, endpoint=endpoint, kind=kind, since=since)

    def stats(self) -> dict[str, Any]:
        """Counts per endpoint and kind, rejections, injected faults, duplicates: ``GET /_sandbox/stats``."""
        return self._state.stats()

    def duplicates(self) -> dict[str, list[dict[str, Any]]]:
        """Keys that arrived more than once: DG external_id, Fenix order id, (order id, fulfillment id)."""
        return self._state.recorder.duplicates()

    def reset(self) -> None:
        """Forget records, counts and tokens; replay the fault plan from its start."""
        self._state.reset()

    @property
    def faults(self) -> FaultPlan:
        return self._state.faults.plan

    def set_faults(self, plan: FaultPlan | str | None) -> None:
        """Replace the fault plan (a plan, a spec string, or ``None`` for none) and start it over."""
        if plan is None:
            plan = FaultPlan()
        elif isinstance(plan, str):
            plan = FaultPlan.parse(plan)
        self._state.faults.configure(plan)

    def expire_tokens(self) -> int:
        """Expire every issued Fenix authToken now; returns how many were live."""
        return self._state.expire_tokens()
