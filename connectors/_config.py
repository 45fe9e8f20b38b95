"""The runtime config: a YAML file (its schema is ``config.schema.json``) or the same objects built in code.

Loading a file: YAML is composed with node marks so every error names ``file:line:col``; ``${VAR}`` references
are filled from the environment, then from a ``.env`` file beside the config; the result is validated against
the JSON Schema; then mappings are loaded and every target is given a connection, method and path (the plan).
Error messages name keys, never values: a config holds secrets.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import httpx
import jmespath
import jsonschema
from dotenv.parser import parse_stream
from dotenv.variables import parse_variables
from jmespath.exceptions import JMESPathError
from shipmap.engine import CompiledMapping, Location, MappingError, TargetKind, load_mapping
from shipmap.engine._yaml import load_located

from ._deliver._auth import ApiKeyAuth, BasicAuth, BearerAuth, FenixSessionAuth, NoAuth, ShipmapAuth
from ._deliver._breaker import BreakerSettings
from ._errors import ConfigError
from ._redact import Redactor, is_sensitive_name
from ._store._journal_pg import url_password

PathKey = tuple[str | int, ...]
Locator = Callable[[PathKey], Location | None]
Scheme = Literal["none", "basic", "fenix_session", "api_key", "bearer"]
Api = Literal["fenix", "dg", "generic"]

DG_REGION_URL = "https://flow-server.{region}.dgdeepai.com"
DEFAULT_JOURNAL = ".shipmap/journal.db"
DEFAULT_IDEMPOTENCY_HEADER = "Idempotency-Key"
EXTERNAL_ID_FIELDS = ("key", "mapping", "target", "source_hash")
# Config keys whose values are credentials: they should be ${VAR} references, and are always redacted.
SECRET_FIELDS = frozenset({"password", "secret", "key", "api_key", "token"})

_log = logging.getLogger("shipmap.connectors.config")
_VAR = re.compile(r"\$\$|\$\{(?:file:([^}]+)|([A-Za-z_][A-Za-z0-9_]*))\}")
_MAX_SECRET_FILE_BYTES = 64 * 1024
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_MAX_CONFIG_BYTES = 1024 * 1024


def config_schema() -> dict[str, Any]:
    """The JSON Schema of the runtime config file (``shipmap schema --config`` prints it)."""
    text = resources.files(__package__).joinpath("config.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


# --- the config objects -------------------------------------------------------------------------------------


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


class CredentialReader:
    """A connection's credentials read again, as written in the config: ``${VAR}`` from the environment, then
    the env file (read again too), ``${file:/path}`` from its file. Fenix logins call ``read`` each time, so
    a rotated key or password is picked up without a restart."""

    def __init__(
        self,
        connection: str,
        written: Mapping[str, str],
        env_file: Path | None,
        environ: Mapping[str, str] | None,
    ) -> None:
        self.connection = connection
        self._written = dict(written)
        self._env_file = env_file
        self._environ = environ  # None: os.environ as it is at each read

    def read(self) -> dict[str, str]:
        """The credentials now; ValueError names the key and the reference that fails, never a value."""
        env = dict(os.environ if self._environ is None else self._environ)
        if self._env_file is not None and self._env_file.is_file():
            try:
                for key, item in _read_dotenv(self._env_file, env).items():
                    env.setdefault(key, item)
            except (OSError, ValueError, ConfigError):
                raise ValueError(f"env file {self._env_file} cannot be read") from None
        found: dict[str, str] = {}
        for key, text in self._written.items():
            where = f"connections.{self.connection}.auth.{key}"
            try:
                value, used = fill_references(text, env)
            except ValueError as error:
                raise ValueError(f"{where}: {error}") from None
            if not header_safe(value):
                source = f" (from ${{{', '.join(used)}}})" if used else ""
                raise ValueError(
                    f"{where}{source}: the value cannot be sent in an HTTP header: it holds a non-ASCII or "
                    "control character"
                )
            found[key] = value
        return found


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


# --- the plan: each mapping compiled, each target given a connection and a route ----------------------------


@dataclass(frozen=True, slots=True)
class PlannedTarget:
    name: str
    kind: TargetKind
    connection: Connection
    method: str
    path: str
    enabled: bool


@dataclass(frozen=True)
class PlannedRoute:
    index: int
    mapping: CompiledMapping
    match: Any  # a compiled JMESPath expression, or None
    topics: frozenset[str]
    body: Any
    targets: Mapping[str, PlannedTarget]

    shared: bool = False  # another mappings entry uses the same mapping

    @property
    def name(self) -> str:
        """The name deliveries of this entry are journaled and keyed under: the mapping's name, or, when the
        same mapping serves several entries (one store fanned out to two connections), the name with the
        entry's position, so each entry owes its own deliveries and replays through itself."""
        return f"{self.mapping.name}#{self.index + 1}" if self.shared else self.mapping.name


def compile_expression(expression: str, config: RuntimeConfig, path: PathKey) -> Any:
    try:
        return jmespath.compile(expression)
    except JMESPathError as error:
        position = getattr(error, "lex_position", None)
        where = f" at character {position + 1}" if isinstance(position, int) else ""
        raise config.error(f"not a valid JMESPath expression{where}", path) from None


def plan_routes(config: RuntimeConfig) -> tuple[PlannedRoute, ...]:
    """Load every mapping and route every target; ConfigError (with the config location) on any mismatch."""
    names = [c.name for c in config.connections]
    if len(set(names)) != len(names):
        raise config.error("two connections share a name", ("connections",))
    by_name = {c.name: c for c in config.connections}
    planned: list[PlannedRoute] = []
    for index, route in enumerate(config.mappings):
        here: PathKey = ("mappings", index)
        mapping = route.mapping if not isinstance(route.mapping, str) else _load(route, config, here)
        targets: dict[str, PlannedTarget] = {}
        known = {t.name for t in mapping.targets}
        for name in route.targets:
            if name not in known:
                raise config.error(
                    f"mapping '{mapping.name}' has no target '{name}' "
                    f"(its targets: {', '.join(sorted(known))})",
                    (*here, "targets", name),
                    key=True,
                )
        for target in mapping.targets:
            override = route.targets.get(target.name, TargetRoute())
            at: PathKey = (*here, "targets", target.name)
            if override.connection is not None:
                connection = by_name.get(override.connection)
                if connection is None:
                    raise config.error(
                        f"target '{target.name}' names a connection that is not defined "
                        f"(defined: {', '.join(sorted(by_name))})",
                        (*at, "connection"),
                    )
            else:
                candidates = [c for c in config.connections if c.api == target.kind.api]
                if len(candidates) != 1:
                    problem = "no connection has" if not candidates else "several connections have"
                    raise config.error(
                        f"{problem} api: {target.kind.api}, needed by target '{target.name}' "
                        f"(kind {target.kind.name}) of mapping '{mapping.name}'; "
                        f"set mappings[{index}].targets.{target.name}.connection",
                        here,
                    )
                connection = candidates[0]
            path = override.path or target.kind.route.path
            targets[target.name] = PlannedTarget(
                name=target.name,
                kind=target.kind,
                connection=connection,
                method=(override.method or target.kind.route.method).upper(),
                path=path,
                enabled=override.enabled,
            )
        planned.append(
            PlannedRoute(
                index=index,
                mapping=mapping,
                match=compile_expression(route.match, config, (*here, "match")) if route.match else None,
                topics=frozenset(route.topics),
                body=compile_expression(route.body, config, (*here, "body")) if route.body else None,
                targets=MappingProxyType(targets),
            )
        )
    counts = Counter(route.mapping.name for route in planned)
    planned = [replace(route, shared=True) if counts[route.mapping.name] > 1 else route for route in planned]
    if any(r.topics for r in config.mappings) and not config.events.topic:
        raise config.error("a mappings entry routes by topic, but events.topic is not set", ("mappings",))
    return tuple(planned)


def _load(route: MappingRoute, config: RuntimeConfig, here: PathKey) -> CompiledMapping:
    assert isinstance(route.mapping, str)
    text = route.mapping
    looks_like_path = text.endswith((".yaml", ".yml")) or text.startswith(("./", "../", "/", "~"))
    target: str = str((config.base_dir / Path(text).expanduser()).resolve()) if looks_like_path else text
    if looks_like_path and not Path(target).is_file():
        raise config.error("mapping file does not exist", (*here, "mapping"))
    return load_mapping(target, default_zone=route.default_zone)


# --- loading a config file ----------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> RuntimeConfig:
    """Read, interpolate and validate a config file. ``environ`` defaults to ``os.environ``."""
    file = Path(path)
    name = str(path)
    try:
        raw = file.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read config file {name}: {error.strerror}") from None
    if len(raw) > _MAX_CONFIG_BYTES:
        raise ConfigError("config file is larger than 1 MiB", location=Location(name, 1, 1))
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError("config file is not UTF-8 text", location=Location(name, 1, 1)) from None
    value, locations = _compose(text, name)
    if not isinstance(value, dict):
        raise ConfigError(
            "a config file is a mapping of keys (connections, mappings, ...)", location=Location(name, 1, 1)
        )
    env = dict(os.environ if environ is None else environ)
    env_file = value.get("env_file", ".env")
    if isinstance(env_file, str):
        env_path = (file.parent / env_file).resolve()
        if env_path.is_file():
            for key, item in _read_env_file(env_path, locations, env).items():
                env.setdefault(key, item)
        elif "env_file" in value:
            raise ConfigError("env_file does not exist", location=locations.get(("env_file",)))
    referenced: dict[PathKey, list[str]] = {}
    written = value
    value = _interpolate(value, (), env, locations, name, referenced)
    _validate(value, locations, name)
    _warn_literal_secrets(value, locations, referenced)
    _refuse_unsendable_secrets(value, locations, referenced)
    config = _build(value, file, locations)
    reread = (file.parent / env_file).resolve() if isinstance(env_file, str) else None
    return _with_readers(config, written, reread, environ)


def _with_readers(
    config: RuntimeConfig, written: dict[str, Any], env_path: Path | None, environ: Mapping[str, str] | None
) -> RuntimeConfig:
    """Give each fenix_session connection whose credentials are references a reader for its logins."""
    connections = []
    for connection in config.connections:
        auth = (
            (written["connections"][connection.name].get("auth") or {})
            if connection.name in written.get("connections", {})
            else {}
        )
        keys = _HEADER_SECRETS["fenix_session"]
        references = {k: auth[k] for k in keys if isinstance(auth.get(k), str) and "$" in auth[k]}
        if connection.auth.scheme == "fenix_session" and references:
            reader = CredentialReader(connection.name, references, env_path, environ)
            connection = replace(connection, auth=replace(connection.auth, reader=reader))
        connections.append(connection)
    return replace(config, connections=tuple(connections))


def _read_env_file(
    path: Path, locations: Mapping[PathKey, Location], env: Mapping[str, str]
) -> dict[str, str]:
    """The env file's variables; a file that is too large or not UTF-8 text (a binary, say) is a config
    error at the config's ``env_file`` line, never a traceback."""
    where = locations.get(("env_file",))
    try:
        found = _read_dotenv(path, env)
    except ConfigError as error:
        raise ConfigError(f"env_file: {error.message}", location=where or error.location) from None
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        raise ConfigError("env_file is not a readable UTF-8 text file", location=where) from None
    if any("\x00" in item for item in found.values()):
        raise ConfigError("env_file is not a text file (it holds NUL bytes)", location=where)
    return found


# Which auth keys each scheme sends as HTTP header values (basic auth sends base64, always safe).
_HEADER_SECRETS = {
    "fenix_session": ("username", "password", "api_key", "store_name"),
    "api_key": ("api_key", "prefix"),
    "bearer": ("token",),
}


def _refuse_unsendable_secrets(
    value: dict[str, Any], locations: Mapping[PathKey, Location], referenced: Mapping[PathKey, list[str]]
) -> None:
    """Refuse, at load, what would leak or fail at the first request: credentials in a base_url's userinfo
    (they would be journaled and printed with the URL), and a credential that cannot go in an HTTP header
    (a non-ASCII or control character). The message names the key and the variable, never the value."""
    for name, connection in value.get("connections", {}).items():
        base_url = connection.get("base_url")
        if isinstance(base_url, str) and "@" in base_url.split("://", 1)[-1].split("/", 1)[0]:
            raise ConfigError(
                f"connections.{name}.base_url: credentials in the URL (user:password@host) are refused: they "
                f"would be stored and printed with every URL. Put them under connections.{name}.auth "
                "as ${VAR} references",
                location=locations.get(("connections", name, "base_url")),
            )
        auth = connection.get("auth") or {}
        keys = [("auth", k) for k in _HEADER_SECRETS.get(auth.get("scheme", ""), ())]
        keys += [("headers", h) for h in connection.get("headers") or {}]
        for section, key in keys:
            item = (auth if section == "auth" else connection["headers"]).get(key)
            if isinstance(item, str) and not header_safe(item):
                path: PathKey = ("connections", name, section, key)
                variables = referenced.get(path)
                source = f" (from ${{{', '.join(variables)}}})" if variables else ""
                raise ConfigError(
                    f"connections.{name}.{section}.{key}{source}: the value cannot be sent in an HTTP header: "
                    "it holds a non-ASCII or control character",
                    location=locations.get(path),
                )


def header_safe(value: str) -> bool:
    """Whether ``value`` can be an HTTP header value as sent: visible ASCII, spaces and tabs only."""
    return value.isascii() and all(char == "\t" or " " <= char <= "~" for char in value)


def journal_path_of(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> Path | str:
    """The journal file (or PostgreSQL URL) a config names, without needing the connections' secrets (for
    ``shipmap dead-letters``)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        raise ConfigError(f"cannot read config file {path}") from None
    value, locations = _compose(text, str(path))
    journal = value.get("journal") if isinstance(value, dict) else None
    env = os.environ if environ is None else environ
    url = journal if isinstance(journal, str) else journal.get("url") if isinstance(journal, dict) else None
    if isinstance(url, str):
        where: PathKey = ("journal",) if isinstance(journal, str) else ("journal", "url")
        return str(_interpolate(url, where, env, locations, str(path), {}))
    raw = journal.get("path", DEFAULT_JOURNAL) if isinstance(journal, dict) else DEFAULT_JOURNAL
    if not isinstance(raw, str):
        raise ConfigError("journal.path: must be a string", location=locations.get(("journal", "path")))
    filled = _interpolate(raw, ("journal", "path"), env, locations, str(path), {})
    return (file.resolve().parent / str(filled)).resolve()


def _compose(text: str, name: str) -> tuple[Any, dict[PathKey, Location]]:
    """The config's YAML through the mappings' loader: bounded (size, nodes after alias expansion, depth,
    scalar length, number length), JSON-like tags only, no duplicate or merge keys; every error located."""
    try:
        document = load_located(text, name, str, what="config file")
    except MappingError as error:
        raise ConfigError(error.message, location=_bare(error.location)) from None
    bare = {path: Location(at.file, at.line, at.column) for path, at in document.locations.items()}
    return document.value, bare


def _bare(location: Location | None) -> Location | None:
    """The location without its line's text: a config line may hold a secret, and errors never show it."""
    return Location(location.file, location.line, location.column) if location is not None else None


def _read_dotenv(path: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``.env`` file as python-dotenv reads it: quotes, ``#`` comments, escapes in double quotes,
    multi-line quoted values, ``export``, and ``${VAR}`` / ``${VAR:-default}`` expansion, where the process
    environment wins over the file's earlier lines (as ``load_dotenv`` without override does)."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read env file {path.name}: {error.strerror}") from None
    if len(raw) > _MAX_CONFIG_BYTES:
        raise ConfigError("env file is larger than 1 MiB", location=Location(str(path), 1, 1))
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError("env file is not UTF-8 text", location=Location(str(path), 1, 1)) from None
    environ = os.environ if environ is None else environ
    found: dict[str, str] = {}
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            # The line's text is not shown: it may hold a secret.
            raise ConfigError(
                "env file: a line that is not KEY=value",
                location=Location(str(path), binding.original.line, 1),
            )
        if binding.key is None or binding.value is None:
            continue  # a blank line, a comment, or a bare KEY without a value
        scope = {**found, **environ}
        found[binding.key] = "".join(atom.resolve(scope) for atom in parse_variables(binding.value))
    return found


def _interpolate(
    value: Any,
    path: PathKey,
    env: Mapping[str, str],
    locations: Mapping[PathKey, Location],
    name: str,
    referenced: dict[PathKey, list[str]],
) -> Any:
    """Fill ``${VAR}`` references (``$$`` is a literal ``$``); ``referenced`` collects where there were."""
    if isinstance(value, dict):
        return {k: _interpolate(v, (*path, k), env, locations, name, referenced) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*path, i), env, locations, name, referenced) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    try:
        filled, variables = fill_references(value, env)
    except ValueError as error:
        raise ConfigError(str(error), location=locations.get(path) or Location(name, 1, 1)) from None
    if variables:
        referenced.setdefault(path, []).extend(variables)
    return filled


def fill_references(text: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """``text`` with ``${VAR}`` filled from ``env`` and ``${file:/path}`` from that file (its text, without
    the final newline: Docker and Kubernetes secrets are files); ``$$`` is ``$``. Returns the references
    used. ValueError names a reference that cannot be filled, never a value."""
    used: list[str] = []

    def fill(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        file, variable = match.group(1), match.group(2)
        if file is not None:
            used.append(f"file:{file}")
            return _read_secret_file(Path(file).expanduser())
        if variable not in env:
            raise ValueError(f"environment variable {variable} is not set (nor in the env file)")
        used.append(variable)
        return env[variable]

    return _VAR.sub(fill, text), used


def _read_secret_file(path: Path) -> str:
    try:
        if path.stat().st_size > _MAX_SECRET_FILE_BYTES:
            raise ValueError(f"file reference {path}: larger than 64 KiB")
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        raise ValueError(f"file reference {path}: cannot be read as UTF-8 text") from None
    return text.removesuffix("\n").removesuffix("\r")


def _validate(value: Any, locations: Mapping[PathKey, Location], name: str) -> None:
    validator = jsonschema.Draft202012Validator(config_schema())
    errors = sorted(validator.iter_errors(value), key=lambda e: _order(e, locations))
    if not errors:
        return
    error = errors[0]
    path: PathKey = tuple(error.absolute_path)
    message, at = _explain(error, path)
    location = locations.get(("#key", *at)) if at != path else None
    location = location or _nearest(locations, path) or Location(name, 1, 1)
    more = len(errors) - 1
    raise ConfigError(
        f"{_dotted(at)}: {message}" if at else message,
        location=location,
        hint=f"{more} more problem{'s' if more > 1 else ''} after this one" if more else None,
    )


def _order(error: jsonschema.ValidationError, locations: Mapping[PathKey, Location]) -> tuple[int, int]:
    where = _nearest(locations, tuple(error.absolute_path))
    return (where.line, where.column) if where else (0, 0)


def _nearest(locations: Mapping[PathKey, Location], path: PathKey) -> Location | None:
    while True:
        if path in locations:
            return locations[path]
        if not path:
            return None
        path = path[:-1]


def _dotted(path: PathKey) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _explain(error: jsonschema.ValidationError, path: PathKey) -> tuple[str, PathKey]:
    """A message that names keys and schema facts only (jsonschema's own messages quote the value)."""
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    custom = schema.get("x-error")
    validator = error.validator
    expected: Any = error.validator_value  # jsonschema types it loosely
    instance: Any = error.instance
    if validator == "required":
        present = instance if isinstance(instance, Mapping) else {}
        missing = [k for k in expected if k not in present]
        return f"missing required key{'s' if len(missing) > 1 else ''} {', '.join(missing)}", path
    if validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extras = sorted(set(instance) - set(allowed))
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"unknown key '{extras[0]}'{hint}", (*path, extras[0])
    if isinstance(custom, str):
        return custom, path
    if validator in ("anyOf", "oneOf") and error.context:
        best = jsonschema.exceptions.best_match(error.context)
        if best is not None:
            return _explain(best, tuple(best.absolute_path))
    if validator == "type":
        return f"must be {_a(expected)}", path
    if validator == "enum":
        return f"must be one of {', '.join(map(json.dumps, expected))}", path
    if validator == "const":
        return f"must be {json.dumps(expected)}", path
    if validator == "propertyNames":
        return "names must start with a letter and hold only letters, digits, '_', '.' and '-'", path
    if validator == "pattern":
        return _PATTERN_HINTS.get(str(path[-1]) if path else "", "is not in the expected format"), path
    if validator in ("minLength", "maxLength"):
        bound = "at least" if validator == "minLength" else "at most"
        return f"must be {bound} {expected} characters long", path
    if validator in ("minimum", "maximum"):
        bound = "at least" if validator == "minimum" else "at most"
        return f"must be {bound} {expected}", path
    if validator in ("minItems", "minProperties"):
        return (
            f"must have at least {expected} entr{'y' if expected == 1 else 'ies'}",
            path,
        )
    return f"breaks the '{validator}' rule of the config schema", path


_PATTERN_HINTS = {
    "base_url": "must be an http:// or https:// URL",
    "journal": "must be a postgresql:// URL, or a mapping with path (an SQLite file) or url",
    "url": "must be a postgresql:// URL",
    "path": "must be a path starting with /",
    "login_path": "must be a path starting with /",
}


_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def _a(types: Any) -> str:
    listed = types if isinstance(types, list) else [types]
    return " or ".join(_TYPE_NAMES.get(str(t), str(t)) for t in listed)


def _warn_literal_secrets(
    value: dict[str, Any], locations: Mapping[PathKey, Location], referenced: Mapping[PathKey, list[str]]
) -> None:
    """Warn (naming the key and line, not the value) about credentials written into the file itself."""
    for name, connection in value.get("connections", {}).items():
        auth = connection.get("auth") or {}
        for key in sorted(SECRET_FIELDS & set(auth)):
            path: PathKey = ("connections", name, "auth", key)
            if path not in referenced:
                where = locations.get(path)
                _log.warning(
                    "%s: connections.%s.auth.%s is written literally in the config; "
                    "use a ${ENV_VAR} reference",
                    where or "config",
                    name,
                    key,
                )
        for header in connection.get("headers") or {}:
            path = ("connections", name, "headers", header)
            if is_sensitive_name(header) and path not in referenced:
                _log.warning(
                    "%s: header %s of connection %s is written literally; use a ${ENV_VAR} reference",
                    locations.get(path) or "config",
                    header,
                    name,
                )


def _build(value: dict[str, Any], file: Path, locations: dict[PathKey, Location]) -> RuntimeConfig:
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
