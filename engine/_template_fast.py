"""A fast path for a small, exact subset of the mapping's Jinja templates.

:func:`fast_template` turns a parsed template (the AST our sandbox's ``env.parse`` gives) into one plain Python
function, by generating Python source for it and compiling that once, when the mapping loads. It returns None
for a template outside the subset, which then always runs through Jinja.

The generated function only handles the cases whose Jinja semantics it reproduces exactly: key lookups on
plain dicts, loops over lists, and a handful of filters and tests on the value types they are written for.
On anything else (a key that is missing where Jinja would carry an Undefined on, a lookup on something that
is not a dict, a loop over something that is not a list, a type a filter does not expect, and any exception
at all) it raises :class:`Fallback`, and the caller runs the same template through Jinja, which gives the exact
result or the exact error. Templates are pure, so running one twice is safe. The subset is the one docs/
mapping-language.md describes:

- statements: text, ``{{ … }}``, ``{% if %}``/``elif``/``else``, ``{% for x in … %}`` (one name, no ``else``,
  no ``if`` filter, not recursive) with ``loop.index``/``index0``/``revindex``/``revindex0``/``first``/
  ``last``/``length``, ``{% set x = … %}`` and ``{% set x %}…{% endset %}``;
- expressions: constants, ``this``/``parent``/``root``/``index``, set and loop variables, ``a.b`` and
  ``a['b']``/``a[i]``, list literals, ``+ - / // * % **`` (the last three through the sandbox's own bounded
  operator), ``~`` (through the sandbox's bounded concatenation), comparisons, ``and``/``or``/``not``,
  ``x if c else y``, calls of the mapping's functions with positional arguments;
- filters: ``map(attribute=)``, ``select``/``reject``/``selectattr``/``rejectattr``, ``sum`` (``attribute``,
  ``start``), ``list``, ``max``/``min`` on numbers, ``length``/``count``, ``join``, ``default``/``d``,
  ``upper``/``lower``/``trim`` on strings, and the mapping's one-value functions used as filters;
- tests: ``defined``, ``undefined``, ``none``, ``boolean``, ``true``, ``false``, ``integer``, ``float``,
  ``number``, ``string``, ``mapping``, ``in`` and the comparisons (``equalto``, ``==``, ``ne``, ``gt``, …).

This module writes the function and its statements (text, ``if``, ``for``, ``set``) and the frames that hold
their variables; ``_template_fast_expressions`` writes each expression, filters and tests included; the
generated code calls the helpers of ``_template_fast_runtime``.

Security: the generated source holds no text from the mapping. Constants, the mapping's functions and Jinja's
test functions reach it as names of a namespace the writer builds (``_k0``, ``_g0``, ``_t0``); variables get
generated names (``_v0``); the namespace has no builtins but the few the run-time helpers name
(``_template_fast_runtime``). The code never does Python attribute access on data: lookups are ``d[k]`` on
values that are exactly ``dict`` or ``list``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jinja2.nodes as nodes
from jinja2.sandbox import SandboxedEnvironment

from ._functions import FunctionSet
from ._scope import SCOPE_NAMES
from ._template_fast_expressions import ExpressionWriter, Frame, Refused
from ._template_fast_runtime import HELPERS, Fallback

__all__ = ["Fallback", "FastTemplate", "fast_template"]

FastTemplate = Callable[[Any, Any, Any, Any], Any]  # (this, parent, root, index) -> the template's result

_RESERVED = frozenset({"loop", "self", "caller", "varargs", "kwargs", "namespace", *SCOPE_NAMES})


class _Generator(ExpressionWriter):
    """Writes a template's statements as the body of one Python function; its expressions are
    :class:`ExpressionWriter`'s."""

    def __init__(
        self, env: SandboxedEnvironment, functions: Mapping[str, object], builtins: FunctionSet | None = None
    ) -> None:
        super().__init__(env, functions, builtins)
        self.lines: list[str] = []
        self.depth = 2

    def emit(self, line: str) -> None:
        self.lines.append("    " * self.depth + line)

    # -- statements -----------------------------------------------------------------------------------------

    def template(self, ast: nodes.Template, single: bool) -> str:
        stores = self.stores_of(ast.body)
        self.enter_scope(stores, None)
        for name in stores:
            self.emit(f"{self.variables[name]} = _M")
        if single:
            if len(ast.body) != 1 or not isinstance(ast.body[0], nodes.Output):
                raise Refused
            if len(ast.body[0].nodes) != 1 or isinstance(ast.body[0].nodes[0], nodes.TemplateData):
                raise Refused
            node = ast.body[0].nodes[0]
            self.emit(f"return _result({self.expr(node, undefined_ok=True)})")
        elif all(isinstance(statement, nodes.Output) for statement in ast.body):
            parts = [part for statement in ast.body for part in self.output_parts(statement)]  # type: ignore[arg-type]
            self.emit(f"return _concat_text(({''.join(part + ', ' for part in parts)}))")
        else:
            self.emit("_o = []")
            self.statements(ast.body, "_o")
            self.emit("return _concat_text(_o)")
        body = "\n".join(self.lines)
        return (
            "def _template(_this, _parent, _root, _index):\n"
            "    try:\n"
            f"{body}\n"
            "    except _Fallback:\n"
            "        raise\n"
            "    except Exception:\n"
            "        raise _Fallback from None\n"
        )

    def enter_scope(self, stores: list[str], loop: tuple[str, str] | None, in_loop: bool = False) -> None:
        for name in stores:
            if name in _RESERVED or name in self.functions or any(name in s.names for s in self.scopes):
                raise Refused  # shadowing: Jinja's aliasing rules are not worth reproducing
            self.variables.setdefault(name, self.fresh("_v"))
        self.scopes.append(Frame(set(stores), loop, in_loop))

    def stores_of(self, body: Sequence[nodes.Node]) -> list[str]:
        """The variables a frame's statements set (in if branches too; not in nested loops)."""
        found: list[str] = []
        for statement in body:
            if isinstance(statement, (nodes.Assign, nodes.AssignBlock)):
                target = statement.target
                if not isinstance(target, nodes.Name) or target.ctx != "store":
                    raise Refused
                if target.name not in found:
                    found.append(target.name)
            elif isinstance(statement, nodes.If):
                branches = [statement.body, *(branch.body for branch in statement.elif_), statement.else_]
                for branch in branches:
                    found += [name for name in self.stores_of(branch) if name not in found]
        return found

    def statements(self, body: Sequence[nodes.Node], out: str) -> None:
        if not body:
            self.emit("pass")
        for statement in body:
            self.statement(statement, out)

    def statement(self, node: nodes.Node, out: str) -> None:
        if isinstance(node, nodes.Output):
            parts = self.output_parts(node)
            if parts:
                self.emit(f"{out} += ({''.join(part + ', ' for part in parts)})")
        elif isinstance(node, nodes.Assign):
            value = self.expr(node.node)
            name = node.target.name  # type: ignore[attr-defined]
            self.emit(f"{self.variables[name]} = {value}")
            self.assigned.add(name)
        elif isinstance(node, nodes.AssignBlock):
            if node.filter is not None or self.stores_of(node.body):
                raise Refused  # a block's own variables live in a frame of their own
            buffer = self.fresh("_o")
            self.emit(f"{buffer} = []")
            self.statements(node.body, buffer)
            name = node.target.name  # type: ignore[attr-defined]
            self.emit(f"{self.variables[name]} = _concat_text({buffer})")
            self.assigned.add(name)
        elif isinstance(node, nodes.If):
            self.if_statement(node, out)
        elif isinstance(node, nodes.For):
            self.for_statement(node, out)
        else:
            raise Refused

    def output_parts(self, node: nodes.Output) -> list[str]:
        parts = []
        for child in node.nodes:
            if isinstance(child, nodes.TemplateData):
                if child.data:
                    parts.append(self.constant(child.data))
            else:
                parts.append(f"_str({self.expr(child)})")
        return parts

    def if_statement(self, node: nodes.If, out: str) -> None:
        before = set(self.assigned)
        branches: list[tuple[str, nodes.Node | None, list[nodes.Node]]] = [("if", node.test, node.body)]
        branches += [("elif", branch.test, branch.body) for branch in node.elif_]
        if node.else_:
            branches.append(("else", None, node.else_))
        for keyword, test, body in branches:
            self.emit(f"{keyword} {self.expr(test)}:" if test is not None else "else:")
            self.depth += 1
            self.assigned = set(before)
            self.statements(body, out)
            self.depth -= 1
        self.assigned = before  # what a branch sets is not surely set after the if

    def for_statement(self, node: nodes.For, out: str) -> None:
        target = node.target
        if (
            node.else_
            or node.test is not None
            or node.recursive
            or not isinstance(target, nodes.Name)
            or target.ctx != "store"
        ):
            raise Refused
        self.loop_allowed = False
        items = self.expr(node.iter, generator_ok=True)
        self.loop_allowed = True
        sequence = self.fresh("_l")
        self.emit(f"{sequence} = {items}")
        self.emit(f"if _type({sequence}) is not _list_type:")
        self.emit("    _fail()")
        self.emit(f"_spend(_len({sequence}))")  # the evaluation's loop budget (engine/_budget.py)
        stores = self.stores_of(node.body)
        if target.name in stores:
            raise Refused
        uses_loop = any(name.name == "loop" for name in node.find_all(nodes.Name))
        loop: tuple[str, str] | None = None
        if uses_loop:
            loop = (self.fresh("_i"), self.fresh("_n"))
        self.enter_scope([target.name, *stores], loop, in_loop=True)
        item = self.variables[target.name]
        head = len(self.lines)
        if loop is not None:
            self.emit(f"{loop[1]} = _len({sequence})")
            self.emit(f"for {loop[0]}, {item} in _enumerate({sequence}):")
        else:
            self.emit(f"for {item} in {sequence}:")
        self.depth += 1
        if stores:
            self.emit(" = ".join(self.variables[name] for name in stores) + " = _M")
        before = set(self.assigned)
        self.assigned.add(target.name)
        self.statements(node.body, out)
        self.assigned = before
        self.depth -= 1
        memos = self.scopes.pop().memos
        if memos:  # emptied before each run of this loop, so an enclosing loop's variables are fresh
            self.lines.insert(head, "    " * self.depth + " = ".join(memos) + " = _M")


def fast_template(
    ast: nodes.Template,
    single: bool,
    functions: Mapping[str, object],
    env: SandboxedEnvironment,
    builtins: FunctionSet | None = None,
) -> FastTemplate | None:
    """A Python function with the template's exact result, or None when the template is outside the subset.

    ``ast`` is what ``env.parse`` gave (before Jinja compiles it); ``single`` says the template is one
    ``{{ … }}`` whose value is returned as is (see TemplateCompiler._renderer); ``functions`` are the
    mapping's functions, as in ``env.globals``, and ``builtins`` the FunctionSet behind them. The function
    takes (this, parent, root, index) and raises :class:`Fallback` whenever Jinja must decide.
    """
    generator = _Generator(env, functions, builtins)
    try:
        source = generator.template(ast, single)
    except (Refused, RecursionError):
        return None
    namespace: dict[str, Any] = {"__builtins__": {}, **HELPERS, **generator.namespace}
    exec(
        compile(source, "<shipmap fast template>", "exec"), namespace
    )  # our own source, holding no text from the mapping
    function: FastTemplate = namespace["_template"]
    return function
