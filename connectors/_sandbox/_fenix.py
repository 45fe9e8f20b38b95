"""Fenix Commerce's inbound API as its seed describes it: ``POST /login`` (username, password and x-api-key
headers; an authToken and the x-identity back), and the order and fulfillment endpoints (four headers, a JSON
body of the right kind; 201, 400 or 401). The handlers only check and answer: faults and recording are the
app's (``_app.py``)."""

from __future__ import annotations

from typing import Any

from shipmap.engine import get_kind
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ._answers import Accepted, json_error, kind_problems, parse_json_body, path_ids, problem_at, same_secret
from ._state import SandboxState

FENIX_LOGIN_HEADERS = ("username", "password", "x-api-key")
# Starlette's header lookup ignores case, so the seed's spelling is used for lookups and error messages.
FENIX_API_HEADERS = ("store_name", "authToken", "x-api-key", "x-identity")


class Fenix:
    def __init__(self, state: SandboxState) -> None:
        self.state = state

    def login(self, request: Request, raw: bytes) -> Accepted | Response:
        creds = self.state.config.credentials
        headers = request.headers
        missing = [
            problem_at(name, "header is missing") for name in FENIX_LOGIN_HEADERS if not headers.get(name)
        ]
        if missing:
            return json_error(401, "authentication failed", missing)
        if not same_secret(headers["x-api-key"], creds.fenix_api_key):
            return json_error(
                401, "authentication failed", [problem_at("x-api-key", "is not a known API key")]
            )
        if not (
            same_secret(headers["username"], creds.fenix_username)
            & same_secret(headers["password"], creds.fenix_password)
        ):
            return json_error(401, "authentication failed", [problem_at("username/password", "do not match")])
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
        return Accepted(JSONResponse(body, status_code=200), kind=None, body=None)

    def _auth(self, request: Request) -> Response | None:
        creds = self.state.config.credentials
        headers = request.headers
        missing = [
            problem_at(name, "header is missing") for name in FENIX_API_HEADERS if not headers.get(name)
        ]
        if missing:
            return json_error(401, "unauthenticated", missing)
        wrong: list[dict[str, str]] = []
        if not same_secret(headers["x-api-key"], creds.fenix_api_key):
            wrong.append(problem_at("x-api-key", "is not a known API key"))
        if not same_secret(headers["store_name"], creds.fenix_store_name):
            wrong.append(problem_at("store_name", "is not a store this identity may send for"))
        token_problem = self.state.token_problem(headers["authToken"])
        if token_problem:
            wrong.append(problem_at("authToken", token_problem))
        if not same_secret(headers["x-identity"], self.state.identity):
            wrong.append(problem_at("x-identity", "does not match the identity given at login"))
        return json_error(401, "unauthenticated", wrong) if wrong else None

    def _body(self, request: Request, raw: bytes) -> tuple[Any, Response | None]:
        """The JSON body of an authenticated Fenix request, or the 401/400 that refuses it."""
        denied = self._auth(request)
        if denied is not None:
            return None, denied
        return parse_json_body(request, raw)

    def order(self, request: Request, raw: bytes) -> Accepted | Response:
        payload, refused = self._body(request, raw)
        if refused is not None:
            return refused
        order_id = path_ids(request, ("order_id",), (4,))["order_id"]
        kind = _order_kind(payload)
        errors = kind_problems(kind, payload)
        if isinstance(payload, dict) and isinstance(payload.get("id"), str) and payload["id"] != order_id:
            errors.append(problem_at("id", f"is {payload['id']!r} but the URL names order {order_id!r}"))
        if errors:
            return json_error(400, f"the payload is not a valid {kind}", errors, kind=kind)
        return Accepted(Response(status_code=201), kind=kind, body=payload, order_id=order_id)

    def fulfillment(self, request: Request, raw: bytes) -> Accepted | Response:
        payload, refused = self._body(request, raw)
        if refused is not None:
            return refused
        ids = path_ids(request, ("order_id", "fulfillment_id"), (4, 6))
        kind = "fenix.fulfillment"
        errors = kind_problems(kind, payload)
        if isinstance(payload, dict):
            for field, url_name, what in (
                ("order_id", "order_id", "order"),
                ("id", "fulfillment_id", "fulfillment"),
            ):
                value = payload.get(field)
                if isinstance(value, str) and value != ids[url_name]:
                    errors.append(
                        problem_at(field, f"is {value!r} but the URL names {what} {ids[url_name]!r}")
                    )
        if errors:
            return json_error(400, f"the payload is not a valid {kind}", errors, kind=kind)
        return Accepted(
            Response(status_code=201),
            kind=kind,
            body=payload,
            order_id=ids["order_id"],
            fulfillment_id=ids["fulfillment_id"],
        )


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
