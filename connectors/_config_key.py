"""What a config dataclass field says about its key in the file: the metadata the config's JSON Schema is
generated from (``_config/_schema.py``). A leaf module, so that settings classes outside ``_config`` (the
breaker's) describe their keys without importing the config package.

    failures: int = field(default=5, metadata=about("Failures in a row that open it.", minimum=1))

The field's type gives the key's JSON type (``Literal`` an enum, a dataclass a section, ``X | None`` an
optional key), its default the schema's ``default`` and the description's last sentence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The JSON Schema bounds a field may carry; a union's bounds apply to its branches of the matching type.
NUMBER_BOUNDS = ("minimum", "maximum", "exclusiveMinimum")
STRING_BOUNDS = ("minLength", "pattern")


def about(
    description: str | None = None,
    *,
    duration: bool = False,
    nullable: bool = False,
    default_text: str | None = None,
    schema_default: float | str | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusiveMinimum: float | None = None,  # named as in JSON Schema
    minLength: int | None = None,
    pattern: str | None = None,
    why: str | None = None,
) -> Mapping[str, Any]:
    """A key of the config file. ``duration``: seconds as a number or a string such as 30s (the field holds
    seconds, and its bounds are in seconds, held however the file writes it); ``nullable``: the file may
    write null (else ``None`` only means "left out"); ``default_text``: the description's "Default ..." when
    the default value alone says too little; ``schema_default``: the schema's ``default`` of a key whose
    field is None when left out, given only where writing that value runs as leaving the key out does, or is
    refused (see ``_key_pairs``); ``why``: said after a duration out of its bounds."""
    given = {
        "description": description,
        "duration": duration or None,
        "nullable": nullable or None,
        "default_text": default_text,
        "schema_default": schema_default,
        "minimum": minimum,
        "maximum": maximum,
        "exclusiveMinimum": exclusiveMinimum,
        "minLength": minLength,
        "pattern": pattern,
        "why": why,
    }
    return {name: value for name, value in given.items() if value is not None}


def duration_text(seconds: float) -> str:
    """A duration as the config writes it: the largest whole unit (30d, 4h, 5m, 30s), else milliseconds; none
    at all is ``0s``, as it is most often written."""
    if seconds == 0:
        return "0s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"


# A field the file does not write as a key of its own (a name that is the mapping key, a value derived from
# another key, a runtime object).
NOT_A_KEY: Mapping[str, Any] = {"not_a_key": True}
