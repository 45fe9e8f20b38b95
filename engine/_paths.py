"""Plain field paths (``a.b[0].c``) in a parsed JMESPath tree, and what a failing function was given.

The compiler turns a plain path into a direct lookup (``_jmespath_direct``). An error such as ``lookup(): lookup
table 'status' has no entry for null`` says what the function got, not where that came from, and the
expression around it may read a dozen fields. So when a builtin fails, the plain field paths passed to it
are read again (on the error's path only, never the transform's) and the error shows ``found: state = null
(not in the document)``: the field of the document to look at, as glom says where a lookup failed. In a
template, a loop's or set variable is named by the place of the value it held (``line_items[2].sku =
null``), which ``_binding_probe`` finds again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.nodes
import jinja2.utils

from ._errors import preview_value
from ._function_errors import FunctionError

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_SHOWN = 4  # arguments named in one error: a call with more is rare, and the line stays readable


def found_arguments(
    tree: dict[str, Any],
    function: str | None,
    data: Any,
    path_of: Callable[[str], str],
    variable: Callable[[str], Any],
    failure: tuple[str, Callable[..., Any]] | None = None,
) -> tuple[str, ...]:
    """``path = value`` for each field path given to ``function`` in the parsed JMESPath ``tree``: read from
    ``data``, or from ``variable(name)`` for one that starts with a ``$name`` (a missing field says so); each
    named by ``path_of`` (its place in the whole document). Empty when there is none. A field read from what
    a projection, filter or pipe gives (``items[].integer(qty)``: each item's ``qty``) is not ``data``'s, and
    is not named. When the function has several calls, one whose arguments are all known (fields, ``$name``
    paths, ``@``, literals) and that does not fail again with ``failure``'s message is left out, as
    :func:`found_in_template` leaves out such a use."""
    if function is None:
        return ()
    calls = _calls(tree, function)
    again = failure is not None and 1 < len(calls) <= _MAX_TRIED
    sites: list[tuple[list[tuple[str, str]], bool | None]] = []
    for call, on_data in calls:
        named_here: list[tuple[str, str]] = []
        given: list[Any] | None = []  # what the call was given, when all of it is known
        for argument in call.get("children", []):
            if argument.get("type") == "literal":
                given = None if given is None else [*given, argument.get("value")]
                continue
            read = place(argument)
            if read is None or (read[0] is None and not on_data):
                given = None  # an expression, or a field of another value than data
                continue
            name, steps = read
            source = data if name is None else variable(name)
            held = _value(steps, source)
            given = None if given is None else [*given, held[0] if held else None]  # JMESPath reads null
            if read == (None, []):
                continue  # @: the data itself, not a place in the document to name
            named_here.append(
                (path_of(path_text(steps, "" if name is None else f"${name}")), _read(steps, source))
            )
        fails = _fails_again(function, given, failure) if again and given is not None else None
        sites.append((named_here, fails))
    return _shown(sites)


def _shown(sites: list[tuple[list[tuple[str, str]], bool | None]]) -> tuple[str, ...]:
    """``path = value`` for what each use of a failing function names, without the uses that were given all
    they are known to have been given and do not fail the same way on it (``False``): had the function failed
    there, the same values would fail it again (it is pure). When every use is such, something is not as
    followed, and all are named."""
    if any(fails is not False for _, fails in sites):
        sites = [(named_here, fails) for named_here, fails in sites if fails is not False]
    shown: dict[str, str] = {}
    for named_here, _ in sites:
        for where, value in named_here:
            if where not in shown and len(shown) < _MAX_SHOWN:
                shown[where] = value
    return tuple(f"{path} = {value}" for path, value in shown.items())


def plain_path(node: dict[str, Any]) -> list[str | int] | None:
    """The steps of a plain field path (``a.b[0].c``), or None when the expression is anything more."""
    found = place(node)
    return found[1] if found is not None and found[0] is None else None


def place(node: dict[str, Any]) -> tuple[str | None, list[str | int]] | None:
    """Where a path reads: the ``$name`` it starts from (a "variable" node; None for the current data) and
    its steps, or None when the expression is anything more than a path."""
    kind = node.get("type")
    if kind == "field":
        return None, [node["value"]]
    if kind == "current":
        return None, []
    if kind == "variable":
        return str(node["value"]), []
    if kind == "subexpression":
        first, *rest = node["children"]
        head = place(first)
        if head is None:
            return None
        steps = list(head[1])
        for child in rest:
            part = place(child)
            if part is None or part[0] is not None:
                return None
            steps += part[1]
        return head[0], steps
    if kind == "index_expression":
        left, *indexes = node["children"]  # a[0][1] is one node with two indexes
        head = (None, []) if left.get("type") == "identity" else place(left)
        if head is None or any(index.get("type") != "index" for index in indexes):
            return None
        return head[0], [*head[1], *(int(index["value"]) for index in indexes)]
    return None


@dataclass(frozen=True)
class Binding:
    """What a name that a template binds (a loop's variable, a set variable) held where a function failed:
    its value, and where that value is in the document (path text such as ``$this.line_items[2]``, which
    ``path_of`` names) or None when it was not read from a plain path (a filter's result, a sum)."""

    value: Any
    source: str | None


def found_in_template(
    ast: jinja2.nodes.Template,
    function: str | None,
    names: Callable[[], frozenset[str]],
    path_of: Callable[[str], str],
    variable: Callable[[str], Any],
    bound: frozenset[str] = frozenset(),
    bindings: Callable[[], Mapping[str, Binding | None]] = dict,
    filters: frozenset[str] = frozenset(),
    failure: tuple[str, Callable[..., Any]] | None = None,
) -> tuple[str, ...]:
    """As :func:`found_arguments`, for a Jinja template: each ``this.a.b``, ``root.x[0]``, let name, loop or
    set variable (``item.sku``) given to ``function``, called (``f(a, b)``) or, when it is one of
    ``filters`` (the functions registered as Jinja filters), as a filter (``a | f(b)``, the filtered value
    first), as the filter of a ``{% filter f %}{{ a }}{% endfilter %}`` block (when ``a`` is text: the
    block gives the function its text), or mapped over a list when that is its only use in the template
    (``a | map(attribute='b') | map('f')``: the first item on which ``failure``, the error's message and a
    way to call the function such as ``FunctionSet.call``, fails the same way again). ``names()``: the names
    readable from the scope; ``bound``: the names the template binds itself; ``bindings()``: those in view
    where the function failed (asked only when it was given one), None for one whose binding is unknown. A
    bound name is named by its value's place in the document (``line_items[2].sku``), else by itself
    (``item.sku``).

    When the function has several uses, each one whose arguments are all known (plain paths read where the
    function failed, literals) is given them again through ``failure``: one that does not fail with the
    error's message is not where it failed (had it failed, the same values would fail it again), and is
    left out. The others, those that fail again and those that cannot be tried, are named."""
    if function is None:
        return ()
    readable = names()
    in_view: Mapping[str, Binding | None] | None = None

    def origin(name: str) -> tuple[Callable[[Sequence[str | int]], str], Any, bool] | None:
        """How to name a path from ``name``, the value ``name`` holds, and whether that is surely the value a
        call that failed there read (not a scope name the template may hide where it binds the same name);
        None when it must not be named."""
        nonlocal in_view
        if in_view is None and name in bound:
            in_view = bindings()
        if in_view is not None and name in in_view:  # it hides a scope or let name, as in Jinja
            binding = in_view[name]
            if binding is None:
                return None  # bound where the replay does not follow: any value shown could be another's
            if isinstance(binding.value, jinja2.utils.Namespace):
                return None  # `ns.total`: the template's own counter, not data
            base = binding.source
            if base is not None:
                return (lambda steps: path_of(path_text(steps, base))), binding.value, True
            return (lambda steps: path_text(steps, name)), binding.value, True
        if name in readable:
            return (lambda steps: path_of(path_text(steps, f"${name}"))), variable(name), name not in bound
        return None

    uses = list(_given(ast, function, filters))
    again = failure is not None and 1 < len(uses) <= _MAX_TRIED
    sites: list[tuple[list[tuple[str, str]], bool | None]] = []  # what each use names; whether it fails again
    for use in uses:
        if use.mapped is not None and len(uses) > 1:
            sites.append(([], None))  # the failure may be another use's: an item this map was never given
            continue  # is no answer
        named_here: list[tuple[str, str]] = []
        given: list[Any] | None = [] if use.complete else None  # what the use gave, when all of it is known
        for argument in use.arguments:
            if isinstance(argument, jinja2.nodes.Const):
                given = None if given is None else [*given, argument.value]
                continue
            read = template_place(argument)
            found = origin(read[0]) if read is not None else None
            if read is None or found is None:
                given = None
                continue
            steps = read[1]
            named, data, faithful = found
            held = _value(steps, data)
            if use.mapped is not None:
                item = _failing_item(data, steps, use.mapped, function, failure)
                where, value = (named(item[0]), preview_value(item[1])) if item is not None else (None, "")
            elif use.text:
                # The block gives the function the text of what it renders: the same value only for a string.
                if held and type(held[0]) is str:
                    where, value = named(steps), preview_value(held[0])
                else:
                    where, value, faithful = None, "", False
            else:
                where, value = named(steps), _read(steps, data)
            if given is not None and faithful and (held or _undefined_in_jinja(steps, data)):
                # A key an object does not have is Jinja's undefined (the sandbox's getattr): given as such.
                given = [*given, held[0] if held else jinja2.StrictUndefined()]
            else:
                given = None
            if where is not None:
                named_here.append((where, value))
        fails = _fails_again(function, given, failure) if again and given is not None else None
        sites.append((named_here, fails))
    return _shown(sites)


def _fails_again(
    function: str, given: list[Any], failure: tuple[str, Callable[..., Any]] | None
) -> bool | None:
    """Whether ``function`` given ``given`` fails with the error's own message again; None when that cannot be
    told (anything other than the function's own error)."""
    if failure is None:
        return None
    message, call = failure
    try:
        call(function, *given)
    except FunctionError as error:
        return error.function == function and str(error) == message
    except jinja2.UndefinedError:  # as the use itself would have failed, not with the function's error
        return False
    except Exception:  # not the function's verdict on these values (a recursion limit, say)
        return None
    return False


def _undefined_in_jinja(steps: Sequence[str | int], data: Any) -> bool:
    """Whether Jinja reads ``steps`` from ``data`` as undefined: a key an object lacks or an index past a
    list's end, where :func:`_value` finds nothing. (A step into text or a number is Jinja's own affair.)"""
    value = data
    for step in steps:
        if isinstance(step, int):
            if type(value) is not list:
                return False
            if not -len(value) <= step < len(value):
                return True
        else:
            if type(value) is not dict:
                return False
            if step not in value:
                return True
        value = value[step]
    return False


@dataclass(frozen=True)
class _Mapped:
    """``| map(attribute='a.b') | map('f', 1)``: the steps read from each item (none without the first
    map) and the constant arguments that follow the item."""

    attribute: tuple[str | int, ...]
    arguments: tuple[Any, ...]


@dataclass(frozen=True)
class _Use:
    """One use of a function in a template: the expressions it is given, the value first."""

    arguments: list[jinja2.nodes.Expr]
    text: bool = False  # a `{% filter f %}` block's one `{{ a }}`: the function is given a's text
    mapped: _Mapped | None = None  # `a | map('f')`: the function is given each item of a in turn
    complete: bool = True  # the arguments are all it is given (no keywords, *args, block text besides)


_MAX_MAPPED = 100_000  # items tried again on an error's path, as many as a template may loop over
_MAX_TRIED = 1_000  # uses of the function tried again to tell which failed; past that, all are named


def _given(ast: jinja2.nodes.Template, function: str, filters: frozenset[str]) -> Iterator[_Use]:
    """Each use of ``function`` in the template, in the order they are written."""
    kinds = (jinja2.nodes.Call, jinja2.nodes.Filter, jinja2.nodes.FilterBlock, jinja2.nodes.Name)
    called: set[int] = set()  # the Name nodes that are a call's function (a Call comes before its parts)
    for node in ast.find_all(kinds):
        if isinstance(node, jinja2.nodes.Call):
            if isinstance(node.node, jinja2.nodes.Name) and node.node.name == function:
                called.add(id(node.node))
                yield _Use(node.args, complete=_positional(node))
        elif isinstance(node, jinja2.nodes.Name):
            if node.name == function and id(node) not in called:
                yield _Use([], complete=False)  # `{% set f = integer %}`: called where it is not followed
        elif function not in filters:
            continue
        elif isinstance(node, jinja2.nodes.Filter) and node.node is not None:
            if node.name == function:
                yield _Use([node.node, *node.args], complete=_positional(node))
            elif node.name == "map" and any(_const(argument) == function for argument in node.args):
                yield _mapped(node, function) or _Use([], complete=False)
        elif isinstance(node, jinja2.nodes.FilterBlock) and node.filter.name == function:
            body = node.body
            # Only a body that is one `{{ a }}`: any other text around it changes what the function is given.
            if len(body) == 1 and isinstance(body[0], jinja2.nodes.Output) and len(body[0].nodes) == 1:
                yield _Use(
                    [body[0].nodes[0], *node.filter.args], text=True, complete=_positional(node.filter)
                )
            else:
                yield _Use(node.filter.args, complete=False)


def _const(node: jinja2.nodes.Node) -> Any:
    return node.value if isinstance(node, jinja2.nodes.Const) else None


def _positional(node: jinja2.nodes.Call | jinja2.nodes.Filter) -> bool:
    """Whether a call or filter gives its positional arguments only (no ``k=v``, ``*a`` or ``**k``)."""
    return not (node.kwargs or node.dyn_args or node.dyn_kwargs)


def _mapped(node: jinja2.nodes.Filter, function: str) -> _Use | None:
    """``a | map('f', 1)`` or ``a | map(attribute='b.c') | map('f')`` over a plain path ``a``, with constant
    arguments only: what the function is given can then be read again exactly. Anything else (a default=,
    a filter between, an argument computed) is not named."""
    if node.kwargs or node.dyn_args or node.dyn_kwargs or not node.args:
        return None
    name, *rest = node.args
    if not isinstance(name, jinja2.nodes.Const) or name.value != function:
        return None
    if not all(isinstance(argument, jinja2.nodes.Const) for argument in rest):
        return None
    arguments = tuple(argument.value for argument in rest)  # type: ignore[attr-defined]
    source = node.node
    attribute: tuple[str | int, ...] = ()
    if isinstance(source, jinja2.nodes.Filter) and source.name == "map":
        if source.args or source.dyn_args or source.dyn_kwargs or len(source.kwargs) != 1:
            return None
        keyword = source.kwargs[0]
        if keyword.key != "attribute" or not isinstance(keyword.value, jinja2.nodes.Const):
            return None
        if not isinstance(keyword.value.value, str) or source.node is None:
            return None
        # As Jinja reads `attribute='a.0'`: parts split on dots, the parts of digits as indexes.
        attribute = tuple(int(part) if part.isdigit() else part for part in keyword.value.value.split("."))
        source = source.node
    if source is None:
        return None
    return _Use([source], mapped=_Mapped(attribute, arguments))


def _failing_item(
    data: Any,
    steps: list[str | int],
    mapped: _Mapped,
    function: str,
    failure: tuple[str, Callable[..., Any]] | None,
) -> tuple[list[str | int], Any] | None:
    """The path to, and the value of, the first item of the list at ``steps`` that the function fails on
    with the error's own message (map gives the items in order, and stops at the first failure), when each
    item before it holds what ``attribute`` reads and the function is pure; else None."""
    if failure is None:
        return None
    message, call = failure
    held = _value(steps, data)
    if not held or type(held[0]) is not list or len(held[0]) > _MAX_MAPPED:
        return None
    for index, item in enumerate(held[0]):
        value = _value(list(mapped.attribute), item)
        if not value:
            return None  # Jinja maps it to Undefined, which fails otherwise
        try:
            call(function, value[0], *mapped.arguments)
        except FunctionError as error:
            same = error.function == function and str(error) == message
            return ([*steps, index, *mapped.attribute], value[0]) if same else None
        except Exception:  # not the failure the error reports
            return None
    return None


def _value(steps: Sequence[str | int], data: Any) -> tuple[Any] | tuple[()]:
    """``(the value at steps,)``, or ``()`` when a step is not there (only dicts and lists are stepped into)."""
    value = data
    for step in steps:
        if isinstance(step, int):
            present = isinstance(value, list) and -len(value) <= step < len(value)
        else:
            present = isinstance(value, dict) and step in value
        if not present:
            return ()
        value = value[step]
    return (value,)


def template_place(node: jinja2.nodes.Node) -> tuple[str, list[str | int]] | None:
    """(the name it starts from, its steps) for ``name.a["b"][0]``, else None."""
    steps: list[str | int] = []
    while True:
        if isinstance(node, jinja2.nodes.Name):
            return node.name, steps[::-1]
        if isinstance(node, jinja2.nodes.Getattr):
            steps.append(node.attr)
        elif isinstance(node, jinja2.nodes.Getitem) and isinstance(node.arg, jinja2.nodes.Const):
            key = node.arg.value
            if not isinstance(key, str | int) or isinstance(key, bool):
                return None
            steps.append(key)
        else:
            return None
        node = node.node


# The nodes whose children after the first are evaluated on another value than the node's own (each item of a
# projection, what a pipe or a step gives); an expref (`&f(a)`) is evaluated elsewhere altogether.
_FIRST_CHILD_ON_DATA = frozenset(
    {"subexpression", "index_expression", "projection", "value_projection", "filter_projection", "pipe"}
)
_ALL_CHILDREN_ON_DATA = frozenset(
    {
        "function_expression",
        "comparator",
        "and_expression",
        "or_expression",
        "not_expression",
        "multi_select_list",
        "multi_select_dict",
        "key_val_pair",
        "flatten",
    }
)


def _calls(node: Any, function: str) -> list[tuple[dict[str, Any], bool]]:
    """Every call of ``function`` in the tree, outermost first, each with whether it is evaluated on the
    tree's own data (iterative: trees are as deep as the text)."""
    found: list[tuple[dict[str, Any], bool]] = []
    stack: list[tuple[Any, bool]] = [(node, True)]
    while stack:
        current, on_data = stack.pop()
        if not isinstance(current, dict):
            continue
        kind = current.get("type")
        if kind == "function_expression" and current.get("value") == function:
            found.append((current, on_data))
        children = current.get("children", [])
        stays = [
            on_data and (kind in _ALL_CHILDREN_ON_DATA or (kind in _FIRST_CHILD_ON_DATA and at == 0))
            for at in range(len(children))
        ]
        stack.extend(reversed(list(zip(children, stays, strict=True))))
    return found


def path_text(steps: Sequence[str | int], text: str = "") -> str:
    """The JMESPath text of ``steps`` (after ``text``): ``a.b[0]."first-name"``, keys that are not identifiers
    quoted (what ``shipmap init`` writes into a mapping, too)."""
    for step in steps:
        if isinstance(step, int):
            text += f"[{step}]"
        else:
            name = step if IDENTIFIER.match(step) else json.dumps(step)
            text += f".{name}" if text else name
    return text


def _read(steps: list[str | int], data: Any) -> str:
    held = _value(steps, data)
    return preview_value(held[0]) if held else "null (not in the document)"
