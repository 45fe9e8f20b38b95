"""What a template's loops were on when a function failed inside them, for the error's ``found:`` line.

A loop's own variable (``item`` in ``{% for item in this.line_items %}``) is gone once the template failed:
neither the fast path nor Jinja's code keeps it. So, on the error's path only, the template runs a second
time (templates are pure) as a copy whose loops report each item as they reach it, and forget it when they
end. Where the function fails again, the loops still holding an item are the ones around the failure. The
copy is compiled the first time its template fails: a template that never fails costs nothing, and the
transform's own path is not touched. The second run gets a budget of its own (``_budget``), the same size
as the first; anything else that goes wrong in it only leaves the loops unnamed.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.nodes as nodes

from ._budget import finish as budget_finish
from ._budget import start as budget_start
from ._functions import FunctionError
from ._paths import LoopItem, path_text, template_place

__all__ = ["LoopProbe"]

# Names the copy calls (a template's own variable of either name would only cost it the detail).
_SEEN = "_shipmap_loop_item_"
_DONE = "_shipmap_loop_done_"


@dataclass(frozen=True)
class _Loop:
    targets: tuple[str, ...]  # `item`, or `key, value`
    reads: tuple[str, list[str | int]] | None  # the name and steps of a plain-path iterable


class LoopProbe:
    """Replays one template to find its loops' items at a failure. ``ast``: the template as Jinja runs it
    (each loop's iterable wrapped in the ``_budget`` filter), which must not change afterwards."""

    def __init__(self, env: jinja2.Environment, ast: nodes.Template) -> None:
        self._env = env
        self._ast = ast
        self._loops = [_describe(loop) for loop in ast.find_all(nodes.For)]
        self._compiled: list[jinja2.Template] = []
        self._lock = threading.Lock()

    @staticmethod
    def wanted(ast: nodes.Template) -> bool:
        return ast.find(nodes.For) is not None

    def items_at_failure(
        self, names: Mapping[str, Any], function: str | None, variable: Callable[[str], Any]
    ) -> dict[str, LoopItem]:
        """Each loop variable in view where ``function`` fails again when the template runs with ``names``
        (the context Jinja was given); ``variable(name)`` reads a scope or let name. Empty when the replay
        does not fail that way."""
        current: dict[int, tuple[int, Any]] = {}  # loop -> (position in its iterable, item)

        def seen(loop: int, item: Any) -> str:
            position = current[loop][0] + 1 if loop in current else 0
            current[loop] = (position, item)
            return ""

        def done(loop: int) -> str:
            current.pop(loop, None)
            return ""

        token = budget_start()
        try:
            template = self._template()
            context = template.new_context({**names, _SEEN: seen, _DONE: done}, shared=True)
            for _ in template.root_render_func(context):
                pass
        except FunctionError as error:
            if error.function != function:
                return {}
        except Exception:  # the replay only adds detail: its own failure adds none
            return {}
        else:
            return {}
        finally:
            budget_finish(token)
        return self._items(current, variable)

    def _items(
        self, current: dict[int, tuple[int, Any]], variable: Callable[[str], Any]
    ) -> dict[str, LoopItem]:
        items: dict[str, LoopItem] = {}
        for number, loop in enumerate(self._loops):  # outermost first: an inner loop may read an outer item
            if number not in current:
                continue
            position, value = current[number]
            if len(loop.targets) > 1:
                parts = value if isinstance(value, tuple | list) else ()
                items.update(
                    (name, LoopItem(part, None)) for name, part in zip(loop.targets, parts, strict=False)
                )
                continue
            items[loop.targets[0]] = LoopItem(value, _source(loop, position, value, items, variable))
        return items

    def _template(self) -> jinja2.Template:
        if not self._compiled:
            with self._lock:
                if not self._compiled:
                    self._compiled.append(self._env.from_string(_instrumented(self._ast, self._env)))
        return self._compiled[0]


def _describe(loop: nodes.For) -> _Loop:
    target = loop.target
    if isinstance(target, nodes.Name):
        targets: tuple[str, ...] = (target.name,)
    elif isinstance(target, nodes.Tuple) and all(isinstance(item, nodes.Name) for item in target.items):
        targets = tuple(item.name for item in target.items)  # type: ignore[attr-defined]
    else:
        targets = ()
    iterable = loop.iter
    if isinstance(iterable, nodes.Filter) and iterable.name == "_budget" and iterable.node is not None:
        iterable = iterable.node
    return _Loop(targets, template_place(iterable))


def _source(
    loop: _Loop, position: int, value: Any, items: dict[str, LoopItem], variable: Callable[[str], Any]
) -> str | None:
    """``$this.line_items[2]``: the item's place, when the loop reads a plain path of a scope, a let or an
    enclosing loop's item whose place is known, and the item found there is the one the loop holds."""
    if loop.reads is None:
        return None
    name, steps = loop.reads
    if name in items:
        base, data = items[name].source, items[name].value
    else:
        base, data = f"${name}", variable(name)
    if base is None:
        return None
    for step in steps:
        if isinstance(step, int):
            present = type(data) is list and -len(data) <= step < len(data)
        else:
            present = type(data) is dict and step in data
        if not present:
            return None
        data = data[step]
    if type(data) is not list or position >= len(data) or data[position] is not value:
        return None  # a dict's keys, or anything else than the list's own items
    return path_text([*steps, position], base)


def _instrumented(ast: nodes.Template, env: jinja2.Environment) -> nodes.Template:
    """A copy of ``ast`` whose loops call ``_SEEN(loop, item)`` on each item (in a loop's ``if`` filter
    when it has one, so that a failure there is placed too) and ``_DONE(loop)`` once they end."""
    copied: nodes.Template = copy.deepcopy(ast, {id(env): env})
    loops = list(copied.find_all(nodes.For))  # listed before the loops' bodies change
    for number, loop in enumerate(loops):
        if loop.recursive or not isinstance(loop.target, nodes.Name | nodes.Tuple):
            continue  # a recursive loop runs its body for items of other lists: its positions mean nothing
        target = copy.deepcopy(loop.target, {id(env): env})
        target.set_ctx("load")
        seen = _call(_SEEN, nodes.Const(number), target)
        if loop.test is not None:
            loop.test = nodes.Or(seen, loop.test)  # the hook gives "": the filter's own test decides
        else:
            loop.body.insert(0, nodes.Output([seen]))
        if loop.else_:
            loop.else_.insert(0, nodes.Output([_call(_DONE, nodes.Const(number))]))
    _after_loops(copied, {id(loop): number for number, loop in enumerate(loops)})
    return copied


def _after_loops(node: nodes.Node, numbers: dict[int, int]) -> None:
    """Put ``_DONE(loop)`` after each loop, in every statement list (``body``, ``else_``) of the tree."""
    for child in node.iter_child_nodes():
        _after_loops(child, numbers)
    for field in ("body", "else_"):
        statements = getattr(node, field, None)
        if not isinstance(statements, list):
            continue
        placed: list[nodes.Node] = []
        for statement in statements:
            placed.append(statement)
            if isinstance(statement, nodes.For) and id(statement) in numbers:
                placed.append(nodes.Output([_call(_DONE, nodes.Const(numbers[id(statement)]))]))
        setattr(node, field, placed)


def _call(name: str, *args: nodes.Expr) -> nodes.Call:
    return nodes.Call(nodes.Name(name, "load"), list(args), [], None, None)
