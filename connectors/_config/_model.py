"""The runtime config as objects: connections, routes, delivery, journal settings. Built by ``load_config``
from a file (``_load``), or directly in code; defaults live here, once."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx
from shipmap.engine import CompiledMapping, Location

from .._deliver._auth import ApiKeyAuth, BasicAuth, BearerAuth, FenixSessionAuth, NoAuth, ShipmapAuth
from .._deliver._breaker import BreakerSettings
from .._errors import ConfigError
from .._redact import Redactor

if TYPE_CHECKING:
    from ._secrets import CredentialReader


PathKey = tuple[str | int, ...]
Scheme = Literal["none", "basic", "fenix_session", "api_key", "bearer"]
Api = Literal["fenix", "dg", "generic"]
DEFAULT_JOURNAL = ".shipmap/journal.db"
DEFAULT_IDEMPOTENCY_HEADER = "Idempotency-Key"
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """How a connection authenticates. Secret fields are hidden from ``repr``."""

    scheme: Scheme = "none"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    store_name: str | None = None
    token: str | None = field(default=None, repr=False)
    header: str = "x-api-key"
    prefix: str = ""
    login_path: str = "/login"
    token_ttl: float = 4 * 3600.0
    refresh_margin: float = 300.0
    # Reads the credentials again at each login (rotation without restart); set when loaded from a file.
    reader: CredentialReader | None = field(default=None, repr=False, compare=False)

    def secrets(self) -> tuple[str, ...]:
        # Basic credentials carry the DG API key as the username: that is a secret too.
        user = self.username if self.scheme == "basic" else None
        return tuple(s for s in (self.password, self.api_key, self.token, user) if s)

    def build(self, base_url: str, redactor: Redactor) -> ShipmapAuth:
        """A fresh httpx auth object for a connection at ``base_url``."""
        if self.scheme == "basic":
            return BasicAuth(self.username or "", self.password or "", redactor=redactor)
        if self.scheme == "api_key":
            return ApiKeyAuth(self.api_key or "", header=self.header, prefix=self.prefix, redactor=redactor)
        if self.scheme == "bearer":
            return BearerAuth(self.token or "", redactor=redactor)
        if self.scheme == "fenix_session":
            return FenixSessionAuth(
                login_url=join_url(base_url, self.login_path),
                username=self.username or "",
                password=self.password or "",
                api_key=self.api_key or "",
                store_name=self.store_name or "",
                token_ttl=self.token_ttl,
                refresh_margin=self.refresh_margin,
                redactor=redactor,
                refresh=self.reader.read if self.reader is not None else None,
            )
        return NoAuth()


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 5.0
    read: float = 30.0
    write: float = 30.0
    pool: float = 30.0
    total: float = 60.0  # the deadline of one attempt, login and body read included, whatever the server does

    def httpx(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)


@dataclass(frozen=True, slots=True)
class Connection:
    """An endpoint: a base URL and an auth scheme. ``api`` says which target kinds default to it."""

    name: str
    api: Api
    base_url: str
    auth: AuthSettings = AuthSettings()
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: Timeouts | None = None
    idempotency_header: str | None = DEFAULT_IDEMPOTENCY_HEADER
    breaker: BreakerSettings | None = None  # None: delivery.breaker
    max_rate: float | None = None  # requests per second at most; None: no limit


@dataclass(frozen=True, slots=True)
class TargetRoute:
    """Overrides for one target of a mapping: where and how its payloads are sent."""

    connection: str | None = None
    path: str | None = None
    method: str | None = None
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class MappingRoute:
    """One entry of ``mappings``: a mapping (name, path or compiled object) and the events it applies to.

    With neither ``match`` nor ``topics`` it applies to every event.
    """

    mapping: str | CompiledMapping
    match: str | None = None
    topics: tuple[str, ...] = ()
    body: str | None = None
    default_zone: str | None = None
    targets: Mapping[str, TargetRoute] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EventSettings:
    body: str | None = None
    topic: str | None = None
    routing: Literal["all", "first"] = "all"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts per delivery (the first included) and the backoff between them, in seconds."""

    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    jitter: Literal["full", "equal", "none"] = "full"
    retry_after_cap: float = 60.0


@dataclass(frozen=True, slots=True)
class IdempotencySettings:
    external_id: str = "sm-{key}"
    prefer_mapping: bool = True


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    concurrency: int = 8
    timeout: Timeouts = Timeouts()
    retry: RetryPolicy = RetryPolicy()
    idempotency: IdempotencySettings = IdempotencySettings()
    response_excerpt_chars: int = 2048
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    # Worker processes that read, map, validate and encode for `shipmap run` (0 or 1); "auto": 1 on Linux
    # with two CPUs or more (a forked worker; elsewhere fork is possible but untested, so ask for it with 1).
    # Library runs take ``Runtime.run(..., workers=)`` instead.
    workers: int | Literal["auto"] = "auto"

    def resolved_workers(self) -> int:
        if self.workers != "auto":
            return self.workers
        return 1 if sys.platform.startswith("linux") and (os.cpu_count() or 1) >= 2 else 0


@dataclass(frozen=True, slots=True)
class JournalSettings:
    """Where the journal lives: ``url`` (a ``postgresql://`` database), else ``path`` (an SQLite file);
    neither keeps it in memory: no resume across runs."""

    path: Path | None = None
    synchronous: Literal["normal", "full"] = "normal"
    url: str | None = None
    lease: float = 30.0  # a shared (PostgreSQL) journal: seconds a worker holds a delivery between renewals

    @property
    def location(self) -> str | Path | None:
        return self.url or self.path


@dataclass(frozen=True)
class RuntimeConfig:
    """Everything a Runtime needs. Built by ``load_config`` from a file, or directly in code."""

    connections: tuple[Connection, ...]
    mappings: tuple[MappingRoute, ...]
    events: EventSettings = EventSettings()
    delivery: DeliverySettings = DeliverySettings()
    journal: JournalSettings = JournalSettings()
    file: str | None = None
    base_dir: Path = field(default_factory=Path.cwd)
    # Where each key was written, when loaded from a file: lets later checks point at the right line.
    locations: Mapping[PathKey, Location] = field(default_factory=dict, repr=False, compare=False)
    secrets: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    # ``shipmap serve``'s sections, as validated by the schema; connectors/_serve/_settings.py reads them.
    sources: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    serve: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def where(self, path: PathKey) -> Location | None:
        while True:
            found = self.locations.get(path)
            if found is not None or not path:
                return found
            path = path[:-1]

    def error(self, message: str, path: PathKey = (), *, key: bool = False) -> ConfigError:
        location = self.locations.get(("#key", *path)) if key else None
        return ConfigError(message, location=location or self.where(path))


def join_url(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + "/" + path.lstrip("/")


def parse_duration(value: float | int | str) -> float:
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(f"not a duration: {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]
