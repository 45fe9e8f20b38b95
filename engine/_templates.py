"""Compiling a mapping's Jinja templates: the sandboxed environment with the mapping's functions, the vetting
that refuses Python internals and unknown names at load, and the renderer that runs a template (through
``_template_fast`` when it can, else through Jinja) on a scope within its budget. A template that fails
becomes the field's located error, at its own line of the file (``_template_lines``); a failing function's
shows what it was given (``_paths``, ``_binding_probe``).
"""

from __future__ import annotations

import difflib
import re
import threading
from collections.abc import Callable
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes

from ._binding_probe import BindingProbe
from ._budget import budgeted, check_output
from ._budget import finish as budget_finish
from ._budget import start as budget_start
from ._errors import CompileError, Location, ShipmapError, TransformError
from ._function_errors import describe
from ._functions import FunctionError, FunctionSet
from ._paths import IDENTIFIER, found_in_template, template_place
from ._sandbox import FilterBlockNotText, MappingSandbox
from ._scope import SCOPE_NAMES, Evaluator, Scope, parent_data, select_scope, template_names
from ._template_fast import Fallback, fast_template
from ._template_lines import (
    TemplateLines,
    attribute_token,
    block_token,
    filter_token,
    function_token,
    name_token,
    raised_line,
    read_line,
    syntax_error_line,
    use_line,
)
from ._yaml import TextPlace

__all__ = ["SINGLE_EXPRESSION", "TemplateCompiler"]

SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<body>(?:(?!\{\{|\}\}|\{%).)*)\}\}\s*$", re.S)


class TemplateCompiler:
    """Compiles the templates of one mapping. Holds that mapping's functions and Jinja environment, and the
    lookup tables its expressions name (``used_lookups``)."""

    def __init__(self, functions: FunctionSet, lookup_names: frozenset[str]) -> None:
        self.functions = functions
        self.env = MappingSandbox(undefined=jinja2.StrictUndefined, autoescape=False)
        self.env.globals.clear()
        self.env.globals.update(functions.jinja_globals)
        # Accumulating in a loop: {% set ns = namespace(total=0) %}{% set ns.total = ns.total + x %}.
        self.env.globals["namespace"] = jinja2.utils.Namespace
        self.env.filters.update(functions.jinja_filters)
        self.function_filters = frozenset(functions.jinja_filters)  # `x | integer` is integer(x)
        self.env.filters["_budget"] = budgeted  # given to every for loop, after the template is vetted
        self.used_lookups: set[str] = set()
        self.lookup_names = lookup_names

    def _use_lookup(self, name: str, location: Location, field: str, note: str = "") -> None:
        if name not in self.lookup_names:
            close = difflib.get_close_matches(name, sorted(self.lookup_names), n=1)
            raise CompileError(
                f"unknown lookup table '{name}'{note}",
                location=location,
                field=field,
                hint=f"did you mean '{close[0]}'?" if close else "declare it under lookups:",
            )
        self.used_lookups.add(name)

    def compile_template(
        self,
        text: str,
        location: Location,
        field: str,
        names: frozenset[str] = frozenset(),
        place: TextPlace | None = None,
    ) -> Evaluator:
        """``text`` compiled; ``place`` says where its lines are written (else all of it is at ``location``),
        so that an error at a line of the template points at that line of the file."""
        single = SINGLE_EXPRESSION.match(text)
        source = single.group("body") if single else text
        lead = text[: single.start("body")].count("\n") if single else 0  # Jinja numbers the body alone
        lines = TemplateLines(text, place or TextPlace(location), lead)
        try:
            # Parse as a template either way: it gives line numbers and an AST to vet before compiling.
            ast = self.env.parse("{{" + source + "}}" if single else source)
        except jinja2.TemplateSyntaxError as error:
            where, note = lines.at(*syntax_error_line(self.env, source, error))
            raise CompileError(
                f"Jinja syntax error: {error.message}{note}", location=where, field=field
            ) from None
        self._vet_template(ast, lines, field, names)
        run = self._renderer(source, ast, single is not None)
        probe = BindingProbe(self.env, ast) if BindingProbe.wanted(ast) else None
        bound = probe.names if probe is not None else frozenset()
        function_filters = self.function_filters
        call = self.functions.call

        def evaluate(scope: Scope) -> Any:
            token = budget_start()
            try:
                return check_output(run(scope))
            except FunctionError as error:
                function = error.function
                found = found_in_template(
                    ast,
                    function,
                    lambda: frozenset({"this", "parent", "root", *scope.lets}),
                    scope.child_path,
                    lambda name: select_scope(scope, name),
                    bound=bound,
                    bindings=lambda: (
                        {} if probe is None else probe.bindings_at_failure(template_names(scope), function)
                    ),
                    filters=function_filters,
                    failure=(str(error), call),
                )
                # At the line of the function's uses when they are all on one, else at the one that raised.
                where, note = lines.at(*use_line(ast, function, error))
                raise TransformError(
                    f"{error}{note}",
                    location=where,
                    field=field,
                    source_path=scope.path() or None,
                    found=found,
                ) from None
            except RecursionError:
                raise TransformError(
                    "the template recurses without end, or the data is nested too deeply",
                    location=location,
                    field=field,
                    source_path=scope.path() or None,
                ) from None
            except ShipmapError:
                raise
            except FilterBlockNotText as error:
                raise _not_text(error, ast, lines, field, scope) from None
            except Exception as error:  # any other failure (dictsort on a list...) is this field's, located
                raise _template_failure(error, ast, lines, field, scope) from None
            finally:
                budget_finish(token)

        return evaluate

    def _renderer(self, source: str, ast: jinja2.nodes.Template, single: bool) -> Callable[[Scope], Any]:
        """Run a compiled template on a scope. Jinja's render() builds a context by merging the globals into a
        fresh mapping on every call; here one prepared dict of globals is copied and shared instead, which is
        several times faster and gives the template exactly the same names.

        A template in the subset _template_fast compiles to plain Python runs that way; on data it cannot
        reproduce Jinja for, it raises Fallback and the same scope runs through Jinja (compiled then)."""
        # Before Jinja's optimizer sees the AST: the fast path reads the template as written.
        fast = fast_template(ast, single, self.env.globals, self.env, self.functions)
        for loop in ast.find_all(jinja2.nodes.For):  # Jinja charges each loop to the budget; the fast path
            loop.iter = jinja2.nodes.Filter(  # charges its own loops itself
                loop.iter, "_budget", [], [], None, None, lineno=loop.iter.lineno
            )
        if fast is None:
            return self._jinja(ast, single)  # compiled now: what Jinja refuses is a compile error at load
        jinja: list[Callable[[Scope], Any]] = []  # Jinja's code, compiled on the first fallback: it
        lock = threading.Lock()  # is most of the template's load time, and most data never needs it

        def run_fast(scope: Scope) -> Any:
            try:
                return fast(scope.data, parent_data(scope), scope.root, scope.index)
            except Fallback:
                if not jinja:
                    with lock:
                        if not jinja:
                            jinja.append(self._jinja(ast, single))
                # Jinja starts the template over, with a budget of its own: the iterations the fast path
                # spent made nothing that is kept, and would put a loop Jinja runs over a budget it is within.
                token = budget_start()
                try:
                    return jinja[0](scope)
                finally:
                    budget_finish(token)

        return run_fast

    def _jinja(self, ast: jinja2.nodes.Template, single: bool) -> Callable[[Scope], Any]:
        """The template compiled by Jinja, run on a scope."""
        if single:
            # What compile_expression builds: a template that assigns the expression to `result`.
            body = jinja2.nodes.Template(
                [jinja2.nodes.Assign(jinja2.nodes.Name("result", "store"), ast.body[0].nodes[0])]  # type: ignore[attr-defined]
            )
            template = self.env.from_string(body)
        else:
            template = self.env.from_string(ast)
        names = dict(self.env.globals)
        new_context = template.new_context
        render = template.root_render_func
        concat = self.env.concat

        def context_of(scope: Scope) -> Any:
            return new_context({**names, **template_names(scope)}, shared=True)

        def run_single(scope: Scope) -> Any:
            context = context_of(scope)
            for _ in render(context):
                pass
            value = context.vars.get("result")
            return None if isinstance(value, jinja2.Undefined) else value

        def run_text(scope: Scope) -> Any:
            return concat(render(context_of(scope)))

        return run_single if single else run_text

    def _vet_template(
        self,
        ast: jinja2.nodes.Template,
        lines: TemplateLines,
        field: str,
        names: frozenset[str] = frozenset(),
    ) -> None:
        bound = _bound(ast, names)  # names that are not the functions they shadow
        for node in ast.find_all((jinja2.nodes.Getattr, jinja2.nodes.Getitem, jinja2.nodes.NSRef)):
            name = (
                node.attr
                if isinstance(node, (jinja2.nodes.Getattr, jinja2.nodes.NSRef))
                else _const(getattr(node, "arg", None))
            )
            if isinstance(name, str) and name.startswith("_"):
                where, note = lines.at(node.lineno, attribute_token(name))
                raise CompileError(
                    f"refused: the template reaches for '{name}'{note}; templates run sandboxed and cannot "
                    "touch Python internals",
                    location=where,
                    field=field,
                )
        for flt in ast.find_all(jinja2.nodes.Filter):
            if flt.name not in self.env.filters:
                close = difflib.get_close_matches(flt.name, sorted(self.env.filters), n=1)
                where, note = lines.at(flt.lineno, filter_token(flt.name))
                raise CompileError(
                    f"unknown filter '{flt.name}'{note}",
                    location=where,
                    field=field,
                    hint=f"did you mean '{close[0]}'?" if close else None,
                )
            self._refuse_wrong_call(flt, bound, lines, field)
            self._refuse_literal_call(flt, bound, lines, field)
        for name_node in ast.find_all(jinja2.nodes.Name):
            if name_node.name in ("self", "caller", "varargs", "kwargs"):
                where, note = lines.at(name_node.lineno, name_token(name_node.name))
                raise CompileError(
                    f"refused: '{name_node.name}' is Jinja's own machinery, not data{note}",
                    location=where,
                    field=field,
                    hint="a template sees this, parent, root, index and the functions",
                )
        for block in ast.find_all(jinja2.nodes.FilterBlock):
            name = block.filter.name
            result = self.functions.specs[name].result if name in self.function_filters else "any"
            if result not in ("text", "any"):  # it can never give the block text back
                where, note = lines.at(block.lineno, block_token(name))
                raise CompileError(
                    f"{{% filter {name} %}} gives {name}() the block's text, and {name}() returns "
                    f"{_RESULTS[result]}; a filter block must give back text{note}",
                    location=where,
                    field=field,
                    hint=_instead(block),
                )
        known = set(SCOPE_NAMES) | set(self.env.globals) | names
        for name in sorted(jinja2.meta.find_undeclared_variables(ast)):
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                first = min(
                    (
                        node.lineno
                        for node in ast.find_all(jinja2.nodes.Name)
                        if node.name == name and node.ctx == "load"
                    ),
                    default=None,
                )
                where, note = lines.at(first, name_token(name))
                raise CompileError(
                    f"undefined name '{name}' in template{note}",
                    location=where,
                    field=field,
                    hint=(f"did you mean '{close[0]}'? " if close else "")
                    + "a template sees this, parent, root, index, the let: names around it and the functions",
                )
        for call in ast.find_all(jinja2.nodes.Call):
            if isinstance(call.node, jinja2.nodes.Name) and call.node.name == "lookup" and call.args:
                table = _const(call.args[0])
                if isinstance(table, str):
                    where, note = lines.at(call.lineno, function_token("lookup"))
                    self._use_lookup(table, where, field, note)
            self._refuse_wrong_call(call, bound, lines, field)
            self._refuse_literal_call(call, bound, lines, field)

    def _builtin_called(self, node: jinja2.nodes.Call | jinja2.nodes.Filter, bound: set[str]) -> str | None:
        """The shipmap function ``node`` calls, or uses as a filter (a ``{% filter f %}`` block's too); None
        for any other call, and for a name in ``bound``: the template (a set, a loop, a macro or its
        parameter) or a let: binds it."""
        if isinstance(node, jinja2.nodes.Filter):
            return node.name if node.name in self.function_filters else None
        if not isinstance(node.node, jinja2.nodes.Name) or node.node.name not in self.functions.jinja_globals:
            return None
        return None if node.node.name in bound else node.node.name

    def _refuse_wrong_call(
        self,
        node: jinja2.nodes.Call | jinja2.nodes.Filter,
        bound: set[str],
        lines: TemplateLines,
        field: str,
    ) -> None:
        """Refuse a shipmap function called with keyword arguments, or with a number of arguments it does not
        take, in the words of run time (``FunctionSpec.check_call``), as JMESPath's calls are refused. A filter
        is given the value it filters first. Arguments spread from the data (``f(*args)``, ``f(**kw)``) are
        counted at run time."""
        name = self._builtin_called(node, bound)
        if name is None:
            return
        keywords = [keyword.key for keyword in node.kwargs if isinstance(keyword, jinja2.nodes.Keyword)]
        if not keywords and (node.dyn_args is not None or node.dyn_kwargs is not None):
            return
        count = len(node.args) + (1 if isinstance(node, jinja2.nodes.Filter) else 0)
        try:
            self.functions.specs[name].check_call(count, keywords)
        except FunctionError as error:
            where, note = lines.at(node.lineno, function_token(name))
            raise CompileError(f"{error}{note}", location=where, field=field) from None

    def _refuse_literal_call(
        self,
        node: jinja2.nodes.Call | jinja2.nodes.Filter,
        bound: set[str],
        lines: TemplateLines,
        field: str,
    ) -> None:
        """Refuse a shipmap function called, or used as a filter, on literals alone that it fails on
        (``integer('x')``, ``'x' | integer``): it would fail on every document (FunctionSet.literal_call_error).
        A name in ``bound`` is not the function."""
        if node.kwargs or node.dyn_args is not None or node.dyn_kwargs is not None:
            return  # keywords are refused before this (_refuse_wrong_call); spread arguments are data
        name = self._builtin_called(node, bound)
        if name is None:
            return
        given: list[jinja2.nodes.Node]
        if isinstance(node, jinja2.nodes.Filter):
            if node.node is None:  # a {% filter f %} block: given the text it renders
                return
            given = [node.node, *node.args]
        else:
            given = list(node.args)
        values = _literals(self.env, given)
        if values is None:
            return
        failure = self.functions.literal_call_error(name, values)
        if failure is not None:
            where, note = lines.at(node.lineno, function_token(name))
            raise CompileError(f"{failure}{note}", location=where, field=field)


def _template_failure(
    error: Exception, ast: jinja2.nodes.Template, lines: TemplateLines, field: str, scope: Scope
) -> TransformError:
    message = error.message if isinstance(error, jinja2.TemplateError) and error.message else str(error)
    if not isinstance(error, jinja2.TemplateError | TypeError | ValueError | ArithmeticError):
        message = f"{type(error).__name__}: {message}"
    if isinstance(error, jinja2.UndefinedError):
        message = f"template reads something the source does not have: {message}"
        line = read_line(ast, message, error)
    else:
        if isinstance(error, jinja2.exceptions.SecurityError):
            message = f"refused by the sandbox: {message}"
        line = raised_line(error, ast, lines.text.split("\n")[lines.lead :])
    where, note = lines.at(*line)
    return TransformError(f"{message}{note}", location=where, field=field, source_path=scope.path() or None)


_RESULTS = {"number": "a number", "boolean": "true or false", "array": "an array", "object": "an object"}


def _not_text(
    error: FilterBlockNotText, ast: jinja2.nodes.Template, lines: TemplateLines, field: str, scope: Scope
) -> TransformError:
    """The located error of a filter block whose filter gave back something other than text."""
    value = error.value
    found = "an undefined value" if isinstance(value, jinja2.Undefined) else describe(value)
    blocks = [
        block
        for block in ast.find_all(jinja2.nodes.FilterBlock)
        if block.filter.name == error.name and block.lineno == error.line
    ]
    where, note = lines.at(error.line, block_token(error.name))
    return TransformError(
        f"{{% filter {error.name} %}} gave back {found}, not text; a filter block gives its filter the "
        f"block's text and must get text back{note}",
        location=where,
        field=field,
        source_path=scope.path() or None,
        hint=_instead(blocks[0]) if blocks else None,
    )


def _instead(block: jinja2.nodes.FilterBlock) -> str:
    """What to write instead of a filter block: its value through the filter, which keeps the value's type."""
    value = "value"
    body = block.body
    if len(body) == 1 and isinstance(body[0], jinja2.nodes.Output) and len(body[0].nodes) == 1:
        read = template_place(body[0].nodes[0])
        if read is not None:
            name, steps = read
            value = name + "".join(
                f".{step}" if isinstance(step, str) and IDENTIFIER.match(step) else f"[{step!r}]"
                for step in steps
            )
    flt = block.filter
    arguments = ""
    if flt.args or flt.kwargs or flt.dyn_args or flt.dyn_kwargs:
        constant = not (flt.kwargs or flt.dyn_args or flt.dyn_kwargs) and all(
            isinstance(argument, jinja2.nodes.Const) for argument in flt.args
        )
        shown = ", ".join(repr(_const(argument)) for argument in flt.args) if constant else "..."
        arguments = f"({shown})"
    return f"write {{{{ {value} | {flt.name}{arguments} }}}} instead of the block"


def _const(node: jinja2.nodes.Node | None) -> Any:
    return node.value if isinstance(node, jinja2.nodes.Const) else None


_LITERAL_NODES = (
    jinja2.nodes.Const,
    jinja2.nodes.List,
    jinja2.nodes.Tuple,
    jinja2.nodes.Dict,
    jinja2.nodes.Pair,
)


def _bound(ast: jinja2.nodes.Template, names: frozenset[str]) -> set[str]:
    """The names ``ast`` binds (a set, a loop, a macro or its parameter), and the let: names around it."""
    bound = set(names) | {macro.name for macro in ast.find_all(jinja2.nodes.Macro)}
    return bound | {node.name for node in ast.find_all(jinja2.nodes.Name) if node.ctx in ("store", "param")}


def _literals(env: jinja2.Environment, nodes: list[jinja2.nodes.Node]) -> list[Any] | None:
    """The values of ``nodes`` when each is written as a literal (``'x'``, ``3``, ``[1, 'a']``), else None."""
    if not nodes or not all(
        isinstance(node, _LITERAL_NODES)
        and all(isinstance(part, _LITERAL_NODES) for part in node.find_all(jinja2.nodes.Node))
        for node in nodes
    ):
        return None
    context = jinja2.nodes.EvalContext(env)
    try:
        return [node.as_const(context) for node in nodes]  # type: ignore[attr-defined]
    except jinja2.nodes.Impossible:
        return None
