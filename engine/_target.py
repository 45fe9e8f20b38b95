"""A compiled target: what a loaded mapping runs for each source document, and how it names and locates what
it finds wrong. ``_compiler.py`` builds one per target of a mapping.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from ._errors import (
    Location,
    MappingStructureError,
    PayloadValidationError,
    Problem,
    ShipmapError,
    TransformError,
    internal_message,
)
from ._kinds import TargetKind, format_path
from ._trace import ARRAY

_log = logging.getLogger("shipmap.engine.codegen")

# Set by CompiledTarget.collect(): field errors are gathered here (the field left out) instead of raised.
_COLLECT: ContextVar[list[TransformError] | None] = ContextVar("shipmap_collect", default=None)

StaticPath = tuple[str, ...]
_GIVE_UP = 64  # produce_checked: refusals in a row after which the checked code is not tried


@dataclass
class CompiledTarget:
    """One named target of a mapping: its kind, its guard and its compiled field tree."""

    name: str
    kind: TargetKind
    location: Location
    _produce: Callable[[Any], Any] = field(repr=False)
    _locations: dict[StaticPath, Location] = field(repr=False)
    _reference: Callable[[Any], Any] = field(repr=False)  # the closure tree
    _generated: Callable[[Any], Any] | None = field(default=None, repr=False)  # the same, as generated code
    # A fan-out target (each:): every (element key, payload, element) of a source; None for a one-payload target.
    _fan_out: Callable[[Any], list[tuple[str, dict[str, Any], Any]]] | None = field(default=None, repr=False)
    _skip_reason: Callable[[Any], str] | None = field(default=None, repr=False)
    # Why the generated fast path leaves this target to the reference ("" when it does not).
    reference_only: str = field(default="", repr=False)
    # Writes the generated code that also checks its payload against the kind (engine/_codegen.py,
    # TargetWriter). It is written when a second payload is validated, not at load: writing it costs about
    # as much as compiling the target, which a mapping loaded for one document (a preview) would not win back.
    _write_checked: Callable[[], Callable[[Any], Any] | None] | None = field(default=None, repr=False)
    _checked: Callable[[Any], Any] | None = field(default=None, repr=False)
    _validated: int = field(default=0, repr=False)
    _misses: int = field(default=0, repr=False)  # produce_checked: the checked code's refusals in a row
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def fans_out(self) -> bool:
        """Whether the target gives one payload per element of an array (``each:`` on the target)."""
        return self._fan_out is not None

    def produce(self, source: Any) -> dict[str, Any] | None:
        """The payload for ``source``, or None when the target's ``when`` guard does not hold (or its
        ``from:`` finds nothing). A fan-out target has several: use :meth:`produce_all`."""
        if self._fan_out is not None:
            raise MappingStructureError(
                f"target '{self.name}' gives one payload per element (each:); use produce_all()",
                location=self.location,
            )
        try:
            result: dict[str, Any] | None = self._produce(source)
        except ShipmapError:
            raise
        except Exception as error:
            raise self._unworded(error) from None
        return result

    def produce_all(self, source: Any) -> list[tuple[str | None, dict[str, Any]]]:
        """Every payload of ``source``: ``(element key, payload)`` for each element of a fan-out target (the
        element's ``key:`` value as text, else its position), ``(None, payload)`` for a one-payload target."""
        if self._fan_out is None:
            payload = self.produce(source)
            return [] if payload is None else [(None, payload)]
        return [(key, payload) for key, payload, _ in self.elements(source)]

    def elements(self, source: Any) -> list[tuple[str, dict[str, Any], Any]]:
        """A fan-out target's ``(element key, payload, element)`` for each element of ``source``: the element
        is the source data the payload was made from (the runtime keys its delivery by it)."""
        if self._fan_out is None:
            raise MappingStructureError(f"target '{self.name}' does not fan out", location=self.location)
        try:
            return self._fan_out(source)
        except ShipmapError:
            raise
        except Exception as error:
            raise self._unworded(error) from None

    def collect(self, source: Any) -> tuple[list[tuple[str | None, dict[str, Any]]], list[TransformError]]:
        """Map ``source`` on the reference, gathering every field error instead of stopping at the first:
        the payloads that had none, and the errors. For tools that report every problem at once."""
        sink: list[TransformError] = []
        token = _COLLECT.set(sink)
        try:
            if self._fan_out is not None:
                produced: list[tuple[str | None, dict[str, Any]]] = [
                    (key, payload) for key, payload, _ in self._fan_out(source)
                ]
            else:
                try:
                    payload = self._reference(source)
                except TransformError as error:  # from, let or when: nothing else can run
                    sink.append(error)
                    payload = None
                produced = [] if payload is None or sink else [(None, payload)]
        except ShipmapError:
            raise
        except Exception as error:
            sink.append(self._unworded(error))
            produced = []
        finally:
            _COLLECT.reset(token)
        return produced, sink

    def _unworded(self, error: Exception) -> TransformError:
        """The located error of an exception that no field worded: a source nested thousands of levels deep
        (JMESPath and Jinja walk it recursively), or a bug, named with its type."""
        if isinstance(error, RecursionError):
            message = "the source document is nested too deeply to map"
        else:
            message = internal_message(error)
        return TransformError(message, location=self.location, field=self.name)

    def skip_reason(self, source: Any) -> str:
        """Why ``source`` gives this target no payload ("when is false (line 12)", "from: found nothing")."""
        if self._skip_reason is None:
            return "it produced nothing"
        return self._skip_reason(source)

    def produce_valid(self, source: Any, *, label: str | None = None) -> dict[str, Any] | None:
        """:meth:`produce`, then :meth:`validate`: the payload, known valid, or None when there is none.

        The checked generated code does both at once on the happy path; on anything else (an error, a payload
        that breaks its kind, or only might) the two steps run as they always do, and word the error."""
        payload, valid = self._produce_checked(source)
        if payload is not None and not valid:
            self.validate(payload, label=label)
        return payload

    def produce_checked(self, source: Any) -> tuple[dict[str, Any] | None, bool]:
        """:meth:`produce`, and whether the payload is known valid: True when the checked generated code
        made it (valid under the kind, strict JSON), False when it was only produced and the caller must
        validate it (the checked code stepped aside, or is not written yet). Raises as :meth:`produce`.

        A caller that completes payloads before it validates them (the runtime writes a DG external_id)
        may hold a target whose checked code refuses every payload: after ``_GIVE_UP`` refusals in a row
        it is not tried here any more, since each try costs a second production."""
        if self._misses >= _GIVE_UP:
            return self.produce(source), False
        return self._produce_checked(source)

    def _produce_checked(self, source: Any) -> tuple[dict[str, Any] | None, bool]:
        checked = self._checked
        if checked is None and self._write_checked is not None:
            checked = self._checked_code()
        if checked is not None:
            try:
                payload: dict[str, Any] | None = checked(source)
            except Exception as error:
                self._misses += 1
                _log.debug("target %s: the full check takes over (%s)", self.name, type(error).__name__)
            else:
                self._misses = 0
                return payload, True
        return self.produce(source), False

    def prepare(self) -> None:
        """Write the checked generated code now, not when a second payload is validated: for a caller that
        will map many documents (``shipmap run``'s worker process, before its first event). Its first payload
        is then made by that code too, so the kind's own check, which only a refused payload needs, is not
        compiled for it."""
        self._checked_code(now=True)

    def _checked_code(self, *, now: bool = False) -> Callable[[Any], Any] | None:
        with self._lock:
            self._validated += 1
            if self._write_checked is not None and (now or self._validated > 1):
                write, self._write_checked = self._write_checked, None
                try:
                    self._checked = write()
                except Exception as error:  # a spec the writer mishandles costs speed, never a payload
                    _log.debug("target %s: no checked code (%s)", self.name, type(error).__name__)
            return self._checked

    def problems(self, payload: Any) -> list[Problem]:
        """Every way ``payload`` breaks this target's kind, each located at the mapping line that made it."""
        found = self.kind.payload_problems(payload)
        return [
            Problem(field=self._field_name(parts), message=message, location=self.where(parts))
            for parts, message in found
        ]

    def validate(self, payload: Any, *, label: str | None = None) -> None:
        problems = self.problems(payload)
        if problems:
            raise PayloadValidationError(label or self.name, self.kind.name, problems)

    def where(self, parts: tuple[Any, ...]) -> Location:
        static = tuple(ARRAY if isinstance(part, int) else str(part) for part in parts)
        while static:
            found = self._locations.get(static)
            if found is not None:
                return found
            static = static[:-1]
        return self._locations.get((), self.location)

    def _field_name(self, parts: tuple[Any, ...]) -> str:
        return f"{self.name}.{format_path(parts)}" if parts else self.name


def static_field_name(target: str, static: StaticPath) -> str:
    """``('line_items', '[]', 'sku')`` of target ``order`` -> ``order.line_items[].sku``."""
    text = target
    for part in static:
        text += part if part == ARRAY else f".{part}"
    return text
