"""``shipmap preview MAPPING SOURCE``: map source documents and print the payloads. Sends nothing."""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from shipmap.connectors._parallel import ordered_map
from shipmap.engine import (
    CompiledMapping,
    CompiledTarget,
    PayloadValidationError,
    ShipmapError,
    SourceDocument,
    SourceError,
    load_mapping,
)
from shipmap.engine._chunks import SourceChunk, read_chunks

from ._output import BOLD, CHUNK_LINES, DIM, RED, add_jobs_argument, dump_json, err, paint, use_color


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mapping", help="mapping file, or a packaged mapping such as shopify/order")
    parser.add_argument(
        "source", help="a JSON file, an NDJSON file (one preview per line), a directory, or - for stdin"
    )
    parser.add_argument("--target", action="append", help="only this target (repeatable)")
    parser.add_argument("--json", action="store_true", help="plain JSON on stdout, even on a terminal")
    add_jobs_argument(parser)


def run(args: argparse.Namespace) -> int:
    mapping = load_mapping(args.mapping)
    targets = args.target or [target.name for target in mapping.targets]
    for name in targets:
        mapping.target(name)  # an unknown --target fails here, before anything is read
    pretty = not args.json and sys.stdout.isatty()
    color = pretty and use_color(sys.stdout)
    err_color = use_color(sys.stderr)
    chunks = read_chunks(args.source, stdin=_stdin(), lines=CHUNK_LINES)
    first = _first_documents(chunks)
    if first is None:
        err(f"{args.source}: no source documents")
        return SourceError.exit_code
    documents, rest = first
    # One document prints as an indented object; several print one line each (NDJSON), so pipes stay simple.
    many = len(documents) > 1 or rest is not None
    settings = _Settings(mapping, tuple(targets), pretty, color, err_color, many)
    worst = _write(_preview_chunk(settings, documents))
    if rest is not None:
        for rendered in ordered_map(_preview_lines, settings, rest, jobs=args.jobs):
            worst = max(worst, _write(rendered))
    return worst


def _stdin() -> Any:
    return sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin


def _first_documents(
    chunks: Iterator[SourceChunk],
) -> tuple[list[SourceDocument], Iterator[SourceChunk] | None] | None:
    """The documents of the first chunks that hold any, and the chunks after them (None at the end)."""
    for chunk in chunks:
        documents = chunk.documents()
        if not documents:
            continue
        following = next(chunks, None)
        if following is None:
            return documents, None
        return documents, itertools.chain([following], chunks)
    return None


@dataclass(frozen=True)
class _Settings:
    """What a worker process needs to preview a chunk (picklable: the mapping pickles as its text)."""

    mapping: CompiledMapping
    targets: tuple[str, ...]
    pretty: bool
    color: bool
    err_color: bool
    many: bool


_Rendered = list[tuple[str, str]]  # ("out" | "err", text) in the order they are written, and the exit code


def _write(rendered: tuple[_Rendered, int]) -> int:
    lines, code = rendered
    for stream, text in lines:
        print(text, file=sys.stdout if stream == "out" else sys.stderr)
    return code


def _preview_lines(settings: _Settings, chunk: SourceChunk) -> tuple[_Rendered, int]:
    return _preview_chunk(settings, chunk.documents())


def _preview_chunk(settings: _Settings, documents: list[SourceDocument]) -> tuple[_Rendered, int]:
    targets = [settings.mapping.target(name) for name in settings.targets]
    lines: _Rendered = []
    worst = 0
    for document in documents:
        worst = max(worst, _preview(document, targets, settings, lines))
    return lines, worst


def _preview(
    document: SourceDocument, targets: list[CompiledTarget], settings: _Settings, lines: _Rendered
) -> int:
    pretty, color, err_color, many = settings.pretty, settings.color, settings.err_color, settings.many
    try:
        source = document.unwrap()
    except ShipmapError as error:
        lines.append(("err", paint(error.render(), RED, err_color)))
        return error.exit_code
    result: dict[str, dict[str, Any]] = {}
    code = 0
    for target in targets:
        try:
            payload = target.produce(source)
        except ShipmapError as error:
            lines.append(("err", paint(f"{document.origin}: ", DIM, err_color) + error.render()))
            code = max(code, error.exit_code)
            continue
        if payload is None:
            if pretty:
                lines.append(
                    ("err", paint(f"{target.name}: skipped (its 'when' guard does not hold)", DIM, err_color))
                )
            continue
        result[target.name] = payload
        problems = target.problems(payload)
        if problems:
            lines.append(("err", PayloadValidationError(target.name, target.kind.name, problems).render()))
            code = max(code, PayloadValidationError.exit_code)
    if pretty:
        for name, payload in result.items():
            target = next(t for t in targets if t.name == name)
            try:
                route = f"{target.kind.route.method} {target.kind.route.render(payload)}"
            except KeyError as missing:
                route = f"{target.kind.route.method} {target.kind.route.path} (no value for {missing})"
            header = f"{name} ({target.kind.name}) -> {route}"
            if many:
                header = f"{document.origin}: {header}"
            lines.append(("out", paint(header, BOLD, color)))
            lines.append(("out", dump_json(payload, pretty=True, color=color)))
    else:
        lines.append(("out", dump_json(result, pretty=not many)))
    return code
