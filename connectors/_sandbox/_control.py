"""The ``/_sandbox`` API: what a test or a user asks the sandbox itself (health, the recorded requests, stats,
reset, token expiry, and the fault plans read and set at run time). Never faulted, never recorded."""

from __future__ import annotations

import json
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ._answers import is_json_content_type, json_error, problem_at, read_body, too_large
from ._api_faults import api_named
from ._faults import FaultPlan
from ._state import SandboxState

log = logging.getLogger("shipmap.sandbox")

MAX_PLAN = 64 * 1024  # a fault plan's body: a spec or its object is a few hundred bytes


class Control:
    def __init__(self, state: SandboxState) -> None:
        self.state = state

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def requests(self, request: Request) -> Response:
        query = request.query_params
        try:
            since = int(query.get("since", "0"))
        except ValueError:
            return json_error(400, "since must be an integer", [problem_at("since", "not an integer")])
        found = self.state.recorder.requests(
            api=query.get("api"), endpoint=query.get("endpoint"), kind=query.get("kind"), since=since
        )
        return JSONResponse({"count": len(found), "requests": [r.to_dict() for r in found]})

    async def stats(self, request: Request) -> Response:
        return JSONResponse(self.state.stats())

    async def source_requests(self, request: Request) -> Response:
        source_api = self.state.source_api
        found = source_api.requests()
        return JSONResponse({"count": len(found), "forgotten": source_api.forgotten(), "requests": found})

    async def reset(self, request: Request) -> Response:
        self.state.reset()
        return JSONResponse({"status": "reset"})

    async def expire(self, request: Request) -> Response:
        return JSONResponse({"expired": self.state.expire_tokens()})

    async def faulted(self, request: Request) -> Response:
        found, forgotten = self.state.recorder.faulted_requests()
        return JSONResponse(
            {"count": len(found), "forgotten": forgotten, "faulted": [f.to_dict() for f in found]}
        )

    async def faults(self, request: Request) -> Response:
        """The plan for both APIs, or with ``?api=fenix`` (``dg``) the plan that answers that API. DELETE with
        ``?api=fenix`` removes Fenix's own plan: the plan for both answers it again."""
        given = request.query_params.get("api")
        try:
            api = None if given is None else api_named(given)
        except ValueError as error:
            return json_error(400, "not an API of the sandbox", [problem_at("api", str(error))])
        if request.method == "DELETE":
            if api is None:
                why = "which API's own plan to remove (fenix or dg); to stop every fault, POST none"
                return json_error(400, "no api to remove the plan of", [problem_at("api", why)])
            self.state.faults.remove(api)
            log.info("faults of %s: its own plan removed, the plan for both answers it", api)
        elif request.method == "POST":
            plan = await _plan_from_request(request)
            if isinstance(plan, Response):
                return plan
            self.state.faults.configure(plan, api)
            log.info("faults of %s set to %s", api or "both APIs", plan.spec())
        return JSONResponse(self.state.faults.snapshot(api))

    async def source_faults(self, request: Request) -> Response:
        """The fake source API's own fault plan, read and set like ``/_sandbox/faults``."""
        injector = self.state.source_api.faults
        if request.method == "POST":
            plan = await _plan_from_request(request)
            if isinstance(plan, Response):
                return plan
            injector.configure(plan)
            log.info("source API faults set to %s", plan.spec())
        return JSONResponse(injector.snapshot())


async def _plan_from_request(request: Request) -> FaultPlan | Response:
    """The fault plan a POST sets, or the answer refusing it (413 past ``MAX_PLAN``, 400 not a plan)."""
    body = await read_body(request, MAX_PLAN)
    if body is None:
        return too_large(MAX_PLAN)
    try:
        return _plan_from_body(body.decode("utf-8", errors="replace"), request.headers.get("content-type"))
    except ValueError as error:
        return json_error(400, "not a fault plan", [problem_at("faults", str(error))])


def _plan_from_body(raw: str, content_type: str | None) -> FaultPlan:
    """``{"spec": "..."}``, a ``FaultPlan.to_dict`` object, or the spec as plain text."""
    if not is_json_content_type(content_type):
        return FaultPlan.parse(raw)
    try:
        data = json.loads(raw) if raw.strip() else {}
    except RecursionError:  # a ValueError (JSONDecodeError) already says where the JSON breaks
        raise ValueError("not JSON: arrays or objects nested too deeply") from None
    if not isinstance(data, dict):
        raise ValueError('expected {"spec": "..."} or an object of fault plan fields')
    if "spec" in data:
        if set(data) != {"spec"} or not isinstance(data["spec"], str | None):
            raise ValueError('"spec" must be a string and stand alone')
        return FaultPlan.parse(data["spec"] or "")
    return FaultPlan.from_dict(data)
