"""shipmap.connectors: auth schemes, HTTP delivery, the journal, the CLI and the sandbox server."""

# The sandbox: a local Fenix + Digital Genius API server (docs/sandbox.md).
from ._sandbox import FaultPlan as FaultPlan
from ._sandbox import RecordedRequest as RecordedRequest
from ._sandbox import Sandbox as Sandbox
from ._sandbox import SandboxConfig as SandboxConfig
from ._sandbox import SandboxCredentials as SandboxCredentials
