"""Scaffolding a new retailer from a sample source document: what ``shipmap init`` writes.

``plan_scaffold`` reads the sample and returns every file as text (nothing is written); ``write_scaffold``
writes them and refuses to overwrite. Both are usable without the command line.

The matcher is deliberately plain, so its guesses are easy to check: a target field's name, and a table of
common synonyms (``number`` <- ``name``/``order_number``, ``zip`` <- ``postal_code``, ...), against the key
names of the sample's leaves, preferring keys inside the matching object (a ``shipping_address`` field from a
shipping-address-like object, never from the billing one) and near the top. Arrays take the source array whose
elements match the most item fields. Each guess is listed with the value it read from the sample. A required
field with no guess becomes ``{path: TODO, required: true}``: it fails loudly at preview and test time
("required field has no value", pointing at its line) instead of sending a made-up value.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shipmap.engine import ShipmapError, builtin_kinds, parse_mapping

from ._builder import _TargetBuilder
from ._guess import _pick_document
from ._model import (
    DEFAULT_TIMEZONE,
    TARGET_NAMES,
    TODO,
    FieldSuggestion,
    Scaffold,
    ScaffoldError,
    ScaffoldFile,
    _same_file,
)
from ._render import _probe, _render_cases, _render_config, _render_env, _render_mapping
from ._sample import NDJSON_SUFFIXES, _list_elements, _read_sample, _relative

__all__ = [
    "DEFAULT_TIMEZONE",
    "TODO",
    "FieldSuggestion",
    "Scaffold",
    "ScaffoldError",
    "ScaffoldFile",
    "plan_scaffold",
    "write_scaffold",
]

_log = logging.getLogger("shipmap.connectors.scaffold")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def plan_scaffold(
    sample: str | Path,
    *,
    name: str,
    kinds: Sequence[str],
    directory: str | Path | None = None,
    timezone: str = DEFAULT_TIMEZONE,
) -> Scaffold:
    """The files of a new retailer ``name`` for target ``kinds``, from one sample document (JSON, or the first
    line of an NDJSON file). ``directory`` defaults to ``./<name>``. Raises ScaffoldError."""
    if not _NAME.match(name):
        raise ScaffoldError(f"--name {name!r}: use letters, digits, '_', '.' and '-', starting with one")
    if not kinds:
        raise ScaffoldError("give at least one --kind")
    known = builtin_kinds()
    for kind in kinds:
        if kind not in known:
            raise ScaffoldError(f"unknown kind {kind!r}; known kinds: {', '.join(sorted(known))}")
    if len(set(kinds)) != len(kinds):
        raise ScaffoldError("a kind is given twice; each kind becomes one target")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScaffoldError(
            f"--timezone {timezone!r}: not an IANA time zone such as America/New_York"
        ) from None
    sample_file = Path(sample)
    document, sample_text = _read_sample(sample_file)
    folder = Path(directory) if directory is not None else Path(name)
    copied = folder / "samples" / sample_file.name
    try:
        inside = sample_file.resolve().is_relative_to(folder.resolve())
    except OSError:
        inside = False
    if sample_file.suffix.lower() in NDJSON_SUFFIXES:
        # A test case reads one JSON file: the lines become a JSON array, and the case selects one element.
        sample_text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        copied, inside = folder / "samples" / f"{sample_file.stem}.json", False
    sample_target = sample_file if inside else copied
    sample_rel = _relative(sample_target, folder)
    mapping_file = folder / f"{name}.yaml"
    target_kinds = [known[k] for k in kinds]
    select, selected = _pick_document(document, target_kinds)
    builders = [_TargetBuilder(TARGET_NAMES[k.name], k, selected) for k in target_kinds]
    lookups: dict[str, list[str]] = {}
    naive = False
    for builder in builders:
        builder.build(lookups)
        naive = naive or builder.naive_datetimes
    mapping_text, suggestions = _render_mapping(
        name, builders, lookups, sample_rel, select, timezone, naive, len(_list_elements(document, select))
    )
    try:
        parse_mapping(mapping_text, file=str(mapping_file))
    except ShipmapError as error:  # pragma: no cover - a scaffold that does not load is a bug here
        raise ScaffoldError(f"the scaffolded mapping does not load: {error.message}") from error
    expected = _probe(name, builders, lookups, selected)
    files = [
        ScaffoldFile(mapping_file, mapping_text, "mapping"),
        ScaffoldFile(
            folder / f"{name}.cases.yaml",
            _render_cases(name, sample_rel, select, expected, builders),
            "cases",
        ),
        ScaffoldFile(sample_target, sample_text, "sample"),
        ScaffoldFile(folder / "config.yaml", _render_config(name, target_kinds), "config"),
        ScaffoldFile(folder / ".env.example", _render_env(target_kinds), "env"),
        ScaffoldFile(folder / ".gitignore", ".env\n.shipmap/\n", "gitignore"),
    ]
    _log.debug("scaffold %s: %d suggestions", name, len(suggestions))
    targets = tuple((b.name, b.kind.name) for b in builders)
    return Scaffold(folder, name, tuple(kinds), tuple(files), tuple(suggestions), targets, select)


def write_scaffold(scaffold: Scaffold, *, force: bool = False) -> list[Path]:
    """Write every file of ``scaffold``; without ``force`` nothing is written if any of them exists."""
    existing = scaffold.existing()
    if existing and not force:
        listed = ", ".join(str(p) for p in existing)
        raise ScaffoldError(
            f"not overwriting {listed}", hint="use --force to overwrite, or --dir to scaffold elsewhere"
        )
    written: list[Path] = []
    for item in scaffold.files:
        if item.role == "sample" and item.path.exists() and _same_file(item):
            continue
        try:
            item.path.parent.mkdir(parents=True, exist_ok=True)
            item.path.write_text(item.text, encoding="utf-8")
        except (FileExistsError, NotADirectoryError):  # --dir, or a folder on its way, is a file
            raise ScaffoldError(
                f"cannot write {item.path}: a file stands where a folder of that path should be",
                hint="choose another --dir",
            ) from None
        except OSError as error:  # a read-only place, a full disk
            raise ScaffoldError(f"cannot write {item.path}: {error.strerror or error}") from None
        written.append(item.path)
    return written
