"""shipmap.connectors: auth schemes, HTTP delivery, the journal, the CLI and the sandbox server."""

# The connector runtime: config, auth schemes, delivery, journal (docs/runtime.md).
from ._auth import ApiKeyAuth as ApiKeyAuth
from ._auth import BasicAuth as BasicAuth
from ._auth import BearerAuth as BearerAuth
from ._auth import FenixSessionAuth as FenixSessionAuth
from ._auth import NoAuth as NoAuth
from ._auth import ShipmapAuth as ShipmapAuth
from ._config import AuthSettings as AuthSettings
from ._config import Connection as Connection
from ._config import DeliverySettings as DeliverySettings
from ._config import EventSettings as EventSettings
from ._config import IdempotencySettings as IdempotencySettings
from ._config import JournalSettings as JournalSettings
from ._config import MappingRoute as MappingRoute
from ._config import RetryPolicy as RetryPolicy
from ._config import RuntimeConfig as RuntimeConfig
from ._config import TargetRoute as TargetRoute
from ._config import Timeouts as Timeouts
from ._config import config_schema as config_schema
from ._config import load_config as load_config
from ._errors import EXIT_DEAD_LETTERS as EXIT_DEAD_LETTERS
from ._errors import AuthError as AuthError
from ._errors import ConfigError as ConfigError
from ._errors import ConnectorError as ConnectorError
from ._errors import DeliveryError as DeliveryError
from ._errors import JournalError as JournalError
from ._journal import Journal as Journal
from ._journal import JournalEntry as JournalEntry
from ._redact import RedactingFilter as RedactingFilter
from ._redact import Redactor as Redactor
from ._runtime import PlanEntry as PlanEntry
from ._runtime import Progress as Progress
from ._runtime import RunSummary as RunSummary
from ._runtime import Runtime as Runtime
from ._runtime import TargetSummary as TargetSummary

# The sandbox: a local Fenix + Digital Genius API server (docs/sandbox.md).
from ._sandbox import FaultPlan as FaultPlan
from ._sandbox import RecordedRequest as RecordedRequest
from ._sandbox import Sandbox as Sandbox
from ._sandbox import SandboxConfig as SandboxConfig
from ._sandbox import SandboxCredentials as SandboxCredentials
