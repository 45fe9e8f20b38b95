"""``shipmap studio [DIR]``: a local web page to edit a mapping against samples and see payloads live."""

from __future__ import annotations

import argparse
import sys

from ._output import BOLD, paint, use_color


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "directory", nargs="?", default=".", metavar="DIR", help="the folder it serves (default: this one)"
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")


def run(args: argparse.Namespace) -> int:
    from shipmap.connectors._studio import Studio
    from shipmap.connectors._studio._errors import StudioError

    try:
        studio = Studio(args.directory, port=args.port)
    except (OSError, StudioError) as error:
        reason = error.message if isinstance(error, StudioError) else error.strerror or "cannot be read"
        print(f"shipmap studio: {args.directory}: {reason}", file=sys.stderr)
        return 2

    def ready(url: str) -> None:
        color = use_color(sys.stdout)
        print(f"shipmap studio serving {studio.workspace.root}")
        print(f"open {paint(url, BOLD, color)}", flush=True)
        print("(the token in the URL is this session's key; Ctrl-C stops)", flush=True)

    try:
        studio.serve_forever(on_ready=ready)
    except OSError as error:  # the port is taken, say
        print(f"shipmap studio: cannot listen on 127.0.0.1:{args.port}: {error.strerror}", file=sys.stderr)
        return 2
    return 0
