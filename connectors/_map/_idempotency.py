"""Idempotency keys: the one value a vendor sees for a delivery, however often and by whichever worker it is
sent. It is derived from the delivery key (or taken from the mapping's own ``external_id``, when the config
prefers it), and once a journal row records it, every retry sends that recorded value again."""

from __future__ import annotations

from typing import Any

from .._config import IdempotencySettings, PlannedTarget


def derive_idempotency_key(
    settings: IdempotencySettings,
    planned: PlannedTarget,
    payload: dict[str, Any],
    key: str,
    mapping: str,
    digest: str,
    recorded: str | None,
) -> tuple[str, bool]:
    """The delivery's idempotency key; for DG payloads also written into external_id (both places). And
    whether that changed the payload (a payload validated before must then be validated again)."""
    is_dg = planned.kind.api == "dg"
    inputs = payload.get("inputs") if is_dg else None
    given = payload.get("external_id") if is_dg else None
    if not given and isinstance(inputs, dict):
        given = inputs.get("external_id")
    if recorded:
        value = recorded  # what an earlier attempt sent: a retry must not change it
    elif settings.prefer_mapping and isinstance(given, str) and given:
        value = given
    else:
        value = settings.external_id.format(key=key, mapping=mapping, target=planned.name, source_hash=digest)
    changed = False
    if is_dg:
        changed = payload.get("external_id") != value
        payload["external_id"] = value
        if isinstance(inputs, dict):
            changed = changed or inputs.get("external_id") != value
            inputs["external_id"] = value
    return value, changed
