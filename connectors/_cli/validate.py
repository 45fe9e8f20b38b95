"""``shipmap validate MAPPING...``: lint mapping files without source data."""

from __future__ import annotations

import argparse
import sys

from shipmap.engine import MappingError, ShipmapError, load_mapping

from ._output import GREEN, RED, YELLOW, err, paint, use_color


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "mappings", nargs="+", metavar="MAPPING", help="mapping files or packaged mapping names"
    )
    parser.add_argument(
        "--strict", action="store_true", help="treat warnings (unused lookups, fragments) as errors"
    )


def run(args: argparse.Namespace) -> int:
    color = use_color(sys.stderr)
    failed = False
    for name in args.mappings:
        try:
            mapping = load_mapping(name)
        except ShipmapError as error:
            err(paint(error.render(), RED, color))
            failed = True
            continue
        problems = mapping.lint()
        errors = [p for p in problems if p.severity == "error" or args.strict]
        for problem in problems:
            style = RED if problem in errors else YELLOW
            err(
                paint(
                    f"{problem.location}: {problem.severity}: {problem.field} {problem.message}", style, color
                )
            )
        if errors:
            failed = True
            continue
        summary = ", ".join(f"{t.name} -> {t.kind.name}" for t in mapping.targets)
        print(paint(f"ok {mapping.file}", GREEN, use_color(sys.stdout)) + f" ({summary})")
    return MappingError.exit_code if failed else 0
