"""What ``shipmap validate`` finds in a compiled target without data: fields its kind lacks, required fields
left unmapped, and field specs with a misspelled key. One typo gives one problem, with the nearest name.

Driven by the schemas, not by lists kept here: the kind's JSON Schema says which fields exist, the mapping
format's schema which keys a field spec takes (so a key added to the language is known at once).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from typing import Any

from ._errors import Problem
from ._format import mapping_format_schema
from ._target import CompiledTarget, StaticPath, static_field_name
from ._trace import ARRAY


def spec_keys() -> list[str]:
    """The keys a field spec takes, as the mapping format's schema declares them."""
    definitions = mapping_format_schema().get("$defs", {})
    return sorted(definitions.get("field_spec", {}).get("properties", {}))


def nearest(word: str, candidates: list[str]) -> str | None:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return close[0] if close else None


def _takes_object(schema: Mapping[str, Any]) -> bool:
    declared = schema.get("type")
    if declared is None:
        return "enum" not in schema and "const" not in schema
    return "object" in (declared if isinstance(declared, list) else [declared])


def target_problems(
    target: CompiledTarget, mapped: dict[StaticPath, set[str]], opaque: set[StaticPath]
) -> Iterator[Problem]:
    kind = target.kind
    keys_of_a_spec = spec_keys()
    misplaced: list[StaticPath] = []  # objects reported whole: their keys are not reported again
    for static, keys in sorted(mapped.items(), key=lambda item: [str(part) for part in item[0]]):
        if any(static[: i + 1] in opaque for i in range(len(static))):
            continue
        if any(static[: len(place)] == place for place in misplaced):
            continue
        parts = tuple(0 if part == ARRAY else part for part in static)
        schema = kind.field_schema(parts)
        if static and schema is not None and not _takes_object(schema):
            misplaced.append(static)
            yield _object_for_a_value(target, static, keys, schema, keys_of_a_spec)
            continue
        known = [name for name in kind.field_names(parts) if name not in keys]
        unmapped = [name for name in kind.required_children(parts) if name not in keys]
        for key in sorted(keys):
            if kind.is_known_field((*parts, key)):
                continue
            field_name = nearest(key, known)
            spec_key = nearest(key, keys_of_a_spec) if field_name is None else None
            message = f"is not a field of {kind.name}"
            if field_name is not None:
                message += f"; did you mean '{field_name}'?"
                if field_name in unmapped:  # the typo explains the missing field: one problem, not two
                    unmapped.remove(field_name)
            elif spec_key is not None:
                message += f" (as a field spec key: did you mean '{spec_key}'?)"
            yield Problem(
                field=static_field_name(target.name, (*static, key)),
                message=message,
                location=target.where((*static, key)),
                # As preview sees it: an error where the kind refuses undeclared keys, else a warning.
                severity="error" if kind.refuses_unknown((*parts, key)) else "warning",
            )
        for required in unmapped:
            yield Problem(
                field=static_field_name(target.name, (*static, required)),
                message=f"is required by {kind.name} but not mapped",
                location=target.where(static),
            )


def _object_for_a_value(
    target: CompiledTarget, static: StaticPath, keys: set[str], schema: Mapping[str, Any], spec: list[str]
) -> Problem:
    """A nested object where the kind wants a value: almost always a field spec with a misspelled key."""
    for key in sorted(keys):
        close = nearest(key, spec)
        if close is not None:
            return Problem(
                field=static_field_name(target.name, static),
                message=f"unknown key '{key}' in a field spec; did you mean '{close}'?",
                location=target.where((*static, key)),
            )
    wanted = schema.get("type", "a value")
    wanted_text = " or ".join(wanted) if isinstance(wanted, list) else str(wanted)
    return Problem(
        field=static_field_name(target.name, static),
        message=f"is {wanted_text} in {target.kind.name}, but the mapping builds an object of fields "
        f"({', '.join(sorted(keys))}); a field spec takes {', '.join(spec)}",
        location=target.where(static),
    )
