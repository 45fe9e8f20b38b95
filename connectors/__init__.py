"""shipmap.connectors: auth schemes, HTTP delivery, the journal, the CLI and the sandbox server.

Names are imported on first use, so that ``shipmap --help`` and ``shipmap preview`` do not pay for httpx,
asyncio, SQLite, starlette and uvicorn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from ._deliver._auth import ApiKeyAuth as ApiKeyAuth
    from ._deliver._auth import BasicAuth as BasicAuth
    from ._deliver._auth import BearerAuth as BearerAuth
    from ._deliver._auth import FenixSessionAuth as FenixSessionAuth
    from ._deliver._auth import NoAuth as NoAuth
    from ._deliver._auth import ShipmapAuth as ShipmapAuth
    from ._deliver._breaker import BreakerSettings as BreakerSettings
    from ._errors import EXIT_DEAD_LETTERS as EXIT_DEAD_LETTERS
    from ._errors import EXIT_HELD as EXIT_HELD
    from ._errors import EXIT_OUTAGE as EXIT_OUTAGE
    from ._errors import AuthError as AuthError
    from ._errors import ConfigError as ConfigError
    from ._errors import ConnectorError as ConnectorError
    from ._errors import DeliveryError as DeliveryError
    from ._errors import JournalError as JournalError
    from ._errors import SendingStopped as SendingStopped
    from ._redact import RedactingFilter as RedactingFilter
    from ._redact import Redactor as Redactor
    from ._runtime import PlanEntry as PlanEntry
    from ._runtime import Progress as Progress
    from ._runtime import RunSummary as RunSummary
    from ._runtime import Runtime as Runtime
    from ._runtime import TargetKey as TargetKey
    from ._runtime import TargetSummary as TargetSummary
    from ._sandbox import FaultPlan as FaultPlan
    from ._sandbox import RecordedRequest as RecordedRequest
    from ._sandbox import Sandbox as Sandbox
    from ._sandbox import SandboxConfig as SandboxConfig
    from ._sandbox import SandboxCredentials as SandboxCredentials
    from ._store._entries import JournalEntry as JournalEntry
    from ._store._entries import RejectedInput as RejectedInput
    from ._store._journal import Journal as Journal

_EXPORTS: dict[str, str] = {
    "ApiKeyAuth": "._deliver._auth",
    "BasicAuth": "._deliver._auth",
    "BearerAuth": "._deliver._auth",
    "FenixSessionAuth": "._deliver._auth",
    "NoAuth": "._deliver._auth",
    "ShipmapAuth": "._deliver._auth",
    "AuthSettings": "._config",
    "BreakerSettings": "._deliver._breaker",
    "Connection": "._config",
    "DeliverySettings": "._config",
    "EventSettings": "._config",
    "IdempotencySettings": "._config",
    "JournalSettings": "._config",
    "MappingRoute": "._config",
    "RetryPolicy": "._config",
    "RuntimeConfig": "._config",
    "TargetRoute": "._config",
    "Timeouts": "._config",
    "config_schema": "._config",
    "load_config": "._config",
    "EXIT_DEAD_LETTERS": "._errors",
    "EXIT_HELD": "._errors",
    "EXIT_OUTAGE": "._errors",
    "AuthError": "._errors",
    "ConfigError": "._errors",
    "ConnectorError": "._errors",
    "DeliveryError": "._errors",
    "JournalError": "._errors",
    "SendingStopped": "._errors",
    "Journal": "._store._journal",
    "JournalEntry": "._store._entries",
    "RejectedInput": "._store._entries",
    "RedactingFilter": "._redact",
    "Redactor": "._redact",
    "PlanEntry": "._runtime",
    "Progress": "._runtime",
    "RunSummary": "._runtime",
    "Runtime": "._runtime",
    "TargetKey": "._runtime",
    "TargetSummary": "._runtime",
    "FaultPlan": "._sandbox",
    "RecordedRequest": "._sandbox",
    "Sandbox": "._sandbox",
    "SandboxConfig": "._sandbox",
    "SandboxCredentials": "._sandbox",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value
