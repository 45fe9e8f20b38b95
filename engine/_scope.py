"""Where a transform is in the source document: :class:`Scope`, the current node with its parent, the whole
document, the index and the ``let`` values in view, and the source path an error names.

The names a mapping reads them by (``$this``, ``$parent``, ``$root``, ``$index``) are defined here once, for the
expression compiler, the fast template compiler and the generated code alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Label = str | Callable[["Scope"], str]  # a scope's place in the source, or how to work it out
Evaluator = Callable[["Scope"], Any]  # a compiled expression or template: its value in a scope

# Names a template may use besides the functions: the current node, its parent, the whole document, the index.
SCOPE_NAMES = ("this", "parent", "root", "index")
SCOPE_PREFIX = re.compile(r"^\$(this|parent|root|index)(?=$|[.\[])")
# A plain field path (``a.b[0].c``): a place in the source, which an error names as it is.
PLAIN_PATH = re.compile(r"^(?:[A-Za-z_]\w*|\[-?\d+\])(?:\.[A-Za-z_]\w*|\[-?\d+\])*$")
_NO_LETS: dict[str, Any] = {}


class Scope:
    """Where a transform is in the source: the current node, its parent scope and the whole document.

    The source path is only built when an error needs it, so array items cost one small object each.
    """

    __slots__ = ("data", "index", "label", "lets", "parent", "root")

    lets: dict[str, Any]

    def __init__(
        self,
        data: Any,
        parent: Scope | None,
        root: Any,
        label: Label = "",
        index: int | None = None,
        lets: dict[str, Any] | None = None,
    ) -> None:
        self.data = data
        self.parent = parent
        self.root = root
        self.label = label
        self.index = index
        # The `let` values visible here: a scope sees its own and every enclosing scope's.
        self.lets: dict[str, Any] = (
            lets if lets is not None else (parent.lets if parent is not None else _NO_LETS)
        )

    def with_lets(self, lets: dict[str, Any]) -> Scope:
        """The same place in the source, seeing ``lets`` too (its fields see them, its siblings do not)."""
        return Scope(self.data, self.parent, self.root, self.label, self.index, lets)

    def label_text(self) -> str:
        label = self.label
        return label if type(label) is str else label(self)  # type: ignore[operator]

    def path(self) -> str:
        """The source path of this node, such as ``order.line_items[2]``."""
        parts: list[str] = []
        scope: Scope | None = self
        while scope is not None:
            label = scope.label_text()
            absolute = label.startswith("$root")
            if absolute:  # read from the document's top: the scopes around it are not on its path
                label = label[len("$root") :].lstrip(".")
            if scope.index is not None:
                parts.append(f"{label}[{scope.index}]")
            elif label:
                parts.append(label)
            if absolute:
                break
            scope = scope.parent
        return ".".join(reversed(parts))

    def child_path(self, expression: str) -> str:
        if expression.startswith("$"):
            prefix = SCOPE_PREFIX.match(expression)
            if prefix is None:
                return expression  # a let value: its own name is where it was read
            rest = expression[prefix.end() :].lstrip(".")
            name = prefix.group(1)
            if name == "root":
                return rest or "@"
            if name == "parent" and self.parent is not None:
                return self.parent.child_path(rest) if rest else self.parent.path() or "@"
            if name == "this":
                return self.child_path(rest) if rest else self.path() or "@"
            return expression
        base = self.path()
        if PLAIN_PATH.match(expression) is None:
            # A template, a function or a join is not a place in the source: say what was read, and where.
            return f"{expression} (at {base})" if base else expression
        if not base:
            return expression
        return f"{base}{expression}" if expression.startswith("[") else f"{base}.{expression}"


def select_scope(scope: Scope, name: str) -> Any:
    if name == "this":
        return scope.data
    if name == "root":
        return scope.root
    if name == "index":
        return scope.index
    if name == "parent":
        return parent_data(scope)
    return scope.lets.get(name)


def template_names(scope: Scope) -> dict[str, Any]:
    """What a template sees of ``scope``, besides the functions: this, parent, root, index and the lets."""
    names = {"this": scope.data, "parent": parent_data(scope), "root": scope.root, "index": scope.index}
    if scope.lets:
        names.update(scope.lets)
    return names


def parent_data(scope: Scope) -> Any:
    return scope.parent.data if scope.parent is not None else None
