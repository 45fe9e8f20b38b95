"""A safe YAML loader that remembers where every node came from.

PyYAML composes a node tree (which has marks); we build plain Python values from it ourselves so that only
JSON-like tags are accepted, duplicate keys are caught, alias expansion is bounded, and every value's location
is kept in a side table keyed by its path from the document root.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from ._errors import Location, MappingSyntaxError

MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_NODES = 200_000  # after alias expansion: an alias bomb hits this long before memory does
MAX_DEPTH = 64
MAX_SCALAR_CHARS = 100_000

PathKey = tuple[str | int, ...]

_ALLOWED_SCALAR_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:timestamp",
}


@dataclass(frozen=True, slots=True)
class TextPlace:
    """Where the lines of a text value are written in its file, so that an error at line N of a template
    points at that line. In a literal block scalar (``|``) each line of the value is a line of the file, on
    the lines after the indicator, behind the block's indentation. Any other scalar that spans lines is folded
    (YAML joins its lines, and a quoted one has escapes): a line of its value has no exact place, so an error
    in it is put at the scalar's start and says which line of the template it means; one character of it is
    found in the file, though (:meth:`character`: where an expression's error is)."""

    start: Location  # the scalar's first character: its indicator, its quote or its text
    style: str = ""  # "|" for a literal block scalar, "" for a scalar on one line, else how it is folded
    file_lines: tuple[str, ...] = ()  # the file's lines from the scalar's start on (only for several lines)

    def locate(self, text: str, line: int, column: int | None = None) -> tuple[Location, str]:
        """The place of line ``line`` of ``text``, the value written here, at ``column`` of that line (both
        1-based; no column: the line's first non-blank character); and a note for the message, empty when the
        place is exact, else naming the template's line (the place is then the scalar's start)."""
        value_lines = text.split("\n")
        if not 1 <= line <= len(value_lines):
            return self.start, ""
        indent = self._literal_indent(text) if self.style == "|" else None
        if indent is None:
            note = f" (at line {line} in the template starting here)" if len(value_lines) > 1 else ""
            return self.start, note
        line = min(line, len(text.rstrip("\n").split("\n")))  # not past the block's last line of text
        if column is None:
            written = value_lines[line - 1]
            column = len(written) - len(written.lstrip()) + 1
        place = Location(self.start.file, self.start.line + line, indent + column, self.file_lines[line])
        return place, ""

    def character(self, text: str, offset: int) -> Location | None:
        """The place of character ``offset`` of ``text``, the value of a scalar folded over several lines
        (``>``, quoted or plain). YAML joins such lines, so the value's characters are met in the file in the
        same order, blanks, line breaks and indentation aside: the file is walked, each of its characters
        checked against the value's, up to the one at ``offset``. None when they differ (an escape other than
        ``\\"``, ``\\\\`` and ``''``), or for a literal block (:meth:`locate` places its lines)."""
        marks = [character for character in text[: offset + 1] if not character.isspace()]
        if not marks or self.style == "|" or not self.file_lines:
            return None
        quote = self.style if self.style in ("'", '"') else ""
        line, column = (1, 0) if self.style == ">" else (0, self.start.column - 1 + len(quote))
        seen = 0
        while line < len(self.file_lines):
            written = self.file_lines[line]
            while column < len(written):
                character = written[column]
                if character.isspace():
                    column += 1
                    continue
                step = 1
                pair = written[column : column + 2]
                if quote == "'" and pair == "''":
                    step = 2
                elif quote == '"' and character == "\\":
                    if pair not in ('\\"', "\\\\"):
                        return None  # an escape that changes the text
                    step = 2
                elif character == quote:
                    return None  # the closing quote: the value ends before ``offset``
                if written[column + step - 1] != marks[seen]:
                    return None
                seen += 1
                if seen == len(marks):
                    return Location(self.start.file, self.start.line + line, column + 1, written)
                column += step
            line, column = line + 1, 0
        return None

    def _literal_indent(self, text: str) -> int | None:
        """The block's indentation, when every line of ``text`` is the file's line behind it (else None: the
        value is not this block's, or the file changed under it)."""
        value_lines = text.rstrip("\n").split("\n")
        body = self.file_lines[1 : 1 + len(value_lines)]
        if len(body) < len(value_lines):
            return None
        first = next((index for index, written in enumerate(value_lines) if written), None)
        if first is None:
            return None
        indent = len(body[first]) - len(value_lines[first])
        if indent < 0:
            return None
        for written, in_file in zip(value_lines, body, strict=True):
            behind, rest = in_file[:indent], in_file[indent:]
            if behind.strip(" ") or (rest != written and (written or in_file.strip())):
                return None
        return indent


@dataclass(slots=True)
class LocatedDocument:
    """A loaded YAML document and the location of each of its nodes, by path from the root."""

    file: str
    value: Any
    locations: dict[PathKey, Location] = field(default_factory=dict)
    # How each scalar written over several lines is written ("|", ">", a quote or "plain"), and the index
    # of its last line in ``lines``: TextPlace reads the lines of a template from them.
    styles: dict[PathKey, tuple[str, int]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    def where(self, path: PathKey) -> Location:
        """The location of ``path``, or of its nearest ancestor that has one."""
        while path:
            found = self.locations.get(path)
            if found is not None:
                return found
            path = path[:-1]
        return self.locations.get((), Location(self.file, 1, 1))

    def text_place(self, path: PathKey) -> TextPlace:
        """Where the lines of the text value at ``path`` are written (see :class:`TextPlace`)."""
        start = self.where(path)
        written = self.styles.get(path)
        if written is None:
            return TextPlace(start)
        style, last = written
        return TextPlace(start, style, tuple(self.lines[start.line - 1 : last + 1]))

    def key_location(self, path: PathKey) -> Location:
        """Where the key of the mapping entry at ``path`` is written (better for 'unknown key' errors)."""
        return self.locations.get(("#key", *path)) or self.where(path)


def decode_utf8(raw: bytes, file: str, what: str, *, encoding: str = "utf-8") -> str:
    """``raw`` as text, or a :class:`MappingSyntaxError` at the first byte that is not UTF-8, as a line and a
    column (in characters, as an editor counts them), not as Python's byte offset. ``what`` names the file's
    kind (``mapping``, ``cases file``, ``config file``); ``utf-8-sig`` takes off a byte order mark first."""
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as error:
        data = error.object  # without the byte order mark utf-8-sig took off: the positions are in it
        start = data.rfind(b"\n", 0, error.start) + 1
        line = data.count(b"\n", 0, error.start) + 1
        column = len(data[start : error.start].decode("utf-8", "replace")) + 1
        raise MappingSyntaxError(
            f"cannot read {what}: not UTF-8 text (byte 0x{data[error.start]:02x}: {error.reason}); save it as UTF-8",
            location=Location(file, line, column),
        ) from None


def load_located(
    text: str,
    file: str,
    key_text: Callable[[Any], str],
    *,
    what: str = "mapping file",
    duplicates: list[MappingSyntaxError] | None = None,
) -> LocatedDocument:
    """Parse ``text`` into a :class:`LocatedDocument`. Mapping keys become strings through ``key_text``.
    ``what`` names the kind of file in messages (the runtime config and sandbox files load through here too).
    A duplicate key is an error; given ``duplicates``, it is added there instead and the first value kept, so
    that a reader collecting every mistake (a cases file) reports it among the others."""
    if len(text.encode("utf-8", "replace")) > MAX_FILE_BYTES:
        raise MappingSyntaxError(
            f"{what} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB",
            location=Location(file, 1, 1),
        )
    lines = text.splitlines()
    node = _compose_in_c(text)
    if node is not _FAILED:
        return _build(node, file, lines, key_text, what, duplicates)
    # Not read by libyaml (or no libyaml): PyYAML's own reader reads it, and words any error as it always has.
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        raise MappingSyntaxError(
            f"not valid YAML: {error.problem or error.context}", location=_location(file, lines, mark)
        ) from None
    except yaml.YAMLError as error:
        raise MappingSyntaxError(f"not valid YAML: {error}", location=Location(file, 1, 1)) from None
    except RecursionError:
        # Where the reader stopped: inside the nesting, so the error names its line.
        raise MappingSyntaxError(
            "YAML is nested too deeply", location=_location(file, lines, loader.get_mark())
        ) from None
    finally:
        loader.dispose()
    return _build(node, file, lines, key_text, what, duplicates)


_FAILED: Any = object()


def _compose_in_c(text: str) -> Any:
    """The node tree as libyaml composes it (over ten times faster than PyYAML's Python reader, with the same
    nodes, tags and marks), or _FAILED on any error: then the Python reader runs, for its error message."""
    if not yaml.__with_libyaml__:  # pragma: no cover - PyYAML's wheels ship libyaml
        return _FAILED
    try:
        loader = yaml.CSafeLoader(text)  # encodes the text: a lone surrogate fails here
    except Exception:
        return _FAILED
    try:
        return loader.get_single_node()
    except Exception:  # any failure: the Python reader decides and words it
        return _FAILED
    finally:
        loader.dispose()


def _build(
    node: yaml.Node | None,
    file: str,
    lines: list[str],
    key_text: Callable[[Any], str],
    what: str,
    duplicates: list[MappingSyntaxError] | None,
) -> LocatedDocument:
    document = LocatedDocument(file=file, value=None, lines=lines)
    if node is None:
        return document
    builder = _Builder(document, lines, key_text, what, duplicates)
    document.value = builder.build(node, (), 0)
    return document


def _location(file: str, lines: list[str], mark: Any) -> Location:
    if mark is None:
        return Location(file, 1, 1)
    line_text = lines[mark.line] if 0 <= mark.line < len(lines) else ""
    return Location(file, mark.line + 1, mark.column + 1, line_text)


class _Builder:
    def __init__(
        self,
        document: LocatedDocument,
        lines: list[str],
        key_text: Callable[[Any], str],
        what: str,
        duplicates: list[MappingSyntaxError] | None,
    ) -> None:
        self.what = what
        self.duplicates = duplicates
        self.document = document
        self.lines = lines
        self.key_text = key_text
        self.count = 0
        self.constructor = yaml.constructor.SafeConstructor()

    def where(self, node: yaml.Node) -> Location:
        return _location(self.document.file, self.lines, node.start_mark)

    def refuse_tag(self, node: yaml.Node) -> MappingSyntaxError:
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        return self.fail(
            node, f"YAML tag {tag} is not allowed in a {self.what} (only plain JSON-like data is)"
        )

    def fail(self, node: yaml.Node, message: str) -> MappingSyntaxError:
        return MappingSyntaxError(message, location=self.where(node))

    def build(self, node: yaml.Node, path: PathKey, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise self.fail(node, f"YAML expands to more than {MAX_NODES} nodes (an alias bomb?)")
        if depth > MAX_DEPTH:
            raise self.fail(node, f"YAML is nested deeper than {MAX_DEPTH} levels")
        self.document.locations.setdefault(path, self.where(node))
        if isinstance(node, yaml.ScalarNode):
            if node.end_mark.line != node.start_mark.line:
                self.document.styles[path] = (node.style or "plain", node.end_mark.line)
            return self.scalar(node)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != "tag:yaml.org,2002:seq":
                raise self.refuse_tag(node)
            return [self.build(item, (*path, index), depth + 1) for index, item in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            if node.tag != "tag:yaml.org,2002:map":
                raise self.refuse_tag(node)
            return self.mapping(node, path, depth)
        raise self.fail(node, "unsupported YAML node")

    def scalar(self, node: yaml.ScalarNode) -> Any:
        if node.tag not in _ALLOWED_SCALAR_TAGS:
            raise self.refuse_tag(node)
        if len(node.value) > MAX_SCALAR_CHARS:
            raise self.fail(node, f"a value longer than {MAX_SCALAR_CHARS} characters")
        if node.tag == "tag:yaml.org,2002:bool" and node.value.lower() not in ("true", "false"):
            # YAML 1.2 booleans only: yes/no/on/off stay text, so a country code NO is not False.
            return node.value
        if node.tag == "tag:yaml.org,2002:timestamp":
            # Dates stay text: the mapping language parses dates itself, with an explicit zone.
            return node.value
        try:
            return self.constructor.construct_object(node, deep=True)
        except ValueError:  # an int past Python's 4,300-digit limit, say
            raise self.fail(node, "a number too long to read (more than 4,300 digits)") from None

    def mapping(self, node: yaml.MappingNode, path: PathKey, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise self.fail(key_node, "YAML merge keys (<<) are not supported; use a fragment instead")
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, "a mapping key must be a plain value, not a list or an object")
            key = self.key_text(self.scalar(key_node))
            if key in result:
                first = self.document.locations[("#key", *path, key)]
                duplicate = self.fail(key_node, f"duplicate key '{key}' (first written at line {first.line})")
                if self.duplicates is None:
                    raise duplicate
                self.duplicates.append(duplicate)
                continue
            self.document.locations[("#key", *path, key)] = self.where(key_node)
            result[key] = self.build(value_node, (*path, key), depth + 1)
        return result
