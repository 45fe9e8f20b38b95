"""The ASGI app: the routes of Fenix, Digital Genius and the ``/_sandbox`` API, and what every Fenix and DG
request goes through around its handler (``_fenix.py``, ``_dg.py``): the fault plan first, as a load balancer
answers before auth does, then the recorder."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ._answers import Accepted, Handler, json_error, read_body, too_large
from ._api_faults import Api
from ._control import Control
from ._dg import DigitalGenius, region_of
from ._faults import Decision, request_identity
from ._fenix import Fenix
from ._state import SandboxState

log = logging.getLogger("shipmap.sandbox")

_ABORT_KEY = "shipmap.sandbox.abort"
_FAULT_HEADER = "x-sandbox-fault"
_FAULT_PLAN_HEADER = "x-sandbox-fault-plan"  # which plan injected it: both, fenix or dg
# A retry of one delivery carries the same key (shipmap sends it by default): it names the request for faults.
_IDEMPOTENCY_HEADER = "Idempotency-Key"


class _Endpoints:
    """The Fenix and DG routes: each hands its handler to ``_serve``."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self._fenix = Fenix(state)
        self._dg = DigitalGenius(state)

    # Fault handling shared by every API endpoint: faults first (a load balancer answers before auth does).
    async def _serve(
        self,
        request: Request,
        *,
        api: Api,
        endpoint: str,
        handler: Handler,
        login: bool = False,
        uses_token: bool = False,
    ) -> Response:
        try:
            raw = await read_body(request)
        except ClientDisconnect:
            # The client died mid-body (a runner killed with -9): nothing arrived, nobody is left to answer.
            log.info("%s: client disconnected before its request body was complete", endpoint)
            return Response(status_code=499)
        if raw is None:
            self.state.recorder.reject(endpoint, 413)
            return too_large()
        identity = request_identity(
            request.method,
            request.url.path,
            raw,
            request.headers.get(_IDEMPOTENCY_HEADER),
        )
        plan_name, injector = self.state.faults.answering(api)
        decision: Decision = injector.decide(login=login, uses_token=uses_token, identity=identity)
        if decision.expire_tokens:
            self.state.expire_tokens()
        fault = decision.fault
        delay = 0.0
        if fault is not None:
            if fault.name == "drop":
                return await self._drop(request, endpoint, plan_name)
            if fault.status is not None:
                log.info("fault: %d for %s (plan for %s)", fault.status, endpoint, plan_name)
                self.state.recorder.faulted(endpoint, fault.status, plan_name)
                headers = {_FAULT_HEADER: str(fault.status), _FAULT_PLAN_HEADER: plan_name}
                if (retry_after := fault.retry_after_header()) is not None:
                    headers["Retry-After"] = retry_after
                message = "too many requests (injected by the sandbox)" if fault.status == 429 else None
                return json_error(fault.status, message or "injected server error", headers=headers)
            delay = fault.delay
        result = handler(request, raw)
        if isinstance(result, Accepted):
            response = result.response
            self.state.recorder.record(
                api=api,
                endpoint=endpoint,
                kind=result.kind,
                method=request.method,
                path=request.url.path,
                status=response.status_code,
                headers=request.headers.items(),
                body=result.body,
                region=result.region,
                order_id=result.order_id,
                fulfillment_id=result.fulfillment_id,
                external_id=result.external_id,
                fault="slow" if delay else None,
                fault_plan=plan_name,
            )
        else:
            response = result
            self.state.recorder.reject(endpoint, response.status_code)
        log.debug("%s %s -> %d", request.method, request.url.path, response.status_code)
        if delay:
            # The request is already handled: a client that times out and retries makes a real duplicate.
            response.headers[_FAULT_HEADER] = "slow"
            response.headers[_FAULT_PLAN_HEADER] = plan_name
            await asyncio.sleep(delay)
        return response

    async def _drop(self, request: Request, endpoint: str, plan_name: str) -> Response:
        abort = request.scope.get(_ABORT_KEY)
        if not callable(abort):
            log.warning("cannot drop the connection under this ASGI server; answering 503 instead")
            self.state.recorder.faulted(endpoint, 503, plan_name)  # what the client got
            headers = {_FAULT_HEADER: "drop", _FAULT_PLAN_HEADER: plan_name}
            return json_error(503, "injected server error", headers=headers)
        log.info("fault: dropping the connection of a %s request (plan for %s)", endpoint, plan_name)
        self.state.recorder.faulted(endpoint, None, plan_name)
        abort()
        # Let the server notice the closed transport, so it does not try to answer on it.
        for _ in range(3):
            await asyncio.sleep(0)
        return Response(status_code=500)

    async def login(self, request: Request) -> Response:
        return await self._serve(
            request, api="fenix", endpoint="fenix.login", handler=self._fenix.login, login=True
        )

    async def order(self, request: Request) -> Response:
        return await self._serve(
            request, api="fenix", endpoint="fenix.orders", handler=self._fenix.order, uses_token=True
        )

    async def fulfillment(self, request: Request) -> Response:
        return await self._serve(
            request,
            api="fenix",
            endpoint="fenix.fulfillment",
            handler=self._fenix.fulfillment,
            uses_token=True,
        )

    async def execution(self, request: Request) -> Response:
        region = region_of(request)
        if isinstance(region, Response):
            return region

        def handle(request: Request, raw: bytes) -> Accepted | Response:
            return self._dg.execution(request, raw, region)

        return await self._serve(request, api="dg", endpoint="dg.execution", handler=handle)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else None
    message = HTTPStatus(status).phrase
    return json_error(status, f"{message}: {request.method} {request.url.path}", headers=headers)


class _WithAbort:
    """Outermost wrapper: hands the handlers a way to close the socket without an answer.

    ASGI has no such message, so this reaches for the server's transport (uvicorn's send is a bound
    method of its request cycle). Under a server without one, drops degrade to 503s.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            abort = getattr(transport, "abort", None)
            if callable(abort):
                scope[_ABORT_KEY] = abort
        await self._app(scope, receive, send)


def build_app(state: SandboxState) -> ASGIApp:
    """The sandbox as an ASGI app over ``state``."""
    ep = _Endpoints(state)
    control = Control(state)
    routes = [
        Route("/_source/{platform}/{path:path}", state.source_api.get, methods=["GET"]),
        Route("/login", ep.login, methods=["POST"]),
        Route("/api/v1/orders/{order_id:path}/created", ep.order, methods=["POST"]),
        Route(
            "/api/v1/order/{order_id:path}/fulfillment/{fulfillment_id:path}/created",
            ep.fulfillment,
            methods=["POST"],
        ),
        Route("/execution", ep.execution, methods=["POST"]),
        Route("/{region}/execution", ep.execution, methods=["POST"]),
        Route("/_sandbox/health", control.health, methods=["GET"]),
        Route("/_sandbox/requests", control.requests, methods=["GET"]),
        Route("/_sandbox/stats", control.stats, methods=["GET"]),
        Route("/_sandbox/source-requests", control.source_requests, methods=["GET"]),
        Route("/_sandbox/reset", control.reset, methods=["POST"]),
        Route("/_sandbox/faulted", control.faulted, methods=["GET"]),
        Route("/_sandbox/faults", control.faults, methods=["GET", "POST", "DELETE"]),
        Route("/_sandbox/source-faults", control.source_faults, methods=["GET", "POST"]),
        Route("/_sandbox/tokens/expire", control.expire, methods=["POST"]),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {HTTPException: _http_error}
    return _WithAbort(Starlette(routes=routes, exception_handlers=handlers))
