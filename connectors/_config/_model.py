"""The runtime config as objects: connections, routes, delivery, journal settings. Built by ``load_config``
from a file (``_load``), or directly in code; defaults live here, once."""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import httpx
from shipmap.engine import CompiledMapping, Location

from .._config_key import NOT_A_KEY, about, compared_in_effect, duration_text, in_effect
from .._deliver._auth import (
    API_KEY_HEADER,
    FENIX_REFRESH_MARGIN,
    FENIX_TOKEN_TTL,
    ApiKeyAuth,
    BasicAuth,
    BearerAuth,
    FenixSessionAuth,
    NoAuth,
    ShipmapAuth,
    adapted_refresh_margin,
)
from .._deliver._breaker import BreakerSettings
from .._errors import ConfigError
from .._key_pairs import BACKOFF, REFRESH, SCHEME_ONLY, in_use, refuse_ignored, refuse_out_of_order
from .._redact import MASK, Redactor
from .._store._journal_pg import display_url
from .._store._reconnect import RECONNECT_DEADLINE_S

if TYPE_CHECKING:
    from ._secrets import CredentialReader


PathKey = tuple[str | int, ...]
Scheme = Literal["none", "basic", "fenix_session", "api_key", "bearer"]
Api = Literal["fenix", "dg", "generic"]
DEFAULT_JOURNAL = ".shipmap/journal.db"
DEFAULT_IDEMPOTENCY_HEADER = "Idempotency-Key"
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DEFAULT_KEEP = 30 * 86400.0  # journal.keep
DEFAULT_BACKOFF_BASE = 0.5  # delivery.retry.backoff_base


def dotted(path: PathKey) -> str:
    """A config key path as errors name it: ``sources.shop.secret[1]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _shown(record: Any, **masked: str) -> str:
    """A config record's ``repr``: its fields as the dataclass shows them, with ``masked`` ones given as
    written here (a secret, or a value that may hold one, masked)."""
    parts = (
        f"{f.name}={masked[f.name] if f.name in masked else repr(getattr(record, f.name))}"
        for f in fields(record)
        if f.repr
    )
    return f"{type(record).__name__}({', '.join(parts)})"


# What a key that one scheme alone reads runs with, left out (``AuthSettings.in_use``).
SCHEME_KEY_DEFAULTS: Mapping[str, str | float] = {
    "header": API_KEY_HEADER,
    "prefix": "",
    "login_path": "/login",
    "token_ttl": FENIX_TOKEN_TTL,
}


def _scheme_key(description: str, name: str, **bounds: Any) -> Any:
    """A key that one scheme alone reads (``SCHEME_ONLY``): None when left out, so that one given under another
    scheme is refused, even at its default, in code as in a file. Written, the default runs as left out does:
    the schema's ``default``."""
    default = SCHEME_KEY_DEFAULTS[name]
    duration = isinstance(default, float)
    shown = duration_text(default) if isinstance(default, float) else default
    return field(
        default=None,
        metadata=about(
            description, duration=duration, default_text=shown or None, schema_default=default, **bounds
        ),
    )


@compared_in_effect
@dataclass(frozen=True, slots=True)
class AuthSettings:
    """How a connection authenticates. Secrets are hidden from ``repr``: the password, key and token, and
    basic's username, which is the DG API key. The keys that one scheme alone reads (``login_path``,
    ``token_ttl``, ``refresh_margin``: fenix_session; ``header``, ``prefix``: api_key) are None when left out
    (:meth:`in_use` gives the value that runs) and refused under another scheme (``SCHEME_ONLY``). Two
    settings are equal when they run the same (:meth:`key_in_use`): ``login_path: /login`` written where it
    was left out is no change, and a reload keeps the session."""

    scheme: Scheme = field(default="none", metadata=about("How requests on this connection authenticate."))
    username: str | None = field(default=None, metadata=about("basic and fenix_session.", minLength=1))
    password: str | None = field(default=None, repr=False, metadata=about(minLength=4))
    api_key: str | None = field(
        default=None, repr=False, metadata=about("api_key, and fenix_session's x-api-key.", minLength=4)
    )
    store_name: str | None = field(default=None, metadata=about("fenix_session.", minLength=1))
    token: str | None = field(default=None, repr=False, metadata=about("bearer.", minLength=4))
    header: str | None = _scheme_key("api_key: the header carrying it.", "header", minLength=1)
    prefix: str | None = _scheme_key("api_key: written before the key, e.g. 'Key '.", "prefix")
    login_path: str | None = _scheme_key(
        "fenix_session: the login path on base_url.", "login_path", pattern="^/"
    )
    token_ttl: float | None = _scheme_key(
        "fenix_session: how long a login's token lasts.", "token_ttl", exclusiveMinimum=0
    )
    # None: left out, so the session adapts it (5m, at most half of token_ttl); a value given, even 5m, is used
    # as given. That it was given is the value's to say, for a file (the key written) and code alike.
    refresh_margin: float | None = field(
        default=None,
        metadata=about(
            "fenix_session: log in again this long before it expires.",
            duration=True,
            default_text=f"{duration_text(FENIX_REFRESH_MARGIN)}, at most half of token_ttl",
        ),
    )
    # Reads the credentials again (rotation without restart): a fenix_session at each login, the other schemes
    # after a 401. Set when loaded from a file whose credentials are references.
    reader: CredentialReader | None = field(default=None, repr=False, compare=False, metadata=NOT_A_KEY)

    def __post_init__(self) -> None:
        refuse_ignored(self, SCHEME_ONLY)
        if self.scheme == "fenix_session":
            REFRESH.refuse(type(self).__name__, self.refresh_margin, self.in_use("token_ttl"))

    @overload
    def in_use(self, key: Literal["token_ttl"]) -> float: ...
    @overload
    def in_use(self, key: Literal["header", "prefix", "login_path"]) -> str: ...
    def in_use(self, key: str) -> str | float:
        """The value that ``key``, read by one scheme alone, runs with: as given, or left out (None) its
        default (``x-api-key``, no prefix, ``/login``, 4h)."""
        given: str | float | None = getattr(self, key)
        return SCHEME_KEY_DEFAULTS[key] if given is None else given

    def key_in_use(self, name: str) -> object:
        """The value key ``name`` runs with: as given, or left out its default; a fenix_session's
        refresh_margin left out, the one it adapts to (at most half of token_ttl)."""
        if name in SCHEME_KEY_DEFAULTS:
            return self.in_use(name)  # type: ignore[call-overload]  # one of the scheme's keys, by name
        if name == "refresh_margin" and self.refresh_margin is None and self.scheme == "fenix_session":
            return adapted_refresh_margin(self.in_use("token_ttl"))
        return getattr(self, name)

    def __repr__(self) -> str:
        if self.scheme == "basic" and self.username is not None:
            return _shown(self, username=repr(MASK))
        return _shown(self)

    def secrets(self) -> tuple[str, ...]:
        # Basic credentials carry the DG API key as the username: that is a secret too.
        user = self.username if self.scheme == "basic" else None
        return tuple(s for s in (self.password, self.api_key, self.token, user) if s)

    def build(self, base_url: str, redactor: Redactor, *, runtime_name: str | None = None) -> ShipmapAuth:
        """A fresh httpx auth object for a connection at ``base_url``, whose log records carry
        ``runtime_name`` (a named Runtime's)."""
        auth = self._build(base_url, redactor)
        if runtime_name is not None:
            auth._mark_logs(runtime_name)
        return auth

    def differs_in_margin_alone(self, other: AuthSettings) -> bool:
        """Whether ``other`` differs from these settings only in when a session logs in again (the
        refresh_margin it runs with, given or left out): a session built from these can go on with ``other``'s margin.
        Compared key by key: settings built with this margin and ``other``'s token_ttl may break their pair
        (a reload from a 4h token renewed 1h early to a 30m one raised ConfigError here)."""
        mine, theirs = in_effect(self), in_effect(other)
        return theirs.pop("refresh_margin") != mine.pop("refresh_margin") and theirs == mine

    def _build(self, base_url: str, redactor: Redactor) -> ShipmapAuth:
        reread = self.reader.read if self.reader is not None else None
        if self.scheme == "basic":
            return BasicAuth(self.username or "", self.password or "", redactor=redactor, reread=reread)
        if self.scheme == "api_key":
            return ApiKeyAuth(
                self.api_key or "",
                header=self.in_use("header"),
                prefix=self.in_use("prefix"),
                redactor=redactor,
                reread=reread,
            )
        if self.scheme == "bearer":
            return BearerAuth(self.token or "", redactor=redactor, reread=reread)
        if self.scheme == "fenix_session":
            return FenixSessionAuth(
                login_url=join_url(base_url, self.in_use("login_path")),
                username=self.username or "",
                password=self.password or "",
                api_key=self.api_key or "",
                store_name=self.store_name or "",
                token_ttl=self.in_use("token_ttl"),
                # Left out (None), it adapts to a short token there; given, the pair rule kept it below token_ttl.
                refresh_margin=self.refresh_margin,
                redactor=redactor,
                refresh=reread,
            )
        return NoAuth()


# What a phase of a timeout left out runs with.
DEFAULT_PHASES = {"connect": 5.0, "read": 30.0, "write": 30.0, "pool": 30.0}


def _phase_field(description: str, name: str) -> Any:
    """A phase of a timeout: None when left out, so that a value given, even its default, is told from one
    left out (a phase longer than ``total`` is warned about only where given). None of them 0: every attempt
    would time out at once (and be retried, then dead-lettered)."""
    return field(
        default=None,
        metadata=about(
            description,
            duration=True,
            exclusiveMinimum=0,
            default_text=duration_text(DEFAULT_PHASES[name]),
            schema_default=DEFAULT_PHASES[name],  # written, it runs as left out does
        ),
    )


@compared_in_effect
@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float | None = _phase_field("Opening a connection.", "connect")
    read: float | None = _phase_field("Silence while reading an answer.", "read")
    write: float | None = _phase_field("Sending a request.", "write")
    pool: float | None = _phase_field("Waiting for a free connection.", "pool")
    # The deadline of one attempt, whatever the server does.
    total: float = field(
        default=60.0,
        metadata=about(
            "The deadline of one whole attempt, login and body read included.",
            duration=True,
            exclusiveMinimum=0,
        ),
    )

    def phase(self, name: str) -> float:
        """The seconds phase ``name`` (connect, read, write or pool) runs with: given, or its default."""
        given: float | None = getattr(self, name)
        return DEFAULT_PHASES[name] if given is None else given

    def key_in_use(self, name: str) -> object:
        return self.phase(name) if name in DEFAULT_PHASES else getattr(self, name)

    def httpx(self) -> httpx.Timeout:
        return httpx.Timeout(**{name: self.phase(name) for name in DEFAULT_PHASES})


@dataclass(frozen=True, slots=True)
class Connection:
    """An endpoint: a base URL and an auth scheme. ``api`` says which target kinds default to it. Its ``repr``
    shows the headers' names, not their values: an extra header may carry a credential."""

    name: str = field(metadata=NOT_A_KEY)  # the file's key for it
    api: Api = field(
        metadata=about(
            "Which API this is: targets of kinds of this API are routed here unless a route says otherwise."
        )
    )
    base_url: str = field(
        metadata=about("Scheme, host, port and optional path prefix.", pattern=r"^https?://[^\s]+$")
    )
    auth: AuthSettings = AuthSettings()
    headers: Mapping[str, str] = field(
        default_factory=dict, metadata=about("Extra headers on every request of this connection.")
    )
    timeout: Timeouts | None = field(default=None, metadata=about(default_text="delivery.timeout"))
    idempotency_header: str | None = field(
        default=DEFAULT_IDEMPOTENCY_HEADER,
        metadata=about("Header carrying each delivery's idempotency key; null to send none.", nullable=True),
    )
    breaker: BreakerSettings | None = field(default=None, metadata=about(default_text="delivery.breaker"))
    max_rate: float | None = field(
        default=None,
        metadata=about(
            "At most this many requests per second on this connection, evenly spaced: deliveries, and the"
            " enrichment GETs of a store API's connection.",
            exclusiveMinimum=0,
            maximum=100000,
            default_text="no limit",
        ),
    )

    def __repr__(self) -> str:
        return _shown(self, headers=repr(dict.fromkeys(self.headers, MASK)))


@dataclass(frozen=True, slots=True)
class TargetRoute:
    """Overrides for one target of a mapping: where and how its payloads are sent."""

    connection: str | None = field(
        default=None,
        metadata=about("Connection name.", default_text="the one connection whose api is the kind's api"),
    )
    path: str | None = field(
        default=None,
        metadata=about(
            "Path template with {field} placeholders from the payload's top-level fields.",
            pattern="^/",
            default_text="the kind's route",
        ),
    )
    method: Literal["POST", "PUT", "PATCH"] | None = field(
        default=None, metadata=about(default_text="the kind's method")
    )
    enabled: bool = field(default=True, metadata=about("false: map but never deliver this target."))


@dataclass(frozen=True, slots=True)
class MappingRoute:
    """One entry of ``mappings``: a mapping (name, path or compiled object) and the events it applies to.

    With neither ``match`` nor ``topics`` it applies to every event.
    """

    # A compiled mapping can only be given in code.
    mapping: str | CompiledMapping = field(
        metadata=about(
            "A packaged mapping (shopify/order) or a file path relative to this config.", minLength=1
        )
    )
    match: str | None = field(
        default=None, metadata=about("JMESPath over the whole event; the entry applies when it is truthy.")
    )
    topics: tuple[str, ...] = field(default=(), metadata=NOT_A_KEY)  # the file's topic: one or a list
    body: str | None = field(
        default=None,
        metadata=about(
            "JMESPath to the source document, overriding events.body.", default_text="events.body"
        ),
    )
    default_zone: str | None = field(
        default=None, metadata=about("Passed to the mapping: the zone for datetimes that carry none.")
    )
    targets: Mapping[str, TargetRoute] = field(
        default_factory=dict, metadata=about("Per-target delivery overrides, by target name.")
    )


@dataclass(frozen=True, slots=True)
class EventSettings:
    body: str | None = field(
        default=None,
        metadata=about("JMESPath to the source document inside each event.", default_text="the event itself"),
    )
    topic: str | None = field(
        default=None, metadata=about('JMESPath to the event\'s topic, e.g. headers."X-Shopify-Topic".')
    )
    routing: Literal["all", "first"] = field(
        default="all", metadata=about("Run every matching mapping entry (all) or only the first.")
    )


@compared_in_effect
@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts per delivery (the first included) and the backoff between them, in seconds."""

    max_attempts: int = field(
        default=5, metadata=about("Attempts per delivery, the first included.", minimum=1, maximum=100)
    )
    backoff_base: float | None = field(  # None: left out, the default, at most backoff_cap
        default=None,
        metadata=about(
            "Delay after the first failed attempt, doubled each time.",
            duration=True,
            default_text=f"{duration_text(DEFAULT_BACKOFF_BASE)}, at most backoff_cap",
            schema_default=DEFAULT_BACKOFF_BASE,
        ),
    )
    backoff_cap: float = field(default=30.0, metadata=about("Longest backoff.", duration=True))
    jitter: Literal["full", "equal", "none"] = field(
        default="full", metadata=about("full (0..d), equal (d/2..d) or none.")
    )
    retry_after_cap: float = field(
        default=60.0, metadata=about("Longest wait a Retry-After header can impose.", duration=True)
    )

    def __post_init__(self) -> None:
        refuse_out_of_order(self, BACKOFF)

    @property
    def first_backoff(self) -> float:
        """The delay after the first failed attempt: ``backoff_base``, or left out its default, at most
        ``backoff_cap``."""
        return in_use(self, BACKOFF, DEFAULT_BACKOFF_BASE)

    def key_in_use(self, name: str) -> object:
        return self.first_backoff if name == "backoff_base" else getattr(self, name)


@dataclass(frozen=True, slots=True)
class IdempotencySettings:
    external_id: str = field(
        default="sm-{key}",
        metadata=about(
            "Template of the DG external_id: {key} {mapping} {target} {source_hash}.", minLength=1
        ),
    )
    prefer_mapping: bool = field(default=True, metadata=about("Keep an external_id the mapping set itself."))


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    concurrency: int = field(
        default=8, metadata=about("Requests in flight at once.", minimum=1, maximum=1024)
    )
    timeout: Timeouts = Timeouts()
    retry: RetryPolicy = RetryPolicy()
    idempotency: IdempotencySettings = IdempotencySettings()
    response_excerpt_chars: int = field(
        default=2048,
        metadata=about("How much of a failed response body a dead letter keeps.", minimum=0, maximum=65536),
    )
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    # "auto": a forked worker on Linux only, where it is tested (elsewhere ask for it with 1). Library runs
    # take ``Runtime.run(..., workers=)`` instead.
    workers: int | Literal["auto"] = field(
        default="auto",
        metadata=about(
            "shipmap run: 1 reads, maps, validates and encodes events in a worker process while the main one"
            " sends; 0 does it all in one process.",
            minimum=0,
            maximum=1,
            default_text="auto: 1 on Linux with two CPUs or more",
        ),
    )

    def resolved_workers(self) -> int:
        if self.workers != "auto":
            return self.workers
        return 1 if sys.platform.startswith("linux") and (os.cpu_count() or 1) >= 2 else 0


@dataclass(frozen=True, slots=True)
class JournalSettings:
    """Where the journal lives: ``url`` (a ``postgresql://`` database), else ``path`` (an SQLite file);
    neither keeps it in memory: no resume across runs. Its ``repr`` shows the url without its password."""

    path: Path | None = field(
        default=None,
        metadata=about("SQLite file, relative to this config.", minLength=1, default_text=DEFAULT_JOURNAL),
    )
    synchronous: Literal["normal", "full"] = field(
        default="normal", metadata=about("SQLite synchronous mode.")
    )
    url: str | None = field(
        default=None,
        metadata=about(
            "A PostgreSQL journal shared by many workers: postgresql://user:${PASSWORD}@host:5432/db"
            " (psycopg 3, the postgresql extra).",
            pattern="^postgres(ql)?://",
        ),
    )
    lease: float = field(
        default=30.0,
        metadata=about(
            "PostgreSQL: how long a worker holds a delivery without renewing it before another worker may"
            " take it over.",
            duration=True,
            exclusiveMinimum=0,  # 0: every delivery in flight is another worker's to take, and sent twice
        ),
    )
    keep: float | None = field(
        default=DEFAULT_KEEP,
        metadata=about(
            "How long delivered and resolved deliveries (and unrouted and rejected records) stay in the journal;"
            " a run or service then forgets them, and their source documents, so the journal does not grow"
            " forever. The same document coming again later is delivered again. Pending deliveries and dead"
            " letters are never forgotten. null: keep everything.",
            duration=True,
            nullable=True,
        ),
    )
    reconnect_deadline: float = field(
        default=RECONNECT_DEADLINE_S,
        metadata=about(
            "PostgreSQL: how long a connection the database ended (a restart, a failover) is opened again for:"
            " the journal's and shipmap serve's delivery side of the inbox wait for it, and a worker that lost"
            " its connection for the shared breaker and max_rate state keeps delivering on its own copy"
            " meanwhile; then the run, or shipmap serve, stops with exit code 7 (nothing is lost: the next"
            " start sends what is pending).",
            duration=True,
            minimum=1.0,
            maximum=3600.0,
            why="shorter, a database restart stops every worker; longer, a worker spends that long on its own"
            " copy of the breakers and its share of max_rate, apart from the others",
        ),
    )
    wait_for_others: float = field(
        default=600.0,
        metadata=about(
            "PostgreSQL: how long shipmap run, its input done, waits for the deliveries other live workers"
            " hold (it stops sooner when none moved for three leases); then it names them and exits 10.",
            duration=True,
        ),
    )

    @property
    def location(self) -> str | Path | None:
        return self.url or self.path

    def __repr__(self) -> str:
        return _shown(self, url=repr(display_url(self.url))) if self.url else _shown(self)


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
    # Set by load_config, whose checks are check_objects' and more: a Runtime does not run them again. Not an
    # argument, so dataclasses.replace() gives a new config this is False for, checked when a Runtime takes it.
    checked: bool = field(default=False, init=False, repr=False, compare=False)

    def where(self, path: PathKey) -> Location | None:
        while True:
            found = self.locations.get(path)
            if found is not None or not path:
                return found
            path = path[:-1]

    def error(self, message: str, path: PathKey = (), *, key: bool = False) -> ConfigError:
        location = self.locations.get(("#key", *path)) if key else None
        return ConfigError(message, location=location or self.where(path))


def resolved(path: Path) -> Path:
    """``path`` made absolute, its links followed; as written (made absolute) when they loop, where Python
    3.11's ``resolve()`` raises RuntimeError: opening it then gives the OS's 'Too many levels of symbolic
    links'."""
    try:
        return path.resolve()
    except RuntimeError:
        return path.absolute()


def not_a_file(path: Path) -> str | None:
    """Why ``path`` is no file to read, in words for a message ('is a directory, not a file', 'does not
    exist', 'cannot be read: Too many levels of symbolic links'), or None when it is a regular file."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as error:  # a link that loops, a parent without permission: the OS's words, no [Errno]
        return f"cannot be read: {error.strerror or 'I/O error'}"
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    return None if stat.S_ISREG(mode) else "is not a regular file"


def join_url(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + "/" + path.lstrip("/")


def parse_duration(value: float | int | str) -> float:
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(f"not a duration: {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]
