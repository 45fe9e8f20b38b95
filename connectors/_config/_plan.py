"""The plan: each mapping of a config loaded and compiled, each target given a connection, a method and a
path. A mismatch is a ConfigError at the config line that causes it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError
from shipmap.engine import CompiledMapping, TargetKind, load_mapping

from ._model import (
    Connection,
    MappingRoute,
    PathKey,
    RuntimeConfig,
    TargetRoute,
    dotted,
    not_a_file,
    resolved,
)


@dataclass(frozen=True, slots=True)
class PlannedTarget:
    name: str
    kind: TargetKind
    connection: Connection
    method: str
    path: str
    enabled: bool


@dataclass(frozen=True)
class PlannedRoute:
    index: int
    mapping: CompiledMapping
    match: Any  # a compiled JMESPath expression, or None
    topics: frozenset[str]
    body: Any
    targets: Mapping[str, PlannedTarget]

    shared: bool = False  # another mappings entry uses the same mapping

    @property
    def name(self) -> str:
        """The name deliveries of this entry are journaled and keyed under: the mapping's name, or, when the
        same mapping serves several entries (one store fanned out to two connections), the name with the
        entry's position, so each entry owes its own deliveries and replays through itself."""
        return f"{self.mapping.name}#{self.index + 1}" if self.shared else self.mapping.name


def compile_expression(expression: str, config: RuntimeConfig, path: PathKey) -> Any:
    try:
        return jmespath.compile(expression)
    except JMESPathError as error:
        position = getattr(error, "lex_position", None)
        where = f" at character {position + 1}" if isinstance(position, int) else ""
        raise config.error(f"{dotted(path)}: not a valid JMESPath expression{where}", path) from None


def plan_routes(config: RuntimeConfig) -> tuple[PlannedRoute, ...]:
    """Load every mapping and route every target; ConfigError (with the config location) on any mismatch."""
    names = [c.name for c in config.connections]
    if len(set(names)) != len(names):
        raise config.error("two connections share a name", ("connections",))
    by_name = {c.name: c for c in config.connections}
    planned: list[PlannedRoute] = []
    for index, route in enumerate(config.mappings):
        here: PathKey = ("mappings", index)
        mapping = route.mapping if not isinstance(route.mapping, str) else _load(route, config, here)
        targets: dict[str, PlannedTarget] = {}
        known = {t.name for t in mapping.targets}
        for name in route.targets:
            if name not in known:
                raise config.error(
                    f"mapping '{mapping.name}' has no target '{name}' "
                    f"(its targets: {', '.join(sorted(known))})",
                    (*here, "targets", name),
                    key=True,
                )
        for target in mapping.targets:
            override = route.targets.get(target.name, TargetRoute())
            at: PathKey = (*here, "targets", target.name)
            if override.connection is not None:
                connection = by_name.get(override.connection)
                if connection is None:
                    raise config.error(
                        f"target '{target.name}' names a connection that is not defined "
                        f"(defined: {', '.join(sorted(by_name))})",
                        (*at, "connection"),
                    )
            else:
                candidates = [c for c in config.connections if c.api == target.kind.api]
                if len(candidates) != 1:
                    problem = "no connection has" if not candidates else "several connections have"
                    raise config.error(
                        f"{problem} api: {target.kind.api}, needed by target '{target.name}' "
                        f"(kind {target.kind.name}) of mapping '{mapping.name}'; "
                        f"set mappings[{index}].targets.{target.name}.connection",
                        here,
                    )
                connection = candidates[0]
            path = override.path or target.kind.route.path
            targets[target.name] = PlannedTarget(
                name=target.name,
                kind=target.kind,
                connection=connection,
                method=(override.method or target.kind.route.method).upper(),
                path=path,
                enabled=override.enabled,
            )
        planned.append(
            PlannedRoute(
                index=index,
                mapping=mapping,
                match=compile_expression(route.match, config, (*here, "match")) if route.match else None,
                topics=frozenset(route.topics),
                body=compile_expression(route.body, config, (*here, "body")) if route.body else None,
                targets=MappingProxyType(targets),
            )
        )
    counts = Counter(route.mapping.name for route in planned)
    planned = [replace(route, shared=True) if counts[route.mapping.name] > 1 else route for route in planned]
    if any(r.topics for r in config.mappings) and not config.events.topic:
        raise config.error("a mappings entry routes by topic, but events.topic is not set", ("mappings",))
    return tuple(planned)


def _load(route: MappingRoute, config: RuntimeConfig, here: PathKey) -> CompiledMapping:
    assert isinstance(route.mapping, str)
    text = route.mapping
    looks_like_path = text.endswith((".yaml", ".yml")) or text.startswith(("./", "../", "/", "~"))
    target: str = str(resolved(config.base_dir / Path(text).expanduser())) if looks_like_path else text
    problem = not_a_file(Path(target)) if looks_like_path else None
    if problem is not None:
        raise config.error(f"mapping file {problem}", (*here, "mapping"))
    return load_mapping(target, default_zone=route.default_zone)
