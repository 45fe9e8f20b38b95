"""The sandbox a mapping's Jinja templates run in.

Jinja's immutable sandbox refuses Python internals and mutation. On top of it, every operation that can build
something large from a small template (concatenation, repetition, powers, padding, replace, str.format) is
bounded; ``x.items`` on an object is its key, never the dict's method; and selectattr/rejectattr test false on
an element without the attribute; a ``{% filter f %}`` block whose filter gives back anything but text is
:class:`FilterBlockNotText`, not Jinja's "sequence item 0: expected str instance". The loop and output budget
of one evaluation is _budget.py's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jinja2
import jinja2.compiler
import jinja2.exceptions
import jinja2.filters
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["FilterBlockNotText", "MappingSandbox"]

_MAX_TEXT = 1_000_000  # characters (or items) one template operation may build
_MAX_INT_BITS = 4096  # past this an integer is no amount or id, and str() of it fails beyond 4,300 digits
_WIDENING_STR_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


def _refuse(message: str) -> jinja2.exceptions.SecurityError:
    return jinja2.exceptions.SecurityError(message)


def _check_size(size: int, what: str = "the result would exceed a million characters") -> None:
    if size > _MAX_TEXT:
        raise _refuse(what)


def _bounded_concat(parts: Iterable[Any]) -> str:
    pieces = [str(part) for part in parts]
    _check_size(sum(len(piece) for piece in pieces))
    return "".join(pieces)


def _bounded_center(value: Any, width: int = 80) -> str:
    _check_size(int(width))
    return str(value).center(int(width))


def _bounded_indent(value: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    text = str(value)
    pad = len(width) if isinstance(width, str) else int(width)
    _check_size(len(text) + pad * (text.count("\n") + 1))
    return str(jinja2.filters.do_indent(text, width, first, blank))


def _check_replace(text: str, old: str, new: str, count: int | None = None) -> None:
    times = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:
        times = min(times, count)
    _check_size(len(text) + times * max(len(new) - len(old), 0))


def _bounded_replace(value: Any, old: str, new: str, count: int | None = None) -> str:
    text = str(value)
    _check_replace(text, str(old), str(new), count)
    return text.replace(str(old), str(new), -1 if count is None else count)


class FilterBlockNotText(Exception):
    """A ``{% filter name %}`` block's filter gave back ``value``, which is not text. The block hands its filter
    the text it renders and writes what comes back into the template's text, so only text can come back;
    Jinja itself would fail later, joining the output, with no word of the block."""

    def __init__(self, name: str, line: int, value: Any) -> None:
        super().__init__(f"the {{% filter {name} %}} block at line {line} gave back {type(value).__name__}")
        self.name = name
        self.line = line
        self.value = value


def _block_text(name: str, line: int, value: Any) -> Any:
    if isinstance(value, str):  # Markup is a str too
        return value
    raise FilterBlockNotText(name, line, value)


class _BoundedCodeGenerator(jinja2.compiler.CodeGenerator):
    """Jinja's code generator, except that ``a ~ b`` goes through a size check and a filter block's result
    through a check that it is text."""

    def visit_Concat(self, node: jinja2.nodes.Concat, frame: jinja2.compiler.Frame) -> None:
        self.write("environment.bounded_concat((")
        for argument in node.nodes:
            self.visit(argument, frame)
            self.write(", ")
        self.write("))")

    def visit_FilterBlock(self, node: jinja2.nodes.FilterBlock, frame: jinja2.compiler.Frame) -> None:
        # Jinja 3.1's visit_FilterBlock, with the filter's result written through environment.block_text.
        filter_frame = frame.inner()
        filter_frame.symbols.analyze_node(node)
        self.enter_frame(filter_frame)
        self.buffer(filter_frame)
        self.blockvisit(node.body, filter_frame)
        self.start_write(frame, node)
        self.write(f"environment.block_text({node.filter.name!r}, {int(node.lineno)}, ")
        self.visit_Filter(node.filter, filter_frame)
        self.write(")")
        self.end_write(frame)
        self.leave_frame(filter_frame)


class MappingSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, plus bounds on everything that can build a huge value from a small template:
    repetition, powers, concatenation, padding and replacing. Python internals are refused by the sandbox
    itself and, before that, when the mapping loads."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%"})
    bounded_concat = staticmethod(_bounded_concat)
    block_text = staticmethod(_block_text)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters.update(
            center=_bounded_center,
            indent=_bounded_indent,
            replace=_bounded_replace,
            selectattr=_selectattr,
            rejectattr=_rejectattr,
        )
        del self.filters["format"]  # printf widths build strings of any size; ~ and the functions suffice

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Source data are JSON: on an object, `x.items` is the key "items" (or undefined), never the dict's
        # method of that name.
        if type(obj) is dict:
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "%" and isinstance(left, str):
            raise _refuse("printf-style % formatting is not available in mappings; use ~")
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
            if right > 64 or left.bit_length() * max(right, 0) > _MAX_INT_BITS:
                raise _refuse(f"exponent {right} is too large")
        elif operator == "**" and isinstance(right, (int, float)) and abs(right) > 64:
            raise _refuse(f"exponent {right} is too large")
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if isinstance(sequence, (str, list, tuple)) and isinstance(count, int):
                    _check_size(len(sequence) * count, "repetition would exceed a million items")
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and left.bit_length() + right.bit_length() > _MAX_INT_BITS
            ):
                raise _refuse("the product is too large a number")
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # The sandbox hands out str.format and format_map through here; their widths build strings of any
        # size, and ~ with the functions covers what a mapping needs.
        if isinstance(getattr(value, "__self__", None), str) and getattr(value, "__name__", "") in (
            "format",
            "format_map",
        ):

            def refused(*args: Any, **kwargs: Any) -> str:
                raise _refuse("str.format is not available in mappings; use ~")

            return refused
        return None

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            name = getattr(__obj, "__name__", "")
            if name in _WIDENING_STR_METHODS and args and isinstance(args[0], int):
                _check_size(args[0] * (len(owner) if name == "expandtabs" else 1))
            if name == "replace" and len(args) >= 2:
                count = args[2] if len(args) > 2 and isinstance(args[2], int) else None
                _check_replace(owner, str(args[0]), str(args[1]), count)
            if name == "join" and args:
                return _bounded_concat(_joined(owner, args[0]))
        return super().call(__context, __obj, *args, **kwargs)


def _attribute_or_undefined(environment: jinja2.Environment, item: Any, attribute: Any) -> Any:
    """``item.a.b`` as Jinja's attribute getter reads it, except that a missing key is a plain (falsy,
    non-raising) Undefined: selectattr('x', ...) on an element without x tests false, as in JMESPath."""
    parts = attribute.split(".") if isinstance(attribute, str) else [attribute]
    for part in parts:
        key: Any = int(part) if isinstance(part, str) and part.isdigit() else part
        if type(item) is dict:
            if key not in item:
                return jinja2.Undefined()
            item = item[key]
        else:
            item = environment.getitem(item, key)
            if isinstance(item, jinja2.Undefined):
                return jinja2.Undefined()
    return item


def _select_by_attribute(context: Any, items: Any, args: tuple[Any, ...], keep: bool) -> Iterator[Any]:
    if not args:
        raise jinja2.exceptions.FilterArgumentError("selectattr/rejectattr need an attribute name")
    environment = context.environment
    attribute, *rest = args
    test_name = rest[0] if rest else None
    test_args = tuple(rest[1:])
    for item in items:
        value = _attribute_or_undefined(environment, item, attribute)
        if test_name is None:
            passed = bool(value)
        else:
            passed = bool(environment.call_test(test_name, value, test_args, None, context))
        if passed == keep:
            yield item


@jinja2.pass_context
def _selectattr(context: Any, items: Any, *args: Any) -> Iterator[Any]:
    return _select_by_attribute(context, items, args, True)


@jinja2.pass_context
def _rejectattr(context: Any, items: Any, *args: Any) -> Iterator[Any]:
    return _select_by_attribute(context, items, args, False)


# Where every element has the key, these are Jinja's own filters; the fast template path (which steps aside
# on a missing key) may stand in for them.
_selectattr.same_when_keys_present = True  # type: ignore[attr-defined]
_rejectattr.same_when_keys_present = True  # type: ignore[attr-defined]


def _joined(separator: str, items: Iterable[Any]) -> Iterator[str]:
    for index, item in enumerate(items):
        if index:
            yield separator
        yield str(item)
