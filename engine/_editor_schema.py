"""The mapping format's JSON Schema for editors: the format's own schema, plus each target kind's fields.

``mapping.schema.json`` says what a mapping file may hold in general; here each ``kind:`` also constrains its
target's ``fields:`` to the fields that kind has (nested objects and array items too), so an editor running
yaml-language-server completes target field names and underlines a misspelled one. Generated from the kind
schemas and the format schema at call time: a field, kind or language key added there is covered here.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._format import mapping_format_schema
from ._kinds import builtin_kinds

EDITOR_SCHEMA_FILE = "mapping.schema.json"


def editor_schema() -> dict[str, Any]:
    schema: dict[str, Any] = copy.deepcopy(dict(mapping_format_schema()))
    # References local to the file, so an editor never tries to fetch the schema's $id over the network.
    _localize_refs(schema, f"{schema.get('$id', '')}#")
    schema["$id"] = "https://shipmap.dev/mapping.editor.schema.json"
    defs: dict[str, Any] = schema["$defs"]
    spec_markers = _spec_markers(defs)
    by_kind = []
    for name, kind in sorted(builtin_kinds().items()):
        defs[f"fields.{name}"] = _fields(kind.inlined, name, "", spec_markers)
        by_kind.append(
            {
                "if": {"properties": {"kind": {"const": name}}, "required": ["kind"]},
                "then": {"properties": {"fields": {"$ref": f"#/$defs/fields.{name}"}}},
            }
        )
    if "target" in defs:
        defs["target"].setdefault("allOf", []).extend(by_kind)
    _describe(schema, "the mapping file")
    return schema


def write_editor_schema(directory: str | Path) -> Path:
    """Write ``mapping.schema.json`` (the editor schema) into ``directory``; the path written."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / EDITOR_SCHEMA_FILE
    path.write_text(json.dumps(editor_schema(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _spec_markers(defs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The keys that make an object a field spec rather than nested fields, as the format schema says."""
    condition = defs.get("field", {}).get("if", {})
    markers = condition.get("anyOf")
    if isinstance(markers, list):
        return copy.deepcopy(markers)
    return [{"required": [key]} for key in ("path", "template", "literal", "use", "each", "fields")]


def _field_type(node: Mapping[str, Any]) -> str:
    declared = node.get("type")
    if isinstance(declared, list):
        return " or ".join(str(t) for t in declared)
    if declared is not None:
        return str(declared)
    if "enum" in node:
        return "one of " + ", ".join(json.dumps(v) for v in node["enum"])
    return "a value"


def _takes_object(node: Mapping[str, Any]) -> bool:
    declared = node.get("type")
    if declared is None:
        return "enum" not in node and "const" not in node
    return "object" in (declared if isinstance(declared, list) else [declared])


def _fields(node: Mapping[str, Any], kind: str, path: str, markers: list[dict[str, Any]]) -> dict[str, Any]:
    where = f"{kind} {path}" if path else kind
    properties = node.get("properties") or {}
    required = set(node.get("required") or ())
    fields: dict[str, Any] = {
        "type": "object",
        "description": f"The fields of {where}"
        + (f"; required: {', '.join(sorted(required))}" if required else "")
        + ".",
        "properties": {
            name: _field(child, kind, f"{path}.{name}" if path else name, name in required, markers)
            for name, child in properties.items()
        },
    }
    if properties and node.get("additionalProperties", True) is False:
        fields["additionalProperties"] = False  # a misspelled field is an error (underlined in editors)
    return fields


def _field(
    node: Mapping[str, Any], kind: str, path: str, required: bool, markers: list[dict[str, Any]]
) -> dict[str, Any]:
    text = node.get("description") or f"{kind} field `{path}`: {_field_type(node)}"
    field: dict[str, Any] = {
        "$ref": "#/$defs/field",
        "description": text + (" (required)" if required else ""),
    }
    rules: list[dict[str, Any]] = []
    if not _takes_object(node):
        # An object where the kind wants a value must be a field spec: `{pth: id}` is a misspelled one.
        rules.append({"if": {"type": "object"}, "then": {"anyOf": markers}})
    if node.get("properties"):
        nested = _fields(node, kind, path, markers)
        # Nested fields (an object without field-spec keys), or a spec's `fields:`, are this object's fields.
        rules.append({"if": {"type": "object", "not": {"anyOf": markers}}, "then": nested})
        rules.append(
            {"if": {"type": "object", "required": ["fields"]}, "then": {"properties": {"fields": nested}}}
        )
    items = node.get("items")
    if isinstance(items, Mapping) and items.get("properties"):
        # `each:` with `fields:` builds one item per source element: those are the item's fields.
        item = _fields(items, kind, f"{path}[]", markers)
        rules.append(
            {"if": {"type": "object", "required": ["fields"]}, "then": {"properties": {"fields": item}}}
        )
    if rules:
        field["allOf"] = rules
    return field


def _localize_refs(node: Any, prefix: str) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(prefix) and prefix != "#":
            node["$ref"] = "#" + ref[len(prefix) :]
        for child in node.values():
            _localize_refs(child, prefix)
    elif isinstance(node, list):
        for child in node:
            _localize_refs(child, prefix)


def _describe(node: Any, name: str) -> None:
    """A description on every schema node that has none, named by where it sits."""
    if not isinstance(node, dict):
        return
    if "description" not in node and any(k in node for k in ("type", "$ref", "properties", "enum", "const")):
        node["description"] = f"{name}."
    for key, child in node.get("properties", {}).items():
        if isinstance(child, dict):
            _describe(child, f"`{key}` of {name}")
    for key, child in node.get("$defs", {}).items():
        _describe(child, f"{key}")
    for key in ("additionalProperties", "items", "then", "else"):
        _describe(node.get(key), name)
    for key in ("allOf", "anyOf", "oneOf"):
        for child in node.get(key, ()):
            _describe(child, name)
