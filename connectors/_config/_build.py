"""From a validated, interpolated config document to the config objects (``_model``).

The schema, generated from the dataclasses in ``_model`` (``_schema``), has checked the document; the
dataclasses say what each key becomes and hold every default. A section is built generically
(:func:`build_section`): a key the file gives becomes the field of that name, converted where it needs it
(durations, nested sections), and a key it leaves out keeps the dataclass's default. So no default and no key
is written a second time here; the few keys that are not fields (an auth ``key``/``secret`` alias, a
connection's ``region``, a route's ``topic``) are handled by name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from shipmap.engine import Location

from .._deliver._breaker import BreakerSettings
from .._redact import is_sensitive_name
from .._store._journal_pg import url_password
from ._model import (
    DEFAULT_JOURNAL,
    AuthSettings,
    Connection,
    DeliverySettings,
    EventSettings,
    IdempotencySettings,
    JournalSettings,
    MappingRoute,
    PathKey,
    RetryPolicy,
    RuntimeConfig,
    TargetRoute,
    Timeouts,
    parse_duration,
    resolved,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Section = TypeVar("Section", bound="DataclassInstance")
DG_REGION_URL = "https://flow-server.{region}.dgdeepai.com"


def build_config(value: dict[str, Any], file: Path, locations: dict[PathKey, Location]) -> RuntimeConfig:
    base_dir = file.resolve().parent
    connections = tuple(_connection(name, item) for name, item in value["connections"].items())
    events_raw = value.get("events") or {}
    events = build_section(EventSettings, events_raw)
    routes = tuple(_route(item) for item in value["mappings"])
    delivery = _delivery(value.get("delivery") or {})
    journal_raw = value.get("journal") or {}
    if isinstance(journal_raw, str):
        journal_raw = {"url": journal_raw}
    # The default file only when no url is given: a file that gives both is refused by check_across_sections,
    # as a config built in code is.
    path = journal_raw.get("path", None if "url" in journal_raw else DEFAULT_JOURNAL)
    journal = build_section(
        JournalSettings, journal_raw, path=resolved(base_dir / path) if path is not None else None
    )
    secrets: set[str] = set()
    if journal.url and url_password(journal.url):
        secrets.add(str(url_password(journal.url)))
    for connection in connections:
        secrets.update(item for header, item in connection.headers.items() if is_sensitive_name(header))
        secrets.update(connection.auth.secrets())
    for source in (value.get("sources") or {}).values():
        given = source.get("secret")
        secrets.update([given] if isinstance(given, str) else given or [])
    config = RuntimeConfig(
        connections=connections,
        mappings=routes,
        events=events,
        delivery=delivery,
        journal=journal,
        file=str(file),
        base_dir=base_dir,
        locations=MappingProxyType(locations),
        secrets=frozenset(secrets),
        sources=value.get("sources") or {},
        serve=value.get("serve") or {},
    )
    return config


def build_section(
    cls: type[Section],
    raw: Mapping[str, Any],
    convert: Mapping[str, Callable[[Any], Any]] | None = None,
    **fixed: Any,
) -> Section:
    """A ``cls`` from one validated section of the file: each key the file gives that names a field of
    ``cls`` (a duration field through ``parse_duration``, or through ``convert`` where it names one), then
    ``fixed``; every other field keeps its default."""
    fields = {field.name for field in dataclasses.fields(cls)}
    durations = {
        field.name: _nullable_duration if field.metadata.get("nullable") else parse_duration
        for field in dataclasses.fields(cls)
        if field.metadata.get("duration")
    }
    convert = {**durations, **(convert or {})}
    given = {
        key: convert[key](value) if key in convert else value for key, value in raw.items() if key in fields
    }
    return cls(**{**given, **fixed})


def _nullable_duration(value: float | int | str | None) -> float | None:
    return None if value is None else parse_duration(value)


def _connection(name: str, item: dict[str, Any]) -> Connection:
    return build_section(
        Connection,
        item,
        {"timeout": _timeouts, "breaker": _breaker},
        name=name,
        base_url=item.get("base_url") or DG_REGION_URL.format(region=item["region"]),
        auth=_auth(item.get("auth") or {"scheme": "none"}),
        headers=MappingProxyType(dict(item.get("headers") or {})),
    )


def _auth(raw: dict[str, Any]) -> AuthSettings:
    # Basic auth may name its credentials after DG's documents: key and secret.
    return build_section(
        AuthSettings,
        raw,
        username=raw["username"] if "username" in raw else raw.get("key"),
        password=raw["password"] if "password" in raw else raw.get("secret"),
    )


def _timeouts(value: Any) -> Timeouts:
    if isinstance(value, dict):
        return build_section(Timeouts, value)
    seconds = parse_duration(value)
    # One duration for every phase: the overall deadline stays the default, or twice it if that is longer.
    return Timeouts(seconds, seconds, seconds, seconds, max(Timeouts().total, 2 * seconds))


def _breaker(raw: dict[str, Any]) -> BreakerSettings:
    return build_section(BreakerSettings, raw)


def _route(item: dict[str, Any]) -> MappingRoute:
    topic = item.get("topic")
    targets = {name: build_section(TargetRoute, t) for name, t in (item.get("targets") or {}).items()}
    return build_section(
        MappingRoute,
        item,
        topics=(topic,) if isinstance(topic, str) else tuple(topic or ()),
        targets=MappingProxyType(targets),
    )


def _delivery(raw: dict[str, Any]) -> DeliverySettings:
    return build_section(
        DeliverySettings,
        raw,
        {
            "timeout": _timeouts,
            "retry": lambda value: build_section(RetryPolicy, value or {}),
            "idempotency": lambda value: build_section(IdempotencySettings, value or {}),
            "breaker": lambda value: _breaker(value or {}),
        },
    )
