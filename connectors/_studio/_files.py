"""File access for the studio, confined to one directory: every path a request names is resolved (symlinks
and ``..`` included) and refused unless it stays inside that directory. A symbolic link that loops is an
error for that file (the OS's words), never the whole request's: the listing leaves it out."""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from shipmap.engine import ShipmapError
from shipmap.engine._yaml import decode_utf8

from ._errors import Forbidden, NotFound, StudioError

MAX_FILE_BYTES = 4 * 1024 * 1024  # a mapping, a sample or a cases file; anything larger is not for a browser
SAMPLE_SUFFIXES = (".json", ".ndjson", ".jsonl")
# What the page opens and saves: mappings, cases files and run configs, and samples. Never .env, keys or the
# journal, even though they sit in the directory: their secrets have no business in a browser.
EDITABLE_SUFFIXES = (".yaml", ".yml", *SAMPLE_SUFFIXES)
_SKIPPED_DIRS = {".git", ".venv", "node_modules", "__pycache__", ".shipmap"}
_MAX_LISTED = 500
_MAPPING_HEAD = re.compile(r"^shipmap:\s*1\s*(#.*)?$", re.M)
_CONFIG_HEAD = re.compile(r"^connections:", re.M)


@dataclass(frozen=True)
class Listing:
    mappings: list[str]
    cases: list[str]
    samples: list[str]
    configs: list[str]


class Workspace:
    """The directory the studio serves. Paths in and out are relative to it, with ``/`` separators."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        try:
            os.stat(root)  # first: a link that loops is the OS's ELOOP here, a RuntimeError from resolve()
            self.root = Path(root).resolve(strict=True)
        except OSError as error:  # the OS's reason, without Python's [Errno 2] and the path again
            raise StudioError(error.strerror or "cannot be read") from None
        if not self.root.is_dir():
            raise StudioError("not a directory: the studio serves a folder of mappings and samples")

    def resolve(self, relative: str) -> Path:
        """The real path of ``relative``; Forbidden when it (or a symlink on the way) leaves the root."""
        if not relative or "\x00" in relative:
            raise Forbidden("a path is required")
        candidate = Path(relative)
        if candidate.is_absolute():
            raise Forbidden(f"{relative}: only paths inside the studio's directory are served")
        resolved = _real(self.root / candidate, relative)
        if not resolved.is_relative_to(self.root):
            raise Forbidden(f"{relative}: outside the studio's directory")
        return resolved

    def editable(self, relative: str) -> Path:
        """``resolve``, and Forbidden unless the file (and what a link leads to) is one the page edits."""
        path = self.resolve(relative)
        for name in (relative, path.name):
            if not name.lower().endswith(EDITABLE_SUFFIXES):
                raise Forbidden(
                    f"{relative}: the studio reads and writes only mappings, cases files, run configs and "
                    f"samples ({', '.join(EDITABLE_SUFFIXES)})"
                )
        return path

    def render(self, error: ShipmapError) -> str:
        """The CLI's text of ``error``, its file named as the page names files (relative to the directory),
        not by the absolute path the loader was given."""
        where = error.location
        if where is not None and os.path.isabs(where.file):
            try:
                shown = self.relative(Path(where.file))
            except (ValueError, StudioError):
                shown = where.file  # outside the directory: the loader refused it, say where it is
            error.location = dataclasses.replace(where, file=shown)
        return error.render()

    def relative(self, path: Path) -> str:
        return _real(path, self._shown(path)).relative_to(self.root).as_posix()

    def contains(self, path: Path) -> bool:
        """Whether ``path`` is inside the root once resolved; StudioError for a link that loops."""
        return _real(path, self._shown(path)).is_relative_to(self.root)

    def _shown(self, path: Path) -> str:
        """``path`` as a request would name it: relative to the root, as written (not resolved)."""
        return os.path.relpath(path, self.root) if path.is_absolute() else str(path)

    def read_text(self, relative: str) -> str:
        """A file the page opens (see ``editable``), as text."""
        return self.read_path(self.editable(relative), relative)

    def read_path(self, path: Path, shown: str) -> str:
        if not self.contains(path):
            raise Forbidden(f"{shown}: outside the studio's directory")
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise NotFound(f"{shown}: no such file") from None
        except OSError as error:
            raise StudioError(f"{shown}: {error.strerror}") from None
        if not path.is_file():
            raise NotFound(f"{shown}: not a file")
        if size > MAX_FILE_BYTES:
            raise StudioError(f"{shown}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
        try:
            raw = path.read_bytes()
        except OSError as error:
            raise StudioError(f"{shown}: {error.strerror}") from None
        try:  # at the first bad byte's line and column, as the CLI says it
            return decode_utf8(raw, shown, "file").replace("\r\n", "\n").replace("\r", "\n")
        except ShipmapError as error:
            raise StudioError(error.render()) from None

    def write_text(self, relative: str, text: str) -> Path:
        """Replace a file the page edits (see ``editable``) atomically: a temporary file, then a rename."""
        path = self.editable(relative)
        if len(text.encode("utf-8")) > MAX_FILE_BYTES:
            raise StudioError(f"{relative}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
        if not path.parent.is_dir():
            raise NotFound(f"{relative}: its folder does not exist")
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
                out.write(text)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path

    def listing(self) -> Listing:
        """The mappings, cases files, samples and run configs below the root (symlinks out are left out)."""
        mappings: list[str] = []
        cases: list[str] = []
        samples: list[str] = []
        configs: list[str] = []
        for path in self._walk():
            name = path.name
            relative = self.relative(path)
            if name.endswith(".cases.yaml"):
                cases.append(relative)
            elif name.endswith((".yaml", ".yml")):
                head = _head(path)
                if _MAPPING_HEAD.search(head):
                    mappings.append(relative)
                elif _CONFIG_HEAD.search(head):
                    configs.append(relative)
            elif name.lower().endswith(SAMPLE_SUFFIXES):
                samples.append(relative)
        return Listing(sorted(mappings), sorted(cases), sorted(samples), sorted(configs))

    def _walk(self) -> list[Path]:
        found: list[Path] = []
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS and not d.startswith("."))
            for name in sorted(files):
                path = Path(folder) / name
                if path.is_file() and self.contains(path):  # is_file first: False for a link that loops
                    found.append(path)
                    if len(found) >= _MAX_LISTED:
                        return found
        return found


def _real(path: Path, shown: str) -> Path:
    """``path`` resolved; a link that loops on the way is a StudioError naming ``shown``, in the OS's words
    (``Path.resolve()`` raises RuntimeError there on Python 3.11 and 3.12)."""
    try:
        return path.resolve()
    except RuntimeError:
        raise StudioError(f"{shown}: {os.strerror(errno.ELOOP)}") from None


def _head(path: Path) -> str:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return handle.read(8192)
    except OSError:
        return ""
