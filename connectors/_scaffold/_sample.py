"""Reading the sample: its documents, its leaves and arrays, and which part of it one event is."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipmap.engine import ShipmapError, read_documents
from shipmap.engine._paths import IDENTIFIER  # one rule for what JMESPath need not quote

from ._model import ScaffoldError

_MAX_DEPTH = 6
_MAX_DOCUMENTS = 1000  # of a batch sample: init learns from the first one, the case selects it
NDJSON_SUFFIXES = (".ndjson", ".jsonl")


# --- reading the sample -------------------------------------------------------------------------------------


def _read_sample(path: Path) -> tuple[Any, str]:
    """The sample as one value: an object, or a list of the documents of a JSON array or NDJSON file. A sample
    that cannot be read is named as preview names an input: its file, line and column."""
    if path.is_dir():
        raise ScaffoldError(f"the sample {path} is a directory: name one JSON or NDJSON file")
    try:
        documents = [d.unwrap() for d in itertools.islice(read_documents(path), _MAX_DOCUMENTS)]
    except ShipmapError as error:
        raise ScaffoldError(f"cannot read the sample: {error.message}", location=error.location) from None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:  # read above already: a file that changed since
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise ScaffoldError(f"cannot read the sample {path}: {reason}") from None
    batch = len(documents) > 1 or text.lstrip().startswith("[") or path.suffix.lower() in NDJSON_SUFFIXES
    document: Any = documents if batch else (documents[0] if documents else None)
    if not isinstance(document, dict | list) or not document:
        raise ScaffoldError(f"sample {path} holds no JSON object to learn from")
    return document, text


def _relative(path: Path, folder: Path) -> str:
    try:
        return path.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


# --- leaves and arrays of the sample ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Leaf:
    parts: tuple[str | int, ...]
    value: Any

    @property
    def names(self) -> list[str]:
        return [p for p in self.parts if isinstance(p, str)]


def _leaves(node: Any, prefix: tuple[str | int, ...] = ()) -> Iterator[_Leaf]:
    """Scalar values under ``node``; arrays are entered at their first element (``[0]``)."""
    if len(prefix) > _MAX_DEPTH or not isinstance(node, dict):
        return
    for key, value in node.items():
        here = (*prefix, str(key))
        if isinstance(value, dict):
            yield from _leaves(value, here)
        elif isinstance(value, list):
            if value and isinstance(value[0], dict):
                yield from _leaves(_merged(value), (*here, 0))
            elif value and not isinstance(value[0], list):
                yield _Leaf((*here, 0), value[0])
        else:
            yield _Leaf(here, value)


def _merged(elements: list[Any]) -> dict[str, Any]:
    """One element standing for them all: every key any element has, with its first non-null value."""
    merged: dict[str, Any] = {}
    for element in elements[:50]:
        if not isinstance(element, dict):
            continue
        for key, value in element.items():
            if merged.get(key) is None:
                merged[key] = value
    return merged


def _arrays(node: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], list[Any]]]:
    """Arrays of objects reachable from ``node`` through objects only (``each:`` takes a path, not [0])."""
    if len(prefix) > 4 or not isinstance(node, dict):
        return
    for key, value in node.items():
        here = (*prefix, str(key))
        if isinstance(value, list) and value and isinstance(value[0], dict):
            yield here, value
        elif isinstance(value, dict):
            yield from _arrays(value, here)


def _jinja_path(parts: Sequence[str | int]) -> str | None:
    if not all(isinstance(p, int) or IDENTIFIER.match(p) for p in parts):
        return None
    return "this" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def _list_elements(document: Any, select: str | None) -> list[Any]:
    if select is None:
        return []
    owner = document
    if select != "[0]":
        for part in select.removesuffix("[0]").split("."):
            owner = owner.get(part) if isinstance(owner, dict) else None
    return owner if isinstance(owner, list) else []


def _dict_nodes(node: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    if not isinstance(node, dict) or len(prefix) > 3:
        return
    yield prefix, node
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _dict_nodes(value, (*prefix, str(key)))
