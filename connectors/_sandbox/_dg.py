"""Digital Genius's flow execution API as its seed describes it: ``POST /execution`` on
``flow-server.{region}.dgdeepai.com`` (the region from the Host, or ``/{region}/execution`` on the sandbox's
one port), Basic authentication of ``API_KEY:API_SECRET``, a JSON body of kind ``dg.execution``. The handler
only checks and answers: faults and recording are the app's (``_app.py``)."""

from __future__ import annotations

import base64
import re

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ._answers import Accepted, json_error, kind_problems, parse_json_body, problem_at, same_secret
from ._state import SandboxState

REGIONS = ("eu", "us")
DEFAULT_REGION = "eu"
_DG_HOST = re.compile(r"^flow-server\.(?P<region>[a-z]+)\.dgdeepai\.com(?::\d+)?$", re.IGNORECASE)


def region_of(request: Request) -> str | Response:
    """The region a request is for (its path, else its Host, else the default), or the 404 for an unknown
    one."""
    region = request.path_params.get("region")
    if region is None:
        match = _DG_HOST.match(request.headers.get("host", ""))
        region = match.group("region").lower() if match else DEFAULT_REGION
    if region not in REGIONS:
        return json_error(404, f"unknown Digital Genius region {region!r}; use one of {', '.join(REGIONS)}")
    return str(region)


class DigitalGenius:
    def __init__(self, state: SandboxState) -> None:
        self.state = state

    def execution(self, request: Request, raw: bytes, region: str) -> Accepted | Response:
        creds = self.state.config.credentials
        problem = _basic_auth_problem(
            request.headers.get("authorization"), creds.dg_api_key, creds.dg_api_secret
        )
        if problem is not None:
            return json_error(
                401,
                "unauthenticated",
                [problem_at("Authorization", problem)],
                headers={"WWW-Authenticate": 'Basic realm="flow-server"'},
            )
        payload, bad = parse_json_body(request, raw)
        if bad is not None:
            return bad
        kind = "dg.execution"
        errors = kind_problems(kind, payload)
        if errors:
            return json_error(400, f"the payload is not a valid {kind}", errors, kind=kind)
        # The real success body is not documented: answer the least a client could come to depend on.
        return Accepted(
            JSONResponse({}, status_code=200),
            kind=kind,
            body=payload,
            external_id=str(payload["external_id"]),
            region=region,
        )


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
    if not (same_secret(given_key, key) & same_secret(given_secret, secret)):
        return "API key and secret do not match"
    return None
