"""The studio's ASGI app: the page, its static assets, and the JSON API the page calls.

Every ``/api/`` request carries the token printed with the URL (header ``X-Shipmap-Token``, or ``?token=``);
without it the answer is 403. Only Host 127.0.0.1 or localhost is served, so a web page elsewhere cannot
reach the studio through DNS rebinding. Errors are JSON ``{"error": message}`` with a fitting status.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from shipmap.engine._errors import internal_message
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._cases import run_cases, save_case
from ._catalog import catalog
from ._errors import Forbidden, NotFound, StudioError, TimedOut, TooLarge
from ._evaluate import evaluate
from ._files import MAX_FILE_BYTES, Workspace
from ._requests import find_config
from ._work import MappingWork, Ticket

log = logging.getLogger("shipmap.studio")

TOKEN_HEADER = "X-Shipmap-Token"
MAX_BODY_BYTES = 2 * MAX_FILE_BYTES + 64 * 1024  # a mapping and a sample, as JSON
# Every API call, its body included, is answered within this; a mapping still running then is stopped at its
# next fan-out element or target (_work.py).
REQUEST_DEADLINE = 30.0
BODY_DEADLINE = 10.0  # the page sends a few MiB over loopback: a body still arriving after this has stalled
_STATIC = {
    "studio.js": "text/javascript; charset=utf-8",
    "editor.js": "text/javascript; charset=utf-8",
    "studio.css": "text/css; charset=utf-8",
}
# The page loads nothing but its own files: no CDN, no inline script, nothing sent elsewhere.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class StudioState:
    workspace: Workspace
    token: str
    writes: threading.Lock = field(default_factory=threading.Lock)
    work: MappingWork = field(default_factory=MappingWork)
    deadline: float = REQUEST_DEADLINE
    body_deadline: float = BODY_DEADLINE
    _catalog: dict[str, Any] | None = None

    def catalog(self) -> dict[str, Any]:
        if self._catalog is None:
            self._catalog = catalog()
        return self._catalog


def build_app(state: StudioState) -> Starlette:
    def api(handler: Callable[[Request], Awaitable[Any]]) -> Handler:
        async def endpoint(request: Request) -> Response:
            given = request.headers.get(TOKEN_HEADER) or request.query_params.get("token") or ""
            if not hmac.compare_digest(given.encode(), state.token.encode()):
                return _error(Forbidden("missing or wrong token: open the URL that shipmap studio printed"))
            ticket = request.state.ticket = Ticket()
            try:
                answer = await asyncio.wait_for(handler(request), state.deadline)
            except TimeoutError:
                log.warning(
                    "studio request %s %s: no answer within %g s",
                    request.method,
                    request.url.path,
                    state.deadline,
                )
                why = (
                    "another evaluation held the studio all that time, so this one was not started"
                    if ticket.waiting
                    else "the studio gave up on this request and stopped its mapping"
                )
                return _error(TimedOut(f"no answer within {state.deadline:g} s: {why}", 503))
            except StudioError as error:
                return _error(error)
            except Exception as error:  # one bad request never stops the studio
                log.exception("studio request %s %s", request.method, request.url.path)
                return _error(StudioError(internal_message(error)), status=500)
            return JSONResponse(answer, headers={"Cache-Control": "no-store"})

        return endpoint

    async def page(request: Request) -> Response:
        return _asset("index.html", "text/html; charset=utf-8")

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:
            return Response("not found", status_code=404)
        return _asset(name, _STATIC[name])

    async def workspace(request: Request) -> Any:
        listing = state.workspace.listing()
        config = find_config(state.workspace)
        return {
            "root": state.workspace.root.name,
            "mappings": listing.mappings,
            "samples": listing.samples,
            "cases": listing.cases,
            "config": state.workspace.relative(config) if config else None,
        }

    async def schema(request: Request) -> Any:
        return state.catalog()

    async def read_file(request: Request) -> Any:
        path = _param(request, "path")
        return {"path": path, "text": state.workspace.read_text(path)}

    async def write_file(request: Request) -> Any:
        path = _param(request, "path")
        body = await _json_body(request, state.body_deadline)
        text = _string(body, "text")
        with state.writes:
            state.workspace.write_text(path, text)
        return {"path": path, "saved": len(text.encode("utf-8"))}

    async def evaluate_endpoint(request: Request) -> Any:
        body = await _json_body(request, state.body_deadline)
        mapping_file = _optional_path(state.workspace, body.get("mapping_file"))
        return await state.work.run(
            request.state.ticket,
            evaluate,
            state.workspace,
            _string(body, "mapping"),
            mapping_file,
            _string(body, "sample", default=""),
            _string(body, "sample_name", default="sample") or "sample",
            _int(body, "index"),
            _string(body, "documents", default=""),
        )

    async def cases_run(request: Request) -> Any:
        body = await _json_body(request, state.body_deadline)
        mapping_file = _required_path(state.workspace, body.get("mapping_file"))
        mapping = _string(body, "mapping")
        return await state.work.run(request.state.ticket, run_cases, state.workspace, mapping, mapping_file)

    async def cases_save(request: Request) -> Any:
        body = await _json_body(request, state.body_deadline)
        mapping_file = _required_path(state.workspace, body.get("mapping_file"))
        sample_file = _optional_path(state.workspace, body.get("sample_file"))

        def save() -> Any:
            with state.writes:
                return save_case(
                    state.workspace,
                    _string(body, "mapping"),
                    mapping_file,
                    _string(body, "sample"),
                    sample_file,
                    _int(body, "index"),
                    _string(body, "name", default=""),
                    _string(body, "documents", default=""),
                )

        return await state.work.run(request.state.ticket, save)

    routes = [
        Route("/", page),
        Route("/static/{name}", static),
        Route("/api/workspace", api(workspace)),
        Route("/api/schema", api(schema)),
        Route("/api/file", api(read_file), methods=["GET"]),
        Route("/api/file", api(write_file), methods=["PUT"]),
        Route("/api/evaluate", api(evaluate_endpoint), methods=["POST"]),
        Route("/api/cases/run", api(cases_run), methods=["POST"]),
        Route("/api/cases/save", api(cases_save), methods=["POST"]),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", "[::1]"])]
    return Starlette(routes=routes, middleware=middleware)


def _asset(name: str, media_type: str) -> Response:
    content = resources.files(__package__).joinpath("static", name).read_bytes()
    return Response(content, media_type=media_type, headers=_PAGE_HEADERS)


def _error(error: StudioError, status: int | None = None) -> JSONResponse:
    return JSONResponse({"error": error.message}, status_code=status or error.status)


async def _json_body(request: Request, deadline: float) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise TooLarge(_too_large(int(declared) if declared.isdigit() else None))
    try:  # a client that stalls mid-body is let go, not waited for
        raw = await asyncio.wait_for(_read_body(request), deadline)
    except TimeoutError:
        raise TimedOut(f"the request body did not arrive within {deadline:g} s", 408) from None
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise StudioError("request body is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise StudioError(
            f"request body is not JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        ) from None
    if not isinstance(value, dict):
        raise StudioError("request body must be a JSON object")
    return value


async def _read_body(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise TooLarge(_too_large(None))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int | None) -> str:
    """Said to someone who pasted a huge sample: how large it is, and what the studio takes."""
    mib = 1024 * 1024
    given = f" is {size / mib:.1f} MiB" if size is not None else ""
    return (
        f"the request{given}: the studio takes a mapping and a sample of up to {MAX_FILE_BYTES // mib} MiB "
        f"each ({MAX_BODY_BYTES // mib} MiB in all); map a few of the sample's documents"
    )


def _param(request: Request, name: str) -> str:
    value = request.query_params.get(name)
    if not value:
        raise StudioError(f"the '{name}' parameter is required")
    return value


def _string(body: dict[str, Any], key: str, *, default: str | None = None) -> str:
    value = body.get(key, default)
    if not isinstance(value, str):
        raise StudioError(f"'{key}' must be a string")
    return value


def _int(body: dict[str, Any], key: str) -> int:
    value = body.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise StudioError(f"'{key}' must be an integer")
    return value


def _optional_path(workspace: Workspace, value: Any) -> str | None:
    if value is None or value == "":
        return None
    return _required_path(workspace, value)


def _required_path(workspace: Workspace, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise StudioError("a file path (relative to the studio's directory) is required")
    workspace.resolve(value)  # Forbidden outside the directory
    return value


__all__ = ["TOKEN_HEADER", "NotFound", "StudioState", "build_app"]
