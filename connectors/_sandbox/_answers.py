"""What every sandbox endpoint answers with: the error body, a request that passed its checks, and the checks
the Fenix and Digital Genius endpoints share (JSON body, secret comparison, the payload's kind, ids in the
path)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from shipmap.engine import get_kind
from shipmap.engine._kinds import format_path
from shipmap.engine._sources import loads_strict
from starlette.requests import Request
from starlette.responses import JSONResponse, Response


def json_error(
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


# An API gateway's usual limit (a Fenix order is ~17 KB): past it the body is counted and dropped, not kept.
MAX_BODY = 10 * 1024 * 1024
# Past this much more, the sandbox stops reading and closes: a client that never stops sending is cut off.
_MAX_DRAINED = 8 * MAX_BODY


async def read_body(request: Request, cap: int = MAX_BODY) -> bytes | None:
    """The request's body, or None when it is larger than ``cap`` bytes: none of it is kept past the cap. The
    rest is read and dropped (up to ``_MAX_DRAINED``), so the client gets the refusal rather than a reset
    connection. ClientDisconnect when the client goes away mid-body."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= cap:
            chunks.append(chunk)
        elif size > cap + _MAX_DRAINED:
            break
        else:
            chunks.clear()
    return b"".join(chunks) if size <= cap else None


def too_large(cap: int = MAX_BODY) -> JSONResponse:
    """The refusal of a body past ``cap``; the connection closes after it (the body may not all be read)."""
    return json_error(
        413,
        f"the body is larger than {cap:,} bytes",
        [problem_at("(body)", f"larger than {cap:,} bytes")],
        headers={"Connection": "close"},
    )


def problem_at(name: str, message: str) -> dict[str, str]:
    return {"field": name, "message": message}


@dataclass(frozen=True, slots=True)
class Accepted:
    """A request that passed every check: the response plus what the recorder keeps."""

    response: Response
    kind: str | None
    body: Any
    order_id: str | None = None
    fulfillment_id: str | None = None
    external_id: str | None = None
    region: str | None = None


Handler = Callable[[Request, bytes], "Accepted | Response"]


def is_json_content_type(value: str | None) -> bool:
    return value is not None and value.split(";", 1)[0].strip().lower() == "application/json"


def same_secret(given: str, expected: str) -> bool:
    return secrets.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def parse_json_body(request: Request, raw: bytes) -> tuple[Any, Response | None]:
    """The parsed body, or the 400 that says why there is none. Content-type is checked first."""
    content_type = request.headers.get("content-type")
    if not is_json_content_type(content_type):
        found = "missing" if content_type is None else f"is {content_type!r}"
        return None, json_error(
            400,
            "content-type must be application/json",
            [problem_at("content-type", f"{found}; expected application/json")],
        )
    try:
        # Strict, as a real server's parser: NaN, Infinity, 1e400 and lone surrogates are refused.
        return loads_strict(raw.decode("utf-8")), None
    except RecursionError:
        return None, json_error(
            400, "the body is not valid JSON", [problem_at("(body)", "nested too deeply")]
        )
    except ValueError as error:  # UnicodeDecodeError included
        return None, json_error(
            400, "the body is not valid JSON", [problem_at("(body)", f"not valid JSON: {error}")]
        )


def kind_problems(kind_name: str, payload: Any) -> list[dict[str, str]]:
    return [
        problem_at(format_path(path) or "(body)", msg) for path, msg in get_kind(kind_name).problems(payload)
    ]


def path_ids(request: Request, names: tuple[str, ...], positions: tuple[int, ...]) -> dict[str, str]:
    """Ids from the raw path when it is available, so an encoded ``/`` (``%2F``) inside an id survives."""
    raw_path = request.scope.get("raw_path")
    if isinstance(raw_path, bytes):
        segments = raw_path.decode("latin-1").split("?", 1)[0].split("/")
        if len(segments) == max(positions) + 2:
            return {name: unquote(segments[pos]) for name, pos in zip(names, positions, strict=True)}
    return {name: str(request.path_params[name]) for name in names}
