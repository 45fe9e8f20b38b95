"""The exact HTTP requests ``shipmap run`` would send for the mapping being edited: the runtime's own dry run
(``Runtime.plan``), with the run config found in the studio's directory, or the local sandbox's defaults.

The config is read as ``shipmap run`` reads it, except that its mappings entries are replaced by the mapping
in the editor (keeping the entry's target overrides), events are taken as the mapping's source documents
(no topic routing), and no journal is read: the studio shows what would be sent, not what was sent before.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from shipmap.engine import CompiledMapping, ShipmapError

from .._config import (
    AuthSettings,
    Connection,
    EventSettings,
    JournalSettings,
    MappingRoute,
    RuntimeConfig,
    _read_dotenv,
    load_config,
)
from .._plural import counted
from .._runtime import PlanEntry, Runtime
from .._sandbox import SandboxCredentials
from ._errors import StudioError
from ._files import Workspace

log = logging.getLogger("shipmap.studio")

SANDBOX_URL = "http://127.0.0.1:8765"  # where `shipmap sandbox` listens by default
CONFIG_NAMES = ("shipmap.yaml", "config.yaml", "shipmap.yml", "config.yml")
_EXAMPLE_ENV = ".env.example"
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class RequestSetting:
    """The config a plan is made with, and a sentence on where it came from (shown above the requests)."""

    config: RuntimeConfig
    routes: tuple[MappingRoute, ...]
    note: str


def sandbox_config(mapping: CompiledMapping) -> RuntimeConfig:
    """Both APIs on the local sandbox, with its demo credentials (they are redacted like any others)."""
    demo = SandboxCredentials()
    fenix = AuthSettings(
        scheme="fenix_session",
        username=demo.fenix_username,
        password=demo.fenix_password,
        api_key=demo.fenix_api_key,
        store_name=demo.fenix_store_name,
    )
    dg = AuthSettings(scheme="basic", username=demo.dg_api_key, password=demo.dg_api_secret)
    return RuntimeConfig(
        connections=(
            Connection("fenix", "fenix", SANDBOX_URL, fenix),
            Connection("dg", "dg", SANDBOX_URL, dg),
        ),
        mappings=(MappingRoute(mapping),),
    )


def find_config(workspace: Workspace) -> Path | None:
    for name in CONFIG_NAMES:
        candidate = workspace.root / name
        if candidate.is_file() and workspace.contains(candidate):
            return candidate
    configs = workspace.listing().configs
    return workspace.resolve(configs[0]) if configs else None


def load_setting(workspace: Workspace, mapping: CompiledMapping, mapping_file: str | None) -> RequestSetting:
    """The config to plan with. A config that cannot be used is reported in the note, never raised."""
    path = find_config(workspace)
    fallback = "the local sandbox's defaults (http://127.0.0.1:8765, demo credentials)"
    if path is None:
        return RequestSetting(
            sandbox_config(mapping), (MappingRoute(mapping),), f"no run config here: {fallback}"
        )
    shown = workspace.relative(path)
    try:
        config, filled = _load_confined(workspace, path)
    except ShipmapError as error:
        note = f"{shown} cannot be used ({workspace.render(error).splitlines()[0]}): {fallback}"
        return RequestSetting(sandbox_config(mapping), (MappingRoute(mapping),), note)
    edited = (workspace.root / mapping_file).resolve() if mapping_file else None
    kept = [route for route in config.mappings if _same_file(route, config.base_dir, edited)]
    routes = tuple(
        MappingRoute(mapping, targets=route.targets, default_zone=route.default_zone) for route in kept
    ) or (MappingRoute(mapping),)
    note = f"the connections of {shown}"
    if filled:
        note += f"; {counted(len(filled), 'variable')} set nowhere else taken from {_EXAMPLE_ENV}"
    return RequestSetting(config, routes, note)


def plan_requests(setting: RequestSetting, source: Any) -> list[PlanEntry]:
    """What ``shipmap run --dry-run`` shows for one source document: every request, headers redacted."""
    config = dataclasses.replace(
        setting.config, mappings=setting.routes, events=EventSettings(), journal=JournalSettings(None)
    )
    return list(Runtime(config).plan([source]))


def _load_confined(workspace: Workspace, path: Path) -> tuple[RuntimeConfig, set[str]]:
    """``load_config``, refusing an env_file outside the directory; variables neither in the environment
    nor in .env are taken from .env.example (the sandbox's demo values that `shipmap init` writes)."""
    env_file = _env_file_of(path)
    dotenv = path.parent / (env_file or ".env")
    try:
        outside = not workspace.contains(dotenv)
    except StudioError:  # a link that loops: nothing outside is read, and load_config says so at its line
        outside = False
    if outside:
        raise ShipmapError(f"env_file {env_file} is outside the studio's directory")
    try:
        return load_config(path), set()
    except ShipmapError:
        example = path.parent / _EXAMPLE_ENV
        if not example.is_file() or not workspace.contains(example):
            raise
    given = dict(_read_dotenv(dotenv)) if dotenv.is_file() else {}
    given.update(os.environ)
    examples = _read_dotenv(example)
    referenced = set(_VARIABLE.findall(path.read_text(encoding="utf-8")))
    filled = {name for name in examples if name not in given and name in referenced}
    return load_config(path, environ={**examples, **given}), filled


def _env_file_of(path: Path) -> str | None:
    try:
        value = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None  # load_config words the problem
    found = value.get("env_file") if isinstance(value, Mapping) else None
    return found if isinstance(found, str) else None


def _same_file(route: MappingRoute, base_dir: Path, edited: Path | None) -> bool:
    if edited is None or not isinstance(route.mapping, str):
        return False
    text = route.mapping
    return (base_dir / Path(text).expanduser()).resolve() == edited
