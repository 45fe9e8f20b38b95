"""The field tree of a scaffolded mapping: what the target builder (``_builder``) produces and the renderer
(``_render``) writes. One :class:`_Out` per line or block of a target's fields, with the suggestion it
stands for; the YAML scalars and the sample values shown in its comments.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ._model import FieldSuggestion

_PLAIN_YAML = re.compile(r"^[A-Za-z_$][A-Za-z0-9_.$]*$")
_YAML_WORDS = frozenset({"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"})
_SHOWN_CHARS = 40


@dataclass
class _Out:
    """One line (or block) of the mapping's field tree."""

    name: str
    spec: str | None = None  # flow YAML after "name: "; None for a block with children
    children: list[_Out] = field(default_factory=list)
    each: str | None = None
    comment: str = ""
    suggestion: FieldSuggestion | None = None
    note: bool = False  # a comment line only


def _walk(outs: list[_Out]) -> Iterator[_Out]:
    """Every line of the tree, depth first."""
    for out in outs:
        yield out
        yield from _walk(out.children)


def _show(value: Any) -> str:
    """A sample value as a comment shows it: JSON, cut to ``_SHOWN_CHARS``."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


def _yaml(value: Any) -> str:
    """A YAML scalar that reads back as ``value``, plain when that is safe."""
    if isinstance(value, str):
        if _PLAIN_YAML.match(value) and value.lower() not in _YAML_WORDS:
            return value
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False)
