"""The config's errors in shipmap's words: a jsonschema error on the file's document (or on a record built in
code, ``_checks``) turned into one located ``ConfigError`` that names keys and schema facts, never values
(jsonschema's own messages quote the value, which may be a secret). The schema and its validator are
``_schema``'s; what a rule says when it breaks is the schema's own ``x-error`` where it has one, else worded
here from the rule.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jsonschema
from shipmap.engine import Location

from .._errors import ConfigError
from .._plural import counted
from ._model import PathKey, dotted
from ._schema import DURATION_BOUNDS, _validator


def validate_document(value: Any, locations: Mapping[PathKey, Location], name: str) -> None:
    errors = sorted(_validator().iter_errors(value), key=lambda e: _order(e, locations))
    if not errors:
        return
    error = errors[0]
    path: PathKey = tuple(error.absolute_path)
    message, at = _explain(error, path)
    # An unknown key, or one its scheme ignores, is pointed at as a key; a problem inside a value (a timeout's
    # phase), at that value.
    refused_key = (error.validator == "additionalProperties" and at != path) or _refuses_key(error)
    location = locations.get(("#key", *at)) if refused_key else None
    location = location or _nearest(locations, at) or Location(name, 1, 1)
    more = len(errors) - 1
    raise ConfigError(
        f"{dotted(at)}: {message}" if at else message,
        location=location,
        hint=f"{more} more problem{'s' if more > 1 else ''} after this one" if more else None,
    )


def _refuses_key(error: jsonschema.ValidationError) -> bool:
    """Whether ``error`` refuses a key for being there at all, whatever its value (``not: {}``)."""
    return error.validator == "not" and error.validator_value == {}


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


def _explain(error: jsonschema.ValidationError, path: PathKey) -> tuple[str, PathKey]:
    """A message that names keys and schema facts only (jsonschema's own messages quote the value)."""
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    custom = schema.get("x-error")
    validator = error.validator
    expected: Any = error.validator_value  # jsonschema types it loosely
    instance: Any = error.instance
    if validator == DURATION_BOUNDS:  # worded with the bounds as durations, before a section's own x-error
        return error.message, path
    if validator == "required":
        present = instance if isinstance(instance, Mapping) else {}
        missing = [k for k in expected if k not in present]
        return f"missing required key{'s' if len(missing) > 1 else ''} {', '.join(missing)}", path
    if validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extras = sorted(set(instance) - set(allowed))
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"unknown key '{extras[0]}'{hint}", (*path, extras[0])
    if validator in ("anyOf", "oneOf") and error.context and isinstance(instance, Mapping):
        # A mapping where one branch is a section (a timeout's phases): what is wrong inside it, not that it
        # is neither branch.
        inside = [
            branch
            for branch in error.context
            if len(branch.absolute_path) > len(error.absolute_path)
            and expected[branch.relative_schema_path[0]].get("type") == "object"
        ]
        if inside:  # the most relevant, as it is: its own x-error (a duration's) words it
            best = max(inside, key=jsonschema.exceptions.relevance)
            return _explain(best, tuple(best.absolute_path))
    if isinstance(custom, str):
        return custom, path
    if validator in ("anyOf", "oneOf") and error.context:
        # The branch of the value's own type says what is wrong with it ("" is a string too short, not a list
        # that it is not): the other branches' type mismatches only when no branch has its type.
        fitting = [branch for branch in error.context if branch.validator != "type"] or error.context
        best = jsonschema.exceptions.best_match(fitting)
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
        # An enrichment's fetch is keyed by document name: its values are paths.
        key = "path" if len(path) > 1 and path[-2] == "fetch" else str(path[-1]) if path else ""
        return _PATTERN_HINTS.get(key, "is not in the expected format"), path
    if validator == "minLength" and instance == "":  # an unset-looking variable (SECRET= in the env file)
        return f"is empty: it must be at least {counted(expected, 'character')} long", path
    if validator in ("minLength", "maxLength"):
        bound = "at least" if validator == "minLength" else "at most"
        return f"must be {bound} {counted(expected, 'character')} long", path
    if validator in ("minimum", "maximum"):
        bound = "at least" if validator == "minimum" else "at most"
        return f"must be {bound} {expected}", path
    if validator == "exclusiveMinimum":
        return f"must be more than {expected}", path
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
    # propertyNames: the name, not a value, breaks the pattern
    "sources": "a source's name must start with a letter, a digit or '_' and hold only those, '.' and '-'"
    " (it is the end of its URL, /hooks/{name})",
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
