"""The dry run's view of the map stage: what a run would do with each delivery, with the exact request.

``Runtime.plan`` expands each event as a run would (reading the journal only to show skips) and turns every
step into a :class:`PlanEntry`; headers and body are redacted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .._redact import Redactor
from ._steps import Dead, Job, Skip, Step, Unrouted

Action = Literal["send", "skip", "dead", "unrouted", "rejected"]
_SKIPPED_BECAUSE = {
    "delivered": "already delivered",
    "dead": "dead-lettered earlier (shipmap replay)",
    "resolved": "resolved earlier (by a replay, or by hand: shipmap dead-letters --resolve)",
}


@dataclass(frozen=True, slots=True)
class PlanEntry:
    """What a run would do with one delivery (or one event that yields none). Headers are redacted."""

    action: Action
    origin: str | None
    mapping: str | None = None
    target: str | None = None
    key: str | None = None
    method: str | None = None
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None
    reason: str | None = None


def plan_entry(
    step: Step, origin: str | None, headers_for: Callable[[str], dict[str, str]], redactor: Redactor
) -> PlanEntry | None:
    """The entry of one step (None for the journal's bookkeeping steps). ``headers_for``: a connection's
    own headers, redacted (``Runtime.headers_for``)."""
    if isinstance(step, Job):
        request = step.request
        headers = headers_for(request.connection)
        headers.update(redactor.redact_headers(request.headers))
        body = redactor.redact_json(request.payload)
        return PlanEntry(
            "send",
            origin,
            step.mapping,
            step.target,
            step.key,
            request.method,
            redactor.redact(request.url),  # a secret filled into a path is masked as in headers and body
            headers,
            body,
        )
    if isinstance(step, Dead):
        return PlanEntry(
            "dead", origin, step.mapping, step.target, step.key, reason=redactor.redact(step.reason)
        )
    if isinstance(step, Skip):
        why = _SKIPPED_BECAUSE.get(step.state, step.state)
        return PlanEntry("skip", origin, step.mapping, step.target, step.key, reason=why)
    if isinstance(step, Unrouted):
        return PlanEntry("unrouted", origin, reason=step.reason)
    return None  # journal bookkeeping only
