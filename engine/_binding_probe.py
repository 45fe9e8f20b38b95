"""What the names a template binds held where a function failed, for the error's ``found:`` line.

A loop's variable (``item`` in ``{% for item in this.line_items %}``) and a set variable (``{% set sku =
item.sku %}``) are gone once the template failed: neither the fast path nor Jinja's code keeps them. So, on
the error's path only, the template runs a second time (templates are pure) as a copy that reports each
binding as it is made: a loop's item as the loop reaches it, a set variable's value once it is assigned. As
Jinja scopes them, what a loop's body bound is forgotten when the loop takes its next item and when it ends,
and what a ``with``, ``filter`` or ``set`` block bound when the block ends. Where the function fails again, the
latest binding of each name still held is the one in view. A binding read from a plain path (of a scope
name, a let, or another binding whose place is known) is named by its place in the document, checked by
identity: the object found at that place must be the one bound.

A ``with`` block's targets are bound as its body starts, each read from the names outside it (as Jinja
evaluates them), and end with the block. A macro's arguments are bound as its body starts; each call of it
is wrapped so that what the call gave (and the plain path it read, where the call is) is known there, and
the bindings the call made are put back as they were when it returns (a macro may call itself). That is
done only for a macro defined at the top of the template whose name is only ever called (never bound
again, passed on or called from a ``{% call %}`` block): otherwise a body could be entered by a call the
copy does not see.

The copy is compiled the first time its template fails: a template that never fails costs nothing, and the
transform's own path is not touched. The second run gets a budget of its own (``_budget``), the same size as
the first; anything else that goes wrong in it only leaves the names unplaced. A name that the template
binds where the copy does not follow it (the arguments of any other macro or call block, what a macro's
body binds, a recursive loop, a set of ``a.b``) is reported as unknown, so that ``found:`` does not name a
value of the same name that is not the one the function was given; so is a name that a macro's body reads
without binding it and the template binds elsewhere (the body sees the name where the macro is defined,
not where it is called).
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
import jinja2.nodes as nodes
import jinja2.runtime

from ._budget import finish as budget_finish
from ._budget import start as budget_start
from ._functions import FunctionError
from ._paths import Binding, path_text, template_place

__all__ = ["BindingProbe"]

# Names the copy calls (a template's own variable of either name would only cost it the detail).
_BOUND = "_shipmap_bound_"
_DONE = "_shipmap_scope_done_"
_ARGUMENT = "_shipmap_argument_"
_CALL = "_shipmap_call_"

_BINDERS = (nodes.For, nodes.Assign, nodes.AssignBlock)
_SCOPES = (
    nodes.For,
    nodes.With,
    nodes.FilterBlock,
    nodes.AssignBlock,
)  # what was bound inside ends with them
_CALLED = (nodes.Macro, nodes.CallBlock)  # bodies that run where they are called, with their own arguments
# Jinja's filters (shipmap registers no function by these names) whose result holds items of the list they
# are given, the very objects, fewer of them or in another order.
_KEEP_ITEMS = frozenset({"selectattr", "rejectattr", "select", "reject", "sort", "reverse", "unique", "list"})


_Reads = tuple[str, list[str | int]]  # a plain path: the name it starts from, its steps


@dataclass(eq=False)
class _Parameter:
    """A name bound as a ``with`` block's or a macro's body starts, not by a statement of its own."""

    target: nodes.Expr
    value: nodes.Expr | None  # what a with target reads; None for a macro's argument (given by each call)
    owner: nodes.With | nodes.Macro


@dataclass(frozen=True)
class _Binder:
    """A loop, a set, a with target or a macro argument of the template: the names it binds and the plain
    path it reads (name, steps)."""

    targets: tuple[str, ...]
    unpacks: bool  # `key, value`: each name is a part of what is bound
    reads: _Reads | None
    filtered: bool  # reads through filters that keep the items (selectattr...): a view of the list there
    loop: bool  # binds each item of what it reads in turn, else what it reads


@dataclass(frozen=True)
class _Held:
    """One binding made in the replay."""

    order: int  # the latest binding of a name is the one in view
    value: Any
    position: int  # a loop's place in its iterable
    base: tuple[int, _Held] | None  # the binding of the name ``reads`` starts from, when the template made it
    reads: _Reads | None  # the binder's; for a macro's argument, what the call gave it read
    filtered: bool


@dataclass(frozen=True)
class _Given:
    """What one call of a macro gave one argument, and where the call read it."""

    value: Any
    reads: _Reads | None
    filtered: bool
    base: tuple[int, _Held] | None


@dataclass(frozen=True)
class _CallSite:
    """A call of a followed macro: its arguments' binders, by position and by keyword, and what each reads."""

    arguments: tuple[int, ...]  # the macro's argument binders, in its order
    positional: tuple[tuple[_Reads | None, bool], ...]
    keywords: dict[str, tuple[_Reads | None, bool]]


@dataclass
class _Shape:
    """The binders and scopes of a template, numbered in document order (the same in a deep copy)."""

    binders: list[nodes.Node | _Parameter] = field(default_factory=list)
    scopes: list[nodes.Node] = field(default_factory=list)
    inside: list[frozenset[int]] = field(default_factory=list)  # per scope: the binders in it
    unfollowed: set[str] = field(default_factory=set)  # names bound where the replay does not follow
    macros: dict[str, nodes.Macro] = field(default_factory=dict)  # the followed ones, by name


class BindingProbe:
    """Replays one template to find what its loop and set variables held at a failure. ``ast``: the
    template as Jinja runs it (each loop's iterable wrapped in the ``_budget`` filter), which must not change
    afterwards."""

    def __init__(self, env: jinja2.Environment, ast: nodes.Template) -> None:
        self._env = env
        self._ast = ast
        shape = _shape(ast)
        self._binders = [_describe(binder) for binder in shape.binders]
        self._inside = shape.inside
        scopes = {id(scope): number for number, scope in enumerate(shape.scopes)}
        self._scope_of = {  # a loop's binder -> its scope
            number: scopes[id(binder)]
            for number, binder in enumerate(shape.binders)
            if isinstance(binder, nodes.For)
        }
        self._unfollowed = frozenset(shape.unfollowed)
        # A with block's targets are read from the names outside it: not from each other.
        self._siblings = {
            number: frozenset(other for other, peer in enumerate(shape.binders) if _owner(peer) is owner)
            for number, binder in enumerate(shape.binders)
            if (owner := _owner(binder)) is not None and isinstance(owner, nodes.With)
        }
        self._calls = _call_sites(ast, shape)
        # Every name the template binds: found: asks for the replay only when a function was given one.
        self.names: frozenset[str] = self._unfollowed.union(*(binder.targets for binder in self._binders))
        self._compiled: list[jinja2.Template] = []
        self._lock = threading.Lock()

    @staticmethod
    def wanted(ast: nodes.Template) -> bool:
        return next(ast.find_all((*_BINDERS, nodes.With, *_CALLED)), None) is not None

    def bindings_at_failure(
        self, scope_names: Mapping[str, Any], function: str | None
    ) -> dict[str, Binding | None]:
        """Each name the template bound that is in view where ``function`` fails again when the template
        runs on ``scope_names`` (this, parent, root, index and the lets); None for a name that the replay
        does not follow. Empty when the replay does not fail that way."""
        held: dict[int, _Held] = {}  # binder -> its binding in view
        order = itertools.count()
        binders, inside, scope_of = self._binders, self._inside, self._scope_of

        siblings, calls = self._siblings, self._calls
        given: list[dict[int, _Given]] = []  # per macro call in progress: what it gave each argument

        def latest(name: str, besides: frozenset[int] = frozenset()) -> tuple[int, _Held] | None:
            found: tuple[int, _Held] | None = None
            for number, binding in held.items():
                if number in besides or name not in binders[number].targets:
                    continue
                if found is None or binding.order > found[1].order:
                    found = (number, binding)
            return found

        def bound(number: int, value: Any) -> str:
            binder = binders[number]
            previous = held.pop(number, None)
            position = 0
            if binder.loop:
                position = previous.position + 1 if previous is not None else 0
                for inner in inside[scope_of[number]]:  # the body's bindings of the item before
                    held.pop(inner, None)
            reads = binder.reads
            base = latest(reads[0], siblings.get(number, frozenset())) if reads is not None else None
            held[number] = _Held(next(order), value, position, base, reads, binder.filtered)
            return ""

        def argument(number: int, value: Any) -> str:
            passed = given[-1].pop(number, None) if given else None
            if passed is not None and passed.value is value:
                held[number] = _Held(next(order), value, 0, passed.base, passed.reads, passed.filtered)
            else:  # a default, or a call the copy did not wrap: the value alone
                held[number] = _Held(next(order), value, 0, None, None, False)
            return ""

        def call(site: int, macro: Any, *args: Any, **kwargs: Any) -> Any:
            if not isinstance(macro, jinja2.runtime.Macro):  # called before it is defined: Jinja's own
                raise TypeError("not the macro")  # error, with no detail from the replay
            described = calls[site]
            passed: dict[int, _Given] = {}
            for number, value, (reads, filtered) in zip(
                described.arguments, args, described.positional, strict=False
            ):
                passed[number] = _Given(value, reads, filtered, latest(reads[0]) if reads else None)
            names = [binders[number].targets[0] for number in described.arguments]
            for keyword, value in kwargs.items():
                if keyword in names and keyword in described.keywords:
                    reads, filtered = described.keywords[keyword]
                    number = described.arguments[names.index(keyword)]
                    passed[number] = _Given(value, reads, filtered, latest(reads[0]) if reads else None)
            saved = {number: held.get(number) for number in described.arguments}
            given.append(passed)
            result = macro(*args, **kwargs)  # a failure inside leaves its bindings held: they are in view
            given.pop()
            for number, binding in saved.items():  # as they were before the call (it may be recursive)
                if binding is None:
                    held.pop(number, None)
                else:
                    held[number] = binding
            return result

        def done(scope: int) -> str:
            for inner in inside[scope]:
                held.pop(inner, None)
            return ""

        token = budget_start()
        try:
            template = self._template()
            names = {
                **self._env.globals,
                **scope_names,
                _BOUND: bound,
                _DONE: done,
                _ARGUMENT: argument,
                _CALL: call,
            }
            context = template.new_context(names, shared=True)
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
        return self._in_view(held, scope_names)

    def _in_view(self, held: dict[int, _Held], scope_names: Mapping[str, Any]) -> dict[str, Binding | None]:
        latest: dict[str, tuple[int, _Held]] = {}
        for number, binding in held.items():
            for name in self._binders[number].targets:
                if name not in latest or binding.order > latest[name][1].order:
                    latest[name] = (number, binding)
        in_view: dict[str, Binding | None] = {}
        for name, (number, binding) in latest.items():
            binder = self._binders[number]
            if binder.unpacks:
                parts = binding.value if isinstance(binding.value, tuple | list) else ()
                index = binder.targets.index(name)
                in_view[name] = Binding(parts[index], None) if index < len(parts) else None
            else:
                in_view[name] = Binding(binding.value, self._place(number, binding, scope_names))
        in_view.update(dict.fromkeys(self._unfollowed))  # which binding of such a name is in view is unknown
        return in_view

    def _place(self, number: int, binding: _Held, scope_names: Mapping[str, Any]) -> str | None:
        """``$this.line_items[2]``: where a binding's value is in the document, when it was read from a
        plain path whose start is a scope name, a let, or a binding whose place is known. Through filters
        that keep the items (a view), a loop's item is named by its place in the list it was filtered
        from, found by identity, when exactly one item of that list is the very object."""
        chain = [(number, binding)]  # the binding, the one it read from, and so on (iterative: no depth)
        while (base := chain[-1][1].base) is not None:
            chain.append(base)
        place: str | None = None
        data: Any = None
        view = False  # `data` is the list that the binding so far is a view of
        for step_number, step in reversed(chain):
            binder = self._binders[step_number]
            if step.reads is None or binder.unpacks:
                return None
            name, steps = step.reads
            filtered = step.filtered
            if place is None:
                if name not in scope_names:
                    return None
                place, data = f"${name}", scope_names[name]
            elif view and steps:
                return None  # `view[0]` is not the list's first item
            for key in steps:
                if isinstance(key, int):
                    present = type(data) is list and -len(data) <= key < len(data)
                else:
                    present = type(data) is dict and key in data
                if not present:
                    return None
                data = data[key]
            if type(data) is not list and (binder.loop or filtered):
                return None  # a dict's keys, a string's characters
            if binder.loop:
                if view or filtered:
                    position = _only_index(data, step.value)
                elif step.position < len(data) and data[step.position] is step.value:
                    position = step.position
                else:
                    position = None
                if position is None:
                    return None
                place, data, view = path_text([*steps, position], place), step.value, False
            elif view or filtered:
                place, view = path_text(steps, place), True  # a view of the same list: `data` stays
            elif data is step.value:
                place = path_text(steps, place)
            else:
                return None
        return None if view else place

    def _template(self) -> jinja2.Template:
        if not self._compiled:
            with self._lock:
                if not self._compiled:
                    self._compiled.append(self._env.from_string(_instrumented(self._ast, self._env)))
        return self._compiled[0]


def _shape(ast: nodes.Template) -> _Shape:
    shape = _Shape(macros=_followed_macros(ast))
    followed_macros = {id(macro) for macro in shape.macros.values()}
    macro_reads: set[str] = set()  # names macro bodies read without binding them
    rebound: set[str] = set()  # names bound other than by a set at the template's top

    def visit(node: nodes.Node, followed: bool, top: bool) -> list[int]:
        """The binders in ``node`` (itself included), numbering them and the scopes in document order."""
        own: list[int] = []
        if isinstance(node, _CALLED):
            if isinstance(node, nodes.Macro):
                macro_reads.update(_free_names(node))
            if id(node) in followed_macros:  # its arguments are followed, not what its body binds
                for argument in node.args:
                    own.append(len(shape.binders))
                    shape.binders.append(_Parameter(argument, None, node))  # type: ignore[arg-type]
            else:
                shape.unfollowed.update(argument.name for argument in node.args)
            rebound.update(argument.name for argument in node.args)
            followed = False
        elif isinstance(node, nodes.With):
            for target, value in zip(node.targets, node.values, strict=True):
                rebound.update(name.name for name in _names(target))
                if followed and _targets(target) is not None:
                    own.append(len(shape.binders))
                    shape.binders.append(_Parameter(target, value, node))
                else:
                    shape.unfollowed.update(name.name for name in _names(target))
        elif isinstance(node, nodes.For) and node.recursive:
            followed = False  # its body runs for items of other lists: positions mean nothing
        if isinstance(node, _BINDERS):
            if not (top and isinstance(node, nodes.Assign | nodes.AssignBlock)):
                rebound.update(name.name for name in _names(node.target))
            if followed and _targets(node.target) is not None:
                own.append(len(shape.binders))
                shape.binders.append(node)
            else:
                shape.unfollowed.update(name.name for name in _names(node.target))
        scope = None
        if followed and isinstance(node, _SCOPES):
            scope = len(shape.scopes)
            shape.scopes.append(node)
            shape.inside.append(frozenset())
        inner: list[int] = []
        for child in node.iter_child_nodes():
            inner += visit(child, followed, isinstance(node, nodes.Template))
        if scope is not None:  # a loop's item and a with's targets end with it; a set block keeps its x
            shape.inside[scope] = frozenset(
                own + inner if isinstance(node, nodes.For | nodes.With) else inner
            )
        return own + inner

    visit(ast, True, False)
    # A macro's body sees a name where the macro is defined: a top-level set's, never a loop's or a with's of
    # the place it is called from, which the replay may hold at the failure.
    shape.unfollowed.update(macro_reads & rebound)
    return shape


def _followed_macros(ast: nodes.Template) -> dict[str, nodes.Macro]:
    """The macros defined at the template's top whose name is bound nowhere else and only ever called
    (``m(a, b=c)``, not ``{% call m() %}``, ``m(*args)`` or ``f(m)``): each entry into one is then a call
    that the copy wraps. Not one whose defaults read its arguments: they run before its body reports them,
    where a failure would be given a name not yet bound."""
    defined = [
        node for node in ast.body if isinstance(node, nodes.Macro) and not _defaults_read_arguments(node)
    ]
    names = [macro.name for macro in defined]
    bound: set[str] = set()
    for node in ast.find_all((*_BINDERS, nodes.With, *_CALLED)):
        if isinstance(node, nodes.With):
            bound.update(name.name for target in node.targets for name in _names(target))
        elif isinstance(node, _CALLED):
            bound.update(argument.name for argument in node.args)
        else:
            bound.update(name.name for name in _names(node.target))  # type: ignore[attr-defined]
    refused = {id(block.call) for block in ast.find_all(nodes.CallBlock)}
    called = {  # the Names that plain calls call
        id(call.node)
        for call in ast.find_all(nodes.Call)
        if isinstance(call.node, nodes.Name)
        and id(call) not in refused
        and call.dyn_args is None
        and call.dyn_kwargs is None
    }
    uses: dict[str, bool] = {}  # macro name -> every use of it is a plain call
    for name in ast.find_all(nodes.Name):
        if name.name in names:
            uses[name.name] = uses.get(name.name, True) and id(name) in called and name.ctx == "load"
    return {
        macro.name: macro
        for macro in defined
        if names.count(macro.name) == 1 and macro.name not in bound and uses.get(macro.name, True)
    }


def _defaults_read_arguments(macro: nodes.Macro) -> bool:
    arguments = {argument.name for argument in macro.args}
    return any(name.name in arguments for default in macro.defaults for name in default.find_all(nodes.Name))


def _free_names(macro: nodes.Macro) -> set[str]:
    own = {argument.name for argument in macro.args}
    stored = {name.name for name in macro.find_all(nodes.Name) if name.ctx != "load"}
    return {name.name for name in macro.find_all(nodes.Name) if name.ctx == "load"} - own - stored


def _owner(binder: nodes.Node | _Parameter) -> nodes.With | nodes.Macro | None:
    return binder.owner if isinstance(binder, _Parameter) else None


def _call_sites(ast: nodes.Template, shape: _Shape) -> list[_CallSite]:
    """Each call of a followed macro, in document order (as ``_instrumented`` numbers them)."""
    arguments = {
        id(macro): tuple(number for number, binder in enumerate(shape.binders) if _owner(binder) is macro)
        for macro in shape.macros.values()
    }
    sites: list[_CallSite] = []
    for call in _macro_calls(ast, shape):
        macro = shape.macros[call.node.name]  # type: ignore[attr-defined]
        sites.append(
            _CallSite(
                arguments[id(macro)],
                tuple(_reads(argument) for argument in call.args),
                {keyword.key: _reads(keyword.value) for keyword in call.kwargs},
            )
        )
    return sites


def _macro_calls(ast: nodes.Template, shape: _Shape) -> list[nodes.Call]:
    return [
        call
        for call in ast.find_all(nodes.Call)
        if isinstance(call.node, nodes.Name) and call.node.name in shape.macros
    ]


def _names(target: nodes.Node) -> list[nodes.Name]:
    return [target] if isinstance(target, nodes.Name) else list(target.find_all(nodes.Name))


def _targets(target: nodes.Node) -> tuple[str, ...] | None:
    if isinstance(target, nodes.Name):
        return (target.name,)
    if isinstance(target, nodes.Tuple) and all(isinstance(item, nodes.Name) for item in target.items):
        return tuple(item.name for item in target.items)  # type: ignore[attr-defined]
    return None  # `ns.total`, nested tuples


def _describe(node: nodes.Node | _Parameter) -> _Binder:
    targets = _targets(node.target)  # type: ignore[union-attr]
    assert targets is not None  # _shape numbers only these
    unpacks = isinstance(node.target, nodes.Tuple)  # type: ignore[union-attr]
    if isinstance(node, _Parameter):  # a macro's argument reads what each call gives it
        reads = _reads(node.value) if node.value is not None else (None, False)
        return _Binder(targets, unpacks, *reads, loop=False)
    if isinstance(node, nodes.For):
        iterable = node.iter
        if isinstance(iterable, nodes.Filter) and iterable.name == "_budget" and iterable.node is not None:
            iterable = iterable.node
        return _Binder(targets, unpacks, *_reads(iterable), loop=True)
    if isinstance(node, nodes.Assign):
        return _Binder(targets, unpacks, *_reads(node.node), loop=False)
    return _Binder(targets, unpacks, None, False, loop=False)  # `{% set x %}text{% endset %}`: no place


def _reads(node: nodes.Node) -> tuple[tuple[str, list[str | int]] | None, bool]:
    """The plain path ``node`` reads, and whether through filters that keep its items."""
    filtered = False
    while isinstance(node, nodes.Filter) and node.name in _KEEP_ITEMS and node.node is not None:
        node, filtered = node.node, True
    return template_place(node), filtered


def _only_index(items: list[Any], item: Any) -> int | None:
    """The place of ``item`` in ``items`` when it is there once, as that very object."""
    found = [index for index, candidate in enumerate(items) if candidate is item]
    return found[0] if len(found) == 1 else None


def _instrumented(ast: nodes.Template, env: jinja2.Environment) -> nodes.Template:
    """A copy of ``ast`` that calls ``_BOUND(binder, value)`` as each binding is made (for a loop, in its
    ``if`` filter when it has one, so that a failure there is placed too) and ``_DONE(scope)`` as each scope
    ends."""
    copied: nodes.Template = copy.deepcopy(ast, {id(env): env})
    shape = _shape(copied)  # numbered before the bodies change, as in the original
    scopes = {id(scope): number for number, scope in enumerate(shape.scopes)}
    after: dict[int, list[nodes.Node]] = {}  # statement -> what runs right after it
    starts: dict[int, tuple[nodes.With | nodes.Macro, list[nodes.Expr]]] = {}  # reported as its body starts
    for number, binder in enumerate(shape.binders):
        value = copy.deepcopy(binder.target, {id(env): env})  # type: ignore[union-attr]
        value.set_ctx("load")
        if isinstance(binder, _Parameter):
            hook = _ARGUMENT if isinstance(binder.owner, nodes.Macro) else _BOUND
            starts.setdefault(id(binder.owner), (binder.owner, []))[1].append(
                _call(hook, nodes.Const(number), value)
            )
            continue
        report = _call(_BOUND, nodes.Const(number), value)
        if not isinstance(binder, nodes.For):
            after[id(binder)] = [nodes.Output([report])]
        elif binder.test is not None:
            binder.test = nodes.Or(report, binder.test)  # the hook gives "": the filter's own test decides
        else:
            binder.body.insert(0, nodes.Output([report]))
        if isinstance(binder, nodes.For) and binder.else_:
            binder.else_.insert(0, nodes.Output([_call(_DONE, nodes.Const(scopes[id(binder)]))]))
    for scope, number in scopes.items():
        after.setdefault(scope, []).append(nodes.Output([_call(_DONE, nodes.Const(number))]))
    for owner, reports in starts.values():
        owner.body.insert(0, nodes.Output(reports))
    for site, call in enumerate(_macro_calls(copied, shape)):  # `m(a)` as `_CALL(site, m, a)`
        name = call.node.name  # type: ignore[attr-defined]
        call.args = [nodes.Const(site), nodes.Name(name, "load"), *call.args]
        call.node = nodes.Name(_CALL, "load")
    _place_after(copied, after)
    return copied


def _place_after(node: nodes.Node, after: dict[int, list[nodes.Node]]) -> None:
    """Put ``after[id(statement)]`` right after each such statement, in every statement list (``body``,
    ``else_``) of the tree."""
    for child in node.iter_child_nodes():
        _place_after(child, after)
    for name in ("body", "else_"):
        statements = getattr(node, name, None)
        if not isinstance(statements, list):
            continue
        placed: list[nodes.Node] = []
        for statement in statements:
            placed.append(statement)
            placed.extend(after.get(id(statement), ()))
        setattr(node, name, placed)


def _call(name: str, *args: nodes.Expr) -> nodes.Call:
    return nodes.Call(nodes.Name(name, "load"), list(args), [], None, None)
