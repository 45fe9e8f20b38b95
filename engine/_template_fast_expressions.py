"""Python source for the expressions of a fast template (``_template_fast``): constants, the scope's names and
variables, ``a.b`` and ``a[k]`` lookups, operators, calls of the mapping's functions, Jinja's tests and the
filters the generated code implements itself.

Each method returns the source of one Python expression, or raises :class:`Refused` for an expression outside
the subset (the template then always runs through Jinja). A value the source cannot reproduce Jinja for, at
run time, calls ``_fail()``, which raises ``Fallback``. Lookups are ``d[k]`` on values that are exactly
``dict`` or ``list``; constants and functions reach the source as names of :attr:`ExpressionWriter.namespace`,
never as text from the mapping.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any

import jinja2
import jinja2.filters
import jinja2.nodes as nodes
import jinja2.tests
from jinja2.sandbox import SandboxedEnvironment

from ._functions import FunctionSet
from ._scope import SCOPE_NAMES
from ._template_fast_runtime import item_helpers

__all__ = ["ExpressionWriter", "Frame", "Refused"]


class Refused(Exception):
    """The template is outside the subset; raised at compile time only."""


_LOOP_ATTRIBUTES = frozenset({"index", "index0", "revindex", "revindex0", "first", "last", "length"})
_COMPARE = {"eq": "==", "ne": "!=", "gt": ">", "gteq": ">=", "lt": "<", "lteq": "<=", "in": "in"}
_COMPARE["notin"] = "not in"
_BINOPS = {
    nodes.Add: "+",
    nodes.Sub: "-",
    nodes.Div: "/",
    nodes.FloorDiv: "//",
    nodes.Mul: "*",
    nodes.Mod: "%",
    nodes.Pow: "**",
}
_UNOPS = {nodes.Neg: "-", nodes.Pos: "+"}
_NO_ARG_TESTS = frozenset(
    {"defined", "undefined", "none", "boolean", "true", "false", "integer", "float", "number", "string"}
    | {"mapping"}
)
_ONE_ARG_TESTS = frozenset(
    {"in", "==", "eq", "equalto", "!=", "ne", ">", "gt", "greaterthan", "ge", ">=", "<", "lt", "lessthan"}
    | {"<=", "le"}
)
_INLINE_TESTS = {  # jinja2.tests 3.1: test_number, test_string, test_none, test_defined, test_undefined
    "number": "_is_number({})",
    "string": "_isinstance({}, _str)",
    "none": "({} is None)",
    "defined": "(not _isinstance({}, _Undefined))",
    "undefined": "_isinstance({}, _Undefined)",
}
# Filters the generated code implements itself, each checked to be Jinja's own in the environment.
_OWN_FILTERS = frozenset(
    {"map", "select", "reject", "selectattr", "rejectattr", "sum", "list", "max", "min", "length", "count"}
    | {"join", "default", "d", "upper", "lower", "trim"}
)
_GENERATORS = frozenset({"map", "select", "reject", "selectattr", "rejectattr"})  # Jinja gives a generator
_CONSUMERS = frozenset({"map", "select", "reject", "selectattr", "rejectattr", "sum", "list", "max", "min"})
_CONSUMERS |= {"join"}


class Frame:
    """One Jinja frame that holds variables: the template, or a for loop's body."""

    def __init__(self, names: set[str], loop: tuple[str, str] | None, in_loop: bool = False) -> None:
        self.names = names
        self.loop = loop  # (index variable, length variable) when the body reads `loop`
        self.in_loop = in_loop
        self.memos: list[str] = []  # variables caching this body's loop-invariant filters and calls


class ExpressionWriter:
    """The state a fast template's source is written with (the namespace it will run in, the generated names
    of its variables, the frames that hold them), and the source of each of its expressions."""

    def __init__(
        self, env: SandboxedEnvironment, functions: Mapping[str, object], builtins: FunctionSet | None = None
    ) -> None:
        self.env = env
        self.functions = functions
        self.builtins = builtins
        self.namespace: dict[str, Any] = {}
        self._ids: dict[int, str] = {}  # id(function) -> its namespace name
        self.variables: dict[str, str] = {}  # Jinja variable -> generated local name
        self.counter = 0
        self.scopes: list[Frame] = []
        self.assigned: set[str] = set()  # variables surely set at this point of the code
        self.loop_allowed = True
        self.undefined = self.callable_name(env.undefined, "_u")
        self.call_binop = self.callable_name(env.call_binop, "_b")
        concat = getattr(env, "bounded_concat", None)
        self.concat = None if concat is None else self.callable_name(concat, "_c")
        item, item_or_undefined = item_helpers(env.undefined)
        self.item = self.callable_name(item, "_h")
        self.item_or_undefined = self.callable_name(item_or_undefined, "_h")

    # -- names ------------------------------------------------------------------------------------------------

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def constant(self, value: Any) -> str:
        name = self.fresh("_k")
        self.namespace[name] = value
        return name

    def callable_name(self, function: Any, prefix: str) -> str:
        name = self._ids.get(id(function))
        if name is None:
            name = self._ids[id(function)] = self.fresh(prefix)
            self.namespace[name] = function
        return name

    # -- expressions ----------------------------------------------------------------------------------------

    def expr(self, node: nodes.Node, *, undefined_ok: bool = False, generator_ok: bool = False) -> str:
        """Python source for ``node``. ``undefined_ok``: where Jinja would pass an Undefined on (a function's
        argument, a test's operand, a single expression's value), a missing key gives the same Undefined.
        ``generator_ok``: where Jinja's lazy map/select results are consumed whole."""
        if isinstance(node, nodes.Filter) and node.name in _GENERATORS and not generator_ok:
            raise Refused  # Jinja's value would be a generator, consumed once
        if isinstance(node, (nodes.Filter, nodes.Call)) and self.scopes and self.scopes[-1].in_loop:
            scope = self.scopes[-1]
            names = {name.name for name in node.find_all(nodes.Name)}
            if "loop" not in names and not names & scope.names:
                # The same value on every pass of the loop: worked out on the first pass that reaches it,
                # then reused. Templates are pure and nothing here changes a value once made.
                memo = self.fresh("_m")
                scope.memos.append(memo)
                self.scopes.append(Frame(set(), None))  # nothing inside the memo is hoisted again
                try:
                    value = self.expr(node, undefined_ok=undefined_ok, generator_ok=generator_ok)
                finally:
                    self.scopes.pop()
                return f"({memo} if {memo} is not _M else ({memo} := {value}))"
        if isinstance(node, nodes.Const):
            return self.constant(node.value)
        if isinstance(node, nodes.Name):
            return self.name(node)
        if isinstance(node, nodes.Getattr):
            return self.getattr(node, undefined_ok)
        if isinstance(node, nodes.Getitem):
            return self.getitem(node, undefined_ok)
        if isinstance(node, nodes.List):
            return "[" + "".join(self.expr(item) + ", " for item in node.items) + "]"
        if isinstance(node, nodes.CondExpr):
            if node.expr2 is None:
                raise Refused
            test, yes, no = self.expr(node.test), self.expr(node.expr1), self.expr(node.expr2)
            return f"({yes} if {test} else {no})"
        if isinstance(node, (nodes.And, nodes.Or)):
            keyword = "and" if isinstance(node, nodes.And) else "or"
            return f"({self.expr(node.left)} {keyword} {self.expr(node.right)})"
        if isinstance(node, nodes.Not):
            return f"(not {self.expr(node.node)})"
        if isinstance(node, nodes.UnaryExpr):
            sign = _UNOPS.get(type(node))
            if sign is None or sign in self.env.intercepted_unops:
                raise Refused
            return f"({sign}{self.expr(node.node)})"
        if isinstance(node, nodes.BinExpr):
            symbol = _BINOPS.get(type(node))
            if symbol is None:
                raise Refused
            left, right = self.expr(node.left), self.expr(node.right)
            if symbol in self.env.intercepted_binops:  # the sandbox's bounded operators: *, **, %
                return f"{self.call_binop}(None, {self.constant(symbol)}, {left}, {right})"
            return f"({left} {symbol} {right})"
        if isinstance(node, nodes.Concat):
            if self.concat is None:
                raise Refused
            return f"{self.concat}((" + "".join(self.expr(part) + ", " for part in node.nodes) + "))"
        if isinstance(node, nodes.Compare):
            text = self.expr(node.expr)
            for operand in node.ops:
                if operand.op not in _COMPARE:
                    raise Refused
                text += f" {_COMPARE[operand.op]} {self.expr(operand.expr)}"
            return f"({text})"
        if isinstance(node, nodes.Call):
            return self.call(node)
        if isinstance(node, nodes.Filter):
            return self.filter(node)
        if isinstance(node, nodes.Test):
            return self.test(node)
        raise Refused

    def name(self, node: nodes.Name) -> str:
        name = node.name
        if name in SCOPE_NAMES:
            return f"_{name}"
        if not any(name in scope.names for scope in self.scopes):
            raise Refused  # a function used as a value, `loop` on its own, or a name Jinja would resolve
        variable = self.variables[name]
        if name in self.assigned:
            return variable
        return f"({variable} if {variable} is not _M else _fail())"

    def getattr(self, node: nodes.Getattr, undefined_ok: bool) -> str:
        attribute = node.attr
        if isinstance(node.node, nodes.Name) and node.node.name == "loop":
            return self.loop_attribute(attribute)
        if attribute.startswith("_") or hasattr(dict, attribute):
            raise Refused  # the sandbox's getattr prefers the dict's own attribute (items, keys, get, …)
        return self.key_lookup(self.expr(node.node), self.constant(attribute), undefined_ok)

    def key_lookup(self, obj: str, key: str, undefined_ok: bool) -> str:
        holder = self.fresh("_t")
        # As the sandbox's undefined(obj=, name=), where Jinja would carry the Undefined on.
        missing = f"{self.undefined}(None, {holder}, {key})" if undefined_ok else "_fail()"
        return f"(({holder}[{key}] if {key} in {holder} else {missing}) if _type({holder} := {obj}) is _dict else _fail())"

    def getitem(self, node: nodes.Getitem, undefined_ok: bool) -> str:
        argument = node.arg
        if isinstance(argument, nodes.Slice):
            raise Refused
        obj = self.expr(node.node)
        if isinstance(argument, nodes.Const) and type(argument.value) is str:
            if argument.value.startswith("_"):
                raise Refused
            # A key the dict has comes first; a missing one would be the dict's method of that name, if any.
            method = hasattr(dict, argument.value)
            return self.key_lookup(obj, self.constant(argument.value), undefined_ok and not method)
        helper = self.item_or_undefined if undefined_ok else self.item
        return f"{helper}({obj}, {self.expr(argument)})"

    def loop_attribute(self, attribute: str) -> str:
        loop = self.scopes[-1].loop if self.scopes else None
        if loop is None or not self.loop_allowed or attribute not in _LOOP_ATTRIBUTES:
            raise Refused
        index, length = loop
        return {
            "index": f"({index} + 1)",
            "index0": index,
            "revindex": f"({length} - {index})",
            "revindex0": f"({length} - {index} - 1)",
            "first": f"({index} == 0)",
            "last": f"({index} == {length} - 1)",
            "length": length,
        }[attribute]

    def call(self, node: nodes.Call) -> str:
        target = node.node
        if (
            not isinstance(target, nodes.Name)
            or target.name not in self.functions
            or node.kwargs
            or node.dyn_args is not None
            or node.dyn_kwargs is not None
        ):
            raise Refused
        function = self.plain_function(self.functions[target.name], target.name, len(node.args))
        arguments = "".join(self.expr(argument, undefined_ok=True) + ", " for argument in node.args)
        return self.defined(f"{function}({arguments})")

    def defined(self, call: str) -> str:
        """A function's result, unless it is an Undefined (which Jinja would carry on with)."""
        result = self.fresh("_r")
        return f"({result} if not _isinstance({result} := {call}, _Undefined) else _fail())"

    def plain_function(self, function: Any, name: str, count: int) -> str:
        """The namespace name of one of the mapping's functions, if Jinja would call it plainly with ``count``
        positional arguments. A shipmap builtin called with an arity it accepts is called without its checking
        wrapper: that only words errors, and any error here hands the scope to Jinja, which words it."""
        call_method = getattr(function, "__call__", None)  # noqa: B004
        if (
            not isinstance(function, types.FunctionType)
            or hasattr(function, "jinja_pass_arg")
            or hasattr(call_method, "jinja_pass_arg")
            or not self.env.is_safe_callable(function)
        ):
            raise Refused
        builtins = self.builtins
        if (
            builtins is not None
            and builtins.jinja_globals.get(name) is function
            and builtins.specs[name].accepts(count)
        ):
            return self.callable_name(builtins.unchecked[name], "_g")
        return self.callable_name(function, "_g")

    def test(self, node: nodes.Test) -> str:
        name = node.name
        arity = 0 if name in _NO_ARG_TESTS else 1 if name in _ONE_ARG_TESTS else None
        if arity is None or len(node.args) != arity or node.kwargs or node.dyn_args or node.dyn_kwargs:
            raise Refused
        function = self.env.tests.get(name)
        if function is None or function is not jinja2.tests.TESTS[name]:
            raise Refused
        operand = self.expr(node.node, undefined_ok=True)
        if name in _INLINE_TESTS:  # what jinja2.tests' function of that name returns, without the call
            return _INLINE_TESTS[name].format(operand)
        test = self.callable_name(function, "_j")
        return f"{test}({operand}{''.join(', ' + self.expr(argument) for argument in node.args)})"

    def filter(self, node: nodes.Filter) -> str:
        name = node.name
        if node.node is None or node.dyn_args is not None or node.dyn_kwargs is not None:
            raise Refused
        function = self.env.filters.get(name)
        if function is None:
            raise Refused
        if name in _OWN_FILTERS and (
            function is jinja2.filters.FILTERS.get(name) or getattr(function, "same_when_keys_present", False)
        ):
            return self.own_filter(node)
        if name in self.functions and function is self.functions[name] and not node.kwargs:
            called = self.plain_function(function, name, 1 + len(node.args))
            value = self.expr(node.node, undefined_ok=True)
            return self.defined(f"{called}({value}{''.join(', ' + self.expr(arg) for arg in node.args)})")
        raise Refused

    def own_filter(self, node: nodes.Filter) -> str:
        name = node.name
        if node.node is None:
            raise Refused
        value = self.expr(node.node, generator_ok=name in _CONSUMERS, undefined_ok=name in ("default", "d"))
        args = list(node.args)
        kwargs: dict[str, nodes.Expr] = {}
        for keyword in node.kwargs:
            if not isinstance(keyword, nodes.Keyword) or keyword.key in kwargs:
                raise Refused
            kwargs[keyword.key] = keyword.value
        if name == "map":
            if args or set(kwargs) != {"attribute"}:
                raise Refused
            return f"_map({value}, {self.attribute_parts(kwargs['attribute'])})"
        if name in ("select", "reject", "selectattr", "rejectattr"):
            if kwargs:
                raise Refused
            parts = self.constant(())
            if name.endswith("attr"):
                if not args:
                    raise Refused
                parts = self.attribute_parts(args.pop(0))
            test = "None"
            if args:
                test_name = args.pop(0)
                if not isinstance(test_name, nodes.Const) or not isinstance(test_name.value, str):
                    raise Refused
                found = test_name.value
                arity = 0 if found in _NO_ARG_TESTS else 1 if found in _ONE_ARG_TESTS else None
                function = self.env.tests.get(found)
                if arity != len(args) or function is None or function is not jinja2.tests.TESTS[found]:
                    raise Refused
                test = self.callable_name(function, "_j")
            extra = "(" + "".join(self.expr(arg) + ", " for arg in args) + ")"
            keep = "True" if name in ("select", "selectattr") else "False"
            return f"_select({value}, {parts}, {test}, {extra}, {keep})"
        if name == "sum":
            named = self.arguments(args, kwargs, ("attribute", "start"))
            parts = self.attribute_parts(named["attribute"]) if "attribute" in named else self.constant(())
            start = self.expr(named["start"]) if "start" in named else self.constant(0)
            return f"_sum({value}, {parts}, {start})"
        if name == "default" or name == "d":
            named = self.arguments(args, kwargs, ("default_value", "boolean"))
            fallback = self.expr(named["default_value"]) if "default_value" in named else self.constant("")
            boolean = self.expr(named["boolean"]) if "boolean" in named else "False"
            return f"_default({value}, {fallback}, {boolean})"
        if name == "join":
            named = self.arguments(args, kwargs, ("d",))
            glue = self.expr(named["d"]) if "d" in named else self.constant("")
            return f"_join({value}, {glue})"
        if args or kwargs:
            raise Refused
        if name in ("max", "min"):
            return f"_extreme({value}, {name == 'max'})"
        if name == "list" and isinstance(node.node, nodes.Filter) and node.node.name in _GENERATORS:
            return (
                value  # the map/select helpers already give a new list, as list() of Jinja's generator does
            )
        helper = {"list": "_list", "length": "_length", "count": "_length"}.get(name, f"_{name}")
        return f"{helper}({value})"

    @staticmethod
    def arguments(
        args: list[nodes.Expr], kwargs: dict[str, nodes.Expr], names: tuple[str, ...]
    ) -> dict[str, nodes.Expr]:
        if len(args) > len(names) or not set(kwargs) <= set(names[len(args) :]):
            raise Refused
        return {**dict(zip(names, args, strict=False)), **kwargs}

    def attribute_parts(self, node: nodes.Expr) -> str:
        """Jinja's _prepare_attribute_parts of a constant attribute, as a constant."""
        if not isinstance(node, nodes.Const) or type(node.value) not in (str, int):
            raise Refused
        attribute = node.value
        try:
            parts = tuple(jinja2.filters._prepare_attribute_parts(attribute))
        except (ValueError, TypeError):
            raise Refused from None
        return self.constant(parts)
