"""The function calls of a parsed JMESPath expression, where each one's name is written in its text, and which
one raised an error at run time.

JMESPath's parsed tree keeps no positions. An error about one call (an unknown function, a wrong number of
arguments, a literal argument of the wrong type; a function failing on the data) parses the expression again,
only then, with a parser that notes where each call's name starts; the calls of both trees are met in the
same order (:func:`calls`), so the Nth call of the one is the Nth of the other.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jmespath.parser

__all__ = ["call_offsets", "calls", "raising_call"]


def calls(tree: Any) -> Iterator[dict[str, Any]]:
    """The ``function_expression`` nodes of ``tree``, outer before inner, left before right."""
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if node.get("type") == "function_expression":
                yield node
            pending.extend(reversed(node.get("children", ())))


def call_offsets(expression: str) -> list[tuple[str, int]]:
    """The name of each call of ``expression`` and the offset in it where that name starts, in the order of
    :func:`calls`. ``expression`` is one that JMESPath parses."""
    parser = _PlacedParser()
    tree = parser._do_parse(expression).parsed  # not parse(): its cache hands back a tree parsed before
    return [(node["value"], parser.starts[id(node)]) for node in calls(tree)]


def raising_call(error: BaseException, tree: Any, function: str | None) -> int | None:
    """The number, in the order of :func:`calls`, of the call of ``function`` in ``tree`` that raised
    ``error`` as JMESPath's interpreter ran ``tree``: the innermost frame of the traceback visiting such a
    call names its node. None when no interpreter's frame does (plain Python ran the expression). ``function``
    None: the innermost call of any function."""
    numbers = {
        id(node): number
        for number, node in enumerate(calls(tree))
        if function is None or node["value"] == function
    }
    found = None
    trace = error.__traceback__
    while trace is not None:
        frame = trace.tb_frame
        if frame.f_code.co_name == "visit_function_expression":
            found = numbers.get(id(frame.f_locals.get("node")), found)
        trace = trace.tb_next
    return found


class _PlacedParser(jmespath.parser.Parser):  # type: ignore[misc]  # jmespath ships no types
    """JMESPath's parser, noting where the name of each function call it builds starts."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: dict[int, int] = {}

    def _token_led_lparen(self, left: dict[str, Any]) -> dict[str, Any]:
        name = self._lookahead_token(-2)  # the token before "(": the name of the call being parsed
        node: dict[str, Any] = super()._token_led_lparen(left)
        self.starts[id(node)] = name["start"]
        return node
