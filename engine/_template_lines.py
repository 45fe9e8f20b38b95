"""Where an error inside a template is in the mapping file: the line Jinja names (or, for a block left open,
the block's opening tag; for a function failing or a read missing at run time, the one line that holds every
use of what failed, else the one of them whose code raised it; for any other failure at run time, the line
whose code raised it, or in an expression written over several lines the line of its part that failed), and
on it the tag or name at fault, inside a {{ }} or {% %} and not in the text around
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


def raised_line(
    error: BaseException, ast: jinja2.nodes.Template, source_lines: list[str]
) -> tuple[int | None, re.Pattern[str] | None]:
    """For any other failure at run time (a TypeError from the data, a sandbox refusal, the loop budget): the
    line of the template whose code raised it (:func:`_raising_line`), and what to put the caret under there:
    the attribute refused, the loop over budget, else the line's first tag. None when no template code raised
    it (the output's size is checked after the render). Jinja names the line where the expression or tag
    starts; one written over several lines (``source_lines``: the template's, as Jinja numbers them) is
    looked into (:func:`_failed_part`) for the part that failed."""
    line = _raising_line(error)
    if line is None:
        return None, None
    part = _failed_part(error, ast, line, source_lines)
    if part is not None:
        return part
    unsafe = _UNSAFE.search(str(error))
    if unsafe is not None:
        return line, attribute_token(unsafe.group("name"))
    return line, _tag_token("for") if isinstance(error, BudgetExceeded) else _ANY_TAG


# What a TypeError or ZeroDivisionError says, and the operations of a template that can say it.
_OPERATORS: dict[type[jinja2.nodes.Node], str] = {
    jinja2.nodes.Add: "+",
    jinja2.nodes.Sub: "-",
    jinja2.nodes.Mul: "*",
    jinja2.nodes.Div: "/",
    jinja2.nodes.FloorDiv: "//",
    jinja2.nodes.Mod: "%",
    jinja2.nodes.Pow: "**",
}
_COMPARISONS = {"eq": "==", "ne": "!=", "lt": "<", "lteq": "<=", "gt": ">", "gteq": ">="}
_UNSUPPORTED = re.compile(r"unsupported operand type\(s\) for (?P<op>\S+?)(?: or pow\(\))?:")
_NOT_SUPPORTED = re.compile(r"'(?P<op>[<>=!]=?)' not supported between instances")
_UNARY = re.compile(r"bad operand type for unary (?P<op>[-+])")


def _failed_kinds(error: BaseException) -> tuple[str, str] | None:
    """What kind of part of a template raised ``error``: ("operator", "+"), ("compare", "<"), ("unary", "-"),
    ("call", ""), ("attribute", name); None for an error no one part words."""
    message = str(error)
    if isinstance(error, ZeroDivisionError):
        return "operator", "/"
    unsafe = _UNSAFE.search(message)
    if unsafe is not None:
        return "attribute", unsafe.group("name")
    if not isinstance(error, TypeError):
        return None
    for pattern, kind in ((_UNSUPPORTED, "operator"), (_NOT_SUPPORTED, "compare"), (_UNARY, "unary")):
        found = pattern.search(message)
        if found is not None:
            return kind, found.group("op")
    if message.startswith("can only concatenate") or message.startswith("can't multiply sequence"):
        return "operator", "+" if message.startswith("can only") else "*"
    if message.endswith("object is not callable"):
        return "call", ""
    return None


def _roots(ast: jinja2.nodes.Template) -> list[tuple[int, jinja2.nodes.Expr]]:
    """Each expression of ``ast`` that Jinja's code runs as one, with the line its debug info gives it: an
    output's own line, else its statement's (``{% if``, ``{% set``...)."""
    roots: list[tuple[int, jinja2.nodes.Expr]] = []
    pending: list[jinja2.nodes.Node] = [ast]
    while pending:
        node = pending.pop()
        for child in node.iter_child_nodes():
            if isinstance(child, jinja2.nodes.Expr):
                roots.append((child.lineno if isinstance(node, jinja2.nodes.Output) else node.lineno, child))
            else:
                pending.append(child)
    return roots


def _failed_part(
    error: BaseException, ast: jinja2.nodes.Template, line: int, template_lines: list[str]
) -> tuple[int, re.Pattern[str]] | None:
    """The line of the part of the expression Jinja runs at ``line`` that raised ``error`` (an operator, a
    comparison, a call, an attribute the sandbox refuses), and the token to put the caret under: when every
    such part of it is on one line. None otherwise, and for other errors."""
    kind = _failed_kinds(error)
    if kind is None:
        return None
    what, name = kind
    places: set[int] = set()
    token: re.Pattern[str] | None = None
    for root_line, root in _roots(ast):
        if root_line != line:
            continue
        for node in (root, *root.find_all(jinja2.nodes.Expr)):
            if what == "operator" and isinstance(node, jinja2.nodes.BinExpr) and type(node) in _OPERATORS:
                symbol = _OPERATORS[type(node)]
                if name == symbol or (name == "/" and symbol in ("//", "%")):
                    token = _operator_token(symbol)
                    places.add(_operator_line(node.right.lineno, node.lineno, token, template_lines))
            elif what == "compare" and isinstance(node, jinja2.nodes.Compare):
                for operand in node.ops:
                    if _COMPARISONS.get(operand.op) == name:
                        token = _operator_token(name)
                        places.add(
                            _operator_line(operand.expr.lineno, node.expr.lineno, token, template_lines)
                        )
            elif what == "unary" and isinstance(node, jinja2.nodes.Neg | jinja2.nodes.Pos):
                if (name == "-") == isinstance(node, jinja2.nodes.Neg):
                    token = _operator_token(name)
                    places.add(node.lineno)
            elif what == "call" and isinstance(node, jinja2.nodes.Call):
                token = re.compile(r"\(")
                places.add(node.lineno)
            elif what == "attribute" and isinstance(node, jinja2.nodes.Getattr) and node.attr == name:
                token = attribute_token(name)
                places.add(node.lineno)
    if len(places) != 1 or token is None or places == {line}:
        return None
    return places.pop(), token


def _operator_token(symbol: str) -> re.Pattern[str]:
    """``symbol`` as an operator: not part of a longer one, nor a tag's whitespace control (``{{-``, ``-%}``)."""
    return re.compile(rf"(?<![*/{{%<>=!]){re.escape(symbol)}(?![*/}}%=])")


def _operator_line(right: int, left: int, token: re.Pattern[str], template_lines: list[str]) -> int:
    """The line of the operator between an operand starting on line ``left`` and one starting on ``right``:
    the last of those lines that has it."""
    for number in range(right, left - 1, -1):
        if 1 <= number <= len(template_lines) and token.search(template_lines[number - 1]):
            return number
    return right
