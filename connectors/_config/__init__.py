"""The runtime config: a YAML file (its JSON Schema is generated from the objects) or the same objects built in code.

Loading a file (``_load``): YAML is composed with node marks so every error names ``file:line:col``; ``${VAR}``
references are filled from the environment, then from a ``.env`` file beside the config (``_secrets``); the
result is validated against the JSON Schema (``_schema``) and built into the config objects (``_build``,
``_model``); then mappings are loaded and every target is given a connection, method and path (``_plan``).
Error messages name keys, never values: a config holds secrets.
"""

from .._config_key import duration_text
from ._build import build_section
from ._checks import check_objects, check_serve_settings
from ._load import journal_path_of, load_config
from ._model import (
    DEFAULT_IDEMPOTENCY_HEADER,
    DEFAULT_JOURNAL,
    DEFAULT_KEEP,
    Api,
    AuthSettings,
    Connection,
    DeliverySettings,
    EventSettings,
    IdempotencySettings,
    JournalSettings,
    MappingRoute,
    PathKey,
    RetryPolicy,
    RuntimeConfig,
    Scheme,
    TargetRoute,
    Timeouts,
    join_url,
    parse_duration,
)
from ._plan import PlannedRoute, PlannedTarget, compile_expression, plan_routes
from ._schema import config_schema
from ._secrets import (
    SECRET_FIELDS,
    CredentialReader,
    _read_dotenv,
    fill_references,
    header_safe,
    url_has_credentials,
)

__all__ = [
    "DEFAULT_IDEMPOTENCY_HEADER",
    "DEFAULT_JOURNAL",
    "DEFAULT_KEEP",
    "SECRET_FIELDS",
    "Api",
    "AuthSettings",
    "Connection",
    "CredentialReader",
    "DeliverySettings",
    "EventSettings",
    "IdempotencySettings",
    "JournalSettings",
    "MappingRoute",
    "PathKey",
    "PlannedRoute",
    "PlannedTarget",
    "RetryPolicy",
    "RuntimeConfig",
    "Scheme",
    "TargetRoute",
    "Timeouts",
    "_read_dotenv",
    "build_section",
    "check_objects",
    "check_serve_settings",
    "compile_expression",
    "config_schema",
    "duration_text",
    "fill_references",
    "header_safe",
    "join_url",
    "journal_path_of",
    "load_config",
    "parse_duration",
    "plan_routes",
    "url_has_credentials",
]
