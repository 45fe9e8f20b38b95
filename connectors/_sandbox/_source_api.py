"""The sandbox's fake source API: a retailer platform's REST API (BigCommerce's, say) serving fixture files.

``GET /_source/{platform}/{path}`` answers the JSON file ``{documents}/{platform}/{path}.json``, so
``/_source/bigcommerce/stores/abc123/v2/orders/100/products`` reads
``bigcommerce/stores/abc123/v2/orders/100/products.json``. It asks for ``X-Auth-Token`` (BigCommerce's header)
when a token is configured, answers 404 in BigCommerce's error shape for a file that is not there, and 204 for
a file that is empty (BigCommerce's answer for an order without shipments). Enrichment tests and the demo run
against it, on one machine.

It has a fault plan of its own (``Sandbox(source_faults=...)``, ``POST /_sandbox/source-faults``, the same
spec as ``/_sandbox/faults``), so a test can take the store's API down while Fenix and DG stay up. Faults are
decided before the token check, as a load balancer in front of the store would answer. An injected 429 says
how long to wait as its platform does: ``X-Rate-Limit-Time-Reset-Ms`` (milliseconds) under ``bigcommerce/``,
``Retry-After`` under any other platform (Shopify's way); a 5xx step that gives a wait (``503:2``) says it by
``Retry-After`` under any platform. ``retry-after-date=true`` makes each ``Retry-After`` an HTTP date.

Each GET is remembered (the newest ``KEPT``) with when it arrived and how it was answered
(``requests()``, ``GET /_sandbox/source-requests``): a test reads from it the rate a client kept to. An older
one let go is counted (``forgotten()``).
"""

from __future__ import annotations

import asyncio
import hmac
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ._faults import DEFAULT_FAULT_IDENTITIES, Fault, FaultInjector, FaultPlan, request_identity

_MAX_DOCUMENT = 4 * 1024 * 1024


class SourceApi:
    KEPT = 100_000  # requests remembered, newest first: a sandbox left running stays bounded

    def __init__(
        self,
        documents: Path | None,
        token: str | None,
        faults: FaultPlan | None = None,
        fault_identities: int = DEFAULT_FAULT_IDENTITIES,
    ) -> None:
        self.documents = documents.resolve() if documents is not None else None
        self.token = token
        self.faults = FaultInjector(faults, fault_identities)
        self._lock = threading.Lock()
        self.received = 0  # every request, faulted ones included (how hard a client hits the API)
        self.served = 0
        self._started = time.monotonic()
        self._requests: deque[tuple[float, str, int]] = deque(maxlen=self.KEPT)  # arrival, path, status
        self._forgotten = 0  # the oldest GETs let go to stay within KEPT

    def requests(self) -> list[dict[str, Any]]:
        """The GETs remembered, in arrival order: ``at`` (seconds since the sandbox started, or its last reset,
        when the GET arrived), ``path`` and ``status``; a GET still being answered is not there yet."""
        with self._lock:
            kept = sorted(self._requests)
        return [{"at": round(at, 6), "path": path, "status": status} for at, path, status in kept]

    def forgotten(self) -> int:
        """How many older GETs ``requests()`` let go to keep the newest ``KEPT``, since the last reset."""
        with self._lock:
            return self._forgotten

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "received": self.received,
                "served": self.served,
                "forgotten": self._forgotten,
                "faults": self.faults.counts(),
            }

    def reset(self) -> None:
        with self._lock:
            self.received = self.served = self._forgotten = 0
            self._requests.clear()
            self._started = time.monotonic()
        self.faults.restart()

    async def get(self, request: Request) -> Response:
        with self._lock:
            self.received += 1
            arrived = time.monotonic() - self._started
        response = await self._respond(request)
        with self._lock:
            if len(self._requests) == self._requests.maxlen:
                self._forgotten += 1
            self._requests.append((arrived, request.url.path, response.status_code))
        return response

    async def _respond(self, request: Request) -> Response:
        fault = self.faults.decide(identity=request_identity("GET", request.url.path, b"")).fault
        if fault is not None and fault.name == "drop":  # no connection to drop through this route: a 503
            return JSONResponse([{"status": 503, "message": "injected fault (drop)"}], 503)
        if fault is not None and fault.status is not None:
            return JSONResponse(
                [{"status": fault.status, "message": "injected fault"}],
                fault.status,
                _wait_headers(request, fault),
            )
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        return self._answer(request)

    def _answer(self, request: Request) -> Response:
        if self.token is not None:
            given = request.headers.get("X-Auth-Token", "")
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return JSONResponse([{"status": 401, "message": "X-Auth-Token is missing or wrong"}], 401)
        if self.documents is None:
            return _not_found("this sandbox serves no source documents (--source-documents DIR)")
        relative = f"{request.path_params['platform']}/{request.path_params['path']}".strip("/")
        file = (self.documents / f"{relative}.json").resolve()
        if not file.is_relative_to(self.documents) or not file.is_file():
            return _not_found("The requested resource was not found.")
        data = file.read_bytes()[: _MAX_DOCUMENT + 1]
        if len(data) > _MAX_DOCUMENT:
            return JSONResponse([{"status": 500, "message": "fixture document too large"}], 500)
        with self._lock:
            self.served += 1
        if not data.strip():
            return Response(status_code=204)
        return Response(data, media_type="application/json")


def _wait_headers(request: Request, fault: Fault) -> dict[str, str]:
    """How a fault says when to come back: a 429 as the platform in the path does, a 5xx (a 503 of a load
    balancer in front of any platform) by ``Retry-After``, when its step gives one."""
    if fault.retry_after is None:
        return {}
    if fault.status == 429 and request.path_params["platform"] == "bigcommerce":
        return {"X-Rate-Limit-Time-Reset-Ms": str(fault.retry_after * 1000)}
    return {"Retry-After": fault.retry_after_header() or ""}


def _not_found(message: str) -> Response:
    return JSONResponse([{"status": 404, "message": message}], 404)
