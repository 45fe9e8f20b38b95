"""Compiling a mapping's expressions, once, into plain Python callables (``Evaluator``).

JMESPath is compiled here: plain field paths (``a.b[0].c``) and the other common shapes become plain Python
(``_jmespath_direct``); an expression naming ``$root``, ``$parent`` or a ``let`` runs through JMESPath's
interpreter reading the scope (``_jmespath_variables``); anything else is a pre-parsed JMESPath AST. Templates
are :class:`TemplateCompiler`'s (``_templates``). Nothing here parses at transform time.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from typing import Any

import jmespath
import jmespath.exceptions
import jmespath.functions

from ._errors import CompileError, Location, TransformError
from ._functions import FunctionError, FunctionSet
from ._jmespath_calls import call_offsets, calls, raising_call
from ._jmespath_direct import direct, path_getter
from ._jmespath_variables import (
    ScopedInterpreter,
    bind_variables,
    is_placeholder,
    original_offset,
    rewrite_variables,
    variables_in,
)
from ._paths import found_arguments, path_text, plain_path
from ._scope import SCOPE_NAMES, SCOPE_PREFIX, Evaluator, Label, Scope, select_scope
from ._templates import SINGLE_EXPRESSION, TemplateCompiler
from ._yaml import TextPlace

__all__ = ["ExpressionCompiler"]

_BUILTIN_JMESPATH = {
    name[len("_func_") :] for name in dir(jmespath.functions.Functions) if name.startswith("_func_")
}


_log = logging.getLogger("shipmap.engine.expressions")


def _search_failed(
    error: BaseException,
    failed_at: _FailurePlace,
    field: str,
    scope: Scope,
    label: str,
    tree: dict[str, Any],
    scope_name: str = "this",
    call: Callable[..., Any] | None = None,
) -> TransformError:
    """The located error for an expression (``label``, parsed: ``tree``) that failed on ``scope``'s data (or
    its ``scope_name``'s), under the call that raised it (``failed_at``); a builtin's error shows the source
    fields it was given, with their values."""
    found: tuple[str, ...] = ()
    data = scope.data if scope_name == "this" else select_scope(scope, scope_name)
    if isinstance(error, FunctionError):
        message = str(error)
        prefix = "" if scope_name == "this" else f"${scope_name}."
        found = found_arguments(
            tree,
            error.function,
            data,
            lambda path: scope.child_path(path if path.startswith("$") else prefix + path),
            lambda name: select_scope(scope, name),
            failure=None if call is None else (message, call),
        )
    elif isinstance(error, RecursionError):
        message = "the source is nested too deeply for this expression"
    elif isinstance(error, jmespath.exceptions.JMESPathError):
        message = f"JMESPath: {error}"
    else:  # JMESPath's own functions on extreme numbers (avg's OverflowError), or a bug: its type is kept
        _log.debug("expression %r failed on the data", label, exc_info=error)
        message = f"{type(error).__name__}: {error}"
    location, note = failed_at(error, data)
    return TransformError(
        f"{message}{note}", location=location, field=field, source_path=scope.child_path(label), found=found
    )


class _FailurePlace:
    """Where an expression's failure at run time is: under the call whose function raised it (the only call of
    that function in the expression, or the one JMESPath's interpreter was running), else at the expression's
    start, saying how many calls of the function it may be. Worked out on an error only."""

    __slots__ = ("_call_place", "_location", "_places", "_rerun", "_tree")

    def __init__(
        self,
        tree: dict[str, Any],
        location: Location,
        call_place: Callable[[int], Location],
        rerun: Callable[[Any], Any] | None = None,
    ) -> None:
        self._tree = tree
        self._location = location
        self._call_place = call_place  # parses the text again: each call's place is kept once found
        self._places: dict[int, Location] = {}
        self._rerun = rerun  # JMESPath's interpreter on the same data, when plain Python ran the expression

    def __call__(self, error: BaseException, data: Any) -> tuple[Location, str]:
        if isinstance(error, FunctionError):
            function = error.function
        elif isinstance(error, jmespath.exceptions.JMESPathTypeError):
            function = error.function_name
        elif not isinstance(error, jmespath.exceptions.JMESPathError | RecursionError):
            number = raising_call(error, self._tree, None)  # under the call the interpreter was running
            return (self._location, "") if number is None else (self._at(number), "")
        else:
            return self._location, ""
        numbers = [number for number, node in enumerate(calls(self._tree)) if node["value"] == function]
        if len(numbers) == 1:
            return self._at(numbers[0]), ""
        if function is None or not numbers:
            return self._location, ""
        number = raising_call(error, self._tree, function)
        if number is None and self._rerun is not None:
            try:
                self._rerun(data)
            except Exception as again:  # whatever it raises, only its frames are read
                number = raising_call(again, self._tree, function)
        if number is None:
            return self._location, f" (in one of the {len(numbers)} calls of {function}())"
        return self._at(number), ""

    def _at(self, number: int) -> Location:
        place = self._places.get(number)
        if place is None:
            place = self._places[number] = self._call_place(number)
        return place


class ExpressionCompiler(TemplateCompiler):
    """Compiles the expressions of one mapping: JMESPath here, templates as :class:`TemplateCompiler` does."""

    def __init__(self, functions: FunctionSet, lookup_names: frozenset[str]) -> None:
        super().__init__(functions, lookup_names)
        self._options = functions.jmespath_options
        self._function_names = _BUILTIN_JMESPATH | set(functions.names)

    # -- entry point --------------------------------------------------------------------------------------

    def compile(
        self,
        text: str,
        location: Location,
        field: str,
        *,
        template: bool | None = None,
        names: frozenset[str] = frozenset(),
        place: TextPlace | None = None,
    ) -> Evaluator:
        """``text`` as a template if it holds ``{{``/``{%`` (or ``template`` says so), else as JMESPath.
        ``names``: the `let` names visible where the expression stands; ``place``: where the lines of a
        template written over several lines are in the file."""
        is_template = ("{{" in text or "{%" in text) if template is None else template
        try:
            if is_template:
                return self.compile_template(text, location, field, names, place)
            return self.compile_jmespath(text, location, field, names, place)
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
            branches.append((path_text(steps), path_getter(steps)))
        return _BranchLabel(branches) if len(branches) > 1 else text

    def reads_of(self, text: str, *, template: bool | None = None) -> list[tuple[str, tuple[str, ...]]]:
        """``(scope name, chain)`` for each source chain ``text`` reads; only tracing asks, at compile time."""
        from ._trace import jinja_reads, jmespath_reads

        is_template = ("{{" in text or "{%" in text) if template is None else template
        if is_template:
            single = SINGLE_EXPRESSION.match(text)
            return jinja_reads(self.env.parse("{{" + single.group("body") + "}}" if single else text))
        expression = text.strip()
        scope_name = "this"
        prefix = SCOPE_PREFIX.match(expression)
        if prefix and not variables_in(expression[prefix.end() :]):
            scope_name = prefix.group(1)
            expression = expression[prefix.end() :].lstrip(".")
            if scope_name == "index":
                return []
            if not expression:
                return [(scope_name, ())]
        elif variables_in(expression):
            rewritten, _ = rewrite_variables(expression)
            reads: list[tuple[str, tuple[str, ...]]] = []
            for chain in jmespath_reads(bind_variables(jmespath.compile(rewritten).parsed)):
                if chain and chain[0].startswith("$"):
                    reads.append((chain[0][1:], chain[1:]))
                else:
                    reads.append(("this", chain))
            return reads
        return [(scope_name, chain) for chain in jmespath_reads(jmespath.compile(expression).parsed)]

    # -- JMESPath -------------------------------------------------------------------------------------------

    def compile_jmespath(
        self,
        text: str,
        location: Location,
        field: str,
        names: frozenset[str] = frozenset(),
        place: TextPlace | None = None,
    ) -> Evaluator:
        scope_name = "this"
        expression = text.strip()
        prefix = SCOPE_PREFIX.match(expression)
        if variables_in(expression[prefix.end() :] if prefix else expression):
            return self._compile_with_variables(text, location, field, names, place)
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
                location=_shift(location, offset + (len(text) - len(text.lstrip())), text, place),
                field=field,
            ) from None
        start = len(text.rstrip()) - len(expression)  # where `expression` starts in `text`

        def call_place(number: int) -> Location:
            return _shift(location, start + call_offsets(expression)[number][1], text, place)

        self._check_functions(parsed.parsed, location, field, call_place)
        label = text.strip()
        tree = parsed.parsed
        python = direct(tree, self.functions)
        call = self.functions.call  # a failing builtin's calls are tried again with it (found:)
        search = parsed.search
        options = self._options
        if python is not None:
            # Compiled to plain Python; a builtin's FunctionError still needs the field's location.
            if plain_path(tree) is not None:
                getter = python
                if scope_name == "this":
                    return lambda scope: getter(scope.data)
                return lambda scope: getter(select_scope(scope, scope_name))

            # Which of several calls of a function failed: the interpreter, run again, names it.
            failed_directly_at = _FailurePlace(
                tree, location, call_place, lambda data: search(data, options=options)
            )

            def evaluate_direct(scope: Scope) -> Any:
                data = scope.data if scope_name == "this" else select_scope(scope, scope_name)
                try:
                    return python(data)
                except Exception as error:  # a FunctionError, or anything else: this field's, located
                    raise _search_failed(
                        error, failed_directly_at, field, scope, label, tree, scope_name, call
                    ) from None

            return evaluate_direct
        failed_at = _FailurePlace(tree, location, call_place)

        def evaluate(scope: Scope) -> Any:
            data = scope.data if scope_name == "this" else select_scope(scope, scope_name)
            try:
                return search(data, options=options)
            except Exception as error:
                raise _search_failed(error, failed_at, field, scope, label, tree, scope_name, call) from None

        return evaluate

    def _compile_with_variables(
        self, text: str, location: Location, field: str, names: frozenset[str], place: TextPlace | None
    ) -> Evaluator:
        """An expression that names ``$root``, ``$parent``, ``$this``, ``$index`` or a `let` name anywhere,
        as in ``find($root.products, 'id', product_id)``. Run by JMESPath's interpreter, which reads each
        variable node from the scope."""
        expression = text.strip()
        lead = len(text) - len(text.lstrip())
        known = set(SCOPE_NAMES) | names
        for match in variables_in(expression):
            if match.group(1) not in known:
                close = difflib.get_close_matches(match.group(1), sorted(known), n=1)
                raise CompileError(
                    f"unknown variable '${match.group(1)}'",
                    location=_shift(location, lead + match.start(), text, place),
                    field=field,
                    hint=(f"did you mean '${close[0]}'? " if close else "")
                    + "an expression sees $this, $parent, $root, $index and the names of the let: blocks "
                    "around it",
                )
        rewritten, moved = rewrite_variables(expression)
        try:
            parsed = jmespath.compile(rewritten)
        except jmespath.exceptions.ParseError as error:
            offset = original_offset(getattr(error, "lex_position", 0) or 0, moved)
            raise CompileError(
                f"JMESPath syntax error: {_parse_message(error)}",
                location=_shift(location, offset + lead, text, place),
                field=field,
            ) from None
        tree = bind_variables(parsed.parsed)

        def call_place(number: int) -> Location:
            offsets = [offset for name, offset in call_offsets(rewritten) if not is_placeholder(name)]
            return _shift(location, lead + original_offset(offsets[number], moved), text, place)

        self._check_functions(tree, location, field, call_place)
        options = self._options
        label = expression
        call = self.functions.call
        failed_at = _FailurePlace(tree, location, call_place)

        def evaluate(scope: Scope) -> Any:
            try:
                return ScopedInterpreter(options, scope).visit(tree, scope.data)
            except Exception as error:
                raise _search_failed(error, failed_at, field, scope, label, tree, call=call) from None

        return evaluate

    @staticmethod
    def _whole_scope(name: str) -> Evaluator:
        return lambda scope: select_scope(scope, name)

    def _check_functions(
        self, tree: dict[str, Any], location: Location, field: str, call_place: Callable[[int], Location]
    ) -> None:
        """Refuse at load a call that can never run: of an unknown function, with a wrong number of arguments,
        or with a literal argument of a type the function does not take; of an unknown lookup table; or of a
        shipmap function on literals alone that it fails on (``integer('x')``). The error is at the call's name:
        ``call_place(N)`` places the Nth of ``calls(tree)``, parsing the text again (only an error pays for it)."""
        for number, call in enumerate(calls(tree)):
            name = call["value"]
            arguments = call.get("children", [])
            if name not in self._function_names:
                close = difflib.get_close_matches(name, sorted(self._function_names), n=1)
                raise CompileError(
                    f"unknown function {name}()",
                    location=call_place(number),
                    field=field,
                    hint=f"did you mean {close[0]}()?"
                    if close
                    else "see docs/functions.md for the functions",
                )
            problem = self._call_problem(name, arguments)
            if problem is not None:
                raise CompileError(problem, location=call_place(number), field=field)
            table = arguments[0].get("value") if name == "lookup" else None
            if isinstance(table, str) and arguments[0].get("type") == "literal":
                known = table in self.lookup_names
                self._use_lookup(table, location if known else call_place(number), field)
            if arguments and all(argument.get("type") == "literal" for argument in arguments):
                failure = self.functions.literal_call_error(
                    name, [argument["value"] for argument in arguments]
                )
                if failure is not None:
                    raise CompileError(failure, location=call_place(number), field=field)

    def _call_problem(self, name: str, arguments: list[dict[str, Any]]) -> str | None:
        """What is wrong with calling ``name`` with ``arguments`` whatever the data: a shipmap builtin's arity,
        or, for one of JMESPath's own, its arity and the type of each literal argument, worded as JMESPath
        words them when they fail at run time."""
        spec = self.functions.specs.get(name)
        if spec is not None:
            try:
                spec.check_arity(len(arguments))
            except FunctionError as error:
                return str(error)
            return None
        checker = self._options.custom_functions
        signature = checker.FUNCTION_TABLE[name]["signature"]
        try:
            if signature and signature[-1].get("variadic"):
                if len(arguments) < len(signature):
                    raise jmespath.exceptions.VariadictArityError(len(signature), len(arguments), name)
            elif len(arguments) != len(signature):
                raise jmespath.exceptions.ArityError(len(signature), len(arguments), name)
            for argument, wanted in zip(arguments, signature, strict=False):  # the places JMESPath checks
                if argument.get("type") == "literal" and wanted["types"]:
                    checker._type_check_single(argument["value"], wanted["types"], name)
        except jmespath.exceptions.JMESPathError as error:
            return f"JMESPath: {error}"
        return None


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


def _shift(location: Location, columns: int, text: str = "", place: TextPlace | None = None) -> Location:
    """Where character ``columns`` of ``text``, the expression written at ``location``, is: at its line and
    column of a literal block, or of a value folded over several lines (``place``), else that many columns
    along the start line when it is on the expression's first line, else the start itself."""
    if place is not None and place.style:
        if place.style != "|":
            return place.character(text, columns) or location
        line = text.count("\n", 0, columns) + 1
        column = columns - (text.rfind("\n", 0, columns) + 1) + 1
        where, note = place.locate(text, line, column)
        if not note:
            return where
        if line > 1:
            return location
    # Quoted YAML scalars start one column before their text.
    quote = 1 if location.line_text[location.column - 1 : location.column] in ("'", '"') else 0
    return Location(location.file, location.line, location.column + columns + quote, location.line_text)


def _parse_message(error: jmespath.exceptions.ParseError) -> str:
    token = getattr(error, "token_value", None)
    reason = getattr(error, "msg", None) or str(error).splitlines()[0]
    if token is not None and f"{token!r}" not in reason:
        return f"{reason} (at {token!r})"
    return str(reason)
