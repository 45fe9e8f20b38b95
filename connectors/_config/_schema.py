"""The config file's JSON Schema (``config.schema.json``) and its validation, with located errors that name
keys and schema facts, never values (jsonschema's own messages quote the value, which may be a secret)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

import jsonschema
from shipmap.engine import Location

from .._errors import ConfigError
from ._model import PathKey


def config_schema() -> dict[str, Any]:
    """The JSON Schema of the runtime config file (``shipmap schema --config`` prints it)."""
    text = resources.files("shipmap.connectors").joinpath("config.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_document(value: Any, locations: Mapping[PathKey, Location], name: str) -> None:
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
