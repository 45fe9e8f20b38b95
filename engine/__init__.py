"""shipmap.engine: the mapping language.

Load a YAML mapping once, then transform source JSON into validated Fenix Commerce and Digital Genius
payloads, as often as you like, from any thread::

    from shipmap.engine import load_mapping, packaged_mapping_names

    mapping = load_mapping("mappings/shopify/order.yaml")   # or a packaged one: load_mapping("shopify/order")
    payloads = mapping.transform(source)                     # {"order": {...}}
    for output in mapping.outputs(source): ...               # Output(target, payload, element)
    packaged_mapping_names()                                 # the ready ones: ["aftership/tracking", ...]

No network, no printing, no global state. Every error is a :class:`ShipmapError` carrying its location.
"""

from ._allowance import Allowance, Cut, Stopped, allowed, checkpoint
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
from ._format import mapping_format_schema
from ._kinds import Route, TargetKind, builtin_kinds, get_kind
from ._mapping import (
    CompiledMapping,
    Output,
    load_mapping,
    packaged_mapping_names,
    parse_mapping,
    resolve_mapping_path,
)
from ._sources import SourceDocument, read_documents, read_input, read_named, read_stream
from ._target import CompiledTarget
from ._trace import Trace

__all__ = [
    "Allowance",
    "CompileError",
    "CompiledMapping",
    "CompiledTarget",
    "Cut",
    "Location",
    "MappingError",
    "MappingStructureError",
    "MappingSyntaxError",
    "Output",
    "PayloadValidationError",
    "Problem",
    "Route",
    "ShipmapError",
    "SourceDocument",
    "SourceError",
    "Stopped",
    "TargetKind",
    "Trace",
    "TransformError",
    "allowed",
    "builtin_kinds",
    "checkpoint",
    "get_kind",
    "load_mapping",
    "mapping_format_schema",
    "packaged_mapping_names",
    "parse_mapping",
    "read_documents",
    "read_input",
    "read_named",
    "read_stream",
    "resolve_mapping_path",
]
