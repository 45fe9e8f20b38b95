"""Compiling the two expression languages of a mapping, once, into plain Python callables.

A compiled expression is ``Callable[[Scope], Any]``. Plain JMESPath field paths (``a.b[0].c``) become direct
dict and list lookups; everything else is a pre-parsed JMESPath AST or a pre-compiled sandboxed Jinja template.
Nothing here parses at transform time.
"""

from __future__ import annotations

import difflib
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes
import jmespath
import jmespath.exceptions
import jmespath.functions
import jmespath.visitor

from ._budget import budgeted, check_output
from ._budget import finish as budget_finish
from ._budget import start as budget_start
from ._errors import CompileError, Location, ShipmapError, TransformError
from ._functions import FunctionError, FunctionSet
from ._loop_probe import LoopProbe
from ._paths import found_arguments, found_in_template, path_text, plain_path
from ._sandbox import MappingSandbox
from ._scope import SCOPE_NAMES, SCOPE_PREFIX, Label, Scope, parent_data, select_scope, template_names
from ._template_fast import Fallback, fast_template

Evaluator = Callable[["Scope"], Any]

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<body>(?:(?!\{\{|\}\}|\{%).)*)\}\}\s*$", re.S)
# `$name` anywhere in a JMESPath expression: a scope name or a `let` name. JMESPath has no variables, so the
# text is rewritten to a call of this placeholder, which the parsed tree then holds as a "variable" node.
_VARIABLE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_VARIABLE_CALL = "_shipmap_variable_"
_BUILTIN_JMESPATH = {
    name[len("_func_") :] for name in dir(jmespath.functions.Functions) if name.startswith("_func_")
}


_SEARCH_ERRORS = (FunctionError, jmespath.exceptions.JMESPathError, RecursionError)


def _search_failed(
    error: BaseException,
    location: Location,
    field: str,
    scope: Scope,
    label: str,
    tree: dict[str, Any],
    scope_name: str = "this",
) -> TransformError:
    """The located error for an expression (``label``, parsed: ``tree``) that failed on ``scope``'s data (or
    its ``scope_name``'s); a builtin's error shows the source fields it was given, with their values."""
    found: tuple[str, ...] = ()
    if isinstance(error, FunctionError):
        message = str(error)
        data = scope.data if scope_name == "this" else select_scope(scope, scope_name)
        prefix = "" if scope_name == "this" else f"${scope_name}."
        found = found_arguments(
            tree,
            error.function,
            data,
            lambda path: scope.child_path(path if path.startswith("$") else prefix + path),
            lambda name: select_scope(scope, name),
        )
    elif isinstance(error, RecursionError):
        message = "the source is nested too deeply for this expression"
    else:
        message = f"JMESPath: {error}"
    return TransformError(
        message, location=location, field=field, source_path=scope.child_path(label), found=found
    )


class ExpressionCompiler:
    """Compiles the expressions of one mapping. Holds that mapping's functions and Jinja environment."""

    def __init__(self, functions: FunctionSet, lookup_names: frozenset[str]) -> None:
        self.functions = functions
        self._options = functions.jmespath_options
        self._function_names = _BUILTIN_JMESPATH | set(functions.names)
        self.env = MappingSandbox(undefined=jinja2.StrictUndefined, autoescape=False)
        self.env.globals.clear()
        self.env.globals.update(functions.jinja_globals)
        # Accumulating in a loop: {% set ns = namespace(total=0) %}{% set ns.total = ns.total + x %}.
        self.env.globals["namespace"] = jinja2.utils.Namespace
        self.env.filters.update(functions.jinja_filters)
        self.env.filters["_budget"] = budgeted  # given to every for loop, after the template is vetted
        self.used_lookups: set[str] = set()
        self.lookup_names = lookup_names

    # -- entry point --------------------------------------------------------------------------------------

    def compile(
        self,
        text: str,
        location: Location,
        field: str,
        *,
        template: bool | None = None,
        names: frozenset[str] = frozenset(),
    ) -> Evaluator:
        """``text`` as a template if it holds ``{{``/``{%`` (or ``template`` says so), else as JMESPath.
        ``names``: the `let` names visible where the expression stands."""
        is_template = ("{{" in text or "{%" in text) if template is None else template
        try:
            if is_template:
                return self.compile_template(text, location, field, names)
            return self.compile_jmespath(text, location, field, names)
        except RecursionError:
            # Parsers, the vetting walk and Jinja's code generator all recurse over the expression.
            raise CompileError(
                "the expression is nested too deeply", location=location, field=field
            ) from None

    @staticmethod
    def plain_keys(text: str) -> tuple[str, ...] | None:
        """The keys of ``text`` when it is a JMESPath path of object keys only (``a.b``) on the current node."""
        if "{{" in text or "{%" in text or text.lstrip().startswith("$"):
            return None
        try:
            steps = plain_path(jmespath.compile(text.strip()).parsed)
        except (jmespath.exceptions.JMESPathError, RecursionError):
            return None  # not a plain path; compiling it as a closure reports the error with its location
        if not steps or not all(isinstance(step, str) for step in steps):
            return None
        return tuple(str(step) for step in steps)

    @staticmethod
    def source_label(text: str) -> Label:
        """How a from/each expression shows in source paths. ``order || @`` is whichever branch the data came
        from, worked out only when an error or a coverage trace asks."""
        try:
            parsed = jmespath.compile(text.strip()).parsed
        except jmespath.exceptions.JMESPathError:
            return text
        branches: list[tuple[str, Callable[[Any], Any]]] = []
        pending = [parsed]
        while pending:
            node = pending.pop(0)
            if node.get("type") == "or_expression":
                pending[:0] = node["children"]
                continue
            steps = plain_path(node)
            if steps is None:
                return text
            branches.append((path_text(steps), _path_getter(steps)))
        return _BranchLabel(branches) if len(branches) > 1 else text

    def reads_of(self, text: str, *, template: bool | None = None) -> list[tuple[str, tuple[str, ...]]]:
        """``(scope name, chain)`` for each source chain ``text`` reads; only tracing asks, at compile time."""
        from ._trace import jinja_reads, jmespath_reads

        is_template = ("{{" in text or "{%" in text) if template is None else template
        if is_template:
            single = _SINGLE_EXPRESSION.match(text)
            return jinja_reads(self.env.parse("{{" + single.group("body") + "}}" if single else text))
        expression = text.strip()
        scope_name = "this"
        prefix = SCOPE_PREFIX.match(expression)
        if prefix and not _variables(expression[prefix.end() :]):
            scope_name = prefix.group(1)
            expression = expression[prefix.end() :].lstrip(".")
            if scope_name == "index":
                return []
            if not expression:
                return [(scope_name, ())]
        elif _variables(expression):
            rewritten, _ = _rewrite_variables(expression)
            reads: list[tuple[str, tuple[str, ...]]] = []
            for chain in jmespath_reads(_bind_variables(jmespath.compile(rewritten).parsed)):
                if chain and chain[0].startswith("$"):
                    reads.append((chain[0][1:], chain[1:]))
                else:
                    reads.append(("this", chain))
            return reads
        return [(scope_name, chain) for chain in jmespath_reads(jmespath.compile(expression).parsed)]

    # -- JMESPath -------------------------------------------------------------------------------------------

    def compile_jmespath(
        self, text: str, location: Location, field: str, names: frozenset[str] = frozenset()
    ) -> Evaluator:
        scope_name = "this"
        expression = text.strip()
        prefix = SCOPE_PREFIX.match(expression)
        if _variables(expression[prefix.end() :] if prefix else expression):
            return self._compile_with_variables(text, location, field, names)
        if prefix:
            scope_name = prefix.group(1)
            expression = expression[prefix.end() :].lstrip(".")
            if not expression:
                return self._whole_scope(scope_name)
        if not expression:
            raise CompileError(
                "an empty expression",
                location=location,
                field=field,
                hint='for an empty string write {literal: ""}; to leave the field out, delete it',
            )
        try:
            parsed = jmespath.compile(expression)
        except jmespath.exceptions.ParseError as error:
            offset = getattr(error, "lex_position", 0) or 0
            raise CompileError(
                f"JMESPath syntax error: {_parse_message(error)}",
                location=_shift(location, offset + (len(text) - len(text.lstrip()))),
                field=field,
            ) from None
        self._check_functions(parsed.parsed, location, field)
        label = text.strip()
        tree = parsed.parsed
        direct = self._direct(tree)
        if direct is not None:
            # Compiled to plain Python; a builtin's FunctionError still needs the field's location.
            if plain_path(tree) is not None:
                getter = direct
                if scope_name == "this":
                    return lambda scope: getter(scope.data)
                return lambda scope: getter(select_scope(scope, scope_name))

            def evaluate_direct(scope: Scope) -> Any:
                data = scope.data if scope_name == "this" else select_scope(scope, scope_name)
                try:
                    return direct(data)
                except FunctionError as error:
                    raise _search_failed(error, location, field, scope, label, tree, scope_name) from None

            return evaluate_direct
        search = parsed.search
        options = self._options

        def evaluate(scope: Scope) -> Any:
            data = scope.data if scope_name == "this" else select_scope(scope, scope_name)
            try:
                return search(data, options=options)
            except _SEARCH_ERRORS as error:
                raise _search_failed(error, location, field, scope, label, tree, scope_name) from None

        return evaluate

    def _compile_with_variables(
        self, text: str, location: Location, field: str, names: frozenset[str]
    ) -> Evaluator:
        """An expression that names ``$root``, ``$parent``, ``$this``, ``$index`` or a `let` name anywhere,
        as in ``find($root.products, 'id', product_id)``. Run by JMESPath's interpreter, which reads each
        variable node from the scope."""
        expression = text.strip()
        lead = len(text) - len(text.lstrip())
        known = set(SCOPE_NAMES) | names
        for match in _variables(expression):
            if match.group(1) not in known:
                close = difflib.get_close_matches(match.group(1), sorted(known), n=1)
                raise CompileError(
                    f"unknown variable '${match.group(1)}'",
                    location=_shift(location, lead + match.start()),
                    field=field,
                    hint=(f"did you mean '${close[0]}'? " if close else "")
                    + "an expression sees $this, $parent, $root, $index and the names of the let: blocks "
                    "around it",
                )
        rewritten, moved = _rewrite_variables(expression)
        try:
            parsed = jmespath.compile(rewritten)
        except jmespath.exceptions.ParseError as error:
            offset = _original_offset(getattr(error, "lex_position", 0) or 0, moved)
            raise CompileError(
                f"JMESPath syntax error: {_parse_message(error)}",
                location=_shift(location, offset + lead),
                field=field,
            ) from None
        tree = _bind_variables(parsed.parsed)
        self._check_functions(tree, location, field)
        options = self._options
        label = expression

        def evaluate(scope: Scope) -> Any:
            try:
                return _ScopedInterpreter(options, scope).visit(tree, scope.data)
            except _SEARCH_ERRORS as error:
                raise _search_failed(error, location, field, scope, label, tree) from None

        return evaluate

    def _direct(self, node: dict[str, Any]) -> Callable[[Any], Any] | None:
        """Plain Python for the JMESPath shapes mappings use most, or None to keep JMESPath's interpreter.

        Covered: field paths, literals, shipmap's own functions, ``a[].b``/``a[*].b`` projections and ``||``;
        each follows JMESPath's semantics (null for a missing key or a wrong type, projections skip nulls).
        """
        steps = plain_path(node)
        if steps is not None:
            return _path_getter(steps)
        kind = node.get("type")
        children = node.get("children", [])
        if kind == "literal":
            constant = node["value"]
            return lambda data: constant
        if kind == "function_expression" and node["value"] in self.functions.names:
            args = [self._direct(child) for child in children]
            if any(arg is None for arg in args):
                return None
            return _call(self.functions.jinja_globals[node["value"]], args)  # type: ignore[arg-type]
        if kind == "or_expression":
            left, right = (self._direct(child) for child in children)
            if left is None or right is None:
                return None
            return lambda data: _or(left(data), right, data)
        if kind == "projection" and len(children) == 2:
            source, element = children
            flatten = source.get("type") == "flatten"
            items = self._direct(source["children"][0] if flatten else source)
            each = self._direct(element)
            if items is None or each is None:
                return None
            return _projection(items, each, flatten)
        return None

    @staticmethod
    def _whole_scope(name: str) -> Evaluator:
        return lambda scope: select_scope(scope, name)

    def _check_functions(self, node: dict[str, Any], location: Location, field: str) -> None:
        for call in _walk_jmespath(node):
            if call.get("type") != "function_expression":
                continue
            name = call["value"]
            if name not in self._function_names:
                close = difflib.get_close_matches(name, sorted(self._function_names), n=1)
                raise CompileError(
                    f"unknown function {name}()",
                    location=location,
                    field=field,
                    hint=f"did you mean {close[0]}()?"
                    if close
                    else "see docs/functions.md for the functions",
                )
            spec = self.functions.specs.get(name)
            if spec is not None:
                try:
                    spec.check_arity(len(call.get("children", [])))
                except FunctionError as error:
                    raise CompileError(str(error), location=location, field=field) from None
            if name == "lookup":
                args = call.get("children", [])
                if args and args[0].get("type") == "literal" and isinstance(args[0].get("value"), str):
                    self._use_lookup(args[0]["value"], location, field)

    def _use_lookup(self, name: str, location: Location, field: str) -> None:
        if name not in self.lookup_names:
            close = difflib.get_close_matches(name, sorted(self.lookup_names), n=1)
            raise CompileError(
                f"unknown lookup table '{name}'",
                location=location,
                field=field,
                hint=f"did you mean '{close[0]}'?" if close else "declare it under lookups:",
            )
        self.used_lookups.add(name)

    # -- Jinja ----------------------------------------------------------------------------------------------

    def compile_template(
        self, text: str, location: Location, field: str, names: frozenset[str] = frozenset()
    ) -> Evaluator:
        single = _SINGLE_EXPRESSION.match(text)
        source = single.group("body") if single else text
        try:
            # Parse as a template either way: it gives line numbers and an AST to vet before compiling.
            ast = self.env.parse("{{" + source + "}}" if single else source)
        except jinja2.TemplateSyntaxError as error:
            raise CompileError(
                f"Jinja syntax error: {error.message}",
                location=_down(location, (error.lineno or 1) - 1),
                field=field,
            ) from None
        self._vet_template(ast, location, field, names)
        run = self._renderer(source, ast, single is not None)
        probe = LoopProbe(self.env, ast) if LoopProbe.wanted(ast) else None
        env_globals = self.env.globals

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
                    lambda: (
                        {}
                        if probe is None
                        else probe.items_at_failure(
                            {**env_globals, **template_names(scope)},
                            function,
                            lambda name: select_scope(scope, name),
                        )
                    ),
                )
                raise TransformError(
                    str(error), location=location, field=field, source_path=scope.path() or None, found=found
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
            except Exception as error:  # any other failure (dictsort on a list...) is this field's, located
                raise _template_failure(error, location, field, scope) from None
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
                return jinja[0](scope)

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
        self, ast: jinja2.nodes.Template, location: Location, field: str, names: frozenset[str] = frozenset()
    ) -> None:
        for node in ast.find_all((jinja2.nodes.Getattr, jinja2.nodes.Getitem, jinja2.nodes.NSRef)):
            name = (
                node.attr
                if isinstance(node, (jinja2.nodes.Getattr, jinja2.nodes.NSRef))
                else _const(getattr(node, "arg", None))
            )
            if isinstance(name, str) and name.startswith("_"):
                raise CompileError(
                    f"refused: the template reaches for '{name}'; templates run sandboxed and cannot touch "
                    "Python internals",
                    location=_down(location, node.lineno - 1),
                    field=field,
                )
        for flt in ast.find_all(jinja2.nodes.Filter):
            if flt.name not in self.env.filters:
                close = difflib.get_close_matches(flt.name, sorted(self.env.filters), n=1)
                raise CompileError(
                    f"unknown filter '{flt.name}'",
                    location=location,
                    field=field,
                    hint=f"did you mean '{close[0]}'?" if close else None,
                )
        for name_node in ast.find_all(jinja2.nodes.Name):
            if name_node.name in ("self", "caller", "varargs", "kwargs"):
                raise CompileError(
                    f"refused: '{name_node.name}' is Jinja's own machinery, not data",
                    location=_down(location, name_node.lineno - 1),
                    field=field,
                    hint="a template sees this, parent, root, index and the functions",
                )
        known = set(SCOPE_NAMES) | set(self.env.globals) | names
        for name in sorted(jinja2.meta.find_undeclared_variables(ast)):
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                raise CompileError(
                    f"undefined name '{name}' in template",
                    location=location,
                    field=field,
                    hint=(f"did you mean '{close[0]}'? " if close else "")
                    + "a template sees this, parent, root, index, the let: names around it and the functions",
                )
        for call in ast.find_all(jinja2.nodes.Call):
            if isinstance(call.node, jinja2.nodes.Name) and call.node.name == "lookup" and call.args:
                table = _const(call.args[0])
                if isinstance(table, str):
                    self._use_lookup(table, location, field)


def _call(function: Callable[..., Any], args: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    if len(args) == 1:
        (first,) = args
        return lambda data: function(first(data))
    if len(args) == 2:
        first, second = args
        return lambda data: function(first(data), second(data))
    return lambda data: function(*[arg(data) for arg in args])


def is_truthy(value: Any) -> bool:
    """JMESPath truthiness, used by when guards, || and route matches: false, null and empty strings, arrays
    and objects are false; 0 is true."""
    return not (value is None or value is False or value == "" or value == [] or value == {})


def _or(value: Any, otherwise: Callable[[Any], Any], data: Any) -> Any:
    return value if is_truthy(value) else otherwise(data)


def flatten_once(items: list[Any]) -> list[Any]:
    """JMESPath's ``[]``: the elements of ``items``, each array among them spliced in (one level)."""
    flat: list[Any] = []
    for element in items:
        if type(element) is list:
            flat.extend(element)
        else:
            flat.append(element)
    return flat


def _projection(
    items: Callable[[Any], Any], each: Callable[[Any], Any], flatten: bool
) -> Callable[[Any], Any]:
    def project(data: Any) -> Any:
        found = items(data)
        if type(found) is not list:
            return None
        if flatten:
            found = flatten_once(found)
        out = []
        for element in found:
            value = each(element)
            if value is not None:
                out.append(value)
        return out

    return project


class _BranchLabel:
    __slots__ = ("branches",)

    def __init__(self, branches: list[tuple[str, Callable[[Any], Any]]]) -> None:
        self.branches = branches

    def __call__(self, scope: Scope) -> str:
        origin = scope.parent.data if scope.parent is not None else None
        for text, get in self.branches:
            if get(origin) is scope.data:
                return text
        return self.branches[0][0]


def _template_failure(error: Exception, location: Location, field: str, scope: Scope) -> TransformError:
    message = error.message if isinstance(error, jinja2.TemplateError) and error.message else str(error)
    if not isinstance(error, jinja2.TemplateError | TypeError | ValueError | ArithmeticError):
        message = f"{type(error).__name__}: {message}"
    if isinstance(error, jinja2.UndefinedError):
        message = f"template reads something the source does not have: {message}"
    elif isinstance(error, jinja2.exceptions.SecurityError):
        message = f"refused by the sandbox: {message}"
    return TransformError(message, location=location, field=field, source_path=scope.path() or None)


def _const(node: jinja2.nodes.Node | None) -> Any:
    return node.value if isinstance(node, jinja2.nodes.Const) else None


def _shift(location: Location, columns: int) -> Location:
    # Quoted YAML scalars start one column before their text.
    quote = 1 if location.line_text[location.column - 1 : location.column] in ("'", '"') else 0
    return Location(location.file, location.line, location.column + columns + quote, location.line_text)


def _down(location: Location, lines: int) -> Location:
    if lines <= 0:
        return location
    return Location(location.file, location.line + lines + 1, 1, "")


def _parse_message(error: jmespath.exceptions.ParseError) -> str:
    token = getattr(error, "token_value", None)
    reason = getattr(error, "msg", None) or str(error).splitlines()[0]
    if token is not None and f"{token!r}" not in reason:
        return f"{reason} (at {token!r})"
    return str(reason)


def _in_literal(expression: str, position: int) -> bool:
    """Whether ``position`` is inside a quoted or backtick literal, where '$' is just text."""
    quote: str | None = None
    for index, char in enumerate(expression[:position]):
        if quote is None and char in "'`\"":
            quote = char
        elif char == quote and expression[index - 1] != "\\":
            quote = None
    return quote is not None


def _walk_jmespath(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for child in node.get("children", ()):
            yield from _walk_jmespath(child)


def _path_getter(steps: list[str | int]) -> Callable[[Any], Any]:
    """A direct lookup with JMESPath's semantics: a missing key, a wrong type or an index out of range is null."""
    if not steps:
        return lambda data: data
    if all(isinstance(step, str) for step in steps):
        keys = [str(step) for step in steps]
        if len(keys) == 1:
            (k1,) = keys
            return lambda data: data.get(k1) if type(data) is dict else None
        if len(keys) == 2:
            k1, k2 = keys

            def get2(data: Any) -> Any:
                if type(data) is dict:
                    data = data.get(k1)
                    if type(data) is dict:
                        return data.get(k2)
                return None

            return get2

    def get(data: Any) -> Any:
        for step in steps:
            if type(step) is str:
                if type(data) is not dict:
                    return None
                data = data.get(step)
            else:
                if type(data) is not list:
                    return None
                try:
                    data = data[step]  # type: ignore[index]
                except IndexError:
                    return None
        return data

    return get


class _ScopedInterpreter(jmespath.visitor.TreeInterpreter):  # type: ignore[misc]  # jmespath ships no types
    """JMESPath's interpreter, reading the "variable" nodes of a rewritten expression from one scope."""

    def __init__(self, options: jmespath.Options, scope: Scope) -> None:
        super().__init__(options)
        self._scope = scope

    def visit_variable(self, node: dict[str, Any], value: Any) -> Any:
        return select_scope(self._scope, node["value"])


def _variables(expression: str) -> list[re.Match[str]]:
    """The ``$name`` of ``expression`` that are not inside a quoted or backtick literal."""
    if "$" not in expression:
        return []
    return [m for m in _VARIABLE.finditer(expression) if not _in_literal(expression, m.start())]


def _rewrite_variables(expression: str) -> tuple[str, list[tuple[int, int]]]:
    """``expression`` with each ``$name`` as a placeholder call, and (position in the new text, shift) of
    each rewrite so that a parse error's position can be mapped back."""
    pieces: list[str] = []
    moved: list[tuple[int, int]] = []
    last = 0
    length = 0
    for match in _variables(expression):
        pieces.append(expression[last : match.start()])
        length += match.start() - last
        call = f"{_VARIABLE_CALL}('{match.group(1)}')"
        pieces.append(call)
        length += len(call)
        moved.append((length, len(call) - (match.end() - match.start())))
        last = match.end()
    pieces.append(expression[last:])
    return "".join(pieces), moved


def _original_offset(position: int, moved: list[tuple[int, int]]) -> int:
    return position - sum(shift for end, shift in moved if end <= position)


def _bind_variables(node: Any) -> Any:
    """A copy of a parsed tree with each placeholder call replaced by a ``variable`` node."""
    if not isinstance(node, dict):
        return node
    if node.get("type") == "function_expression" and node.get("value") == _VARIABLE_CALL:
        (argument,) = node["children"]
        return {"type": "variable", "value": argument["value"], "children": []}
    copied = dict(node)
    if "children" in node:
        copied["children"] = [_bind_variables(child) for child in node["children"]]
    return copied
