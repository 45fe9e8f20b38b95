"""Secrets in a config: ``${VAR}`` and ``${file:/path}`` references, the ``.env`` file beside the config, and
the checks that keep a credential out of logs and headers it cannot travel in. Messages name keys and
references, never values. :class:`CredentialReader` reads a connection's credentials again at each login,
so a rotated key is picked up without a restart."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from dotenv.parser import parse_stream
from dotenv.variables import parse_variables
from shipmap.engine import Location, MappingSyntaxError
from shipmap.engine._yaml import decode_utf8

from .._errors import ConfigError
from .._redact import is_sensitive_name
from ._model import PathKey, RuntimeConfig, dotted
from ._warnings import warn

# Config keys whose values are credentials: they should be ${VAR} references, and are always redacted.
SECRET_FIELDS = frozenset({"password", "secret", "key", "api_key", "token"})


# $$, or ${ and what follows it up to the first } (the whole rest when there is none): fill_references reads
# what is inside, so a reference written wrong is an error rather than text kept as it is (a secret).
_REFERENCE = re.compile(r"\$\$|\$\{(?P<inside>[^}]*)(?P<closed>\}?)")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REFERENCE_HINT = (
    "a reference is ${VAR} or ${file:/path}; $$ is a literal $ (the value is not shown: it may be a secret)"
)
_MAX_SECRET_FILE_BYTES = 64 * 1024
MAX_CONFIG_BYTES = 1024 * 1024


class UnsetVariable(ValueError):
    """A ``${VAR}`` set neither in the environment nor in the env file (when one was read)."""


class MalformedReference(ValueError):
    """A ``${`` that is no reference: no closing ``}``, nothing inside, ``file:`` without a path, or text
    that is not a variable's name. Its message names the mistake, never the text (it may be a secret)."""


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
        sent_as_is: frozenset[str] | None = None,
    ) -> None:
        self.connection = connection
        self._written = dict(written)
        self._env_file = env_file
        self._environ = environ  # None: os.environ as it is at each read
        # The keys whose values go into a header as they are (basic auth's are base64-encoded): all by default.
        self._sent_as_is = frozenset(written) if sent_as_is is None else sent_as_is

    def read(self) -> dict[str, str]:
        """The credentials now; ValueError names the key and the reference that fails, never a value."""
        env = dict(os.environ if self._environ is None else self._environ)
        read = self._env_file is not None and self._env_file.is_file()
        if self._env_file is not None and read:
            try:
                for key, item in _read_dotenv(self._env_file, env).items():
                    env.setdefault(key, item)
            except (OSError, ValueError, ConfigError):
                raise ValueError(f"env file {self._env_file} cannot be read") from None
        found: dict[str, str] = {}
        for key, text in self._written.items():
            where = f"connections.{self.connection}.auth.{key}"
            try:
                value, used = fill_references(text, env, env_file=read)
            except ValueError as error:
                raise ValueError(f"{where}: {error}") from None
            if key in self._sent_as_is and not header_safe(value):
                source = f" (from ${{{', '.join(used)}}})" if used else ""
                raise ValueError(
                    f"{where}{source}: the value cannot be sent in an HTTP header: it holds a non-ASCII or "
                    "control character"
                )
            found[key] = value
        return found


def with_readers(
    config: RuntimeConfig, written: dict[str, Any], env_path: Path | None, environ: Mapping[str, str] | None
) -> RuntimeConfig:
    """Give each connection whose credentials are references a reader: a fenix_session login reads them
    again each time, the other schemes after a 401 (a rotated key is used without a restart)."""
    connections = []
    for connection in config.connections:
        auth = (
            (written["connections"][connection.name].get("auth") or {})
            if connection.name in written.get("connections", {})
            else {}
        )
        scheme = connection.auth.scheme
        keys = _REREAD.get(scheme, ())
        references = {k: auth[k] for k in keys if isinstance(auth.get(k), str) and "$" in auth[k]}
        if references:
            sent = frozenset(_HEADER_SECRETS.get(scheme, ()))
            reader = CredentialReader(connection.name, references, env_path, environ, sent)
            connection = replace(connection, auth=replace(connection.auth, reader=reader))
        connections.append(connection)
    return replace(config, connections=tuple(connections))


def read_env_file(
    path: Path, locations: Mapping[PathKey, Location], env: Mapping[str, str]
) -> dict[str, str]:
    """The env file's variables; a file that cannot be read or is too large is a config error at the
    config's ``env_file`` line, a byte that is not UTF-8 or a line that is not ``KEY=value`` one at its line
    in the env file (never with the line's text: it may hold a password), never a traceback."""
    where = locations.get(("env_file",))
    try:
        found = _read_dotenv(path, env)
    except ConfigError as error:
        if error.location is not None:  # a bad byte or a bad line: said there, in the env file
            raise
        raise ConfigError(f"env_file: {error.message}", location=where or Location(str(path), 1, 1)) from None
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
# Which auth keys each scheme reads again (rotation): its credentials, as the file may spell them.
_REREAD = {**_HEADER_SECRETS, "basic": ("username", "password", "key", "secret")}


def url_has_credentials(url: str) -> bool:
    """Whether ``url`` carries a user (and password) before its host: ``https://user:pass@host/``."""
    return "@" in url.split("://", 1)[-1].split("/", 1)[0]


def url_has_query(url: str) -> bool:
    """Whether ``url`` has a query string or a fragment (``?api_key=...``, ``#...``): a base URL must not,
    since route paths are appended to it, and it is journaled and printed with every delivery."""
    return "?" in url or "#" in url


BASE_URL_QUERY_REFUSED = (
    "a query string or fragment (?..., #...) is refused: route paths are appended to the base URL, and it is "
    "stored and printed with every delivery, a key in it too"
)


# In a path template: $$, a ${...} reference, a {...} placeholder (JMESPath may hold a '?': [?a == 'b']), or
# the '?' or '#' that starts the query string or fragment.
_PATH_TOKEN = re.compile(r"\$\$|\$\{[^}]*\}?|\{[^{}]*\}|[?#]")
QUERY_REFERENCE_HINT = (
    "send a key with the connection's auth (scheme: basic, as WooCommerce's consumer key and secret; or "
    "scheme: api_key with a header) or its headers, as ${VAR} references; a query without references "
    "(?include=products) is fine"
)


def reference_in_query(template: str) -> bool:
    """Whether a path template, as written, holds a ``${...}`` reference after the ``?`` (or ``#``) that starts
    its query string: ``/orders/{payload.id}?api_key=${KEY}``."""
    in_query = False
    for token in _PATH_TOKEN.finditer(template):
        if token[0] in ("?", "#"):
            in_query = True
        elif in_query and token[0].startswith("${"):
            return True
    return False


def refuse_references_in_queries(written: Any, locations: Mapping[PathKey, Location]) -> None:
    """Refuse, at load and before any reference is filled, a ``${...}`` reference in the query string of a
    path appended to a connection's base URL: a route's ``path``, an enrichment's ``fetch``, a
    ``login_path``. Only auth fields and sensitive headers are secrets to the redactor, and the URL is
    journaled and printed with every request (``--dry-run``, dead letters, reasons, logs), the filled value
    with it. The message names the key, never the text."""
    if not isinstance(written, dict):
        return
    paths: list[tuple[PathKey, Any]] = []
    entries = written.get("mappings")
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        for target, route in _items(entry.get("targets") if isinstance(entry, dict) else None):
            if isinstance(route, dict):
                paths.append((("mappings", index, "targets", target, "path"), route.get("path")))
    for name, source in _items(written.get("sources")):
        enrich = source.get("enrich") if isinstance(source, dict) else None
        fetch = enrich.get("fetch") if isinstance(enrich, dict) else None
        paths += [(("sources", name, "enrich", "fetch", document), text) for document, text in _items(fetch)]
    for name, connection in _items(written.get("connections")):
        auth = connection.get("auth") if isinstance(connection, dict) else None
        if isinstance(auth, dict):
            paths.append((("connections", name, "auth", "login_path"), auth.get("login_path")))
    for path, text in paths:
        if isinstance(text, str) and reference_in_query(text):
            raise ConfigError(
                f"{dotted(path)}: a ${{...}} reference in the query string is refused: the URL is stored and "
                "printed with every request (--dry-run, dead letters, reasons, logs), the value in it too",
                location=locations.get(path),
                hint=QUERY_REFERENCE_HINT,
            )


def _items(value: Any) -> list[tuple[Any, Any]]:
    return list(value.items()) if isinstance(value, dict) else []


def refuse_unsendable_secrets(
    value: dict[str, Any], locations: Mapping[PathKey, Location], referenced: Mapping[PathKey, list[str]]
) -> None:
    """Refuse, at load, what would leak or fail at the first request: credentials in a base_url's userinfo
    or query string (they would be journaled and printed with the URL), and a credential that cannot go in an
    HTTP header (a non-ASCII or control character). The message names the key and the variable, never the
    value."""
    for name, connection in value.get("connections", {}).items():
        base_url = connection.get("base_url")
        if isinstance(base_url, str) and url_has_credentials(base_url):
            raise ConfigError(
                f"connections.{name}.base_url: credentials in the URL (user:password@host) are refused: they "
                f"would be stored and printed with every URL. Put them under connections.{name}.auth "
                "as ${VAR} references",
                location=locations.get(("connections", name, "base_url")),
            )
        if isinstance(base_url, str) and url_has_query(base_url):
            raise ConfigError(
                f"connections.{name}.base_url: {BASE_URL_QUERY_REFUSED}. Put a key under connections.{name}.auth "
                "(scheme: api_key) or headers, as a ${VAR} reference",
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


def _read_dotenv(path: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``.env`` file as python-dotenv reads it: quotes, ``#`` comments, escapes in double quotes,
    multi-line quoted values, ``export``, and ``${VAR}`` / ``${VAR:-default}`` expansion, where the process
    environment wins over the file's earlier lines (as ``load_dotenv`` without override does)."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read env file {path.name}: {error.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"env file {path.name} is larger than 1 MiB")  # the whole file: where it is named
    try:  # at the bad byte's line and column, never the line's text: it may hold a password
        text = decode_utf8(raw, str(path), "env file", encoding="utf-8-sig")
    except MappingSyntaxError as error:
        raise ConfigError(error.message, location=error.location) from None
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


def interpolate(
    value: Any,
    path: PathKey,
    env: Mapping[str, str],
    locations: Mapping[PathKey, Location],
    name: str,
    referenced: dict[PathKey, list[str]],
    unset_hint: str | None = None,
    *,
    env_file: bool = False,
) -> Any:
    """Fill ``${VAR}`` references (``$$`` is a literal ``$``); ``referenced`` collects where there were.
    ``env_file``: ``env`` holds an env file's variables too (the error for one set nowhere says so);
    ``unset_hint`` goes with that error (what to do about a missing env file)."""
    if isinstance(value, dict):
        return {
            k: interpolate(v, (*path, k), env, locations, name, referenced, unset_hint, env_file=env_file)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            interpolate(v, (*path, i), env, locations, name, referenced, unset_hint, env_file=env_file)
            for i, v in enumerate(value)
        ]
    if not isinstance(value, str) or "$" not in value:
        return value

    where = locations.get(path) or Location(name, 1, 1)
    try:
        filled, variables = fill_references(value, env, env_file=env_file)
    except MalformedReference as error:
        raise ConfigError(f"{dotted(path)}: {error}", location=where, hint=_REFERENCE_HINT) from None
    except UnsetVariable as error:
        raise ConfigError(f"{dotted(path)}: {error}", location=where, hint=unset_hint) from None
    except ValueError as error:  # a variable set nowhere, a file that cannot be read: named with the key
        raise ConfigError(f"{dotted(path)}: {error}", location=where) from None
    if variables:
        referenced.setdefault(path, []).extend(variables)
    return filled


def fill_references(text: str, env: Mapping[str, str], *, env_file: bool = False) -> tuple[str, list[str]]:
    """``text`` with ``${VAR}`` filled from ``env`` and ``${file:/path}`` from that file (its text, without
    the final newline: Docker and Kubernetes secrets are files); ``$$`` is ``$``. ``env_file``: ``env`` holds
    an env file's variables too, so a variable set nowhere is said to be in neither. Returns the references
    used. ValueError names a reference that cannot be filled, never a value; :class:`MalformedReference`
    (a ValueError) a ``${`` that is no reference."""
    used: list[str] = []

    def fill(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        inside = match["inside"]
        if not match["closed"]:
            raise MalformedReference("a reference '${' has no closing '}'")
        if inside.startswith("file:"):
            file = inside.removeprefix("file:")
            if not file:
                raise MalformedReference("the file reference '${file:}' names no file")
            used.append(f"file:{file}")
            return _read_secret_file(Path(file).expanduser())
        if not inside:
            raise MalformedReference("the reference '${}' names nothing")
        if not _VARIABLE.fullmatch(inside):
            raise MalformedReference(
                "a reference '${...}' holds neither a variable name (letters, digits and _, not first a "
                "digit) nor file:/path"
            )
        if inside not in env:
            # "nor in the env file" only where one was read: where there is none, the hint says so
            raise UnsetVariable(
                f"environment variable {inside} is not set" + (" (nor in the env file)" if env_file else "")
            )
        used.append(inside)
        return env[inside]

    return _REFERENCE.sub(fill, text), used


def _read_secret_file(path: Path) -> str:
    try:
        if path.stat().st_size > _MAX_SECRET_FILE_BYTES:
            raise ValueError(f"file reference {path}: larger than 64 KiB")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"file reference {path}: not UTF-8 text") from None
    except OSError as error:  # the reason a deployment needs: no such file, permission denied (never a value)
        raise ValueError(f"file reference {path}: cannot be read: {error.strerror or 'I/O error'}") from None
    return text.removesuffix("\n").removesuffix("\r")


def missing_env_file_hint(config: Path, env_file: Path) -> str:
    """What to do about a variable set nowhere when the default env file is absent: copy the example
    ``shipmap init`` writes beside the config, when it is there."""
    example = env_file.with_name(".env.example")
    if example.is_file():
        return f"there is no {env_file}: copy the example beside the config (cp {example} {env_file})"
    return f"there is no {env_file} beside {config}: set the variable, or write it there as NAME=value"


def warn_literal_secrets(
    value: dict[str, Any], locations: Mapping[PathKey, Location], referenced: Mapping[PathKey, list[str]]
) -> None:
    """Warn (naming the key and line, not the value) about credentials written into the file itself: an
    auth secret, a sensitive header, a webhook source's signing secret."""
    for name, connection in value.get("connections", {}).items():
        auth = connection.get("auth") or {}
        for key in sorted(SECRET_FIELDS & set(auth)):
            path: PathKey = ("connections", name, "auth", key)
            if path not in referenced:
                warn(
                    f"connections.{name}.auth.{key} is written literally in the config; use a ${{ENV_VAR}}"
                    " reference",
                    locations.get(path),
                )
        for header in connection.get("headers") or {}:
            path = ("connections", name, "headers", header)
            if is_sensitive_name(header) and path not in referenced:
                warn(
                    f"header {header} of connection {name} is written literally; use a ${{ENV_VAR}} reference",
                    locations.get(path),
                )
    for name, source in (value.get("sources") or {}).items():
        secret = source.get("secret")
        paths: list[PathKey] = (
            [("sources", name, "secret", index) for index in range(len(secret))]
            if isinstance(secret, list)
            else [("sources", name, "secret")]
            if secret is not None
            else []
        )
        for path in paths:
            if path not in referenced:
                warn(
                    f"{dotted(path)} is written literally in the config; use a ${{ENV_VAR}} reference",
                    locations.get(path),
                )
