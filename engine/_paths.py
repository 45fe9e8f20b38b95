"""Plain field paths (``a.b[0].c``) in a parsed JMESPath tree, and what a failing function was given.

The compiler turns a plain path into a direct lookup (``_expressions``). An error such as ``lookup(): lookup
table 'status' has no entry for null`` says what the function got, not where that came from, and the
expression around it may read a dozen fields. So when a builtin fails, the plain field paths passed to it
are read again (on the error's path only, never the transform's) and the error shows ``found: state = null
(not in the document)``: the field of the document to look at, as glom says where a lookup failed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import jinja2.nodes

from ._errors import preview_value

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_SHOWN = 4  # arguments named in one error: a call with more is rare, and the line stays readable


def found_arguments(
    tree: dict[str, Any],
    function: str | None,
    data: Any,
    path_of: Callable[[str], str],
    variable: Callable[[str], Any],
) -> tuple[str, ...]:
    """``path = value`` for each field path given to ``function`` anywhere in the parsed JMESPath ``tree``:
    read from ``data``, or from ``variable(name)`` for one that starts with a ``$name`` (a missing field says
    so); each named by ``path_of`` (its place in the whole document). Empty when there is none."""
    if function is None:
        return ()
    shown: dict[str, str] = {}
    for call in _calls(tree, function):
        for argument in call.get("children", []):
            read = place(argument)
            if read is None or read == (None, []):
                continue  # a literal, an expression, @: not a place in the document to name
            name, steps = read
            where = path_of(path_text(steps, "" if name is None else f"${name}"))
            if where not in shown and len(shown) < _MAX_SHOWN:
                shown[where] = _read(steps, data if name is None else variable(name))
    return tuple(f"{path} = {value}" for path, value in shown.items())


def plain_path(node: dict[str, Any]) -> list[str | int] | None:
    """The steps of a plain field path (``a.b[0].c``), or None when the expression is anything more."""
    found = place(node)
    return found[1] if found is not None and found[0] is None else None


def place(node: dict[str, Any]) -> tuple[str | None, list[str | int]] | None:
    """Where a path reads: the ``$name`` it starts from (a "variable" node; None for the current data) and
    its steps, or None when the expression is anything more than a path."""
    kind = node.get("type")
    if kind == "field":
        return None, [node["value"]]
    if kind == "current":
        return None, []
    if kind == "variable":
        return str(node["value"]), []
    if kind == "subexpression":
        first, *rest = node["children"]
        head = place(first)
        if head is None:
            return None
        steps = list(head[1])
        for child in rest:
            part = place(child)
            if part is None or part[0] is not None:
                return None
            steps += part[1]
        return head[0], steps
    if kind == "index_expression":
        left, *indexes = node["children"]  # a[0][1] is one node with two indexes
        head = (None, []) if left.get("type") == "identity" else place(left)
        if head is None or any(index.get("type") != "index" for index in indexes):
            return None
        return head[0], [*head[1], *(int(index["value"]) for index in indexes)]
    return None


def found_in_template(
    ast: jinja2.nodes.Template,
    function: str | None,
    names: Callable[[], frozenset[str]],
    path_of: Callable[[str], str],
    variable: Callable[[str], Any],
) -> tuple[str, ...]:
    """As :func:`found_arguments`, for a Jinja template: each ``this.a.b``, ``root.x[0]`` or let name given to
    ``function`` (a loop's own variable is gone once the template failed, and is not shown). ``names()``: the
    names readable from the scope."""
    if function is None:
        return ()
    shown: dict[str, str] = {}
    readable = names()
    for call in ast.find_all(jinja2.nodes.Call):
        if not (isinstance(call.node, jinja2.nodes.Name) and call.node.name == function):
            continue
        for argument in call.args:
            read = _template_place(argument)
            if read is None or read[0] not in readable:
                continue
            name, steps = read
            where = path_of(path_text(steps, f"${name}"))
            if where not in shown and len(shown) < _MAX_SHOWN:
                shown[where] = _read(steps, variable(name))
    return tuple(f"{path} = {value}" for path, value in shown.items())


def _template_place(node: jinja2.nodes.Node) -> tuple[str, list[str | int]] | None:
    """(the name it starts from, its steps) for ``name.a["b"][0]``, else None."""
    steps: list[str | int] = []
    while True:
        if isinstance(node, jinja2.nodes.Name):
            return node.name, steps[::-1]
        if isinstance(node, jinja2.nodes.Getattr):
            steps.append(node.attr)
        elif isinstance(node, jinja2.nodes.Getitem) and isinstance(node.arg, jinja2.nodes.Const):
            key = node.arg.value
            if not isinstance(key, str | int) or isinstance(key, bool):
                return None
            steps.append(key)
        else:
            return None
        node = node.node


def _calls(node: Any, function: str) -> list[dict[str, Any]]:
    """Every call of ``function`` in the tree, outermost first (iterative: trees are as deep as the text)."""
    found: list[dict[str, Any]] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if not isinstance(current, dict):
            continue
        if current.get("type") == "function_expression" and current.get("value") == function:
            found.append(current)
        stack.extend(reversed(current.get("children", [])))
    return found


def path_text(steps: Sequence[str | int], text: str = "") -> str:
    """The JMESPath text of ``steps`` (after ``text``): ``a.b[0]."first-name"``, keys that are not identifiers
    quoted (what ``shipmap init`` writes into a mapping, too)."""
    for step in steps:
        if isinstance(step, int):
            text += f"[{step}]"
        else:
            name = step if IDENTIFIER.match(step) else json.dumps(step)
            text += f".{name}" if text else name
    return text


def _read(steps: list[str | int], data: Any) -> str:
    value = data
    for step in steps:
        if isinstance(step, int):
            present = isinstance(value, list) and -len(value) <= step < len(value)
        else:
            present = isinstance(value, dict) and step in value
        if not present:
            return "null (not in the document)"
        value = value[step]
    return preview_value(value)
