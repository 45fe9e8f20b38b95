"""``shipmap preview MAPPING SOURCE``: map source documents and print the payloads. Sends nothing."""

from __future__ import annotations

import argparse
import itertools
import sys
from typing import Any

from shipmap.engine import (
    CompiledTarget,
    PayloadValidationError,
    ShipmapError,
    SourceDocument,
    SourceError,
    load_mapping,
    read_documents,
)

from ._output import BOLD, DIM, RED, dump_json, err, paint, use_color


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mapping", help="mapping file, or a packaged mapping such as shopify/order")
    parser.add_argument(
        "source", help="a JSON file, an NDJSON file (one preview per line), a directory, or - for stdin"
    )
    parser.add_argument("--target", action="append", help="only this target (repeatable)")
    parser.add_argument("--json", action="store_true", help="plain JSON on stdout, even on a terminal")


def run(args: argparse.Namespace) -> int:
    mapping = load_mapping(args.mapping)
    targets = args.target or [target.name for target in mapping.targets]
    compiled = [mapping.target(name) for name in targets]
    pretty = not args.json and sys.stdout.isatty()
    color = pretty and use_color(sys.stdout)
    err_color = use_color(sys.stderr)
    documents = read_documents(args.source, stdin=sys.stdin)
    first = next(documents, None)
    if first is None:
        err(f"{args.source}: no source documents")
        return SourceError.exit_code
    second = next(documents, None)
    # One document prints as an indented object; several print one line each (NDJSON), so pipes stay simple.
    many = second is not None
    worst = 0
    for document in itertools.chain([first, second] if many else [first], documents):
        assert document is not None
        worst = max(worst, _preview(document, compiled, pretty, color, err_color, many=many))
    return worst


def _preview(
    document: SourceDocument,
    targets: list[CompiledTarget],
    pretty: bool,
    color: bool,
    err_color: bool,
    *,
    many: bool,
) -> int:
    try:
        source = document.unwrap()
    except ShipmapError as error:
        err(paint(error.render(), RED, err_color))
        return error.exit_code
    result: dict[str, dict[str, Any]] = {}
    code = 0
    for target in targets:
        try:
            payload = target.produce(source)
        except ShipmapError as error:
            err(paint(f"{document.origin}: ", DIM, err_color) + error.render())
            code = max(code, error.exit_code)
            continue
        if payload is None:
            if pretty:
                err(paint(f"{target.name}: skipped (its 'when' guard does not hold)", DIM, err_color))
            continue
        result[target.name] = payload
        problems = target.problems(payload)
        if problems:
            err(PayloadValidationError(target.name, target.kind.name, problems).render())
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
            print(paint(header, BOLD, color))
            print(dump_json(payload, pretty=True, color=color))
    else:
        print(dump_json(result, pretty=not many))
    return code
