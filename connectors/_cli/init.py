"""``shipmap init SAMPLE --name NAME --kind KIND``: scaffold a new retailer from a sample source document.

The work is done by ``shipmap.connectors._scaffold`` (usable as a library); this module parses and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import IO

from shipmap.engine import builtin_kinds
from shipmap.engine._editor_schema import write_editor_schema

from .._plural import counted
from .._scaffold import DEFAULT_TIMEZONE, FieldSuggestion, Scaffold, plan_scaffold, write_scaffold
from .._scaffold._render import EDITOR_SCHEMA_PATH
from ._output import BOLD, DIM, GREEN, YELLOW, paint, use_color

_ROLES = {
    "mapping": "the mapping: {targets}",
    "cases": "a test case for the sample (shipmap test)",
    "sample": "the sample, for the test case",
    "config": "a shipmap run config for the local sandbox",
    "env": "the sandbox's demo credentials: copy it to .env",
    "gitignore": "keeps .env and the journal out of git",
    "schema": "the mapping format's JSON Schema, for your editor (shipmap schema --write schema)",
}
_VALUE_CHARS = 40


def register(parser: argparse.ArgumentParser) -> None:
    kinds = sorted(builtin_kinds())
    parser.add_argument(
        "sample", metavar="SAMPLE", help="a sample source document (JSON; NDJSON: its first line)"
    )
    parser.add_argument("--name", required=True, help="the retailer: the mapping's name and file name")
    parser.add_argument(
        "--kind",
        action="append",
        required=True,
        choices=kinds,
        metavar="KIND",
        help="a target kind, one target each (repeatable): " + ", ".join(kinds),
    )
    parser.add_argument("--dir", metavar="DIR", help="where to write the files (default: ./NAME)")
    parser.add_argument(
        "--timezone",
        default=DEFAULT_TIMEZONE,
        metavar="ZONE",
        help=f"zone of source datetimes without an offset, e.g. America/New_York (default {DEFAULT_TIMEZONE})",
    )
    parser.add_argument("--force", action="store_true", help="overwrite files that already exist")


def run(args: argparse.Namespace) -> int:
    scaffold = plan_scaffold(
        args.sample, name=args.name, kinds=args.kind, directory=args.dir, timezone=args.timezone
    )
    written = write_scaffold(scaffold, force=args.force)
    # The schema the mapping's modeline points to: generated, so always brought up to date.
    schema = write_editor_schema(scaffold.file("mapping").parent / Path(EDITOR_SCHEMA_PATH).parent)
    report(scaffold, written, sys.stdout, schema=schema)
    return 0


def report(scaffold: Scaffold, written: list[Path], out: IO[str], *, schema: Path | None = None) -> None:
    color = use_color(out)
    targets = ", ".join(f"{name} ({kind})" for name, kind in scaffold.targets)
    width = max(len(_show(f.path)) for f in scaffold.files)
    for item in scaffold.files:
        verb = "created" if item.path in written else "kept   "
        note = _ROLES[item.role].format(targets=targets)
        out.write(f"{paint(verb, GREEN, color)} {_show(item.path).ljust(width)}  {paint(note, DIM, color)}\n")
    if schema is not None:
        note = paint(_ROLES["schema"], DIM, color)
        out.write(f"{paint('wrote  ', GREEN, color)} {_show(schema).ljust(width)}  {note}\n")

    matched = scaffold.matched
    required = [s for s in matched if s.required]
    out.write(
        f"\n{counted(len(matched), 'field')} suggested from the sample's key names; the required ones, with the value"
        " each\nreads in the sample and how sure the guess is (check them):\n"
    )
    _table(required, out)
    if len(matched) > len(required):
        optional = counted(len(matched) - len(required), "optional one")
        out.write(f"  … and {optional}: see the comments in the mapping\n")

    mapping = _show(scaffold.mapping_path)
    todos = scaffold.todos
    if todos:
        out.write(
            "\n"
            + paint(counted(len(todos), "TODO"), YELLOW, color)
            + ": required values nothing in the sample matched. Until you map them, `shipmap preview` and\n"
            "`shipmap test` fail loudly on each one (`shipmap validate` checks the structure only):\n"
        )
        for todo in todos:
            what = todo.field if todo.target else f"{todo.field}: the target's word for each source value"
            out.write(f"  {f'{mapping}:{todo.line}'.ljust(len(mapping) + 5)} {what}\n")
    if scaffold.select is not None:
        out.write(
            f"\nThe sample is a list: the mapping maps one element (the test case selects {scaffold.select}),"
            " so feed each element as its own event.\n"
        )

    sample, folder = _show(scaffold.sample_path), _show(scaffold.directory)
    out.write("\n" + paint("next: fill the TODOs, then" if todos else "next:", BOLD, color) + "\n")
    out.write(f"  shipmap validate {mapping}\n")
    out.write(f"  shipmap preview {mapping} {sample}\n")
    out.write(f"  shipmap test {mapping}\n")
    out.write(f"  cp {folder}/.env.example {folder}/.env     # then `shipmap sandbox` in another terminal\n")
    out.write(f"  shipmap run {_show(scaffold.config_path)} --input {sample}\n")


def _table(suggestions: list[FieldSuggestion], out: IO[str]) -> None:
    if not suggestions:
        out.write("  (none)\n")
        return
    left = max(len(s.field) for s in suggestions)
    middle = max(len(s.source or "") for s in suggestions)
    for item in suggestions:
        sure = f"  ({item.confidence})" if item.confidence else ""
        out.write(
            f"  {item.field.ljust(left)}  <- {(item.source or '').ljust(middle)}  {_value(item)}{sure}\n"
        )


def _value(item: FieldSuggestion) -> str:
    if item.source is not None and "{{" in item.source:
        return ""  # a template: its value depends on the fields it joins
    text = json.dumps(item.sample, ensure_ascii=False)
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 1] + "…"


def _show(path: Path) -> str:
    """A path as the user would type it: relative to the current directory when below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
