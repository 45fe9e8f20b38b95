"""The public face of the engine: load a mapping once, then transform many source documents with it."""

from __future__ import annotations

import difflib
import functools
import os
import threading
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ._allowance import checkpoint
from ._compiler import MappingCompiler
from ._errors import Location, MappingError, Problem, file_order
from ._fields import CompileReport
from ._functions import FunctionSet, lookup_key
from ._lint import target_problems
from ._target import CompiledTarget
from ._trace import ACTIVE, Trace, unread_paths
from ._yaml import LocatedDocument, decode_utf8, load_located

__all__ = [
    "CompiledMapping",
    "Output",
    "load_mapping",
    "packaged_mapping_names",
    "parse_mapping",
    "resolve_mapping_path",
]


@dataclass(frozen=True, slots=True)
class Output:
    """One payload of one source document: its target, and for a fan-out target (``each:``) the element's
    key (its ``key:`` value as text, else its position). ``label`` names it: ``shipment`` or ``shipment[42]``."""

    target: str
    payload: dict[str, Any]
    element: str | None = None
    source: Any = None  # a fan-out element's own source data (what its delivery is keyed by)
    # The payload is known valid under its kind and strict JSON: validated, or made by the checked code.
    valid: bool = False

    @property
    def label(self) -> str:
        return self.target if self.element is None else f"{self.target}[{self.element}]"


class CompiledMapping:
    """A loaded, compiled mapping. Immutable after loading, so one instance serves any number of threads.

    It is also a picklable pure function of the source document: a pickle holds the mapping's YAML text, its
    file name and zone, and unpickling compiles that text again (once per process: compiled mappings are
    cached by their text), so a process pool, Dask or Spark can ship it to their workers."""

    def __init__(
        self, document: LocatedDocument, *, default_zone: str | None = None, text: str | None = None
    ) -> None:
        compiler = MappingCompiler(document, default_zone=default_zone)
        self._default_zone = default_zone
        self._text = text
        self._traced: dict[str, CompiledTarget] | None = None
        self._traced_lock = threading.Lock()
        name, zone, functions, expressions, targets = compiler.build()
        self.name: str = name
        self.file: str = document.file
        self.timezone: zoneinfo.ZoneInfo = zone
        self._functions: FunctionSet = functions
        self._document = document
        self._compiled: dict[str, CompiledTarget] = {target.name: target for target in targets}
        self._report: CompileReport = compiler.report
        self._used_lookups = frozenset(expressions.used_lookups)
        self.targets: tuple[CompiledTarget, ...] = tuple(targets)

    def __repr__(self) -> str:
        return f"<CompiledMapping {self.name!r} from {self.file} targets={list(self._compiled)}>"

    @property
    def text(self) -> str | None:
        """The YAML text it was compiled from: two mappings of the same text, file and zone are the same."""
        return self._text

    def __reduce__(self) -> tuple[Any, tuple[str, str, str | None]]:
        if self._text is None:  # pragma: no cover - every public constructor keeps the text
            raise TypeError(f"mapping {self.name!r} was built without its text and cannot be pickled")
        return _compiled_from_text, (self._text, self.file, self._default_zone)

    def __call__(self, source: Any) -> dict[str, dict[str, Any]]:
        """``transform(source)``: the mapping as a function, for ``map`` and for batch engines."""
        return self.transform(source)

    def target(self, name: str) -> CompiledTarget:
        try:
            return self._compiled[name]
        except KeyError:
            raise MappingError(
                f"mapping '{self.name}' has no target '{name}'; it has {', '.join(self._compiled)}",
                location=Location(self.file, 1, 1),
            ) from None

    def transform(
        self, source: Any, *, validate: bool = True, targets: Iterable[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Map one source document: ``{label: payload}`` for every payload it gives. The label is the target
        name, and for a fan-out target (``each:``) ``name[key]`` per element (see :class:`Output`).

        Raises :class:`TransformError` for a field that fails and, with ``validate``,
        :class:`PayloadValidationError` for a payload that breaks its kind's contract.
        """
        chosen = self._compiled.values() if targets is None else [self.target(name) for name in targets]
        result: dict[str, dict[str, Any]] = {}
        for target in chosen:
            if target.fans_out:
                for output in _elements(target, source, validate):
                    result[output.label] = output.payload
                continue
            payload = target.produce_valid(source) if validate else target.produce(source)
            if payload is not None:
                result[target.name] = payload
        return result

    def outputs(
        self, source: Any, *, validate: bool = True, targets: Iterable[str] | None = None
    ) -> list[Output]:
        """Every payload of one source document, in target order, fan-out elements in array order.

        ``validate=False`` leaves validating to the caller, who words its own errors: an output whose
        ``valid`` is True needs none (the checked generated code made it), the others do."""
        chosen = self._compiled.values() if targets is None else [self.target(name) for name in targets]
        result: list[Output] = []
        for target in chosen:
            if not target.fans_out:  # the common case, without the list
                if validate:
                    payload, valid = target.produce_valid(source), True
                else:
                    payload, valid = target.produce_checked(source)
                if payload is not None:
                    result.append(Output(target.name, payload, valid=valid))
                continue
            result.extend(_elements(target, source, validate))
        return result

    def trace(self, source: Any) -> Trace:
        """Map ``source`` (without validating) and report coverage: fields that fell back to their
        defaults, and source fields never read. Slower than :meth:`transform`; meant for tests and tools."""
        with self._traced_lock:
            if self._traced is None:
                # A second, instrumented compilation, so that transform() itself never records anything.
                traced = MappingCompiler(
                    self._document, tracing=True, default_zone=self._default_zone
                ).build()[4]
                self._traced = {target.name: target for target in traced}
        trace = Trace()
        trace.index(source)
        token = ACTIVE.set(trace)
        try:
            for target in self._traced.values():
                checkpoint()  # a tool's stop ends the trace between targets too (_allowance.py)
                for element, payload in target.produce_all(source):
                    trace.payloads[Output(target.name, payload, element).label] = payload
        finally:
            ACTIVE.reset(token)
        trace.unread = unread_paths(source, trace.reads)
        return trace

    def lint(self) -> list[Problem]:
        """What ``shipmap validate`` reports beyond compile errors: required target fields left unmapped,
        fields the kind does not have, and lookups or fragments never used. Severity is in ``Problem.severity``.
        In the file's order, as a compiler lists them: by line and column; at one place, in the order the
        checks run (the target's fields, then lookups, then fragments); a problem with no place last."""
        problems: list[Problem] = []
        for name, target in self._compiled.items():
            problems.extend(target_problems(target, self._report.mapped[name], self._report.opaque[name]))
        lookups = self._document.value.get("lookups") or {}
        for table in lookups:
            if table not in self._used_lookups:
                problems.append(
                    Problem(
                        field=f"lookups.{table}",
                        message="lookup table is never used",
                        location=self._document.key_location(("lookups", table)),
                        severity="warning",
                    )
                )
        for fragment in self._document.value.get("fragments") or {}:
            if fragment not in self._report.used_fragments:
                problems.append(
                    Problem(
                        field=f"fragments.{fragment}",
                        message="fragment is never used",
                        location=self._document.key_location(("fragments", fragment)),
                        severity="warning",
                    )
                )
        return sorted(problems, key=lambda problem: file_order(problem.location))

    @property
    def functions(self) -> FunctionSet:
        return self._functions


def _elements(target: CompiledTarget, source: Any, validate: bool) -> list[Output]:
    """The outputs of a fan-out target, each validated under its own label."""
    outputs = []
    for element, payload, data in target.elements(source):
        output = Output(target.name, payload, element, data, validate)
        if validate:
            target.validate(payload, label=output.label)
        outputs.append(output)
    return outputs


def resolve_mapping_path(name: str | os.PathLike[str]) -> Path:
    """A file path as given, or a short name such as ``shopify/order`` for a mapping shipped with shipmap."""
    path = Path(name)
    if path.exists() or path.is_symlink():  # a link that loops or dangles: reading it says so
        return path
    text = str(name)
    if not text.endswith((".yaml", ".yml")) and "/" in text and not text.startswith((".", "/")):
        packaged = resources.files("shipmap.mappings").joinpath(*text.split("/"))
        candidate = Path(str(packaged) + ".yaml")
        if candidate.is_file():
            return candidate
    close = difflib.get_close_matches(text.removesuffix(".yaml"), packaged_mapping_names(), n=3, cutoff=0.6)
    raise MappingError(
        f"no mapping file or packaged mapping named '{text}'",
        location=Location(text, 1, 1),
        hint=f"did you mean {' or '.join(close)}?" if close else None,
    )


def packaged_mapping_names() -> list[str]:
    """The short names of the ready mappings shipped with shipmap, sorted (``aftership/tracking``, ...,
    ``shopify/order``, ...): what ``load_mapping`` accepts besides a path. ``resolve_mapping_path(name)`` is
    a name's file; its cases file, ``<name>.cases.yaml``, sits beside it."""
    root = Path(str(resources.files("shipmap.mappings")))
    return sorted(
        path.relative_to(root).with_suffix("").as_posix()
        for path in root.glob("*/*.yaml")
        if not path.name.endswith(".cases.yaml")
    )


def parse_mapping(text: str, *, file: str = "<string>", default_zone: str | None = None) -> CompiledMapping:
    """Compile a mapping from YAML text. ``file`` is only used to name the source in errors;
    ``default_zone`` (an IANA name) overrides the mapping's ``timezone``."""
    return CompiledMapping(load_located(text, file, lookup_key), default_zone=default_zone, text=text)


@functools.lru_cache(maxsize=32)
def _compiled_from_text(text: str, file: str, default_zone: str | None) -> CompiledMapping:
    """Unpickling: compile once per process; every later copy of the same mapping is the same instance."""
    return parse_mapping(text, file=file, default_zone=default_zone)


def load_mapping(name: str | os.PathLike[str], *, default_zone: str | None = None) -> CompiledMapping:
    """Load and compile a mapping file (or a packaged mapping by short name, such as ``shopify/order``).
    ``default_zone`` (an IANA name) overrides the mapping's ``timezone``, for reusing a mapping elsewhere."""
    path = resolve_mapping_path(name)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise MappingError(
            f"cannot read mapping: {error.strerror or error}", location=Location(str(name), 1, 1)
        ) from None
    text = decode_utf8(raw, str(name), "mapping")
    return parse_mapping(text, file=_display_name(path), default_zone=default_zone)


def _display_name(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
