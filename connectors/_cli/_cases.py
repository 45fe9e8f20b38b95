"""The cases file of ``shipmap test`` (docs/testing-mappings.md): ``x.cases.yaml`` beside the mapping ``x.yaml``,
read into :class:`Suite` with every mistake located (file, line, column, the line's text), as a mapping's are.
``test`` runs the cases; the studio and ``validate`` read them too.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jmespath
import yaml
from jmespath.exceptions import JMESPathError
from shipmap.engine import (
    Location,
    MappingError,
    MappingStructureError,
    MappingSyntaxError,
    PayloadValidationError,
    ShipmapError,
    TransformError,
)
from shipmap.engine._errors import file_order
from shipmap.engine._lint import nearest
from shipmap.engine._yaml import decode_utf8, load_located

CASES_SUFFIX = ".cases.yaml"
MAX_CASES_BYTES = 2 * 1024 * 1024
MAX_CASES_ERRORS = 100  # the first ones in the file: a file wrong throughout is not read out whole
_CASE_KEYS = (
    "name", "description", "source", "documents", "select", "expect", "match", "skipped", "absent", "error"
)  # fmt: skip
_FILE_KEYS = ("mapping", "description", "cases")
ERROR_KEYS = ("type", "target", "field", "message", "source_path")
# What an expected error's type can name: the classes a target fails with (a mapping error, a payload that
# breaks its kind) and their engine bases; `shipmap test` compares it with the failure's class and its bases.
_FAILURES = (TransformError, PayloadValidationError)
ERROR_TYPES = tuple(
    dict.fromkeys(
        [failure.__name__ for failure in _FAILURES]
        + [cls.__name__ for failure in _FAILURES for cls in failure.__mro__ if issubclass(cls, ShipmapError)]
    )
)
# A payload's name: its target's, with the element's key for a fan-out target (each:), as in fulfillment[7].
_PAYLOAD_NAME = re.compile(r"(?P<target>[^.\[\]]+)(?:\[(?P<key>[^\]]+)\])?")


class _CasesLoader(yaml.SafeLoader):
    """YAML as JSON sees it: dates stay text and only true/false are booleans (so `yes`, `NO` stay text)."""


_CasesLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:bool")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_CasesLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


@dataclass
class Case:
    name: str
    location: Location
    source: Any  # the document itself, or a Path to read it from
    select: str | None = None
    documents: dict[str, Any] | None = None  # named documents (each a document or a Path): the event
    expect: dict[str, Any] = field(default_factory=dict)
    exact: set[str] = field(default_factory=set)
    skipped: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    # Where each expected error names its target (its `target:` value), else the error itself: parallel to
    # ``errors``, so a target the mapping lacks is said there (``unknown_error_targets``).
    error_locations: list[Location] = field(default_factory=list)


class CasesFileErrors(MappingStructureError):
    """Every mistake found in a cases file (more than one), in the file's order, each its own located error
    (``errors``). It reads as its first (message, place, hint); ``render`` shows them all."""

    def __init__(self, errors: Sequence[MappingError]) -> None:
        first = errors[0]
        super().__init__(first.message, location=first.location, hint=first.hint)
        self.errors = tuple(errors)

    def render(self) -> str:
        return "\n".join(error.render() for error in self.errors)


@dataclass
class Suite:
    file: Path
    mapping_path: Path
    cases: list[Case]


def load_suite(path: Path) -> Suite:
    """The cases file read, or every mistake in it located (up to ``MAX_CASES_ERRORS``): one error, or a
    :class:`CasesFileErrors` of them. A file that is not YAML, or not an object with a ``cases`` list, is one
    error: nothing more can be read of it."""
    file = str(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise MappingError(
            f"cannot read cases file: {error.strerror}", location=Location(file, 1, 1)
        ) from None
    if len(raw) > MAX_CASES_BYTES:
        raise MappingSyntaxError("cases file is larger than 2 MiB", location=Location(file, 1, 1))
    text = decode_utf8(raw, file, "cases file")
    lines = text.splitlines()
    # The mappings' bounded loader first (alias bombs, depth, size, tags: each a located error); the node
    # tree is then safe to compose for the locations below.
    found: list[MappingError] = []
    duplicates: list[MappingSyntaxError] = []  # reported with the file's other mistakes
    data = load_located(text, file, str, what="cases file", duplicates=duplicates).value
    found += duplicates
    try:
        node = yaml.compose(text, Loader=_CasesLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = _location(file, lines, mark.line, mark.column) if mark else Location(file, 1, 1)
        raise MappingSyntaxError(f"not valid YAML: {getattr(error, 'problem', error)}", location=at) from None

    def where(item: Any) -> Location:
        mark = item.start_mark
        return _location(file, lines, mark.line, mark.column)

    if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode):
        raise MappingStructureError(
            "a cases file is an object with a 'cases' list", location=Location(file, 1, 1)
        )
    found += _unknown_keys(data, _FILE_KEYS, node, "the cases file", file, lines)
    items = data.get("cases")
    items_node = _child(node, "cases")
    if not isinstance(items, list) or not items or not isinstance(items_node, yaml.SequenceNode):
        found.append(
            MappingStructureError(
                "'cases' must be a non-empty list of cases",
                location=where(items_node) if items_node is not None else Location(file, 1, 1),
            )
        )
        raise _one_or_all(found)
    base = path.parent
    mapping_name = data.get("mapping")
    if mapping_name is None:
        mapping_path = path.with_name(path.name[: -len(CASES_SUFFIX)] + ".yaml")
    elif isinstance(mapping_name, str):
        mapping_path = base / mapping_name
    else:
        found.append(
            MappingStructureError("'mapping' must be a file name", location=where(_child(node, "mapping")))
        )
        mapping_path = path
    cases: list[Case] = []
    names: set[str] = set()
    for item, item_node in zip(items, items_node.value, strict=True):
        if len(found) >= MAX_CASES_ERRORS:
            break
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str) and name in names:  # said of a case with other mistakes too
            found.append(MappingStructureError(f"two cases are named {name!r}", location=where(item_node)))
        if isinstance(name, str):
            names.add(name)
        try:  # a case's first mistake ends its reading, not the file's: the next case is read
            case = _case(item, item_node, base, file, lines, found)
        except MappingError as error:
            found.append(error)
            continue
        if case is not None:
            cases.append(case)
    if found:
        raise _one_or_all(found)
    return Suite(path, mapping_path, cases)


def _one_or_all(found: list[MappingError]) -> MappingError:
    """What was found, in the file's order (the first ``MAX_CASES_ERRORS``): one as itself."""
    found.sort(key=lambda error: file_order(error.location))
    return found[0] if len(found) == 1 else CasesFileErrors(found[:MAX_CASES_ERRORS])


def split_payload_name(name: str) -> tuple[str, str | None] | None:
    """``(target, key)`` of a payload name (``("fulfillment", "7")``, ``("order", None)``), or None when the
    text is neither ``target`` nor ``target[key]``."""
    match = _PAYLOAD_NAME.fullmatch(name)
    return (match["target"], match["key"]) if match else None


def payload_name_of(path: str) -> str:
    """The payload an ``absent:`` field path starts at: ``fulfillment[7]`` of ``fulfillment[7].shipment_status``,
    ``order`` of ``order.line_items[1].properties`` ("" when the path starts with neither)."""
    match = _PAYLOAD_NAME.match(path)
    return match[0] if match else ""


def _case(
    item: Any, node: yaml.Node, base: Path, file: str, lines: list[str], found: list[MappingError]
) -> Case | None:
    """A case read; None when it, or an expected error of it, has unknown keys (each added to ``found``, the
    case read no further), else MappingError for its first mistake."""
    location = _location(file, lines, node.start_mark.line, node.start_mark.column)

    def fail(message: str, key: str | None = None, *, at_key: bool = False) -> MappingStructureError:
        """At ``key``'s value (at the key itself with ``at_key``: a key that must not be there), else at the
        case."""
        child = (_key_node if at_key else _child)(node, key) if key else None
        at = _location(file, lines, child.start_mark.line, child.start_mark.column) if child else location
        return MappingStructureError(message, location=at)

    if not isinstance(item, dict):
        raise fail("a case is an object with 'name' and 'source'")
    unknown = _unknown_keys(item, _CASE_KEYS, node, "a case", file, lines)
    if unknown:  # each one said, and nothing they explain: 'sorce' is not also "needs a 'source'"
        found += unknown
        return None
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise fail("a case needs a 'name'")
    documents = item.get("documents")
    if documents is not None:
        if "source" in item:
            raise fail("a case takes 'source' or 'documents', not both", "documents")
        if not isinstance(documents, dict) or not documents:
            raise fail("'documents' maps document names to files (or inline documents)", "documents")
        documents = {
            str(key): base / value if isinstance(value, str) else value for key, value in documents.items()
        }
    elif "source" not in item:
        raise fail(
            f"case {name!r} needs a 'source': a file path (relative to the cases file) or a document, "
            "or 'documents': named documents"
        )
    source = item.get("source")
    if isinstance(source, str):
        source = base / source
    select = item.get("select")
    if documents is not None and "select" in item:
        # Nothing to apply it to: the event is {name: document}, and no document is the case's "source".
        raise fail(
            f"case {name!r} has 'documents': 'select' takes a document out of a 'source' only, and would"
            " be ignored here (write the document itself under its name, or the whole event as one"
            " 'source' file and select from that)",
            "select",
            at_key=True,
        )
    if select is not None and not isinstance(select, str):
        raise fail("'select' is a JMESPath expression", "select")
    if select is not None:  # here, so validate finds it too, at its line, not the case's
        try:
            jmespath.compile(select)
        except JMESPathError as error:
            position = getattr(error, "lex_position", None)
            at = f" at character {position + 1}" if isinstance(position, int) else ""
            raise fail(f"'select' is not a valid JMESPath expression{at}", "select") from None
    # A check key written but empty would check nothing while the case passed on its other keys.
    for key in ("expect", "match", "skipped", "absent", "error"):
        if key in item and item[key] in (None, {}, [], ""):
            raise fail(
                f"'{key}' of case {name!r} is empty: it would check nothing (remove it, or fill it)",
                key,
                at_key=True,
            )
    expect = item.get("expect", {})
    if not isinstance(expect, dict):
        raise fail("'expect' maps target names to the payload parts expected", "expect")
    match = item.get("match", "partial")
    if isinstance(match, str):
        if match not in ("partial", "exact"):
            raise fail("'match' is partial or exact, or an object of target: partial|exact", "match")
        if "match" in item and not expect:
            raise fail(
                f"'match' compares the payloads of 'expect', and case {name!r} expects none",
                "match",
                at_key=True,
            )
        exact = set(expect) if match == "exact" else set()
    elif isinstance(match, dict) and all(mode in ("partial", "exact") for mode in match.values()):
        # A name that is not expected would change nothing: the payload it meant is compared partially.
        unexpected = sorted(str(target) for target in match if target not in expect)
        if unexpected:
            raise fail(
                f"'match' names {', '.join(repr(t) for t in unexpected)}, which case {name!r} does not expect"
                f" (it expects {', '.join(sorted(map(str, expect))) or 'nothing'})",
                "match",
            )
        exact = {target for target, mode in match.items() if mode == "exact"}
    else:
        raise fail("'match' is partial or exact, or an object of target: partial|exact", "match")
    skipped = _strings(
        item.get("skipped", []), lambda: fail("'skipped' is a list of target names", "skipped")
    )
    for index, target in enumerate(skipped):
        # A skipped target gives no payload, so a payload expected of it can never be there.
        clash = [str(e) for e in expect if target in (str(e), (split_payload_name(str(e)) or ("",))[0])]
        if clash:
            skipped_node = _child(node, "skipped")
            entry = skipped_node.value[index] if isinstance(skipped_node, yaml.SequenceNode) else skipped_node
            mark = (entry or node).start_mark
            raise MappingStructureError(
                f"case {name!r} lists target '{target}' under 'skipped' and expects"
                f" {', '.join(repr(c) for c in clash)} under 'expect': a skipped target gives no payload, so"
                " the case can never pass",
                location=_location(file, lines, mark.line, mark.column),
                hint="keep the one the case means: 'skipped' (no payload) or 'expect' (this payload)",
            )
    absent = _strings(item.get("absent", []), lambda: fail("'absent' is a list of field paths", "absent"))
    raw_errors = item.get("error", [])
    raw_errors = [raw_errors] if isinstance(raw_errors, dict) else raw_errors
    errors: list[dict[str, str]] = []
    error_locations: list[Location] = []
    if not isinstance(raw_errors, list):
        raise fail(
            "'error' is an object (type, target, field, message, source_path) or a list of them", "error"
        )
    error_node = _child(node, "error")
    error_nodes = error_node.value if isinstance(error_node, yaml.SequenceNode) else [error_node]
    for expected, expected_node in zip(raw_errors, error_nodes, strict=False):
        if isinstance(expected, dict) and expected_node is not None:
            unknown = _unknown_keys(expected, ERROR_KEYS, expected_node, "an expected error", file, lines)
            if unknown:  # each said at its key, as a case's own unknown keys are
                found += unknown
                return None
        if not isinstance(expected, dict) or not expected or set(expected) - set(ERROR_KEYS):
            raise fail(f"an expected error takes the keys {', '.join(ERROR_KEYS)}", "error")
        kind = str(expected.get("type"))
        if "type" in expected and kind not in ERROR_TYPES:
            # Compared with the failure's class and its bases by `shipmap test`: any other name never matches.
            close = difflib.get_close_matches(kind, ERROR_TYPES, n=1)
            type_node = _child(expected_node, "type") if expected_node is not None else None
            mark = (type_node or node).start_mark
            raise MappingStructureError(
                f"an expected error's type is one of {', '.join(ERROR_TYPES)}, not {kind!r}",
                location=_location(file, lines, mark.line, mark.column),
                hint=f"did you mean {close[0]!r}?" if close else None,
            )
        errors.append({key: str(value) for key, value in expected.items()})
        target_node = _child(expected_node, "target") if expected_node is not None else None
        mark = (target_node or expected_node or node).start_mark
        error_locations.append(_location(file, lines, mark.line, mark.column))
    if not (expect or skipped or absent or errors):
        raise fail(f"case {name!r} checks nothing: give it expect, skipped, absent or error")
    return Case(
        name, location, source, select, documents, expect, exact, skipped, absent, errors, error_locations
    )


def unknown_error_targets(case: Case, targets: Sequence[str], mapping_file: str) -> list[MappingError]:
    """An error for each expected error whose ``target`` names no target of the mapping (``targets``), at its
    ``target:`` value, with the nearest name: it could never match, and the case would fail saying only
    that the error did not happen. ``target[key]`` names a fan-out target's payload, by its target."""
    found: list[MappingError] = []
    for expected, location in zip(case.errors, case.error_locations, strict=True):
        wanted = expected.get("target")
        if wanted is None:
            continue
        parts = split_payload_name(wanted)
        if parts is not None and parts[0] in targets:
            continue
        close = nearest(parts[0] if parts else wanted, sorted(targets))
        found.append(
            MappingError(
                f"case {case.name!r} expects an error of target '{wanted}', which {mapping_file} does not"
                f" have (it has {', '.join(sorted(targets))}): the error could never match",
                location=location,
                hint=f"did you mean '{close}'?" if close else None,
            )
        )
    return found


def _strings(value: Any, fail: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise fail()
    return list(value)


def _unknown_keys(
    data: dict[str, Any], allowed: Sequence[str], node: yaml.Node, what: str, file: str, lines: list[str]
) -> list[MappingError]:
    """An error for each key of ``data`` that is not ``allowed``, at the key."""
    unknown: list[MappingError] = []
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            child = _key_node(node, str(key))
            mark = (child or node).start_mark
            unknown.append(
                MappingStructureError(
                    f"unknown key '{key}' in {what}",
                    location=_location(file, lines, mark.line, mark.column),
                    hint=(f"did you mean '{close[0]}'? " if close else "")
                    + f"known keys: {', '.join(allowed)}",
                )
            )
    return unknown


def _key_node(node: yaml.Node, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, _ in node.value:
            if key_node.value == key:
                return key_node  # type: ignore[no-any-return]
    return None


def _child(node: yaml.Node, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value in node.value:
            if key_node.value == key:
                return value  # type: ignore[no-any-return]
    return None


def _location(file: str, lines: list[str], line: int, column: int) -> Location:
    text = lines[line] if 0 <= line < len(lines) else ""
    return Location(file, line + 1, column + 1, text)
