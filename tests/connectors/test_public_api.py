"""What an embedding program reads back from a run is typed with names it can import: every class a public
method of ``Runtime`` or ``Journal`` returns (inside a list, an iterator, a union) is in
``shipmap.connectors`` or ``shipmap.engine``, so a typed caller never imports a private module to annotate it."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterator
from typing import Any

import shipmap.connectors as public
import shipmap.engine as engine


def _shipmap_classes(annotation: Any) -> Iterator[type[Any]]:
    if isinstance(annotation, type) and annotation.__module__.startswith("shipmap."):
        yield annotation
    for arm in typing.get_args(annotation):
        yield from _shipmap_classes(arm)


def test_what_runtime_and_journal_return_is_exported() -> None:
    exported = {getattr(public, n) for n in public.__all__} | {getattr(engine, n) for n in engine.__all__}
    missing: set[str] = set()
    for owner in (public.Runtime, public.Journal):
        for name, member in inspect.getmembers(owner, inspect.isfunction):
            if name.startswith("_"):
                continue
            returned = typing.get_type_hints(member).get("return")
            missing.update(
                f"{owner.__name__}.{name}: {cls.__name__}"
                for cls in _shipmap_classes(returned)
                if cls not in exported
            )
    # Runtime.rejected_inputs() and Journal.rejected() return RejectedInput, the journal's rejected records.
    assert missing == set()
