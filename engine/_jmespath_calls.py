"""The function calls of a parsed JMESPath expression, and where each one's name is written in its text.

JMESPath's parsed tree keeps no positions. An error about one call (an unknown function, a wrong number of
arguments, a literal argument of the wrong type) parses the expression again, only then, with a parser that
notes where each call's name starts; the calls of both trees are met in the same order (:func:`calls`), so
the Nth call of the one is the Nth of the other.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jmespath.parser

__all__ = ["call_offsets", "calls"]


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
