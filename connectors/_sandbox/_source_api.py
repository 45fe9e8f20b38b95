"""The sandbox's fake source API: a retailer platform's REST API (BigCommerce's, say) serving fixture files.

``GET /_source/{platform}/{path}`` answers the JSON file ``{documents}/{platform}/{path}.json``, so
``/_source/bigcommerce/stores/abc123/v2/orders/100/products`` reads
``bigcommerce/stores/abc123/v2/orders/100/products.json``. It asks for ``X-Auth-Token`` (BigCommerce's header)
when a token is configured, answers 404 in BigCommerce's error shape for a file that is not there, and 204 for
a file that is empty (BigCommerce's answer for an order without shipments). Enrichment tests and the demo run
against it, on one machine.

It has a fault plan of its own (``Sandbox(source_faults=...)``, ``POST /_sandbox/source-faults``, the same
spec as ``/_sandbox/faults``), so a test can take the store's API down while Fenix and DG stay up. Faults are
decided before the token check, as a load balancer in front of the store would answer.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ._faults import FaultInjector, FaultPlan, request_identity

_MAX_DOCUMENT = 4 * 1024 * 1024


class SourceApi:
    def __init__(self, documents: Path | None, token: str | None, faults: FaultPlan | None = None) -> None:
        self.documents = documents.resolve() if documents is not None else None
        self.token = token
        self.faults = FaultInjector(faults)
        self._lock = threading.Lock()
        self.received = 0  # every request, faulted ones included (how hard a client hits the API)
        self.served = 0

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"received": self.received, "served": self.served, "faults": self.faults.counts()}

    def reset(self) -> None:
        with self._lock:
            self.received = self.served = 0
        self.faults.restart()

    async def get(self, request: Request) -> Response:
        with self._lock:
            self.received += 1
        fault = self.faults.decide(identity=request_identity("GET", request.url.path, b"")).fault
        if fault is not None and fault.name == "drop":  # no connection to drop through this route: a 503
            return JSONResponse([{"status": 503, "message": "injected fault (drop)"}], 503)
        if fault is not None and fault.status is not None:
            headers = {"Retry-After": str(fault.retry_after)} if fault.status == 429 else None
            return JSONResponse(
                [{"status": fault.status, "message": "injected fault"}], fault.status, headers
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


def _not_found(message: str) -> Response:
    return JSONResponse([{"status": 404, "message": message}], 404)
