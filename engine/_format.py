"""The mapping file format: its JSON Schema (``shipmap schema`` prints it; the editor schema and ``lint`` build
on it), and the check of a loaded document against it, whose first error names the key and its line.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, cast

from ._errors import MappingStructureError
from ._kinds import SchemaCheck
from ._yaml import LocatedDocument

if TYPE_CHECKING:
    import jsonschema

__all__ = ["check_structure", "mapping_format_schema"]


@cache
def mapping_format_schema() -> Mapping[str, Any]:
    """The JSON Schema of the mapping file format (what ``shipmap schema`` prints)."""
    import json

    text = resources.files(__package__).joinpath("mapping.schema.json").read_text(encoding="utf-8")
    loaded: Mapping[str, Any] = json.loads(text)
    return loaded


@cache
def _format_check() -> SchemaCheck:
    return SchemaCheck(mapping_format_schema())


def check_structure(document: LocatedDocument) -> None:
    """Raise a :class:`MappingStructureError` at the first place ``document`` breaks the format."""
    spec = document.value
    if not isinstance(spec, dict):
        raise MappingStructureError(
            "a mapping file must be a YAML object with 'shipmap: 1' and 'targets'",
            location=document.where(()),
        )
    check = _format_check()
    if check.is_valid(spec):
        return
    # An unknown key explains a missing one (a typo), so it is reported first.
    errors = sorted(
        check.errors(spec),
        key=lambda e: (list(map(str, e.absolute_path)), e.validator != "additionalProperties"),
    )
    if errors:
        raise _structure_error(errors[0], document)


def _structure_error(error: jsonschema.ValidationError, document: LocatedDocument) -> MappingStructureError:
    path = tuple(error.absolute_path)
    where = ".".join(str(part) for part in path) or "the top level"
    if error.validator == "additionalProperties":
        schema: Any = error.schema
        allowed = sorted(schema.get("properties", {}))
        instance: Any = error.instance
        extras = sorted(set(instance) - set(allowed))
        key = extras[0] if extras else "?"
        close = difflib.get_close_matches(key, allowed, n=1)
        return MappingStructureError(
            f"unknown key '{key}' in {where}",
            location=document.key_location((*path, key)),
            hint=(f"did you mean '{close[0]}'? " if close else "") + f"known keys: {', '.join(allowed)}",
        )
    if error.validator == "required":
        return MappingStructureError(f"{where}: {error.message}", location=document.where(path))
    if error.validator == "enum":
        return MappingStructureError(
            f"{where}: {error.instance!r} is not one of {', '.join(map(str, cast(list[Any], error.validator_value)))}",
            location=document.where(path),
        )
    if error.validator == "const" and path == ("shipmap",):
        return MappingStructureError(
            "unsupported format version; this shipmap reads 'shipmap: 1'", location=document.where(path)
        )
    return MappingStructureError(f"{where}: {error.message}", location=document.where(path))
