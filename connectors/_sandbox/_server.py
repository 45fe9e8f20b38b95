"""Running the sandbox: uvicorn on a socket bound here, in a background thread or in the calling one."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from .._local_server import LocalServer, url_host
from ._api_faults import Api, api_named
from ._app import build_app
from ._config import SandboxConfig, SandboxCredentials
from ._faults import FaultPlan
from ._recorder import FaultedRequest, RecordedRequest
from ._state import SandboxState

log = logging.getLogger("shipmap.sandbox")


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
        fenix_faults: FaultPlan | str | None = None,
        dg_faults: FaultPlan | str | None = None,
        record: str | os.PathLike[str] | None = None,
        keep: int | None = None,
        duplicate_keys: int | None = None,
        faulted: int | None = None,
        fault_identities: int | None = None,
        source_documents: str | os.PathLike[str] | None = None,
        source_token: str | None = None,
        source_faults: FaultPlan | str | None = None,
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
            changes["faults"] = _plan(faults)
        if fenix_faults is not None:
            changes["fenix_faults"] = _plan(fenix_faults)
        if dg_faults is not None:
            changes["dg_faults"] = _plan(dg_faults)
        if record is not None:
            changes["record"] = Path(record)
        if keep is not None:
            changes["keep"] = keep
        if duplicate_keys is not None:
            changes["duplicate_keys"] = duplicate_keys
        if faulted is not None:
            changes["faulted"] = faulted
        if fault_identities is not None:
            changes["fault_identities"] = fault_identities
        if source_documents is not None:
            changes["source_documents"] = Path(source_documents)
        if source_token is not None:
            changes["source_token"] = source_token
        if source_faults is not None:
            changes["source_faults"] = _plan(source_faults)
        self._config = replace(config, **changes)
        self._state = SandboxState(self._config)
        self._server = LocalServer("sandbox")

    # ------------------------------------------------------------------------------------------ lifecycle

    @property
    def config(self) -> SandboxConfig:
        return self._config

    @property
    def running(self) -> bool:
        return self._server.running

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:51234`` (no trailing slash)."""
        return f"http://{url_host(self._config.host)}:{self.port}"

    def start(self) -> Self:
        """Serve in a background thread; returns once the server accepts requests."""
        self._server.start(build_app(self._state), self._config.host, self._config.port)
        log.info("sandbox serving on %s", self.url)
        return self

    def serve_forever(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve in the calling thread until stopped (SIGINT/SIGTERM in the main thread, or ``stop()``).

        ``on_ready`` gets the base URL, from another thread, once the server accepts requests.
        """

        def ready() -> None:
            url = self.url
            log.info("sandbox serving on %s", url)
            if on_ready is not None:
                on_ready(url)

        self._server.serve_forever(build_app(self._state), self._config.host, self._config.port, ready)

    def stop(self) -> None:
        """Stop serving and wait for the server thread; in-flight slow responses get one second."""
        self._server.stop()

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
        """Accepted requests in arrival order (headers redacted), the newest ``config.keep`` of them (``stats()``
        says how many were let go). ``api`` is ``"fenix"`` or ``"dg"``; ``endpoint`` one of ``fenix.login``,
        ``fenix.orders``, ``fenix.fulfillment``, ``dg.execution``."""
        return self._state.recorder.requests(api=api, endpoint=endpoint, kind=kind, since=since)

    def faulted(self) -> list[FaultedRequest]:
        """``(received_at, endpoint, status, plan)`` of each request answered with an injected 5xx or 429, or
        dropped (``status`` None: the connection closed without an answer), oldest first (the newest
        ``config.faulted``; ``stats()["faulted_forgotten"]`` counts the older ones let go): when clients hit an
        endpoint that was down, was told to wait or lost its connection, and which plan said so (``both``,
        ``fenix``, ``dg``): ``GET /_sandbox/faulted``."""
        return self._state.recorder.faulted_requests()[0]

    def source_requests(self) -> list[dict[str, Any]]:
        """The fake source API's GETs, oldest first: ``at`` (seconds since start or the last reset, when it
        arrived), ``path``, ``status``: ``GET /_sandbox/source-requests``."""
        return self._state.source_api.requests()

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
        """The fault plan for both APIs."""
        return self._state.faults.plan()

    def faults_of(self, api: Api) -> FaultPlan:
        """The fault plan that answers ``api``'s requests (``"fenix"`` or ``"dg"``): its own, or the plan for
        both."""
        return self._state.faults.plan(api_named(api))

    def set_faults(self, plan: FaultPlan | str | None, *, api: Api | None = None) -> None:
        """Replace a fault plan (a plan, a spec string, or ``None`` for none) and start it over. With ``api``
        (``"fenix"`` or ``"dg"``), that API gets a plan of its own, which answers its requests instead of the
        plan for both (so Fenix can be down while DG answers); without, ``plan`` is the plan for both again,
        and answers both APIs: the plans of an API's own are dropped."""
        self._state.faults.configure(_plan(plan), None if api is None else api_named(api))

    def remove_faults_of(self, api: Api) -> None:
        """Remove ``api``'s own fault plan (``"fenix"`` or ``"dg"``): the plan for both answers its requests
        again, going on from where it stands. An API without a plan of its own stays as it is."""
        self._state.faults.remove(api_named(api))

    def set_source_faults(self, plan: FaultPlan | str | None) -> None:
        """Replace the fake source API's fault plan (an outage of the store's API, not of Fenix or DG)."""
        self._state.source_api.faults.configure(_plan(plan))

    def set_source_token(self, token: str | None) -> None:
        """The X-Auth-Token the fake source API wants from now on (None: none): the store's API key rotated,
        the old one is refused with 401."""
        self._state.source_api.token = token

    def expire_tokens(self) -> int:
        """Expire every issued Fenix authToken now; returns how many were live."""
        return self._state.expire_tokens()


def _plan(plan: FaultPlan | str | None) -> FaultPlan:
    """A plan from a plan, a spec string, or ``None`` (the plan that injects nothing)."""
    if plan is None:
        return FaultPlan()
    return FaultPlan.parse(plan) if isinstance(plan, str) else plan
