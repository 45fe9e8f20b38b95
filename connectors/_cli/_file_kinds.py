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


def _head_matches(path: Path, pattern: re.Pattern[str], size: int) -> bool:
    """Whether the first ``size`` characters of the text file ``path`` match ``pattern`` (False if unreadable)."""
    try:
        with path.open(encoding="utf-8") as handle:
            return pattern.search(handle.read(size)) is not None
    except (OSError, UnicodeDecodeError):
        return False
