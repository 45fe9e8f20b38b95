"""Plain Python for the JMESPath shapes mappings use most: field paths, literals, shipmap's own functions,
``a[].b``/``a[*].b`` projections and ``||``. Each follows JMESPath's semantics (null for a missing key or a
wrong type, projections skip nulls, JMESPath's truthiness), and anything else stays with JMESPath's
interpreter. The generated code (``_codegen``) uses the same truthiness and flattening.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._functions import FunctionSet
from ._paths import plain_path

__all__ = ["direct", "flatten_once", "is_truthy", "path_getter"]


def direct(node: dict[str, Any], functions: FunctionSet) -> Callable[[Any], Any] | None:
    """Plain Python for the parsed JMESPath ``node``, or None to keep JMESPath's interpreter."""
    steps = plain_path(node)
    if steps is not None:
        return path_getter(steps)
    kind = node.get("type")
    children = node.get("children", [])
    if kind == "literal":
        constant = node["value"]
        return lambda data: constant
    if kind == "function_expression" and node["value"] in functions.names:
        args = [direct(child, functions) for child in children]
        if any(arg is None for arg in args):
            return None
        return _call(functions.jinja_globals[node["value"]], args)  # type: ignore[arg-type]
    if kind == "or_expression":
        left, right = (direct(child, functions) for child in children)
        if left is None or right is None:
            return None
        return lambda data: _or(left(data), right, data)
    if kind == "projection" and len(children) == 2:
        source, element = children
        flatten = source.get("type") == "flatten"
        items = direct(source["children"][0] if flatten else source, functions)
        each = direct(element, functions)
        if items is None or each is None:
            return None
        return _projection(items, each, flatten)
    return None


def _call(function: Callable[..., Any], args: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    if len(args) == 1:
        (first,) = args
        return lambda data: function(first(data))
    if len(args) == 2:
        first, second = args
        return lambda data: function(first(data), second(data))
    return lambda data: function(*[arg(data) for arg in args])


def is_truthy(value: Any) -> bool:
    """JMESPath truthiness, used by when guards, || and route matches: false, null and empty strings, arrays
    and objects are false; 0 is true."""
    return not (value is None or value is False or value == "" or value == [] or value == {})


def _or(value: Any, otherwise: Callable[[Any], Any], data: Any) -> Any:
    return value if is_truthy(value) else otherwise(data)


def flatten_once(items: list[Any]) -> list[Any]:
    """JMESPath's ``[]``: the elements of ``items``, each array among them spliced in (one level)."""
    flat: list[Any] = []
    for element in items:
        if type(element) is list:
            flat.extend(element)
        else:
            flat.append(element)
    return flat


def _projection(
    items: Callable[[Any], Any], each: Callable[[Any], Any], flatten: bool
) -> Callable[[Any], Any]:
    def project(data: Any) -> Any:
        found = items(data)
        if type(found) is not list:
            return None
        if flatten:
            found = flatten_once(found)
        out = []
        for element in found:
            value = each(element)
            if value is not None:
                out.append(value)
        return out

    return project


def path_getter(steps: list[str | int]) -> Callable[[Any], Any]:
    """A direct lookup with JMESPath's semantics: a missing key, a wrong type or an index out of range is null."""
    if not steps:
        return lambda data: data
    if all(isinstance(step, str) for step in steps):
        keys = [str(step) for step in steps]
        if len(keys) == 1:
            (k1,) = keys
            return lambda data: data.get(k1) if type(data) is dict else None
        if len(keys) == 2:
            k1, k2 = keys

            def get2(data: Any) -> Any:
                if type(data) is dict:
                    data = data.get(k1)
                    if type(data) is dict:
                        return data.get(k2)
                return None

            return get2

    def get(data: Any) -> Any:
        for step in steps:
            if type(step) is str:
                if type(data) is not dict:
                    return None
                data = data.get(step)
            else:
                if type(data) is not list:
                    return None
                try:
                    data = data[step]  # type: ignore[index]
                except IndexError:
                    return None
        return data

    return get
