"""What the editor completes: the mapping format's keys (from its JSON Schema, as ``shipmap schema`` prints
it), the target kinds and each kind's target fields (from the kinds' schemas), and the built-in functions.
Built once per studio, sent to the page once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shipmap.engine import builtin_kinds, mapping_format_schema
from shipmap.engine._functions import _SPECS as FUNCTION_SPECS  # the one table of builtins and their arity

Json = dict[str, Any]
_MAX_DEPTH = 8


def catalog() -> Json:
    schema = mapping_format_schema()
    defs = schema.get("$defs", {})
    spec = defs.get("field_spec", {})
    return {
        "keys": {
            "top": _keys(schema),
            "target": _keys(defs.get("target", {})),
            "field": _keys(spec),
            "lookup": _keys(defs.get("lookup", {})),
        },
        "kinds": {
            kind.name: {
                "api": kind.api,
                "route": f"{kind.route.method} {kind.route.path}",
                "description": str(kind.schema.get("title", "")),
                "fields": _fields(kind.inlined, 0),
            }
            for kind in builtin_kinds().values()
        },
        "functions": [
            {
                "name": function.name,
                "signature": _signature(function.required, function.optional, function.variadic),
            }
            for function in FUNCTION_SPECS.values()
        ],
    }


def _keys(schema: Mapping[str, Any]) -> list[Json]:
    properties = schema.get("properties", {})
    required = set(schema.get("required", ()))
    return [
        {"name": name, "description": str(value.get("description", "")), "required": name in required}
        for name, value in properties.items()
        if isinstance(value, Mapping)
    ]


def _fields(node: Mapping[str, Any], depth: int) -> Json:
    """``{field: {required, type, fields, array}}`` for an object schema, arrays stepped into."""
    if depth > _MAX_DEPTH:
        return {}
    properties: dict[str, Any] = {}
    required: set[str] = set()
    for variant in _variants(node):
        properties.update(variant.get("properties", {}))
        required.update(variant.get("required", ()))
    found: Json = {}
    for name, child in properties.items():
        if not isinstance(child, Mapping):
            continue
        array = False
        element = child
        items = next((v.get("items") for v in _variants(child) if isinstance(v.get("items"), Mapping)), None)
        if items is not None:
            array, element = True, items
        found[name] = {
            "required": name in required,
            "array": array,
            "type": _type_text(child),
            "fields": _fields(element, depth + 1),
        }
    return found


def _variants(node: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    variants = [node]
    for keyword in ("anyOf", "oneOf", "allOf"):
        for option in node.get(keyword, ()):
            if isinstance(option, Mapping):
                variants.append(option)
    return variants


def _type_text(node: Mapping[str, Any]) -> str:
    if "enum" in node:
        return " | ".join("null" if v is None else repr(v) if v == "" else str(v) for v in node["enum"])
    types: list[str] = []
    for variant in _variants(node):
        kind = variant.get("type")
        if isinstance(kind, str):
            types.append(kind)
        elif isinstance(kind, list):
            types.extend(str(k) for k in kind)
    return " | ".join(dict.fromkeys(types))


def _signature(required: tuple[str, ...], optional: tuple[str, ...], variadic: bool) -> str:
    parts = list(required)
    if variadic and parts:
        parts[-1] += "..."
    parts.extend(f"[{name}]" for name in optional)
    return ", ".join(parts)
