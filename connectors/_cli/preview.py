"""``shipmap preview MAPPING SOURCE``: map source documents and print the payloads. Sends nothing."""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from shipmap.engine import (
    CompiledMapping,
    CompiledTarget,
    Location,
    MappingError,
    PayloadValidationError,
    ShipmapError,
    SourceDocument,
    SourceError,
    TransformError,
    load_mapping,
    read_named,
)
from shipmap.engine._chunks import SourceChunk, read_chunks

from ._output import (
    BOLD,
    CHUNK_LINES,
    DIM,
    RED,
    YELLOW,
    add_jobs_argument,
    dump_json,
    err,
    paint,
    use_color,
)


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mapping", help="mapping file, or a packaged mapping such as shopify/order")
    parser.add_argument(
        "source",
        nargs="?",
        help="a JSON file (a document, or an array of documents), an NDJSON file (one preview per line), "
        "a directory, or - for stdin",
    )
    parser.add_argument(
        "--doc",
        action="append",
        metavar="NAME=FILE",
        help="one named document of an event (repeatable): the mapping reads it as $root.NAME "
        "(instead of SOURCE; see docs/mapping-language.md, several documents per event)",
    )
    parser.add_argument("--target", action="append", help="only this target (repeatable)")
    parser.add_argument("--json", action="store_true", help="plain JSON on stdout, even on a terminal")
    add_jobs_argument(parser)


def run(args: argparse.Namespace) -> int:
    mapping = load_mapping(args.mapping)
    targets = args.target or [target.name for target in mapping.targets]
    for name in targets:
        mapping.target(name)  # an unknown --target fails here, before anything is read
    _warn_unknown_fields(mapping, targets)
    pretty = not args.json and sys.stdout.isatty()
    color = pretty and use_color(sys.stdout)
    err_color = use_color(sys.stderr)
    if args.doc:
        if args.source is not None:
            err("give either SOURCE or --doc NAME=FILE, not both")
            return MappingError.exit_code
        try:
            named = _named_files(args.doc)
            event = SourceDocument("+".join(name for name, _ in named), document=read_named(named))
        except ShipmapError as error:
            err(paint(error.render(), RED, err_color))
            return error.exit_code
        return _write(
            _preview_chunk(_Settings(mapping, tuple(targets), pretty, color, err_color, False), [event])
        )
    if args.source is None:
        err("give a SOURCE file, or the event's named documents with --doc NAME=FILE")
        return MappingError.exit_code
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
        from shipmap.connectors._map._parallel import ordered_map  # not for one document: start-up

        for rendered in ordered_map(_preview_lines, settings, rest, jobs=args.jobs):
            worst = max(worst, _write(rendered))
    return worst


def _warn_unknown_fields(mapping: CompiledMapping, targets: list[str]) -> None:
    """Unknown target fields the kind's contract accepts are warnings, as in validate (the ones it refuses
    fail the payload's validation, as they fail validate)."""
    color = use_color(sys.stderr)
    for problem in mapping.lint():
        known_target = problem.field.split(".")[0] in targets
        if problem.severity == "warning" and known_target and "is not a field" in problem.message:
            err(paint(f"{problem.location}: warning: {problem.field} {problem.message}", YELLOW, color))


def _named_files(specs: list[str]) -> list[tuple[str, str]]:
    named = []
    for spec in specs:
        name, equals, path = spec.partition("=")
        if not equals or not name or not path:
            raise SourceError(f"--doc takes NAME=FILE, got {spec!r}", location=Location(spec, 1, 1))
        named.append((name.strip(), path.strip()))
    return named


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
    runs, code = rendered
    for stream, text in runs:
        print(text, file=sys.stdout if stream == "out" else sys.stderr)
    return code


def _preview_lines(settings: _Settings, chunk: SourceChunk) -> tuple[_Rendered, int]:
    return _preview_chunk(settings, chunk.documents())


def _preview_chunk(settings: _Settings, documents: list[SourceDocument]) -> tuple[_Rendered, int]:
    """The chunk's lines joined into runs of one stream each: a --jobs worker hands the parent a few texts
    to write (for a clean chunk, one), not a line each."""
    targets = [settings.mapping.target(name) for name in settings.targets]
    lines: _Rendered = []
    worst = 0
    for document in documents:
        worst = max(worst, _preview(document, targets, settings, lines))
    runs: _Rendered = []
    for stream, group in itertools.groupby(lines, key=lambda line: line[0]):
        runs.append((stream, "\n".join(text for _, text in group)))
    return runs, worst


def _preview(
    document: SourceDocument, targets: list[CompiledTarget], settings: _Settings, lines: _Rendered
) -> int:
    pretty, color, err_color, many = settings.pretty, settings.color, settings.err_color, settings.many
    try:
        source = document.unwrap()
    except ShipmapError as error:
        lines.append(("err", paint(error.render(), RED, err_color)))
        return error.exit_code
    result: dict[str, tuple[CompiledTarget, dict[str, Any]]] = {}
    code = 0
    where = paint(f"{document.origin}: ", DIM, err_color)
    for target in targets:
        # Every problem of the document at once: on a failure the reference runs again and gathers each
        # failing field; a target (or fan-out element) that failed prints nothing on stdout.
        try:
            produced: list[tuple[str | None, dict[str, Any]]] = target.produce_all(source)
            errors: list[ShipmapError] = []
        except TransformError:
            produced, gathered = target.collect(source)
            errors = list(gathered)
        except ShipmapError as error:
            produced, errors = [], [error]
        for failure in errors:
            lines.append(("err", where + failure.render()))
            code = max(code, failure.exit_code)
        if not produced and not errors:
            skipped = f"{target.name}: skipped ({target.skip_reason(source)})"
            lines.append(("err", paint(skipped, DIM, err_color)))
            continue
        for element, payload in produced:
            label = target.name if element is None else f"{target.name}[{element}]"
            problems = target.problems(payload)
            if problems:
                invalid = PayloadValidationError(label, target.kind.name, problems).render()
                lines.append(("err", where + invalid))
                code = max(code, PayloadValidationError.exit_code)
                continue
            result[label] = (target, payload)
    if pretty:
        for label, (target, payload) in result.items():
            try:
                route = f"{target.kind.route.method} {target.kind.route.render(payload)}"
            except KeyError as missing:
                route = f"{target.kind.route.method} {target.kind.route.path} (no value for {missing})"
            header = f"{label} ({target.kind.name}) -> {route}"
            if many:
                header = f"{document.origin}: {header}"
            lines.append(("out", paint(header, BOLD, color)))
            lines.append(("out", dump_json(payload, pretty=True, color=color)))
    elif result:
        payloads = {label: payload for label, (_, payload) in result.items()}
        lines.append(("out", dump_json(payloads, pretty=not many)))
    return code
