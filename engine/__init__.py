"""shipmap.engine: the mapping language. Load a YAML mapping, compile it once, transform source JSON into
validated Fenix and Digital Genius payloads. No network, no printing, no global state."""

from ._errors import (
    CompileError,
    Location,
    MappingError,
    MappingStructureError,
    MappingSyntaxError,
    PayloadValidationError,
    Problem,
    ShipmapError,
    SourceError,
    TransformError,
)
from ._kinds import Route, TargetKind, builtin_kinds, get_kind

__all__ = [
    "CompileError",
    "Location",
    "MappingError",
    "MappingStructureError",
    "MappingSyntaxError",
    "PayloadValidationError",
    "Problem",
    "Route",
    "ShipmapError",
    "SourceError",
    "TargetKind",
    "TransformError",
    "builtin_kinds",
    "get_kind",
]
