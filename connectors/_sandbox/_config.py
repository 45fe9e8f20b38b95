"""Sandbox settings: the credentials it accepts, token lifetime, faults, recording, where it listens."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from shipmap.engine import Location, MappingError
from shipmap.engine._yaml import decode_utf8, load_located

from .._errors import ConfigError
from ._faults import DEFAULT_FAULT_IDENTITIES as DEFAULT_FAULT_IDENTITIES
from ._faults import FaultPlan

DEFAULT_HOST = "127.0.0.1"
DEFAULT_TOKEN_TTL = 4 * 60 * 60.0  # the Fenix seed: authToken expires every 4 hours
# Accepted requests kept in memory, the newest: a Fenix order is ~17 KB there, so 10,000 is ~170 MB.
DEFAULT_KEEP = 10_000
# Distinct keys the duplicate check remembers, the newest. Measured with tracemalloc (the recorder's _Seen):
# ~0.6 KB a key seen once (~31 MB at the peak of turning 50,000 over), ~2.1 KB a key listed in full (100 seqs,
# 100 distinct bodies), so ~105 MB at most. 200,000 held ~190 MB of keys seen once, ~4.8 GB listed in full.
DEFAULT_DUPLICATE_KEYS = 50_000
# Injected error answers and drops listed by /_sandbox/faulted, the newest (~160 bytes each: ~16 MB).
DEFAULT_FAULTED = 100_000
ENV_PREFIX = "SHIPMAP_SANDBOX_"

# Credentials file layout: {"fenix": {...}, "dg": {...}} -> field names.
_FILE_KEYS: dict[str, dict[str, str]] = {
    "fenix": {
        "username": "fenix_username",
        "password": "fenix_password",
        "api_key": "fenix_api_key",
        "store_name": "fenix_store_name",
    },
    "dg": {"api_key": "dg_api_key", "api_secret": "dg_api_secret"},
}


@dataclass(frozen=True, slots=True)
class SandboxCredentials:
    """What the sandbox accepts. The defaults are the documented demo credentials."""

    fenix_username: str = "demo-user"
    fenix_password: str = "demo-pass"
    fenix_api_key: str = "demo-api-key"
    fenix_store_name: str = "demo-store"
    dg_api_key: str = "demo-key"
    dg_api_secret: str = "demo-secret"

    @classmethod
    def load(
        cls,
        file: str | Path | None = None,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, str | None] | None = None,
    ) -> SandboxCredentials:
        """Demo credentials, then a file's, then ``SHIPMAP_SANDBOX_<FIELD>`` variables, then ``overrides``.

        Each later source wins per field; ``None`` in ``overrides`` leaves a field alone.
        """
        creds = cls()
        if file is not None:
            creds = replace(creds, **_read_file(Path(file)))
        names = [f.name for f in fields(cls)]
        if environ is not None:
            from_env = {
                name: environ[ENV_PREFIX + name.upper()]
                for name in names
                if ENV_PREFIX + name.upper() in environ
            }
            creds = replace(creds, **from_env)
        if overrides:
            unknown = sorted(set(overrides) - set(names))
            if unknown:
                raise ValueError(f"unknown credential field(s): {', '.join(unknown)}")
            creds = replace(creds, **{k: v for k, v in overrides.items() if v is not None})
        return creds

    def is_demo(self) -> bool:
        return self == SandboxCredentials()


def _read_file(path: Path) -> dict[str, str]:
    # Errors name the file, line and column, never the text there: it holds passwords and keys.
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read sandbox credentials file {path}: {error.strerror or error}") from None
    try:
        text = decode_utf8(raw, str(path), "sandbox credentials file")  # at the bad byte, without its line
        if path.suffix.lower() == ".json":
            data: Any = json.loads(text)
        else:  # the mappings' bounded, located loader: no alias bomb, no tag, no runaway nesting
            data = load_located(text, str(path), str, what="sandbox credentials file").value
    except MappingError as error:
        where = replace(error.location, line_text="") if error.location else None
        raise ConfigError(error.message, location=where) from None
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"sandbox credentials file is not valid JSON: {error.msg}",
            location=Location(str(path), error.lineno, error.colno),
        ) from None
    except (ValueError, RecursionError):
        raise ConfigError(
            f"sandbox credentials file {path} is not valid JSON (nested too deeply, or a number too long)"
        ) from None
    hint = "expected sections fenix (username, password, api_key, store_name) and dg (api_key, api_secret)"
    if not isinstance(data, dict):
        raise ConfigError(f"sandbox credentials file {path} must hold an object", hint=hint)
    found: dict[str, str] = {}
    for section, content in data.items():
        keys = _FILE_KEYS.get(section)
        if keys is None or not isinstance(content, dict):
            raise ConfigError(f"sandbox credentials file {path}: unexpected section {section!r}", hint=hint)
        for key, value in content.items():
            if key not in keys:
                raise ConfigError(f"sandbox credentials file {path}: unknown key {section}.{key}", hint=hint)
            if not isinstance(value, str) or not value:
                raise ConfigError(
                    f"sandbox credentials file {path}: {section}.{key} must be a non-empty string"
                )
            found[keys[key]] = value
    return found


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """Everything a sandbox server is started with. ``port=0`` picks a free port."""

    host: str = DEFAULT_HOST
    port: int = 0
    token_ttl: float = DEFAULT_TOKEN_TTL
    credentials: SandboxCredentials = field(default_factory=SandboxCredentials)
    faults: FaultPlan = field(default_factory=FaultPlan)  # the plan for both APIs
    # A plan of Fenix's or Digital Genius's own answers that API's requests instead (None: the plan for both).
    fenix_faults: FaultPlan | None = None
    dg_faults: FaultPlan | None = None
    record: Path | None = None
    # Accepted requests kept in memory for requests() (the newest; 0 keeps all). Counts and the record file
    # cover every request whatever this is.
    keep: int = DEFAULT_KEEP
    # The distinct keys (order ids, external ids) the duplicate check remembers, the newest: so a sandbox left
    # running stays bounded. A key let go is counted (stats' duplicate_keys_forgotten).
    duplicate_keys: int = DEFAULT_DUPLICATE_KEYS
    # Injected error answers and drops listed by faulted(), the newest; one let go is counted (faulted_forgotten).
    faulted: int = DEFAULT_FAULTED
    # Request identities each fault plan remembers attempts of, the most recently seen (~260 bytes each): a
    # forgotten one that comes back draws as its first attempt; counted (the plan's identities_forgotten).
    fault_identities: int = DEFAULT_FAULT_IDENTITIES
    # The fake source API (``_source_api``): a directory of fixture documents, and the X-Auth-Token it wants.
    source_documents: Path | None = None
    source_token: str | None = None
    # Faults of the fake source API alone (an outage of the store's API, not of the delivery targets).
    source_faults: FaultPlan = field(default_factory=FaultPlan)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        if not self.token_ttl > 0:
            raise ValueError(f"token_ttl must be more than 0 seconds, got {self.token_ttl}")
        if self.keep < 0:
            raise ValueError(f"keep must be 0 (all) or more requests, got {self.keep}")
        if self.duplicate_keys < 1:
            raise ValueError(f"duplicate_keys must be 1 or more, got {self.duplicate_keys}")
        if self.faulted < 1:
            raise ValueError(f"faulted must be 1 or more, got {self.faulted}")
        if self.fault_identities < 1:
            raise ValueError(f"fault_identities must be 1 or more, got {self.fault_identities}")
