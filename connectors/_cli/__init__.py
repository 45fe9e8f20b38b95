"""The ``shipmap`` command. The only place where errors become exit codes and where output is printed.

Whatever a command does, the user sees no traceback: a closed pipe ends the output quietly (as ``cat`` does),
Ctrl-C is one line and exit 130 (``serve`` once listening drains on it instead, and exits 0), and a bug is one
line naming the exception (``-vv`` logs its traceback).
Every subcommand, registered below, gets this for free.
With ``--log-format json`` the error line is a JSON log record too (its text in ``message``, with
``exit_code``), so that a log shipper parses every line a command writes on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from ._logging import LOG_FORMATS, RECORD_FIELDS
from ._logging import configure as configure_logging

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
    "completion": ("completion", "print the shell completion script (bash, zsh or fish)"),
}

EXIT_USAGE = 2  # argparse's own code for a bad command line
EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug in shipmap, not in the user's input
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a process stopped by Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for `cat file | head -1`


class _VersionAction(argparse.Action):
    """``--version`` reads the installed package's metadata, the one source of the version, only when asked."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print shipmap's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        print(f"shipmap {package_version()}")
        parser.exit()


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("shipmap")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shipmap", description="Map retailer JSON to Fenix and Digital Genius."
    )
    parser.add_argument("--version", action=_VersionAction)
    _add_global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (_, help_text) in _COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def _add_global_options(parser: argparse.ArgumentParser) -> None:
    # Accepted before the command and after it; default None, so one given before is not undone after.
    parser.add_argument("-v", "--verbose", action="count", help="more log output (-vv for debug)")
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="text (default; each line timestamped) or json (one object a line: time, level, logger, "
        "message, and key, target, attempt for an event)",
    )


def command_parser(command: str, parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The full parser of one subcommand, as its module declares it (into ``parser`` when given)."""
    module = importlib.import_module(f"{__name__}.{_COMMANDS[command][0]}")
    if parser is None:
        parser = argparse.ArgumentParser(prog=f"shipmap {command}", description=_COMMANDS[command][1])
    _add_global_options(parser)
    module.register(parser)
    parser.set_defaults(_run=module.run)
    return parser


def full_parser() -> argparse.ArgumentParser:
    """Every command's parser under one root, imported in full: for completion, never for a normal run."""
    parser = argparse.ArgumentParser(
        prog="shipmap", description="Map retailer JSON to Fenix and Digital Genius."
    )
    parser.add_argument("--version", action=_VersionAction)
    _add_global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in _COMMANDS.items():
        command_parser(name, sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("shipmap: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(args_list: list[str]) -> int:
    # Global options stand before the command; the command's module declares and parses the rest.
    position = _command_position(args_list)
    parser = build_parser()
    if position is None or args_list[position] not in _COMMANDS:
        parser.parse_args(args_list)  # prints help, the version, or the error for an unknown command; exits
        return EXIT_USAGE
    global_args = parser.parse_args([*args_list[:position], args_list[position]]) if position else None
    command = args_list[position]
    args = command_parser(command).parse_args(args_list[position + 1 :])
    args.verbose = (args.verbose or 0) + ((global_args.verbose or 0) if global_args else 0)
    if args.log_format is None:
        args.log_format = (global_args.log_format if global_args else None) or "text"
    configure_logging(args.verbose, args.log_format)
    from shipmap.engine import ShipmapError  # here, not at the top: --help must not load the engine

    try:
        code: int = args._run(args)
        sys.stdout.flush()  # a closed pipe is found here, inside the handler, not at interpreter exit
    except ShipmapError as error:
        _say_error(error.render(), error.exit_code, args.log_format)
        return error.exit_code
    except (BrokenPipeError, KeyboardInterrupt):
        raise
    except Exception as error:  # a bug: one line for the user, the traceback only for who asks for it
        logging.getLogger("shipmap.cli").debug("internal error", exc_info=True)
        # The type and where it was raised, not the message: a message may quote a config value.
        frame = traceback.extract_tb(error.__traceback__)[-1]
        _say_error(
            f"shipmap {command}: internal error: {type(error).__name__} at"
            f" {Path(frame.filename).name}:{frame.lineno} (a bug in shipmap; -vv logs the traceback)",
            EXIT_INTERNAL,
            args.log_format,
        )
        return EXIT_INTERNAL
    return code


def _say_error(text: str, exit_code: int, log_format: str) -> None:
    """The line that ends a command on an error: as it renders, or with JSON logs a record among them."""
    if log_format == "json":
        logging.getLogger("shipmap.cli").error("%s", text, extra={RECORD_FIELDS: {"exit_code": exit_code}})
    else:
        print(text, file=sys.stderr)


def _command_position(args: list[str]) -> int | None:
    """Where the command name is: the first word that is neither an option nor a global option's value."""
    value_next = False
    for index, arg in enumerate(args):
        if value_next:
            value_next = False
        elif arg in _VALUED_GLOBAL_OPTIONS:
            value_next = True
        elif not arg.startswith("-"):
            return index
    return None


_VALUED_GLOBAL_OPTIONS = frozenset({"--log-format"})


def _silence_stdout() -> None:
    # The reader went away: point stdout at /dev/null so the interpreter's final flush cannot raise again.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (tests capture it)
        pass


def entry() -> None:
    sys.exit(main())
