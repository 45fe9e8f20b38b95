"""What a config dataclass field says about its key in the file: the metadata the config's JSON Schema is
generated from (``_config/_schema.py``). A leaf module, so that settings classes outside ``_config`` (the
breaker's) describe their keys without importing the config package.

    failures: int = field(default=5, metadata=about("Failures in a row that open it.", minimum=1))

The field's type gives the key's JSON type (``Literal`` an enum, a dataclass a section, ``X | None`` an
optional key), its default the schema's ``default`` and the description's last sentence.

A record whose keys run with a value of their own when left out compares by the values it runs with
(``compared_in_effect``), so that writing such a key at that value changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, Protocol, TypeVar, runtime_checkable

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


@runtime_checkable
class RunsWith(Protocol):
    """A config record whose keys left out (None) run with a value of their own: ``key_in_use`` gives the
    value a key runs with, given or left out."""

    def key_in_use(self, name: str) -> object: ...


def key_in_effect(record: object, name: str) -> object:
    """The value key ``name`` of ``record`` runs with: :meth:`RunsWith.key_in_use`, or as it is."""
    return record.key_in_use(name) if isinstance(record, RunsWith) else getattr(record, name)


def in_effect(record: RunsWith) -> dict[str, object]:
    """``record``'s compared keys and the values they run with (never shown: some are secrets)."""
    return {key.name: record.key_in_use(key.name) for key in fields(record) if key.compare}  # type: ignore[arg-type]


_Record = TypeVar("_Record", bound=type[Any])


def compared_in_effect(cls: _Record) -> _Record:
    """Make a config record equal to another when they run the same, not when they are written the same: a key
    written at what it runs with left out is no change (a reload compares configs; a Fenix session built
    from equal settings goes on, with no new login). The hash follows."""

    def __eq__(self: RunsWith, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, RunsWith)
        return in_effect(self) == in_effect(other)

    def __hash__(self: RunsWith) -> int:
        return hash(tuple(in_effect(self).items()))

    # Set after the dataclass made its own (a class that defines __eq__ keeps it, a frozen one its __hash__).
    setattr(cls, "__eq__", __eq__)  # noqa: B010
    setattr(cls, "__hash__", __hash__)  # noqa: B010
    return cls
