"""The ``shipmap`` command. The only place where errors become exit codes and where output is printed."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# Each subcommand lives in its own module with ``register(subparsers)``; imported lazily so --help stays fast.
_COMMANDS: dict[str, tuple[str, str]] = {
    "preview": ("preview", "map source documents and print the payloads (a dry run; sends nothing)"),
    "validate": ("validate", "lint mapping files without source data"),
    "schema": ("schema", "print the JSON Schema of the mapping format, or of a target kind"),
    "sandbox": ("sandbox", "run the local Fenix and Digital Genius API server"),
    "run": ("run", "map events and deliver them to the configured endpoints"),
    "dead-letters": ("dead_letters", "list the events that could not be delivered"),
    "replay": ("replay", "send dead-lettered events again"),
    "test": ("test", "run the fixture cases declared beside mappings"),
    "init": ("init", "scaffold a new retailer from a sample source document"),
    "journal": ("journal", "a journal's schema: migrate it, copy it (SQLite to PostgreSQL), show it"),
    "serve": ("serve", "accept signed webhooks, commit them, enrich them and deliver them until stopped"),
    "status": ("status", "print a service's queue depth, breakers and dead letters"),
    "studio": ("studio", "serve a local web page to edit a mapping against samples and see payloads live"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shipmap", description="Map retailer JSON to Fenix and Digital Genius."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (_, help_text) in _COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    # Global options stand before the command; the command's module declares and parses the rest.
    position = next((i for i, arg in enumerate(args_list) if not arg.startswith("-")), None)
    parser = build_parser()
    if position is None or args_list[position] not in _COMMANDS:
        parser.parse_args(args_list)  # prints help, or the error for an unknown command, and exits
        return 2
    global_args = parser.parse_args([*args_list[:position], args_list[position]]) if position else None
    command = args_list[position]
    module = importlib.import_module(f"{__name__}.{_COMMANDS[command][0]}")
    command_parser = argparse.ArgumentParser(prog=f"shipmap {command}", description=_COMMANDS[command][1])
    command_parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    module.register(command_parser)
    args = command_parser.parse_args(args_list[position + 1 :])
    if global_args is not None:
        args.verbose += global_args.verbose
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from shipmap.engine import ShipmapError  # here, not at the top: --help must not load the engine

    try:
        code: int = module.run(args)
    except ShipmapError as error:
        print(error.render(), file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code


def entry() -> None:
    sys.exit(main())
