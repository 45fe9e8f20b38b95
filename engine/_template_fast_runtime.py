"""What a fast template's generated code calls at run time (``_template_fast`` writes that code).

Each helper handles the plain case the way Jinja's own code would (a list of dicts, a string, a number), and
raises :class:`Fallback` on anything else, so that the caller runs the same template through Jinja for the
exact result or the exact error. The generated code reaches them only through :data:`HELPERS`, the names of
the namespace it runs in, which holds no builtins but the few named here.
"""

from __future__ import annotations

import operator
import types
from collections.abc import Callable, Mapping
from numbers import Number
from typing import Any

from jinja2 import Undefined

from ._budget import spend

__all__ = ["HELPERS", "Fallback", "item_helpers"]


class Fallback(Exception):
    """The fast path cannot reproduce Jinja for this data: run the template through Jinja instead."""


_MISSING = object()  # a variable not (yet) set, which Jinja would give as Undefined
_NUMBERS = (int, float, bool)


def _fail() -> Any:
    raise Fallback


def _dig(item: Any, parts: tuple[str | int, ...]) -> Any:
    """Jinja's make_attrgetter (environment.getitem per part), when every part is there."""
    for part in parts:
        kind = type(item)
        if kind is dict:
            if part not in item:
                raise Fallback
            item = item[part]
        elif kind is list and type(part) is int and -len(item) <= part < len(item):
            item = item[part]
        else:
            raise Fallback
    return item


def _values(seq: Any, parts: tuple[str | int, ...]) -> list[Any]:
    """The looked-up values of a list's items: ``seq`` itself for no parts, else a new list."""
    if type(seq) is not list:
        raise Fallback
    if not parts:
        return seq
    out = []
    if len(parts) == 1:
        (part,) = parts
        for item in seq:
            if type(item) is dict and part in item:
                out.append(item[part])
            else:
                out.append(_dig(item, parts))
        return out
    for item in seq:
        out.append(_dig(item, parts))
    return out


def _map(seq: Any, parts: tuple[str | int, ...]) -> list[Any]:
    values = _values(seq, parts)
    return list(values) if values is seq else values


def _select(
    seq: Any, parts: tuple[str | int, ...], test: Any, args: tuple[Any, ...], keep: bool
) -> list[Any]:
    """Jinja's select_or_reject: the items whose value (after the test, if any) is truthy, or falsy."""
    if type(seq) is list and not seq:
        return []
    values = _values(seq, parts)
    out = []
    if test is operator.eq and len(args) == 1:
        (wanted,) = args
        for item, value in zip(seq, values, strict=True):
            if keep:
                if value == wanted:
                    out.append(item)
            elif not value == wanted:  # noqa: SIM201  # Jinja's reject negates the test it is given
                out.append(item)
        return out
    for item, value in zip(seq, values, strict=True):
        result = value if test is None else test(value, *args)
        if keep:
            if result:
                out.append(item)
        elif not result:
            out.append(item)
    return out


def _sum(seq: Any, parts: tuple[str | int, ...], start: Any) -> Any:
    if type(seq) is list and not seq:  # often: an order without refunds
        return start  # what sum([], start) gives: start itself
    return sum(_values(seq, parts), start)


def _is_number(value: Any) -> bool:
    """Jinja's ``number`` test, ``isinstance(value, Number)``, without the ABC's slow path for plain numbers."""
    return type(value) in _NUMBERS or isinstance(value, Number)


def _list(seq: Any) -> list[Any]:
    if type(seq) is not list:
        raise Fallback
    return list(seq)


def _extreme(seq: Any, largest: bool) -> Any:
    # Jinja compares strings case-insensitively and gives Undefined for an empty sequence: numbers only here.
    if type(seq) is not list or not seq:
        raise Fallback
    for item in seq:
        if type(item) not in _NUMBERS:
            raise Fallback
    return max(seq) if largest else min(seq)


def _length(value: Any) -> int:
    if type(value) not in (list, str, dict):
        raise Fallback
    return len(value)


def _join(seq: Any, glue: Any) -> str:
    if type(seq) is not list:
        raise Fallback
    return str.join(str(glue), map(str, seq))


def _default(value: Any, default: Any, boolean: Any) -> Any:
    if isinstance(value, Undefined) or (boolean and not value):
        return default
    return value


def _text_method(method: Callable[[str], str]) -> Callable[[Any], str]:
    def apply(value: Any) -> str:
        if type(value) is not str:
            raise Fallback
        return method(value)

    return apply


def _result(value: Any) -> Any:
    """What TemplateCompiler's single-expression renderer returns: None for an Undefined."""
    return None if isinstance(value, Undefined) else value


def item_helpers(undefined: Callable[..., Any]) -> tuple[Callable[..., Any], Callable[..., Any]]:
    def item(obj: Any, key: Any) -> Any:
        kind = type(obj)
        if kind is dict:
            if key in obj:
                return obj[key]
        elif kind is list and type(key) is int and -len(obj) <= key < len(obj):
            return obj[key]
        raise Fallback

    def item_or_undefined(obj: Any, key: Any) -> Any:
        kind = type(obj)
        if kind is dict:
            if key in obj:
                return obj[key]
            if type(key) is str and hasattr(dict, key):
                raise Fallback  # the sandbox would hand out the dict method of that name
            return undefined(None, obj, key)
        if kind is list and type(key) is int:
            if -len(obj) <= key < len(obj):
                return obj[key]
            return undefined(None, obj, key)
        raise Fallback

    return item, item_or_undefined


HELPERS: Mapping[str, Any] = types.MappingProxyType(
    {
        "_Fallback": Fallback,
        "_M": _MISSING,
        "_fail": _fail,
        "_spend": spend,
        "_map": _map,
        "_select": _select,
        "_sum": _sum,
        "_list": _list,
        "_extreme": _extreme,
        "_length": _length,
        "_join": _join,
        "_default": _default,
        "_upper": _text_method(str.upper),
        "_lower": _text_method(str.lower),
        "_trim": _text_method(str.strip),
        "_isinstance": isinstance,
        "_Undefined": Undefined,
        "_Number": Number,
        "_is_number": _is_number,
        "_result": _result,
        "_str": str,
        "_type": type,
        "_dict": dict,
        "_list_type": list,
        "_len": len,
        "_enumerate": enumerate,
        "_concat_text": "".join,
        "Exception": Exception,
    }
)
