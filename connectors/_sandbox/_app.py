"""The ASGI app: Fenix and Digital Genius endpoints as the seeds describe them, plus the ``/_sandbox`` API."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from shipmap.engine import get_kind
from shipmap.engine._kinds import format_path
from shipmap.engine._sources import loads_strict
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ._api_faults import Api, ApiFaults, api_named
from ._config import SandboxConfig
from ._faults import Decision, FaultPlan, request_identity
from ._recorder import Recorder
from ._source_api import SourceApi

log = logging.getLogger("shipmap.sandbox")

REGIONS = ("eu", "us")
DEFAULT_REGION = "eu"
_DG_HOST = re.compile(r"^flow-server\.(?P<region>[a-z]+)\.dgdeepai\.com(?::\d+)?$", re.IGNORECASE)
_ABORT_KEY = "shipmap.sandbox.abort"
_FAULT_HEADER = "x-sandbox-fault"
_FAULT_PLAN_HEADER = "x-sandbox-fault-plan"  # which plan injected it: both, fenix or dg
# A retry of one delivery carries the same key (shipmap sends it by default): it names the request for faults.
_IDEMPOTENCY_HEADER = "Idempotency-Key"
# Tokens expired longer ago than this are forgotten, so a long soak does not grow the table.
_TOKEN_MEMORY_SECONDS = 3600.0

FENIX_LOGIN_HEADERS = ("username", "password", "x-api-key")
# Starlette's header lookup ignores case, so the seed's spelling is used for lookups and error messages.
FENIX_API_HEADERS = ("store_name", "authToken", "x-api-key", "x-identity")


class SandboxState:
    """Everything one server knows: config, issued tokens, the recorder and the fault injector."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.recorder = Recorder(config.record, config.keep, config.duplicate_keys)
        own: dict[Api, FaultPlan | None] = {"fenix": config.fenix_faults, "dg": config.dg_faults}
        self.faults = ApiFaults(config.faults, {api: plan for api, plan in own.items() if plan is not None})
        self.source_api = SourceApi(config.source_documents, config.source_token, config.source_faults)
        # The seed says x-identity rotates every 3 months: one per server, unlike the per-login authToken.
        self.identity = secrets.token_hex(18)
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()

    def issue_token(self) -> str:
        token = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now - _TOKEN_MEMORY_SECONDS}
            self._tokens[token] = now + self.config.token_ttl
        return token

    def token_problem(self, token: str) -> str | None:
        """Why ``token`` is not accepted now, or ``None`` when it is."""
        with self._lock:
            expiry = self._tokens.get(token)
        if expiry is None:
            return "is not a token this server issued; log in to get one"
        if time.monotonic() >= expiry:
            return "has expired; log in again"
        return None

    def expire_tokens(self) -> int:
        """Make every issued token expired now; returns how many were still live."""
        now = time.monotonic()
        with self._lock:
            live = sum(1 for exp in self._tokens.values() if exp > now)
            self._tokens = dict.fromkeys(self._tokens, now)
        return live

    def live_tokens(self) -> int:
        now = time.monotonic()
        with self._lock:
            return sum(1 for exp in self._tokens.values() if exp > now)

    def reset(self) -> None:
        """Back to a fresh start: no records, no counts, no tokens, the fault plan replayed from its start."""
        self.recorder.reset()
        self.faults.restart()
        self.source_api.reset()
        with self._lock:
            self._tokens.clear()

    def stats(self) -> dict[str, Any]:
        stats = self.recorder.stats()
        stats["faults"] = self.faults.counts()
        stats["faults_by_plan"] = self.faults.counts_by_plan()
        stats["source_api"] = self.source_api.stats()
        stats["live_tokens"] = self.live_tokens()
        return stats


# ---------------------------------------------------------------------------------------------- responses


def _error(
    status: int,
    message: str,
    errors: list[dict[str, str]] | None = None,
    *,
    kind: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"status": status, "error": HTTPStatus(status).phrase, "message": message}
    if kind is not None:
        body["kind"] = kind
    body["errors"] = errors or []
    return JSONResponse(body, status_code=status, headers=headers)


def _field(name: str, message: str) -> dict[str, str]:
    return {"field": name, "message": message}


@dataclass(frozen=True, slots=True)
class _Accepted:
    """A request that passed every check: the response plus what the recorder keeps."""

    response: Response
    kind: str | None
    body: Any
    order_id: str | None = None
    fulfillment_id: str | None = None
    external_id: str | None = None
    region: str | None = None


_Handler = Callable[[Request, bytes], "_Accepted | Response"]


def _is_json_content_type(value: str | None) -> bool:
    return value is not None and value.split(";", 1)[0].strip().lower() == "application/json"


def _same(given: str, expected: str) -> bool:
    return secrets.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _parse_json_body(request: Request, raw: bytes) -> tuple[Any, Response | None]:
    """The parsed body, or the 400 that says why there is none. Content-type is checked first."""
    content_type = request.headers.get("content-type")
    if not _is_json_content_type(content_type):
        found = "missing" if content_type is None else f"is {content_type!r}"
        return None, _error(
            400,
            "content-type must be application/json",
            [_field("content-type", f"{found}; expected application/json")],
        )
    try:
        # Strict, as a real server's parser: NaN, Infinity, 1e400 and lone surrogates are refused.
        return loads_strict(raw.decode("utf-8")), None
    except RecursionError:
        return None, _error(400, "the body is not valid JSON", [_field("(body)", "nested too deeply")])
    except ValueError as error:  # UnicodeDecodeError included
        return None, _error(400, "the body is not valid JSON", [_field("(body)", f"not valid JSON: {error}")])


def _order_kind(payload: Any) -> str:
    """Which kind an order-endpoint body is. The endpoint takes all three: a whole order may carry status
    CANCELLED (an update), while the short cancel and partial-cancel bodies carry no customer or totals."""
    status = payload.get("status") if isinstance(payload, dict) else None
    short = {"CANCELLED": "fenix.order_cancel", "PARTIALLY_CANCELLED": "fenix.order_partial_cancel"}.get(
        status if isinstance(status, str) else ""
    )
    if short is None or get_kind(short).is_valid(payload):
        return short or "fenix.order"
    if get_kind("fenix.order").is_valid(payload):
        return "fenix.order"
    # Neither fits: explain against the kind the body looks most like (a whole order has a customer).
    return "fenix.order" if isinstance(payload, dict) and "customer" in payload else short


def _problems(kind_name: str, payload: Any) -> list[dict[str, str]]:
    return [_field(format_path(path) or "(body)", msg) for path, msg in get_kind(kind_name).problems(payload)]


def _path_ids(request: Request, names: tuple[str, ...], positions: tuple[int, ...]) -> dict[str, str]:
    """Ids from the raw path when it is available, so an encoded ``/`` (``%2F``) inside an id survives."""
    raw_path = request.scope.get("raw_path")
    if isinstance(raw_path, bytes):
        segments = raw_path.decode("latin-1").split("?", 1)[0].split("/")
        if len(segments) == max(positions) + 2:
            return {name: unquote(segments[pos]) for name, pos in zip(names, positions, strict=True)}
    return {name: str(request.path_params[name]) for name in names}


# ------------------------------------------------------------------------------------------------ the app


class _Endpoints:
    def __init__(self, state: SandboxState) -> None:
        self.state = state

    # Fault handling shared by every API endpoint: faults first (a load balancer answers before auth does).
    async def _serve(
        self,
        request: Request,
        *,
        api: Api,
        endpoint: str,
        handler: _Handler,
        login: bool = False,
        uses_token: bool = False,
    ) -> Response:
        try:
            raw = await request.body()
        except ClientDisconnect:
            # The client died mid-body (a runner killed with -9): nothing arrived, nobody is left to answer.
            log.info("%s: client disconnected before its request body was complete", endpoint)
            return Response(status_code=499)
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
                return _error(fault.status, message or "injected server error", headers=headers)
            delay = fault.delay
        result = handler(request, raw)
        if isinstance(result, _Accepted):
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
            return _error(503, "injected server error", headers=headers)
        log.info("fault: dropping the connection of a %s request (plan for %s)", endpoint, plan_name)
        self.state.recorder.faulted(endpoint, None, plan_name)
        abort()
        # Let the server notice the closed transport, so it does not try to answer on it.
        for _ in range(3):
            await asyncio.sleep(0)
        return Response(status_code=500)

    # ------------------------------------------------------------------------------------------ Fenix

    async def login(self, request: Request) -> Response:
        return await self._serve(
            request, api="fenix", endpoint="fenix.login", handler=self._login, login=True
        )

    def _login(self, request: Request, raw: bytes) -> _Accepted | Response:
        creds = self.state.config.credentials
        headers = request.headers
        missing = [_field(name, "header is missing") for name in FENIX_LOGIN_HEADERS if not headers.get(name)]
        if missing:
            return _error(401, "authentication failed", missing)
        if not _same(headers["x-api-key"], creds.fenix_api_key):
            return _error(401, "authentication failed", [_field("x-api-key", "is not a known API key")])
        if not (
            _same(headers["username"], creds.fenix_username)
            & _same(headers["password"], creds.fenix_password)
        ):
            return _error(401, "authentication failed", [_field("username/password", "do not match")])
        username = headers["username"]
        body = {
            "id": "",
            "firstName": username,
            "lastName": "Dev",
            "phone": None,
            "emailId": username,
            "type": "business_user",
            "status": "ACTIVE",
            "organizationId": "",
            "authToken": self.state.issue_token(),
            "x-identity": self.state.identity,
        }
        return _Accepted(JSONResponse(body, status_code=200), kind=None, body=None)

    def _fenix_auth(self, request: Request) -> Response | None:
        creds = self.state.config.credentials
        headers = request.headers
        missing = [_field(name, "header is missing") for name in FENIX_API_HEADERS if not headers.get(name)]
        if missing:
            return _error(401, "unauthenticated", missing)
        wrong: list[dict[str, str]] = []
        if not _same(headers["x-api-key"], creds.fenix_api_key):
            wrong.append(_field("x-api-key", "is not a known API key"))
        if not _same(headers["store_name"], creds.fenix_store_name):
            wrong.append(_field("store_name", "is not a store this identity may send for"))
        token_problem = self.state.token_problem(headers["authToken"])
        if token_problem:
            wrong.append(_field("authToken", token_problem))
        if not _same(headers["x-identity"], self.state.identity):
            wrong.append(_field("x-identity", "does not match the identity given at login"))
        return _error(401, "unauthenticated", wrong) if wrong else None

    def _fenix_body(self, request: Request, raw: bytes) -> tuple[Any, Response | None]:
        """The JSON body of an authenticated Fenix request, or the 401/400 that refuses it."""
        denied = self._fenix_auth(request)
        if denied is not None:
            return None, denied
        return _parse_json_body(request, raw)

    async def order(self, request: Request) -> Response:
        return await self._serve(
            request, api="fenix", endpoint="fenix.orders", handler=self._order, uses_token=True
        )

    def _order(self, request: Request, raw: bytes) -> _Accepted | Response:
        payload, refused = self._fenix_body(request, raw)
        if refused is not None:
            return refused
        order_id = _path_ids(request, ("order_id",), (4,))["order_id"]
        kind = _order_kind(payload)
        errors = _problems(kind, payload)
        if isinstance(payload, dict) and isinstance(payload.get("id"), str) and payload["id"] != order_id:
            errors.append(_field("id", f"is {payload['id']!r} but the URL names order {order_id!r}"))
        if errors:
            return _error(400, f"the payload is not a valid {kind}", errors, kind=kind)
        return _Accepted(Response(status_code=201), kind=kind, body=payload, order_id=order_id)

    async def fulfillment(self, request: Request) -> Response:
        return await self._serve(
            request, api="fenix", endpoint="fenix.fulfillment", handler=self._fulfillment, uses_token=True
        )

    def _fulfillment(self, request: Request, raw: bytes) -> _Accepted | Response:
        payload, refused = self._fenix_body(request, raw)
        if refused is not None:
            return refused
        ids = _path_ids(request, ("order_id", "fulfillment_id"), (4, 6))
        kind = "fenix.fulfillment"
        errors = _problems(kind, payload)
        if isinstance(payload, dict):
            for field, url_name, what in (
                ("order_id", "order_id", "order"),
                ("id", "fulfillment_id", "fulfillment"),
            ):
                value = payload.get(field)
                if isinstance(value, str) and value != ids[url_name]:
                    errors.append(_field(field, f"is {value!r} but the URL names {what} {ids[url_name]!r}"))
        if errors:
            return _error(400, f"the payload is not a valid {kind}", errors, kind=kind)
        return _Accepted(
            Response(status_code=201),
            kind=kind,
            body=payload,
            order_id=ids["order_id"],
            fulfillment_id=ids["fulfillment_id"],
        )

    # ------------------------------------------------------------------------------------- Digital Genius

    async def execution(self, request: Request) -> Response:
        region = request.path_params.get("region")
        if region is None:
            match = _DG_HOST.match(request.headers.get("host", ""))
            region = match.group("region").lower() if match else DEFAULT_REGION
        if region not in REGIONS:
            return _error(404, f"unknown Digital Genius region {region!r}; use one of {', '.join(REGIONS)}")

        def handle(request: Request, raw: bytes) -> _Accepted | Response:
            return self._execution(request, raw, region)

        return await self._serve(request, api="dg", endpoint="dg.execution", handler=handle)

    def _execution(self, request: Request, raw: bytes, region: str) -> _Accepted | Response:
        creds = self.state.config.credentials
        problem = _basic_auth_problem(
            request.headers.get("authorization"), creds.dg_api_key, creds.dg_api_secret
        )
        if problem is not None:
            return _error(
                401,
                "unauthenticated",
                [_field("Authorization", problem)],
                headers={"WWW-Authenticate": 'Basic realm="flow-server"'},
            )
        payload, bad = _parse_json_body(request, raw)
        if bad is not None:
            return bad
        kind = "dg.execution"
        errors = _problems(kind, payload)
        if errors:
            return _error(400, f"the payload is not a valid {kind}", errors, kind=kind)
        # The real success body is not documented: answer the least a client could come to depend on.
        return _Accepted(
            JSONResponse({}, status_code=200),
            kind=kind,
            body=payload,
            external_id=str(payload["external_id"]),
            region=region,
        )

    # ---------------------------------------------------------------------------------------- /_sandbox

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def requests(self, request: Request) -> Response:
        query = request.query_params
        try:
            since = int(query.get("since", "0"))
        except ValueError:
            return _error(400, "since must be an integer", [_field("since", "not an integer")])
        found = self.state.recorder.requests(
            api=query.get("api"), endpoint=query.get("endpoint"), kind=query.get("kind"), since=since
        )
        return JSONResponse({"count": len(found), "requests": [r.to_dict() for r in found]})

    async def stats(self, request: Request) -> Response:
        return JSONResponse(self.state.stats())

    async def source_requests(self, request: Request) -> Response:
        found = self.state.source_api.requests()
        return JSONResponse({"count": len(found), "requests": found})

    async def reset(self, request: Request) -> Response:
        self.state.reset()
        return JSONResponse({"status": "reset"})

    async def expire(self, request: Request) -> Response:
        return JSONResponse({"expired": self.state.expire_tokens()})

    async def faulted(self, request: Request) -> Response:
        found = self.state.recorder.faulted_requests()
        return JSONResponse({"count": len(found), "faulted": [f.to_dict() for f in found]})

    async def faults(self, request: Request) -> Response:
        """The plan for both APIs, or with ``?api=fenix`` (``dg``) the plan that answers that API. DELETE with
        ``?api=fenix`` removes Fenix's own plan: the plan for both answers it again."""
        given = request.query_params.get("api")
        try:
            api = None if given is None else api_named(given)
        except ValueError as error:
            return _error(400, "not an API of the sandbox", [_field("api", str(error))])
        if request.method == "DELETE":
            if api is None:
                why = "which API's own plan to remove (fenix or dg); to stop every fault, POST none"
                return _error(400, "no api to remove the plan of", [_field("api", why)])
            self.state.faults.remove(api)
            log.info("faults of %s: its own plan removed, the plan for both answers it", api)
        elif request.method == "POST":
            raw = (await request.body()).decode("utf-8", errors="replace")
            try:
                plan = _plan_from_body(raw, request.headers.get("content-type"))
            except ValueError as error:
                return _error(400, "not a fault plan", [_field("faults", str(error))])
            self.state.faults.configure(plan, api)
            log.info("faults of %s set to %s", api or "both APIs", plan.spec())
        return JSONResponse(self.state.faults.snapshot(api))

    async def source_faults(self, request: Request) -> Response:
        """The fake source API's own fault plan, read and set like ``/_sandbox/faults``."""
        injector = self.state.source_api.faults
        if request.method == "POST":
            raw = (await request.body()).decode("utf-8", errors="replace")
            try:
                plan = _plan_from_body(raw, request.headers.get("content-type"))
            except ValueError as error:
                return _error(400, "not a fault plan", [_field("faults", str(error))])
            injector.configure(plan)
            log.info("source API faults set to %s", plan.spec())
        return JSONResponse(injector.snapshot())


def _plan_from_body(raw: str, content_type: str | None) -> FaultPlan:
    """``{"spec": "..."}``, a ``FaultPlan.to_dict`` object, or the spec as plain text."""
    if not _is_json_content_type(content_type):
        return FaultPlan.parse(raw)
    data = json.loads(raw) if raw.strip() else {}
    if not isinstance(data, dict):
        raise ValueError('expected {"spec": "..."} or an object of fault plan fields')
    if "spec" in data:
        if set(data) != {"spec"} or not isinstance(data["spec"], str | None):
            raise ValueError('"spec" must be a string and stand alone')
        return FaultPlan.parse(data["spec"] or "")
    return FaultPlan.from_dict(data)


def _basic_auth_problem(header: str | None, key: str, secret: str) -> str | None:
    if not header:
        return "header is missing"
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return "expected Basic authentication"
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII text in the header
        return "is not base64 of API_KEY:API_SECRET"
    given_key, colon, given_secret = decoded.partition(":")
    if not colon:
        return "is not base64 of API_KEY:API_SECRET"
    if not (_same(given_key, key) & _same(given_secret, secret)):
        return "API key and secret do not match"
    return None


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else None
    message = HTTPStatus(status).phrase
    return _error(status, f"{message}: {request.method} {request.url.path}", headers=headers)


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
        Route("/_sandbox/health", ep.health, methods=["GET"]),
        Route("/_sandbox/requests", ep.requests, methods=["GET"]),
        Route("/_sandbox/stats", ep.stats, methods=["GET"]),
        Route("/_sandbox/source-requests", ep.source_requests, methods=["GET"]),
        Route("/_sandbox/reset", ep.reset, methods=["POST"]),
        Route("/_sandbox/faulted", ep.faulted, methods=["GET"]),
        Route("/_sandbox/faults", ep.faults, methods=["GET", "POST", "DELETE"]),
        Route("/_sandbox/source-faults", ep.source_faults, methods=["GET", "POST"]),
        Route("/_sandbox/tokens/expire", ep.expire, methods=["POST"]),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {HTTPException: _http_error}
    return _WithAbort(Starlette(routes=routes, exception_handlers=handlers))
