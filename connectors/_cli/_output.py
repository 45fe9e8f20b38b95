"""Terminal output shared by the commands: colour only on a terminal, and never when NO_COLOR is set."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from typing import IO, Any

from shipmap.connectors._plural import counted

_TOKEN = re.compile(r'("(?:\\.|[^"\\])*")(\s*:)?|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|\b(true|false|null)\b')
_RESET = "\033[0m"
_KEY, _STRING, _NUMBER, _LITERAL = "\033[34m", "\033[32m", "\033[36m", "\033[35m"
BOLD, DIM, RED, YELLOW, GREEN = "\033[1m", "\033[2m", "\033[31m", "\033[33m", "\033[32m"


CHUNK_LINES = 256  # input lines per task of a --jobs pool: ~50 ms of mapping, a negligible pickling cost


def add_jobs_argument(parser: argparse.ArgumentParser) -> None:
    from shipmap.connectors._cli._types import positive_int
    from shipmap.connectors._map._parallel import default_jobs

    parser.add_argument(
        "-j",
        "--jobs",
        type=positive_int,
        default=default_jobs(),
        metavar="N",
        help="map in N processes, output in input order (default: the number of cores; large inputs only)",
    )


def age_text(seconds: float) -> str:
    """How long ago, roughly: ``29 days``, ``1 hour``, ``5 minutes``, ``less than a minute``."""
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            return counted(int(seconds // size), unit)
    return "less than a minute"


def use_color(stream: IO[str]) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def paint(text: str, style: str, enabled: bool) -> str:
    return f"{style}{text}{_RESET}" if enabled else text


def dump_json(value: Any, *, pretty: bool, color: bool = False) -> str:
    """Strict JSON, always: a value JSON cannot hold (NaN, an infinity, a function) is shown as the string
    ``"(not JSON: inf)"``; the located error beside it says which field."""
    try:
        text = _encode(value, pretty)
    except (ValueError, TypeError):  # encoded once in the common case; only a bad value pays twice
        text = _encode(_strict(value), pretty)
    return highlight_json(text) if pretty and color else text


def _encode(value: Any, pretty: bool) -> str:
    if pretty:
        return json.dumps(value, ensure_ascii=False, indent=2, allow_nan=False)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _strict(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _strict(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return f"(not JSON: {value})"
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return f"(not JSON: a {type(value).__name__})"


def highlight_json(text: str) -> str:
    def colour(match: re.Match[str]) -> str:
        string, colon, number, literal = match.groups()
        if string is not None:
            return f"{_KEY if colon else _STRING}{string}{_RESET}{colon or ''}"
        if number is not None:
            return f"{_NUMBER}{number}{_RESET}"
        return f"{_LITERAL}{literal}{_RESET}"

    return _TOKEN.sub(colour, text)


def err(text: str) -> None:
    print(text, file=sys.stderr)
