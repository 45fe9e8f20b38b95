"""``$name`` in a JMESPath expression (a scope name or a ``let`` name). JMESPath has no variables, so the text
is rewritten to a call of a placeholder function, whose node in the parsed tree then becomes a "variable"
node, which :class:`ScopedInterpreter` reads from the scope. A parse error's position is mapped back to the
text as written.
"""

from __future__ import annotations

import re
from typing import Any

import jmespath
import jmespath.visitor

from ._scope import Scope, select_scope

__all__ = [
    "ScopedInterpreter",
    "bind_variables",
    "is_placeholder",
    "original_offset",
    "rewrite_variables",
    "variables_in",
]

_VARIABLE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_VARIABLE_CALL = "_shipmap_variable_"


class ScopedInterpreter(jmespath.visitor.TreeInterpreter):  # type: ignore[misc]  # jmespath ships no types
    """JMESPath's interpreter, reading the "variable" nodes of a rewritten expression from one scope."""

    def __init__(self, options: jmespath.Options, scope: Scope) -> None:
        super().__init__(options)
        self._scope = scope

    def visit_variable(self, node: dict[str, Any], value: Any) -> Any:
        return select_scope(self._scope, node["value"])


def variables_in(expression: str) -> list[re.Match[str]]:
    """The ``$name`` of ``expression`` that are not inside a quoted or backtick literal."""
    if "$" not in expression:
        return []
    return [m for m in _VARIABLE.finditer(expression) if not _in_literal(expression, m.start())]


def rewrite_variables(expression: str) -> tuple[str, list[tuple[int, int]]]:
    """``expression`` with each ``$name`` as a placeholder call, and (position in the new text, shift) of
    each rewrite so that a parse error's position can be mapped back."""
    pieces: list[str] = []
    moved: list[tuple[int, int]] = []
    last = 0
    length = 0
    for match in variables_in(expression):
        pieces.append(expression[last : match.start()])
        length += match.start() - last
        call = f"{_VARIABLE_CALL}('{match.group(1)}')"
        pieces.append(call)
        length += len(call)
        moved.append((length, len(call) - (match.end() - match.start())))
        last = match.end()
    pieces.append(expression[last:])
    return "".join(pieces), moved


def is_placeholder(function: str) -> bool:
    """Whether ``function`` is the placeholder call a ``$name`` is rewritten to (not a call in the text)."""
    return function == _VARIABLE_CALL


def original_offset(position: int, moved: list[tuple[int, int]]) -> int:
    return position - sum(shift for end, shift in moved if end <= position)


def bind_variables(node: Any) -> Any:
    """A copy of a parsed tree with each placeholder call replaced by a ``variable`` node."""
    if not isinstance(node, dict):
        return node
    if node.get("type") == "function_expression" and node.get("value") == _VARIABLE_CALL:
        (argument,) = node["children"]
        return {"type": "variable", "value": argument["value"], "children": []}
    copied = dict(node)
    if "children" in node:
        copied["children"] = [bind_variables(child) for child in node["children"]]
    return copied


def _in_literal(expression: str, position: int) -> bool:
    """Whether ``position`` is inside a quoted or backtick literal, where '$' is just text."""
    quote: str | None = None
    for index, char in enumerate(expression[:position]):
        if quote is None and char in "'`\"":
            quote = char
        elif char == quote and expression[index - 1] != "\\":
            quote = None
    return quote is not None
