"""The mapping's lookup tables: :class:`LookupTable`, matched by the canonical text of a scalar
(:func:`lookup_key`), and the ``lookup()`` builtin that reads them (or an object from ``index_by()``).
"""

from __future__ import annotations

import copy
import types
from collections.abc import Mapping
from typing import Any, Final

from ._coerce import int_text
from ._errors import preview_value
from ._function_errors import FunctionError, fail
from ._joins import join_key

__all__ = ["MISSING", "LookupTable", "Lookups", "lookup_key"]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"  # unpickles as the module's singleton


MISSING: Final[Any] = _Missing()
"""Sentinel: a lookup table without a default."""


def lookup_key(value: Any) -> str:
    """The canonical text of a scalar for lookup matching (case-sensitive).

    str as-is, True -> "true", False -> "false", None -> "null", int -> decimal digits, integral float -> as
    the int (2.0 -> "2"), other floats -> repr. Arrays and objects raise :class:`FunctionError`.
    """
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int_text(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    raise fail("a string, number, boolean or null as lookup key", value)


class LookupTable:
    """An immutable table from canonical key text (see :func:`lookup_key`) to values."""

    __slots__ = ("_default", "_entries", "name")

    name: str
    _entries: Mapping[str, Any]
    _default: Any

    def __init__(self, name: str, entries: Mapping[Any, Any], default: Any = MISSING) -> None:
        normalized: dict[str, Any] = {}
        originals: dict[str, Any] = {}
        for key, value in entries.items():
            text = lookup_key(key)
            if text in normalized:
                raise FunctionError(
                    f"lookup table '{name}' has the key {preview_value(text)} twice "
                    f"(as {preview_value(originals[text])} and {preview_value(key)})"
                )
            normalized[text] = value
            originals[text] = key
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "_entries", types.MappingProxyType(normalized))
        object.__setattr__(self, "_default", default)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("LookupTable is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("LookupTable is immutable")

    @property
    def entries(self) -> Mapping[str, Any]:
        """The entries by canonical key text (read-only)."""
        return self._entries

    @property
    def default(self) -> Any:
        """The default value, or :data:`MISSING`."""
        return self._default

    def get(self, value: Any) -> Any:
        """The entry matching ``lookup_key(value)``, else the default, else :class:`FunctionError`.

        Arrays and objects in the table come back as copies, so a payload that is changed later cannot
        change the table.
        """
        try:
            key = lookup_key(value)
        except FunctionError as error:
            raise FunctionError(f"lookup table '{self.name}': {error.message}") from None
        found = self._entries.get(key, MISSING)
        if found is MISSING:
            if self._default is MISSING:
                raise FunctionError(
                    f"lookup table '{self.name}' has no entry for {preview_value(value)} and no default"
                )
            found = self._default
        if isinstance(found, list | dict):
            return copy.deepcopy(found)
        return found

    def __repr__(self) -> str:
        default = "" if self._default is MISSING else f", default={self._default!r}"
        return f"LookupTable({self.name!r}, {len(self._entries)} entries{default})"


class Lookups:
    """The ``lookup()`` builtin, over one mapping's tables. One per FunctionSet; read-only."""

    __slots__ = ("_lookups",)

    def __init__(self, tables: Mapping[str, LookupTable]) -> None:
        self._lookups = tables

    def lookup(self, table: Any, value: Any) -> Any:
        if isinstance(table, dict):  # an object built by index_by/group_by: its entry for value, or null
            key = join_key(value)
            return None if key is None else table.get(key)
        if not isinstance(table, str):
            raise fail("a lookup table name, or an object from index_by()", table)
        found = self._lookups.get(table)
        if found is None:
            known = ", ".join(sorted(self._lookups)[:20]) or "none"
            raise FunctionError(f"no lookup table named {preview_value(table)} (defined: {known})")
        return found.get(value)
