"""From a validated, interpolated config document to the config objects (``_model``)."""

from __future__ import annotations

import re
from pathlib import Path
from types import MappingProxyType
from typing import Any

from shipmap.engine import Location

from .._deliver._breaker import BreakerSettings
from .._errors import ConfigError
from .._redact import is_sensitive_name
from .._store._journal_pg import url_password
from ._model import (
    DEFAULT_IDEMPOTENCY_HEADER,
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
)

DG_REGION_URL = "https://flow-server.{region}.dgdeepai.com"
EXTERNAL_ID_FIELDS = ("key", "mapping", "target", "source_hash")


def build_config(value: dict[str, Any], file: Path, locations: dict[PathKey, Location]) -> RuntimeConfig:
    base_dir = file.resolve().parent
    connections = tuple(_connection(name, item) for name, item in value["connections"].items())
    events_raw = value.get("events") or {}
    events = EventSettings(
        body=events_raw.get("body"), topic=events_raw.get("topic"), routing=events_raw.get("routing", "all")
    )
    routes = tuple(_route(item) for item in value["mappings"])
    delivery = _delivery(value.get("delivery") or {})
    journal_raw = value.get("journal") or {}
    if isinstance(journal_raw, str):
        journal_raw = {"url": journal_raw}
    if "url" in journal_raw and "path" in journal_raw:
        raise ConfigError(
            "journal: takes path (an SQLite file) or url (PostgreSQL), not both",
            location=locations.get(("journal", "url")),
        )
    journal = JournalSettings(
        path=(base_dir / journal_raw.get("path", DEFAULT_JOURNAL)).resolve(),
        synchronous=journal_raw.get("synchronous", "normal"),
        url=journal_raw.get("url"),
        lease=parse_duration(journal_raw.get("lease", 30)),
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
    template = delivery.idempotency.external_id
    for placeholder in re.findall(r"\{([^{}]*)\}", template):
        if placeholder not in EXTERNAL_ID_FIELDS:
            raise config.error(
                "external_id template has an unknown placeholder; use "
                + ", ".join("{" + f + "}" for f in EXTERNAL_ID_FIELDS),
                ("delivery", "idempotency", "external_id"),
            )
    return config


def _connection(name: str, item: dict[str, Any]) -> Connection:
    base_url = item.get("base_url") or DG_REGION_URL.format(region=item["region"])
    auth_raw = item.get("auth") or {"scheme": "none"}
    auth = AuthSettings(
        scheme=auth_raw["scheme"],
        username=auth_raw.get("username", auth_raw.get("key")),
        password=auth_raw.get("password", auth_raw.get("secret")),
        api_key=auth_raw.get("api_key"),
        store_name=auth_raw.get("store_name"),
        token=auth_raw.get("token"),
        header=auth_raw.get("header", "x-api-key"),
        prefix=auth_raw.get("prefix", ""),
        login_path=auth_raw.get("login_path", "/login"),
        token_ttl=parse_duration(auth_raw.get("token_ttl", 4 * 3600)),
        refresh_margin=parse_duration(auth_raw.get("refresh_margin", 300)),
    )
    timeout = _timeouts(item["timeout"]) if "timeout" in item else None
    return Connection(
        breaker=_breaker(item["breaker"]) if "breaker" in item else None,
        max_rate=item.get("max_rate"),
        name=name,
        api=item["api"],
        base_url=base_url,
        auth=auth,
        headers=MappingProxyType(dict(item.get("headers") or {})),
        timeout=timeout,
        idempotency_header=item.get("idempotency_header", DEFAULT_IDEMPOTENCY_HEADER),
    )


def _timeouts(value: Any) -> Timeouts:
    defaults = Timeouts()
    if isinstance(value, dict):
        return Timeouts(
            **{
                k: parse_duration(value[k]) if k in value else getattr(defaults, k)
                for k in ("connect", "read", "write", "pool", "total")
            }
        )
    seconds = parse_duration(value)
    # One duration for every phase: the overall deadline stays the default, or twice it if that is longer.
    return Timeouts(seconds, seconds, seconds, seconds, max(defaults.total, 2 * seconds))


def _breaker(raw: dict[str, Any]) -> BreakerSettings:
    defaults = BreakerSettings()
    return BreakerSettings(
        failures=raw.get("failures", defaults.failures),
        cooldown=parse_duration(raw.get("cooldown", defaults.cooldown)),
        cooldown_cap=parse_duration(raw.get("cooldown_cap", defaults.cooldown_cap)),
        outage_wait=parse_duration(raw.get("outage_wait", defaults.outage_wait)),
    )


def _route(item: dict[str, Any]) -> MappingRoute:
    topic = item.get("topic")
    topics = (topic,) if isinstance(topic, str) else tuple(topic or ())
    targets = {
        name: TargetRoute(
            connection=t.get("connection"),
            path=t.get("path"),
            method=t.get("method"),
            enabled=t.get("enabled", True),
        )
        for name, t in (item.get("targets") or {}).items()
    }
    return MappingRoute(
        mapping=item["mapping"],
        match=item.get("match"),
        topics=topics,
        body=item.get("body"),
        default_zone=item.get("default_zone"),
        targets=MappingProxyType(targets),
    )


def _delivery(raw: dict[str, Any]) -> DeliverySettings:
    retry_raw = raw.get("retry") or {}
    defaults = RetryPolicy()
    retry = RetryPolicy(
        max_attempts=retry_raw.get("max_attempts", defaults.max_attempts),
        backoff_base=parse_duration(retry_raw.get("backoff_base", defaults.backoff_base)),
        backoff_cap=parse_duration(retry_raw.get("backoff_cap", defaults.backoff_cap)),
        jitter=retry_raw.get("jitter", defaults.jitter),
        retry_after_cap=parse_duration(retry_raw.get("retry_after_cap", defaults.retry_after_cap)),
    )
    idem_raw = raw.get("idempotency") or {}
    idempotency = IdempotencySettings(
        external_id=idem_raw.get("external_id", IdempotencySettings().external_id),
        prefer_mapping=idem_raw.get("prefer_mapping", True),
    )
    return DeliverySettings(
        concurrency=raw.get("concurrency", 8),
        timeout=_timeouts(raw["timeout"]) if "timeout" in raw else Timeouts(),
        retry=retry,
        idempotency=idempotency,
        response_excerpt_chars=raw.get("response_excerpt_chars", 2048),
        breaker=_breaker(raw.get("breaker") or {}),
        workers=raw.get("workers", "auto"),
    )
