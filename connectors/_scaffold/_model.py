"""What ``shipmap init`` returns: the files it would write and every suggestion it made."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import ConnectorError

TODO = "TODO"
DEFAULT_TIMEZONE = "UTC"
# Target names the ready mappings use for each kind, so scaffolds read like them.
TARGET_NAMES: Mapping[str, str] = {
    "fenix.order": "order",
    "fenix.order_cancel": "cancel",
    "fenix.order_partial_cancel": "partial_cancel",
    "fenix.fulfillment": "fulfillment",
    "dg.execution": "shipment",
}


class ScaffoldError(ConnectorError):
    """``shipmap init`` cannot scaffold: a bad argument, an unreadable sample, or files already there."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class FieldSuggestion:
    """One target field of the scaffolded mapping: the source path guessed for it, or a TODO (``source`` None).

    ``field`` is the target field path (``order.customer.email``, ``order.line_items[].sku``), ``sample`` the
    value the guess reads in the sample (the first element, inside arrays), ``line`` its line in the mapping.
    """

    target: str
    field: str
    source: str | None
    required: bool
    sample: Any = None
    line: int = 0
    confidence: str = ""  # "sure", "likely" or "a guess" for a path read from the sample; "" otherwise

    @property
    def todo(self) -> bool:
        return self.source is None


@dataclass(frozen=True, slots=True)
class ScaffoldFile:
    path: Path
    text: str
    role: str  # mapping, cases, config, env, gitignore, sample


@dataclass(frozen=True)
class Scaffold:
    """Everything ``shipmap init`` would write, as text, and what the matcher found."""

    directory: Path
    name: str
    kinds: tuple[str, ...]
    files: tuple[ScaffoldFile, ...]
    suggestions: tuple[FieldSuggestion, ...]
    targets: tuple[tuple[str, str], ...] = ()  # (target name, kind) in mapping order
    select: str | None = None  # the JMESPath a test case uses to take one document out of the sample

    def file(self, role: str) -> Path:
        return next(f.path for f in self.files if f.role == role)

    @property
    def mapping_path(self) -> Path:
        return self.file("mapping")

    @property
    def cases_path(self) -> Path:
        return self.file("cases")

    @property
    def config_path(self) -> Path:
        return self.file("config")

    @property
    def sample_path(self) -> Path:
        return self.file("sample")

    @property
    def todos(self) -> tuple[FieldSuggestion, ...]:
        return tuple(s for s in self.suggestions if s.todo)

    @property
    def matched(self) -> tuple[FieldSuggestion, ...]:
        return tuple(s for s in self.suggestions if not s.todo)

    def existing(self) -> list[Path]:
        """The files that are already there (``write_scaffold`` refuses them without ``force``)."""
        return [f.path for f in self.files if f.path.exists() and not _same_file(f)]


def _same_file(item: ScaffoldFile) -> bool:
    # The sample may already sit where the scaffold puts it: that is not an overwrite.
    return item.role == "sample" and item.path.read_bytes() == item.text.encode("utf-8")
