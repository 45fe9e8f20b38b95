"""Where an error inside a template is in the mapping file: the line Jinja names (or, for a block left open,
the block's opening tag; for a function failing or a read missing at run time, the one line that holds every
use of what failed, else the one of them whose code raised it; for any other failure at run time, the line
whose code raised it), and on it the tag or name at fault, inside a {{ }} or {% %} and not in the text around
them. The file's line comes from the value's :class:`TextPlace` (``_yaml``): exact in a literal block, else
the template's start with a note naming the template's line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import jinja2
import jinja2.nodes

from ._budget import BudgetExceeded
from ._errors import Location
from ._yaml import TextPlace

__all__ = [
    "TemplateLines",
    "attribute_token",
    "block_token",
    "filter_token",
    "function_token",
    "name_token",
    "raised_line",
    "read_line",
    "syntax_error_line",
    "use_line",
]

_CODE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)


@dataclass(frozen=True, slots=True)
class TemplateLines:
    """Puts a line of a template, as Jinja numbers them, in the mapping file."""

    text: str
    place: TextPlace
    lead: int  # the lines before a single expression's {{: Jinja parses the expression alone

    def at(self, line: int | None, token: re.Pattern[str] | None = None) -> tuple[Location, str]:
        """The place of ``line`` (None: unknown, the template's start), at the first match of ``token`` inside
        a tag on it (at its named group, if it has one), and the note its message takes."""
        if line is None:
            return self.place.start, ""
        line += self.lead
        return self.place.locate(self.text, line, self._column(line, token) if token else None)

    def _column(self, line: int, token: re.Pattern[str]) -> int | None:
        """The 1-based column of ``token`` on ``line`` within a {{ }} or {% %}, not in the text around them."""
        value_lines = self.text.split("\n")
        if not 1 <= line <= len(value_lines):
            return None
        line_start = sum(len(before) + 1 for before in value_lines[: line - 1])
        code = [span.span() for span in _CODE.finditer(self.text) if not span.group().startswith("{#")]
        for found in token.finditer(value_lines[line - 1]):
            column = found.start(found.lastgroup) if found.lastgroup else found.start()
            if any(start <= line_start + column < end for start, end in code):
                return column + 1
        return None


def name_token(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w.]){re.escape(name)}(?!\w)")


def function_token(name: str) -> re.Pattern[str]:
    """A function called (``name(``), as a filter (``| name``, ``{% filter name``) or named (``'name'``)."""
    quoted = re.escape(name)
    return re.compile(
        rf"(?:\|\s*|\{{%[-+]?\s*filter\s+|['\"])(?P<used>{quoted})(?!\w)|(?<![\w.])(?P<called>{quoted})(?=\s*\()"
    )


def attribute_token(name: str) -> re.Pattern[str]:
    """A read of ``name``: ``.name``, ``['name']`` or a string naming it, as ``map(attribute='name')`` does."""
    return re.compile(rf"(?:\.\s*|['\"])(?P<read>{re.escape(name)})(?!\w)")


def filter_token(name: str) -> re.Pattern[str]:
    """``| name`` or ``{% filter name``: the caret goes under the name."""
    return re.compile(rf"(?:\|\s*|\{{%[-+]?\s*filter\s+)(?P<at>{re.escape(name)})(?!\w)")


def block_token(name: str) -> re.Pattern[str]:
    return re.compile(rf"\{{%[-+]?\s*filter\s+{re.escape(name)}(?!\w)")


def _tag_token(tag: str) -> re.Pattern[str]:
    return re.compile(rf"\{{%[-+]?\s*{re.escape(tag)}(?!\w)")


_UNKNOWN_TAG = re.compile(r"unknown tag '(\w+)'")
_UNCLOSED = re.compile(r"^Unexpected end of template\..*block that needs to be closed is '(\w+)'", re.S)


def syntax_error_line(
    env: jinja2.Environment, source: str, error: jinja2.TemplateSyntaxError
) -> tuple[int | None, re.Pattern[str] | None]:
    """The line of a syntax error and what to put the caret under there: the tag Jinja did not expect, or
    the block left open, at its opening tag (Jinja numbers an unclosed block by the template's end)."""
    message = error.message or ""
    unclosed = _UNCLOSED.search(message)
    line = _open_block_line(env, source, unclosed.group(1)) if unclosed else None
    named = _UNKNOWN_TAG.search(message) or unclosed
    return line or error.lineno, _tag_token(named.group(1)) if named else None


_BLOCKS = frozenset({"for", "if", "macro", "call", "filter", "with", "block", "autoescape", "set"})


def _open_block_line(env: jinja2.Environment, source: str, tag: str) -> int | None:
    """The line of the innermost ``{% tag %}`` that ``source`` leaves open, or None."""
    open_blocks: list[tuple[str, int]] = []
    statement: list[tuple[int, str, str]] = []  # the tokens of the {% %} being read
    try:
        for line, kind, value in env.lex(source):
            if kind == "block_begin":
                statement = []
            elif kind == "block_end" and statement and statement[0][1] == "name":
                first_line, _, name = statement[0]
                assigns = any(token[1:] == ("operator", "=") for token in statement)
                if name in _BLOCKS and not (name == "set" and assigns):  # {% set x %}…{% endset %} is a block
                    open_blocks.append((name, first_line))
                elif name.startswith("end") and open_blocks and open_blocks[-1][0] == name[3:]:
                    open_blocks.pop()
            elif kind != "whitespace":
                statement.append((line, kind, value))
    except jinja2.TemplateSyntaxError:  # the lexer's own error: no block to name
        return None
    lines = [line for name, line in open_blocks if name == tag]
    return lines[-1] if lines else None


_NO_ATTRIBUTE = re.compile(r"has no attribute '(?P<name>[^']*)'$")


def read_line(
    ast: jinja2.nodes.Template, message: str, error: BaseException
) -> tuple[int | None, re.Pattern[str] | None]:
    """For Jinja's "'dict object' has no attribute 'sku'": the line that holds every read of ``sku``
    (``.sku``, ``['sku']``, or a string such as map(attribute='sku')), or, when they are on several, the one
    whose code raised ``error`` (:func:`_held_line`), and the name to put the caret under."""
    named = _NO_ATTRIBUTE.search(message)
    if named is None:
        return None, None
    name = named.group("name")
    lines = {
        node.lineno
        for node in ast.find_all((jinja2.nodes.Getattr, jinja2.nodes.Const))
        if (isinstance(node, jinja2.nodes.Getattr) and node.attr == name)
        or (isinstance(node, jinja2.nodes.Const) and node.value == name)
    }
    return _held_line(lines, error, attribute_token(name))


def use_line(
    ast: jinja2.nodes.Template, function: str | None, error: BaseException
) -> tuple[int | None, re.Pattern[str] | None]:
    """The line of the template that holds every use of ``function`` (called, as a filter or a filter block,
    or named in a string as map('f') does), or, when they are on several, the one whose code raised ``error``
    (:func:`_held_line`), and the function's name to put the caret under."""
    if function is None:
        return None, None
    lines = {
        node.lineno
        for node in ast.find_all((jinja2.nodes.Call, jinja2.nodes.Filter, jinja2.nodes.Const))
        if (
            isinstance(node, jinja2.nodes.Call)
            and isinstance(node.node, jinja2.nodes.Name)
            and node.node.name == function
        )
        or (isinstance(node, jinja2.nodes.Filter) and node.name == function)
        or (isinstance(node, jinja2.nodes.Const) and node.value == function)
    }
    return _held_line(lines, error, function_token(function))


def _held_line(
    lines: set[int], error: BaseException, token: re.Pattern[str]
) -> tuple[int | None, re.Pattern[str] | None]:
    """The one line of ``lines`` (the uses of what failed), else the line whose code raised ``error`` if it
    is one of them. A value carried in a variable fails where it is used, on a line that may hold none of
    them: the template's start then (None), rather than a line whose code is not at fault."""
    if len(lines) == 1:
        return lines.pop(), token
    raised = _raising_line(error)
    return (raised, token) if raised in lines else (None, None)


def _raising_line(error: BaseException) -> int | None:
    """The line of the template whose code raised ``error``, as Jinja's own tracebacks name it: the innermost
    frame of a template's code, through that template's debug info. None when no template code raised it."""
    line = None
    trace = error.__traceback__
    while trace is not None:
        template = trace.tb_frame.f_globals.get("__jinja_template__")
        if isinstance(template, jinja2.Template):
            line = template.get_corresponding_lineno(trace.tb_lineno)
        trace = trace.tb_next
    return line


_ANY_TAG = re.compile(r"\{[{%]")
_UNSAFE = re.compile(r"access to attribute '(?P<name>[^']*)' of '[^']*' object is unsafe")


def raised_line(error: BaseException) -> tuple[int | None, re.Pattern[str] | None]:
    """For any other failure at run time (a TypeError from the data, a sandbox refusal, the loop budget): the
    line of the template whose code raised it (:func:`_raising_line`), and what to put the caret under there:
    the attribute refused, the loop over budget, else the line's first tag. None when no template code raised
    it (the output's size is checked after the render)."""
    line = _raising_line(error)
    if line is None:
        return None, None
    unsafe = _UNSAFE.search(str(error))
    if unsafe is not None:
        return line, attribute_token(unsafe.group("name"))
    return line, _tag_token("for") if isinstance(error, BudgetExceeded) else _ANY_TAG
