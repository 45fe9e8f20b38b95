"""``shipmap schema``: the JSON Schema of the mapping format (for editors), of a target kind, or of the config."""

from __future__ import annotations

import argparse
import json
import sys

from shipmap.engine import builtin_kinds, get_kind, mapping_format_schema
from shipmap.engine._editor_schema import editor_schema, write_editor_schema


def register(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--kind", help="print the schema of this target kind, such as fenix.order")
    group.add_argument("--config", action="store_true", help="print the schema of the run config file")
    group.add_argument("--list-kinds", action="store_true", help="list the target kinds and their routes")
    group.add_argument(
        "--editor",
        action="store_true",
        help="print the editor schema: the mapping format with each kind's target fields (for completion)",
    )
    group.add_argument(
        "--write",
        metavar="DIR",
        help="write the editor schema to DIR/mapping.schema.json, the file a mapping's "
        "'# yaml-language-server: $schema=...' line points to",
    )


def run(args: argparse.Namespace) -> int:
    if args.write:
        try:
            path = write_editor_schema(args.write)
        except OSError as error:
            print(f"shipmap schema: cannot write to {args.write}: {error.strerror or error}", file=sys.stderr)
            return 2
        print(f"wrote {path}")
        print(f"  point a mapping at it: # yaml-language-server: $schema={path}", file=sys.stderr)
        return 0
    if args.editor:
        print(json.dumps(editor_schema(), indent=2, ensure_ascii=False))
        return 0
    if args.list_kinds:
        for kind in builtin_kinds().values():
            print(f"{kind.name:28} {kind.api:6} {kind.route.method} {kind.route.path}")
        return 0
    if args.kind:
        try:
            schema = get_kind(args.kind).schema
        except KeyError as error:
            print(error.args[0])
            return 2
    elif args.config:
        from shipmap.connectors import config_schema

        schema = config_schema()
    else:
        schema = mapping_format_schema()
    print(json.dumps(schema, indent=2, ensure_ascii=False))
    return 0
