"""``shipmap completion bash|zsh|fish``: the shell completion script, generated from the parsers by shtab.

Every subcommand's parser is declared here, so a command added to ``_COMMANDS`` completes without more
work. shtab and the command modules load only in this subcommand: start-up elsewhere pays nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SHELLS = ("bash", "zsh", "fish")


def register(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Install, e.g.: shipmap completion bash > ~/.local/share/bash-completion/completions/shipmap; "
        "shipmap completion zsh > ~/.zfunc/_shipmap (with fpath+=~/.zfunc before compinit); "
        "shipmap completion fish > ~/.config/fish/completions/shipmap.fish"
    )
    parser.add_argument("shell", choices=SHELLS, help="the shell to print the completion script for")


def run(args: argparse.Namespace) -> int:
    import shtab

    from . import full_parser

    parser = full_parser()
    _complete_values_as_files(parser, shtab.FILE)
    sys.stdout.write(shtab.complete(parser, shell=args.shell))
    return 0


def _complete_values_as_files(parser: argparse.ArgumentParser, files: object) -> None:
    """Most values are paths (mappings, sources, configs): complete a value without choices as a file."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _complete_values_as_files(sub, files)
        elif action.nargs != 0 and not action.choices and action.type in (None, str, Path):
            action.complete = files  # type: ignore[attr-defined]  # shtab reads this attribute
