"""The config file's JSON Schema, generated from the config dataclasses, and its validator (JSON Schema
2020-12 and the duration bounds). Its errors in shipmap's words, located, are ``_schema_errors``'.

Each section of the file is a dataclass of ``_model`` (or the breaker's settings): a field is a key, its type
gives the key's JSON type, its default the schema's ``default``, and its metadata (``_config_key.about``) the
description and bounds; the sections of ``shipmap serve`` likewise (``_serve_model``). What is written here is
only what is not a field: the file's top level, keys the file spells differently from the objects
(``region``, an auth ``key``/``secret``, a route's ``topic``, a source's ``secret``, an enrichment's
``topics`` and ``fetch``), and rules across keys (base_url or region; what each auth scheme and each source
type needs; the auth keys that one scheme alone reads, from ``_key_pairs.SCHEME_ONLY``). So a new key is one
field.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import sys
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema

from .._config_key import NUMBER_BOUNDS, STRING_BOUNDS, duration_text
from .._deliver._breaker import BreakerSettings
from .._key_pairs import SCHEME_ONLY
from ._model import (
    _DURATION,
    AuthSettings,
    Connection,
    DeliverySettings,
    EventSettings,
    JournalSettings,
    MappingRoute,
    Scheme,
    TargetRoute,
    Timeouts,
    parse_duration,
)
from ._serve_model import Enrichment, RateLimit, ServeSettings, SourceSettings


def config_schema() -> dict[str, Any]:
    """The JSON Schema of the runtime config file (``shipmap schema --config`` prints it)."""
    return copy.deepcopy(_schema())


# A duration key's bounds, in seconds, held whichever way the file writes it (0.5, 500ms, 5m): JSON Schema's own
# keywords cannot compare a string such as "0s" with a number, so the config schema has this keyword of its own
# (an editor ignores it; the validators below hold it, for a file and for a config built in code alike).
DURATION_BOUNDS = "x-seconds"
_LOWER_BOUNDS = ("minimum", "exclusiveMinimum")


def _check_seconds(
    validator: Any, bounds: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    if isinstance(instance, bool) or not isinstance(instance, int | float | str):
        return  # null, or a section (a timeout's phases): other rules say what is wrong with it
    try:
        seconds = parse_duration(instance)
    except ValueError:
        return  # not a duration at all: the duration's own rule says so
    problem = _out_of_bounds(seconds, bounds)
    if problem is not None:
        yield jsonschema.ValidationError(problem)


def _out_of_bounds(seconds: float, bounds: Mapping[str, Any]) -> str | None:
    """What is wrong with a duration of ``seconds`` for ``bounds``, durations written as the config writes
    them, never the value itself; None when it is within them (NaN is within none)."""
    why = f": {bounds['why']}" if "why" in bounds else ""
    if "exclusiveMinimum" in bounds and not seconds > bounds["exclusiveMinimum"]:
        return f"must be more than {duration_text(bounds['exclusiveMinimum'])}{why}"
    if "minimum" in bounds and not seconds >= bounds["minimum"]:
        return f"must be at least {duration_text(bounds['minimum'])}{why}"
    if "maximum" in bounds and not seconds <= bounds["maximum"]:
        return f"must be at most {duration_text(bounds['maximum'])}{why}"
    return None


# The config's validator: JSON Schema 2020-12 and the duration bounds.
_Validator: type[jsonschema.protocols.Validator] = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft202012Validator, {DURATION_BOUNDS: _check_seconds}
)


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    return _Validator(_schema())


# --- the schema, from the dataclasses --------------------------------------------------------------------------

_DURATION_SCHEMA = {
    "description": "Seconds as a number, or a string with a unit: 500ms, 30s, 5m, 4h, 30d.",
    "x-error": "must be a number of seconds (0 or more) or a duration such as 500ms, 30s, 5m, 4h or 30d",
    "anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": _DURATION.pattern}],
}

# Sections with a name under $defs, by dataclass; every other dataclass field is written inline.
_DEFS: dict[type[Any], str] = {
    BreakerSettings: "breaker",
    Timeouts: "timeout",
    Connection: "connection",
    AuthSettings: "auth",
    EventSettings: "events",
    MappingRoute: "route",
    TargetRoute: "target_route",
    DeliverySettings: "delivery",
    JournalSettings: "journal",
    SourceSettings: "source",
    Enrichment: "enrich",
    ServeSettings: "serve",
}

_STRING = {"type": "string"}
_ONE_OR_MORE_STRINGS = {"anyOf": [_STRING, {"type": "array", "items": _STRING, "minItems": 1}]}
_SECRET = {"type": "string", "minLength": 4}
_NAME = "^[A-Za-z0-9_][A-Za-z0-9_.-]*$"  # a source's name: the last part of its URL, /hooks/{name}


def _keys_each_scheme_ignores() -> list[dict[str, Any]]:
    """Per scheme, the keys of ``SCHEME_ONLY`` that it would ignore, refused where written (so an editor flags
    them), in the words ``AuthSettings`` uses in code. ``not: {}`` refuses a key for being there at all:
    ``_schema_errors.validate_document`` points at the key, as at an unknown one."""
    branches: list[dict[str, Any]] = []
    for scheme in typing.get_args(Scheme):
        refused = {
            rule.key: {"not": {}, "x-error": message}
            for rule in SCHEME_ONLY
            if (message := rule.misplaced(scheme)) is not None
        }
        if refused:
            selected = {"properties": {"scheme": {"const": scheme}}, "required": ["scheme"]}
            branches.append({"if": selected, "then": {"properties": refused}})
    return branches


# What each section's file says beyond its fields: keys spelt differently from the objects, rules across
# keys, and the section's own description (``_build`` turns the spelt-differently keys into fields).
_SECTION_EXTRAS: dict[type[Any], dict[str, Any]] = {
    BreakerSettings: {
        "description": "A connection's circuit breaker: outage failures in a row that open it, the wait before"
        " a probe, and how long shipmap run waits for it.",
    },
    Connection: {
        "required": ["api"],
        "file_keys": {
            "region": {
                "enum": ["eu", "us"],
                "description": "DG only, instead of base_url: https://flow-server.{region}.dgdeepai.com.",
            },
        },
        "x-error": "needs base_url (or, for a dg connection, region), not both",
        "oneOf": [
            {"required": ["base_url"], "not": {"required": ["region"]}},
            {
                "required": ["region"],
                "not": {"required": ["base_url"]},
                "properties": {"api": {"const": "dg"}},
            },
        ],
    },
    AuthSettings: {
        "required": ["scheme"],
        "file_keys": {
            "key": {
                "type": "string",
                "minLength": 1,
                "description": "basic: the DG API key (same as username).",
            },
            "secret": {
                "type": "string",
                "minLength": 4,
                "description": "basic: the DG API secret (same as password).",
            },
        },
        "allOf": [
            {
                "if": {"properties": {"scheme": {"const": "basic"}}},
                "then": {
                    "x-error": "basic auth needs username and password (or key and secret)",
                    "anyOf": [{"required": ["username", "password"]}, {"required": ["key", "secret"]}],
                },
            },
            {
                "if": {"properties": {"scheme": {"const": "fenix_session"}}},
                "then": {"required": ["username", "password", "api_key", "store_name"]},
            },
            {"if": {"properties": {"scheme": {"const": "api_key"}}}, "then": {"required": ["api_key"]}},
            {"if": {"properties": {"scheme": {"const": "bearer"}}}, "then": {"required": ["token"]}},
            *_keys_each_scheme_ignores(),
        ],
    },
    EventSettings: {
        "description": "How events are read: where the source document is, and where the topic is."
    },
    MappingRoute: {
        "file_keys": {
            "topic": {
                "description": "The entry applies when the event's topic (events.topic) is one of these.",
                **_ONE_OR_MORE_STRINGS,
            },
        },
    },
    JournalSettings: {
        "description": "Where the journal lives: an SQLite file (the default), or a PostgreSQL database given as"
        " a postgresql:// URL (here, or as url).",
        # The whole section may be the URL alone.
        "type": ["string", "object"],
        "pattern": "^postgres(ql)?://",
    },
    SourceSettings: {
        "required": ["type"],
        "file_keys": {
            "secret": {
                "description": "The signing secret, or two during a rotation (both are accepted).",
                "anyOf": [_SECRET, {"type": "array", "items": _SECRET, "minItems": 1, "maxItems": 2}],
            },
        },
        "allOf": [
            {
                "if": {"properties": {"type": {"const": "bigcommerce"}}},
                "then": {"required": ["secret", "header"]},
            },
            {
                "if": {"properties": {"type": {"enum": ["shopify", "woocommerce", "generic"]}}},
                "then": {"required": ["secret"]},
            },
        ],
    },
    RateLimit: {"required": ["per_second"]},
    Enrichment: {
        "description": "GETs that build the document the mapping sees (the event's 'documents').",
        "required": ["connection", "fetch"],
        "file_keys": {
            "topics": {
                "description": "Only events of these topics are enriched. Default: all.",
                **_ONE_OR_MORE_STRINGS,
            },
            "fetch": {
                "description": "Document name -> path template; {expr} is JMESPath over the event"
                " (payload.data.id).",
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                "additionalProperties": {"type": "string", "pattern": "^/"},
            },
        },
    },
    ServeSettings: {
        "description": "shipmap serve: where it listens and how it accepts.",
        "required": [],  # every key has a default (the inbox's comes from the journal)
    },
}


@functools.cache
def _schema() -> dict[str, Any]:
    defs: dict[str, Any] = {"duration": _DURATION_SCHEMA}
    for cls, name in _DEFS.items():
        defs[name] = _section(cls)
    defs["timeout"] = {
        # One duration is every phase's: it is held to the bounds of them all.
        DURATION_BOUNDS: _strictest_bounds(Timeouts),
        "description": "One duration for every phase, or per phase. total is the deadline of one whole attempt"
        " (login and body read included): default 60s, or twice a single duration if longer.",
        "x-error": "must be a duration, or an object with connect, read, write, pool and total durations",
        "anyOf": [{"$ref": "#/$defs/duration"}, defs["timeout"]],
    }
    schema: dict[str, Any] = _with_editor_words(
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://shipmap.dev/schemas/runtime-config.json",
            "title": "shipmap runtime config (shipmap run)",
            "description": "Connections, which mappings run on which events, where each target is delivered, and"
            " how. Secrets only as ${ENV_VAR} references. See docs/runtime.md.",
            "type": "object",
            "additionalProperties": False,
            "required": ["connections", "mappings"],
            "properties": {
                "version": {"const": 1, "description": "Config format version. Optional; 1."},
                "env_file": {
                    "description": "A dotenv file read for ${VAR} references, relative to this file. Default '.env'"
                    " (used if it exists); false to read none. Real environment variables win.",
                    "type": ["string", "boolean"],
                },
                "connections": {
                    "description": "The endpoints, by name.",
                    "type": "object",
                    "minProperties": 1,
                    "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_.-]*$"},
                    "additionalProperties": {"$ref": "#/$defs/connection"},
                },
                "events": {"$ref": "#/$defs/events"},
                "mappings": {
                    "description": "Which mappings run, and on which events. An event that no entry matches is"
                    " reported as unrouted.",
                    "type": "array",
                    "minItems": 1,
                    "items": {"$ref": "#/$defs/route"},
                },
                "delivery": {"$ref": "#/$defs/delivery"},
                "journal": {"$ref": "#/$defs/journal"},
                "sources": {
                    "description": "shipmap serve: the webhook sources, by name; each is served at POST"
                    " /hooks/{name}. See docs/serve.md.",
                    "type": "object",
                    "propertyNames": {"pattern": _NAME},
                    "additionalProperties": {"$ref": "#/$defs/source"},
                },
                "serve": {"$ref": "#/$defs/serve"},
            },
            "$defs": defs,
        }
    )
    return schema


# shipmap's words for a rule that breaks are the schema's own keyword, which its validator reads (``x-error``,
# ``_schema_errors``), and the same text as ``errorMessage``, which editors show instead of their own ("Incorrect
# type", "Matches a schema that is not allowed", "String does not match the pattern"): VS Code's JSON language
# service (vscode-json-languageservice) for a type, enum, const, pattern, not or additionalProperties that
# fails, and the Red Hat YAML language server (VS Code's YAML extension) for a type, enum, const or pattern.
SHIPMAP_ERROR, EDITOR_ERROR = "x-error", "errorMessage"


def _with_editor_words(node: Any) -> Any:
    """``node`` with an ``errorMessage`` beside each ``x-error``, the same text, and in each inline branch of
    that schema's anyOf or oneOf: an editor reports the branch that came nearest, in that branch's words (a
    duration written "5 minutes" fails the string branch's pattern)."""
    if isinstance(node, list):
        return [_with_editor_words(item) for item in node]
    if not isinstance(node, dict):
        return node
    worded = {key: _with_editor_words(value) for key, value in node.items()}
    text = worded.get(SHIPMAP_ERROR)
    if isinstance(text, str):
        worded.setdefault(EDITOR_ERROR, text)
        for keyword in ("anyOf", "oneOf"):
            for branch in worded.get(keyword, ()):
                if isinstance(branch, dict) and "$ref" not in branch:  # a $ref's target has its own words
                    branch.setdefault(EDITOR_ERROR, text)
    return worded


def _section(cls: type[Any]) -> dict[str, Any]:
    """The object schema of one section: a property per field, then the section's extras."""
    extras = dict(_SECTION_EXTRAS.get(cls, {}))
    keys = [field for field in dataclasses.fields(cls) if not field.metadata.get("not_a_key")]
    # The fields without a default, unless the section says which keys the file must give (a default in
    # code, such as auth's scheme "none", is then not one the file has).
    required: list[str] = (
        extras.pop("required")
        if "required" in extras
        else [
            field.name
            for field in keys
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        ]
    )
    properties: dict[str, Any] = {}
    module = vars(sys.modules[cls.__module__])
    for field in keys:
        # The annotations are this package's own source (postponed as strings), never input.
        annotation = eval(field.type, module) if isinstance(field.type, str) else field.type
        properties[field.name] = _key(annotation, field, required=field.name in required)
    properties.update(extras.pop("file_keys", {}))
    schema: dict[str, Any] = {"type": "object"}
    if "description" in extras:
        schema["description"] = extras.pop("description")
    schema["additionalProperties"] = False
    if required:
        schema["required"] = required
    schema["properties"] = properties
    schema.update(extras)
    return schema


def _key(annotation: Any, field: dataclasses.Field[Any], *, required: bool) -> dict[str, Any]:
    meta = field.metadata
    duration = {"$ref": "#/$defs/duration"}
    if not meta.get("duration"):
        schema = _type(annotation, meta)
    elif meta.get("nullable"):
        schema = {"x-error": "must be a duration such as 30d, or null", "anyOf": [duration, {"type": "null"}]}
    else:
        schema = duration
    if meta.get("duration") and (bounds := _duration_bounds(meta)):
        schema = {DURATION_BOUNDS: bounds, **schema}  # first: a value out of them is told so first
    default: Any = field.default
    factory: Any = field.default_factory
    if default is dataclasses.MISSING and factory is not dataclasses.MISSING:
        default = factory()
    if required:  # the file must give it: no default to show
        default = None
    shown: str | None = meta.get("default_text")
    if shown is None and default is not None and _plain(default) and default not in ("", {}):
        shown = duration_text(default) if meta.get("duration") else _text(default)
    description = " ".join(
        part for part in (meta.get("description"), f"Default: {shown}." if shown else "") if part
    )
    if description:
        schema["description"] = description
    if _plain(default) and default is not None and default != {}:
        schema["default"] = default
    elif "schema_default" in meta:  # left out (None), it adapts to another key: the value it then stands for
        schema["default"] = meta["schema_default"]
    return schema


def _duration_bounds(meta: Mapping[str, Any]) -> dict[str, Any]:
    """A duration field's bounds (in seconds) and why, as its metadata declares them; empty without any."""
    bounds = {bound: meta[bound] for bound in NUMBER_BOUNDS if bound in meta}
    if bounds and "why" in meta:
        bounds["why"] = meta["why"]
    return bounds


def _strictest_bounds(cls: type[Any]) -> dict[str, Any]:
    """The bounds that hold a duration to every duration field of ``cls`` at once."""
    merged: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if not field.metadata.get("duration"):
            continue
        for bound, limit in _duration_bounds(field.metadata).items():
            if bound in merged and bound != "why":
                limit = max(merged[bound], limit) if bound in _LOWER_BOUNDS else min(merged[bound], limit)
            merged[bound] = limit
    return merged


def _type(annotation: Any, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON Schema of a field's type; ``None`` in a union means the key may be left out, not written."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        branches: list[dict[str, Any]] = []
        for arm in typing.get_args(annotation):
            # Path | str: one string in the file, written once (oneOf two equal branches matches none).
            if arm is not type(None) and _expressible(arm) and (branch := _type(arm, meta)) not in branches:
                branches.append(branch)
        if meta.get("nullable"):
            branches.append({"type": "null"})
        if all(set(branch) == {"type"} for branch in branches):
            names = [branch["type"] for branch in branches]
            return {"type": names[0] if len(names) == 1 else names}
        return branches[0] if len(branches) == 1 else {"oneOf": branches}
    if dataclasses.is_dataclass(annotation):
        if annotation in _DEFS:
            return {"$ref": f"#/$defs/{_DEFS[annotation]}"}
        return _section(annotation)  # type: ignore[arg-type]  # a class, not an instance
    origin = typing.get_origin(annotation)
    if origin is tuple:  # tuple[X, ...]: a list in the file
        item, more = typing.get_args(annotation)
        assert more is Ellipsis, annotation
        return {"type": "array", "items": _type(item, meta)}
    if origin is typing.Literal:
        values = list(typing.get_args(annotation))
        return {"const": values[0]} if len(values) == 1 else {"enum": values}
    if origin is not None and issubclass(origin, Mapping):
        _, value = typing.get_args(annotation)
        return {"type": "object", "additionalProperties": _type(value, {})}
    name = _JSON_TYPES.get(annotation)
    if name is None:
        raise TypeError(f"no JSON Schema for a config field of type {annotation!r}")
    schema: dict[str, Any] = {"type": name}
    bounds = NUMBER_BOUNDS if name in ("integer", "number") else STRING_BOUNDS if name == "string" else ()
    schema.update((bound, meta[bound]) for bound in bounds if bound in meta)
    return schema


_JSON_TYPES: dict[Any, str] = {
    str: "string",
    Path: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
}


def _expressible(annotation: Any) -> bool:
    """False for a type only code can pass (a compiled mapping instead of its name)."""
    return (
        annotation in _JSON_TYPES
        or dataclasses.is_dataclass(annotation)
        or typing.get_origin(annotation) is not None
    )


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool) or value == {}


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)
