"""What kind of YAML file a path holds (a mapping, a runtime config), told from its first lines without
parsing it: ``test`` and ``validate`` take directories and mixed lists of files."""

from __future__ import annotations

import re
from pathlib import Path

_MAPPING_HEAD = re.compile(r"^shipmap:\s*1\s*(#.*)?$", re.M)
_CONFIG_HEAD = re.compile(r"^connections:", re.M)  # a runtime config's section; a mapping has none


def looks_like_mapping(path: Path) -> bool:
    return _head_matches(path, _MAPPING_HEAD, 8192)


def looks_like_config(path: Path) -> bool:
    return _head_matches(path, _CONFIG_HEAD, 65536)


def is_utf8_text(path: Path) -> bool:
    """False when ``path`` holds a byte that is not UTF-8 (True when it cannot be read: its loader says why)."""
    try:
        path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        return False
    except OSError:
        return True
    return True


def _head_matches(path: Path, pattern: re.Pattern[str], size: int) -> bool:
    """Whether the first ``size`` bytes of ``path`` match ``pattern`` (False if unreadable). The patterns are
    ASCII, so a file with a byte that is not UTF-8 is still told apart, and its loader locates that byte."""
    try:
        with path.open("rb") as handle:
            return pattern.search(handle.read(size).decode("utf-8", "replace")) is not None
    except OSError:
        return False
