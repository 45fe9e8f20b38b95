"""Plain field paths (``a.b[0].c``) in a parsed JMESPath tree, and what a failing function was given.

The compiler turns a plain path into a direct lookup (``_jmespath_direct``). An error such as ``lookup(): lookup
table 'status' has no entry for null`` says what the function got, not where that came from, and the
expression around it may read a dozen fields. So when a builtin fails, the plain field paths passed to it
are read again (on the error's path only, never the transform's) and the error shows ``found: state = null
(not in the document)``: the field of the document to look at, as glom says where a lookup failed. In a
template, a loop's or set variable is named by the place of the value it held (``line_items[2].sku =
null``), which ``_binding_probe`` finds again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2.nodes
import jinja2.utils

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


@dataclass(frozen=True)
class Binding:
    """What a name that a template binds (a loop's variable, a set variable) held where a function failed:
    its value, and where that value is in the document (path text such as ``$this.line_items[2]``, which
    ``path_of`` names) or None when it was not read from a plain path (a filter's result, a sum)."""

    value: Any
    source: str | None


def found_in_template(
    ast: jinja2.nodes.Template,
    function: str | None,
    names: Callable[[], frozenset[str]],
    path_of: Callable[[str], str],
    variable: Callable[[str], Any],
    bound: frozenset[str] = frozenset(),
    bindings: Callable[[], Mapping[str, Binding | None]] = dict,
    filters: frozenset[str] = frozenset(),
) -> tuple[str, ...]:
    """As :func:`found_arguments`, for a Jinja template: each ``this.a.b``, ``root.x[0]``, let name, loop or
    set variable (``item.sku``) given to ``function``, called (``f(a, b)``) or, when it is one of
    ``filters`` (the functions registered as Jinja filters), as a filter (``a | f(b)``, the filtered value
    first). ``names()``: the names readable from the scope; ``bound``: the names the template binds itself;
    ``bindings()``: those in view where the function failed (asked only when it was given one), None for
    one whose binding is unknown. A bound name is named by its value's place in the document
    (``line_items[2].sku``), else by itself (``item.sku``)."""
    if function is None:
        return ()
    shown: dict[str, str] = {}
    readable = names()
    in_view: Mapping[str, Binding | None] | None = None
    for arguments in _given(ast, function, filters):
        for argument in arguments:
            read = template_place(argument)
            if read is None:
                continue
            name, steps = read
            if in_view is None and name in bound:
                in_view = bindings()
            if in_view is not None and name in in_view:  # it hides a scope or let name, as in Jinja
                binding = in_view[name]
                if binding is None:
                    continue  # bound where the replay does not follow: any value shown could be another's
                base = binding.source
                if isinstance(binding.value, jinja2.utils.Namespace):
                    continue  # `ns.total`: the template's own counter, not data
                where = path_of(path_text(steps, base)) if base is not None else path_text(steps, name)
                value = _read(steps, binding.value)
            elif name in readable:
                where = path_of(path_text(steps, f"${name}"))
                value = _read(steps, variable(name))
            else:
                continue
            if where not in shown and len(shown) < _MAX_SHOWN:
                shown[where] = value
    return tuple(f"{path} = {value}" for path, value in shown.items())


def _given(
    ast: jinja2.nodes.Template, function: str, filters: frozenset[str]
) -> Iterator[list[jinja2.nodes.Expr]]:
    """The arguments of each use of ``function`` in the template, in the order they are written."""
    for node in ast.find_all((jinja2.nodes.Call, jinja2.nodes.Filter)):
        if isinstance(node, jinja2.nodes.Call):
            if isinstance(node.node, jinja2.nodes.Name) and node.node.name == function:
                yield node.args
        elif (
            isinstance(node, jinja2.nodes.Filter)
            and node.name == function
            and function in filters
            and node.node is not None
        ):
            yield [node.node, *node.args]  # a `{% filter f %}` block has no node: its body is not a place


def template_place(node: jinja2.nodes.Node) -> tuple[str, list[str | int]] | None:
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
