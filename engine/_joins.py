"""Joins between arrays of one event: ``find``, ``index_by`` and ``group_by``.

An index is built once per array and key, not once per call: the functions keep the last index they built,
keyed by the array's identity. Within one transform the same array object is searched again and again (one
``find`` per shipment item over the order's products), so every call after the first is one dict lookup.
The cache holds a reference to its array, so an identity can never be reused while it is cached.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from ._errors import preview_value
from ._function_errors import FunctionError

__all__ = ["Joins", "join_key"]


def join_key(value: Any) -> str | None:
    """The text two join values are compared by: 5, 5.0 and "5" match, as ids do across documents; True is
    "true". Null, arrays and objects never match anything."""
    if value is None or isinstance(value, (dict, list)):
        return None
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value
    return None


def _key_parts(key: Any) -> tuple[str, ...]:
    if not isinstance(key, str) or not key:
        raise FunctionError(
            f"expected a key name such as 'id' (or a dotted path 'a.b'), found {preview_value(key)}"
        )
    return tuple(key.split("."))


def _read(element: Any, parts: tuple[str, ...]) -> Any:
    for part in parts:
        if type(element) is not dict:
            return None
        element = element.get(part)
    return element


def _array(value: Any, function: str) -> list[Any] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise FunctionError(f"{function}() expects an array to search, found {preview_value(value)}")
    return value


class Joins:
    """One per loaded mapping. Thread-safe: a cache entry is replaced whole, under a lock."""

    __slots__ = ("_groups", "_indexes", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._indexes: tuple[Any, tuple[str, ...], dict[str, Any]] | None = None
        self._groups: tuple[Any, tuple[str, ...], dict[str, list[Any]]] | None = None

    def _index(self, array: list[Any], parts: tuple[str, ...]) -> Mapping[str, Any]:
        cached = self._indexes
        if cached is not None and cached[0] is array and cached[1] == parts:
            return cached[2]
        index: dict[str, Any] = {}
        for element in array:
            key = join_key(_read(element, parts))
            if key is not None and key not in index:  # the first element with a key wins, as find() says
                index[key] = element
        with self._lock:
            self._indexes = (array, parts, index)
        return index

    def find(self, array: Any, key: Any, value: Any) -> Any:
        """The first element of ``array`` whose ``key`` equals ``value``; null when none does."""
        items = _array(array, "find")
        parts = _key_parts(key)
        wanted = join_key(value)
        if items is None or wanted is None:
            return None
        return self._index(items, parts).get(wanted)

    def index_by(self, array: Any, key: Any) -> dict[str, Any] | None:
        """An object from each element's ``key`` (as text) to the element (the first one, for a repeated key)."""
        items = _array(array, "index_by")
        parts = _key_parts(key)
        if items is None:
            return None
        return dict(self._index(items, parts))

    def group_by(self, array: Any, key: Any) -> dict[str, list[Any]] | None:
        """An object from each ``key`` value (as text) to the elements that have it, in their order.
        Elements without the key are left out."""
        items = _array(array, "group_by")
        parts = _key_parts(key)
        if items is None:
            return None
        cached = self._groups
        if cached is not None and cached[0] is items and cached[1] == parts:
            return {name: list(group) for name, group in cached[2].items()}
        groups: dict[str, list[Any]] = {}
        for element in items:
            found = join_key(_read(element, parts))
            if found is not None:
                groups.setdefault(found, []).append(element)
        with self._lock:
            self._groups = (items, parts, groups)
        return {name: list(group) for name, group in groups.items()}
