"""SIGHUP in ``shipmap serve``: the config file read again, compared with what runs, and what comes of it.

``read_again`` reads the file (its env file, its ``${file:...}`` secrets and the mapping files it names) off
the event loop, within ``RELOAD_DEADLINE_S``, refuses what a reload cannot apply, and says what changed: a
:class:`Reading`. The service applies it (``Service.reload``: sources to intake, a mapper to delivery) under
its own lock; nothing here changes a running part. ``log_reload`` is the SIGHUP handler's report.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from shipmap.engine import ShipmapError

from .._config import RuntimeConfig, load_config
from .._config_key import key_in_effect
from .._errors import ConfigError
from .._map._mapper import EventMapper
from .._runtime import Runtime
from ._settings import Enrichment, ServeSettings, SourceSettings, serve_settings

RELOAD_DEADLINE_S = 30.0  # reading the config file, its env file and secret files again
# The serve keys a reload applies: intake reads them at each request. The others are set at start.
RELOADED_SERVE_KEYS = ("intake_deadline", "intake_max_waiting")


@dataclass(frozen=True)
class Reloaded:
    """What a reload did: ``changed``, one line per source (``shop: secrets, rate_limit``; never a value), per
    mappings entry (``mappings[0] shopify-order: changed``), per connection (``connections.fenix: base_url,
    auth.password``), ``events``, ``delivery: retry`` and ``serve: intake_deadline`` (``RELOADED_SERVE_KEYS``);
    a source's ``enrich`` by its keys (``bc: enrich.fetch``); ``not_applied``, the other keys of the config
    found changed (``serve.dedup_window``), which wait for a restart."""

    changed: tuple[str, ...]
    not_applied: tuple[str, ...]


@dataclass(frozen=True)
class Reading:
    """The config file as a reload found it, for the service to apply."""

    config: RuntimeConfig  # its secrets are the redactor's before anything of it runs
    settings: ServeSettings  # the running ones with the file's sources and RELOADED_SERVE_KEYS
    mapper: EventMapper | None  # None: mappings, events, connections and delivery as they run
    reloaded: Reloaded


async def read_again(
    runtime: Runtime,
    settings: ServeSettings,
    mapper: EventMapper,
    started_with: Mapping[str, Any],
) -> Reading:
    """The runtime's config file read again and compared with the running ``settings`` (its sources and
    ``RELOADED_SERVE_KEYS``), the running ``mapper`` and the file's sections as the service ``started_with``.
    Raises ConfigError or MappingError, located in its file, for what a
    reload refuses (see ``Service.reload``)."""
    file = runtime.config.file
    if file is None:
        raise ConfigError("this service was not started from a config file: there is nothing to reload")
    try:  # a file on a mount that hangs must not hold every later reload
        async with asyncio.timeout(RELOAD_DEADLINE_S):
            config, sections, new_mapper = await asyncio.to_thread(_read_again, file, runtime)
    except TimeoutError:
        raise ConfigError(
            f"reading the config file, its secrets and its mappings took more than {RELOAD_DEADLINE_S:g} s"
        ) from None
    running, found = settings.sources, serve_settings(config)
    sources = found.sources
    serve_keys = [key for key in RELOADED_SERVE_KEYS if getattr(settings, key) != getattr(found, key)]
    changed = (
        *_source_changes(running, sources),
        *([f"serve: {', '.join(serve_keys)}"] if serve_keys else []),
    )
    remapped = (
        *_mapping_changes(mapper, new_mapper),
        *_delivery_changes(mapper.config, new_mapper.config),
    )
    return Reading(
        config,
        dataclasses.replace(
            settings, sources=sources, **{key: getattr(found, key) for key in RELOADED_SERVE_KEYS}
        ),
        new_mapper if remapped else None,
        Reloaded(
            changed + remapped,
            (
                *_not_applied(started_with, sections),
                *_settings_changed("journal", runtime.config.journal, config.journal),
                *_settings_changed("serve", settings, found, RELOADED_SERVE_KEYS),
            ),
        ),
    )


async def log_reload(
    reload: Callable[[], Awaitable[Reloaded]],
    file: str | None,
    log: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    """SIGHUP: reload, and say in the log what came of it (never a value)."""
    try:
        reloaded = await reload()
    except ShipmapError as error:
        log.error("reload refused; the running configuration stays: %s", error)
        return
    except Exception as error:  # a bug: the service goes on as it was, and says so without a traceback
        log.error("reload failed; the running configuration stays: %s: %s", type(error).__name__, error)
        return
    log.info(
        "reloaded %s: %s", file, "; ".join(reloaded.changed) if reloaded.changed else "no change it applies"
    )
    if reloaded.not_applied:
        log.warning(
            "%s changed in %s but a reload does not apply it: restart to apply (SIGTERM drains)",
            ", ".join(reloaded.not_applied),
            file,
        )


def sections(file: str | None) -> dict[str, Any]:
    """The config file's top-level sections as written (before ``${...}`` is filled), to compare."""
    if file is None:
        return {}
    try:
        value = yaml.safe_load(Path(file).read_text(encoding="utf-8-sig"))
    except (OSError, ValueError, yaml.YAMLError):  # load_config says what is wrong with it
        return {}
    return value if isinstance(value, dict) else {}


def _read_again(file: str, runtime: Runtime) -> tuple[RuntimeConfig, dict[str, Any], EventMapper]:
    """The config file read again, its sections as written, and a mapper of its ``mappings`` and ``events``
    over its ``connections`` (enrichment's too: its next GETs take them, ``Enricher``; those it adds at
    once) and ``delivery`` (its mapping files loaded and compiled)."""
    config = load_config(file)
    running = {connection.name: connection for connection in runtime.config.connections}
    gone = sorted(running.keys() - {connection.name for connection in config.connections})
    if gone:
        raise config.error(
            f"connection '{gone[0]}' is gone from the file: a reload does not remove connections (deliveries"
            " pending in the journal may need it); restart the service to remove it",
            ("connections",),
        )
    delivery = config.delivery
    if runtime.concurrency_override is not None:  # --concurrency outranks the file, as at start
        delivery = dataclasses.replace(delivery, concurrency=runtime.concurrency_override)
    remapped = dataclasses.replace(
        runtime.config,
        connections=config.connections,
        mappings=config.mappings,
        events=config.events,
        delivery=delivery,
        base_dir=config.base_dir,
        locations=config.locations,
    )
    mapper = EventMapper(remapped, runtime.redactor)
    mapper.prepare()
    return config, sections(file), mapper


def _source_changes(
    before: Mapping[str, SourceSettings], after: Mapping[str, SourceSettings]
) -> Iterator[str]:
    for name in sorted(before.keys() | after.keys()):
        if name not in after:
            yield f"{name}: removed"
        elif name not in before:
            yield f"{name}: added"
        else:
            keys = [
                key.name
                for key in dataclasses.fields(SourceSettings)
                if key.name != "enrich" and getattr(before[name], key.name) != getattr(after[name], key.name)
            ]
            keys += _enrich_changes(before[name].enrich, after[name].enrich)
            if keys:
                yield f"{name}: {', '.join(keys)}"


def _enrich_changes(before: Enrichment | None, after: Enrichment | None) -> list[str]:
    """``enrich`` added or removed, else its keys that changed (``enrich.fetch``; a path by its text)."""
    if before is None or after is None:
        return [] if before is after else ["enrich"]
    return [f"enrich.{name}" for name in _fields_changed(before, after)]


def _mapping_changes(before: EventMapper, after: EventMapper) -> Iterator[str]:
    """One line per mappings entry added, removed or changed (as written, or its mapping file's text), and
    ``events`` when its settings changed."""
    (events_before, entries_before), (events_after, entries_after) = before.identity(), after.identity()
    if events_before != events_after:
        yield "events"
    for index in range(max(len(entries_before), len(entries_after))):
        if index >= len(entries_after):
            yield f"mappings[{index}] {before.routes[index].mapping.name}: removed"
        elif index >= len(entries_before):
            yield f"mappings[{index}] {after.routes[index].mapping.name}: added"
        elif entries_before[index] != entries_after[index]:
            yield f"mappings[{index}] {after.routes[index].mapping.name}: changed"


def _delivery_changes(before: RuntimeConfig, after: RuntimeConfig) -> Iterator[str]:
    """One line per connection added or changed, with the settings that changed (``connections.fenix:
    base_url, auth.password``; never a value), and ``delivery`` with its own."""
    connections = {c.name: c for c in before.connections}
    for connection in after.connections:
        earlier = connections.get(connection.name)
        if earlier is None:
            yield f"connections.{connection.name}: added"
        elif earlier != connection:
            yield f"connections.{connection.name}: {', '.join(_fields_changed(earlier, connection))}"
    if before.delivery != after.delivery:
        yield f"delivery: {', '.join(_fields_changed(before.delivery, after.delivery))}"


def _settings_changed(section: str, before: Any, after: Any, applied: tuple[str, ...] = ()) -> list[str]:
    """The keys of a loaded ``section`` that a reload does not apply and that run with another value now
    (``serve.dedup_window``), by what they run with: a key written at its default is no change."""
    written = {key.name for key in dataclasses.fields(before) if not key.metadata.get("not_a_key")}
    return sorted(
        f"{section}.{name}"
        for name in _fields_changed(before, after)
        if name in written and name not in applied
    )


def _fields_changed(before: Any, after: Any, prefix: str = "") -> list[str]:
    """The names of the settings that differ in what they run with, never their values. A connection's ``auth`` by its keys
    (``auth.password``, ``auth.refresh_margin``): which credential changed is the operator's to know, its
    value a secret."""
    changed: list[str] = []
    for field in dataclasses.fields(before):
        old, new = key_in_effect(before, field.name), key_in_effect(after, field.name)
        if not field.compare or old == new:
            continue
        if field.name == "auth":
            changed += _fields_changed(old, new, f"{prefix}auth.")
        else:
            changed.append(prefix + field.name)
    return changed


_APPLIED = frozenset({"sources", "mappings", "events", "connections", "delivery"})
# Compared as loaded (``_settings_changed``), by the values they run with, not as written.
_COMPARED_LOADED = frozenset({"serve", "journal"})


def _not_applied(started: Mapping[str, Any], now: Mapping[str, Any]) -> Iterator[str]:
    """The sections a reload does not apply that differ from the file the service started with, as written,
    by key (``serve`` and ``journal`` are compared as loaded: ``_settings_changed``; a section that is no
    mapping, or not one any more, by its name). (Credentials written as references need no reload: each
    connection reads them again itself, at a login or a 401.)"""
    for key in sorted((started.keys() | now.keys()) - _APPLIED - _COMPARED_LOADED):
        before, after = started.get(key), now.get(key)
        if before == after:
            continue
        if isinstance(before, Mapping) and isinstance(after, Mapping):
            for name in sorted(before.keys() | after.keys(), key=str):
                if before.get(name) != after.get(name):
                    yield f"{key}.{name}"
        else:
            yield key
