"""The sandbox: a local Fenix + Digital Genius API server with a request recorder and fault injection.

See docs/sandbox.md. Public names are re-exported from ``shipmap.connectors``.
"""

from ._config import (
    DEFAULT_DUPLICATE_KEYS,
    DEFAULT_FAULT_IDENTITIES,
    DEFAULT_FAULTED,
    DEFAULT_KEEP,
    DEFAULT_TOKEN_TTL,
    SandboxConfig,
    SandboxCredentials,
)
from ._faults import FaultPlan
from ._recorder import RecordedRequest
from ._server import Sandbox

__all__ = [
    "DEFAULT_DUPLICATE_KEYS",
    "DEFAULT_FAULTED",
    "DEFAULT_FAULT_IDENTITIES",
    "DEFAULT_KEEP",
    "DEFAULT_TOKEN_TTL",
    "FaultPlan",
    "RecordedRequest",
    "Sandbox",
    "SandboxConfig",
    "SandboxCredentials",
]
