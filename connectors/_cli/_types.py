"""argparse ``type=`` functions: a value out of range is argparse's usage error (exit 2), never a traceback."""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def port(text: str) -> int:
    value = _integer(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (0 to 65535; 0 picks a free one)")
    return value


def host(text: str) -> str:
    """An address to listen on: an empty one was refused later as the config key (``serve.host: is empty``),
    not as the option the operator typed."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give an IP address or a host name (127.0.0.1, 0.0.0.0)")
    return text


def non_negative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is not 0 or more")
    return value


def positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not 1 or more")
    return value


def directory(text: str) -> Path:
    """An existing directory (``--source-documents DIR``): a file, a missing path or one that cannot be read is
    a usage error in words, not a server that starts and answers 404 to every request."""
    try:
        mode = os.stat(text).st_mode
    except FileNotFoundError:
        raise argparse.ArgumentTypeError(f"{text!r} does not exist") from None
    except OSError as error:
        raise argparse.ArgumentTypeError(
            f"{text!r} cannot be read: {error.strerror or 'I/O error'}"
        ) from None
    if not stat.S_ISDIR(mode):
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a directory")
    return Path(text)


def duration(text: str) -> float:
    """Seconds, or a number with a unit: 90s, 12h, 30d."""
    # Imported only when a command takes a duration: the config package is not light to import.
    from shipmap.connectors._config import parse_duration

    try:
        return parse_duration(float(text) if text.replace(".", "", 1).isdigit() else text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (such as 90s, 12h or 30d)") from None


def base_url(text: str) -> str:
    """A connection's ``base_url`` as the config takes it: http(s), a host, an optional path prefix, and no
    credentials (they would be journaled with every URL). The value is not echoed: it may hold a password."""
    from shipmap.connectors._config._secrets import BASE_URL_QUERY_REFUSED, url_has_credentials, url_has_query

    scheme, _, rest = text.partition("://")
    if scheme not in ("http", "https") or not rest or rest.startswith("/") or any(c.isspace() for c in text):
        # Echoed for a typo's sake, unless it may carry a credential (user:password@ or ?key=).
        shown = "the value" if url_has_credentials(text) or url_has_query(text) else repr(text)
        raise argparse.ArgumentTypeError(
            f"{shown} is not a base URL (scheme, host, port and optional path: https://api.example.com/v1)"
        )
    if url_has_credentials(text):
        raise argparse.ArgumentTypeError(
            "credentials in the URL (user:password@host) are refused: the URL is printed and stored as it is"
        )
    if url_has_query(text):
        raise argparse.ArgumentTypeError(BASE_URL_QUERY_REFUSED)
    return text
