"""Loading a config file: YAML composed with node marks so every error names ``file:line:col``, references
filled (``_secrets``), the document validated (``_schema``) and built into objects (``_build``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shipmap.engine import Location, MappingError
from shipmap.engine._yaml import decode_utf8, load_located

from .._errors import ConfigError
from ._build import build_config
from ._checks import check_across_sections
from ._model import DEFAULT_JOURNAL, PathKey, RuntimeConfig, not_a_file, resolved
from ._pairs import check_pairs
from ._schema_errors import validate_document
from ._secrets import (
    MAX_CONFIG_BYTES,
    interpolate,
    missing_env_file_hint,
    read_env_file,
    refuse_references_in_queries,
    refuse_unsendable_secrets,
    warn_literal_secrets,
    with_readers,
)


def load_config(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> RuntimeConfig:
    """Read, interpolate and validate a config file. ``environ`` defaults to ``os.environ``."""
    file = Path(path)
    name = str(path)
    raw = _read(file)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError("config file is larger than 1 MiB", location=Location(name, 1, 1))
    text = _decoded(raw, name)
    value, locations = _compose(text, name)
    if not isinstance(value, dict):
        raise ConfigError(
            "a config file is a mapping of keys (connections, mappings, ...)", location=Location(name, 1, 1)
        )
    refuse_references_in_queries(value, locations)  # on the text as written: before anything is filled
    env = dict(os.environ if environ is None else environ)
    env_file = value.get("env_file", ".env")
    unset_hint = None
    env_read = False
    if isinstance(env_file, str):
        env_path = resolved(file.parent / env_file)
        problem = not_a_file(env_path)
        if problem is None:
            for key, item in read_env_file(env_path, locations, env).items():
                env.setdefault(key, item)
            env_read = True
        elif "env_file" in value:  # the default .env may be absent; one named must be a file
            raise ConfigError(f"env_file {problem}", location=locations.get(("env_file",)))
        else:
            unset_hint = missing_env_file_hint(file, file.parent / env_file)
    referenced: dict[PathKey, list[str]] = {}
    written = value
    value = interpolate(value, (), env, locations, name, referenced, unset_hint, env_file=env_read)
    validate_document(value, locations, name)
    warn_literal_secrets(value, locations, referenced)
    refuse_unsendable_secrets(value, locations, referenced)
    check_pairs(value, locations)  # before the records, which check them too, are built: located
    config = build_config(value, file, locations)
    check_across_sections(config)
    reread = resolved(file.parent / env_file) if isinstance(env_file, str) else None
    config = with_readers(config, written, reread, environ)
    object.__setattr__(config, "checked", True)  # frozen: the one field load_config itself vouches for
    return config


def journal_path_of(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> Path | str:
    """The journal file (or PostgreSQL URL) a config names, without needing the connections' secrets (for
    ``shipmap dead-letters``)."""
    file = Path(path)
    value, locations = _compose(_decoded(_read(file), str(path)), str(path))
    journal = value.get("journal") if isinstance(value, dict) else None
    env = os.environ if environ is None else environ
    url = journal if isinstance(journal, str) else journal.get("url") if isinstance(journal, dict) else None
    if isinstance(url, str):
        where: PathKey = ("journal",) if isinstance(journal, str) else ("journal", "url")
        return str(interpolate(url, where, env, locations, str(path), {}))
    raw = journal.get("path", DEFAULT_JOURNAL) if isinstance(journal, dict) else DEFAULT_JOURNAL
    if not isinstance(raw, str):
        raise ConfigError("journal.path: must be a string", location=locations.get(("journal", "path")))
    filled = interpolate(raw, ("journal", "path"), env, locations, str(path), {})
    return resolved(file.resolve().parent / str(filled))


def _read(file: Path) -> bytes:
    """The config file's bytes, or a ConfigError in the OS's words, for the library as for the command line
    (a path with a NUL in it was Python's ValueError 'embedded null byte')."""
    try:
        return file.read_bytes()
    except OSError as error:
        reason = error.strerror or "cannot be read"
    except ValueError:  # only a NUL character reaches here: the OS takes every other path
        reason = "a path cannot hold a NUL character"
    shown = str(file).replace("\x00", "\\x00")
    raise ConfigError(f"cannot read config file {shown}: {reason}")


def _decoded(raw: bytes, name: str) -> str:
    """The config's text (a byte order mark taken off), or an error at the first byte that is not UTF-8."""
    try:
        return decode_utf8(raw, name, "config file", encoding="utf-8-sig")
    except MappingError as error:
        raise ConfigError(error.message, location=_bare(error.location)) from None


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
