"""A config built in code held to the file's rules: each record's keys against the schema the file gives them
(:func:`check_objects`; :func:`check_serve_settings` for what ``Service`` is given), from the one schema of
``_schema``, in the loader's words; and the rules across sections that a file and code share
(:func:`check_across_sections`). ``ConfigError`` names the key and the rule, never the value.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema

from .._errors import ConfigError
from ._model import PathKey, RuntimeConfig, dotted
from ._pairs import check_pairs
from ._schema import _key, _schema, _section, _Validator
from ._schema_errors import _explain
from ._serve_model import Enrichment, ServeSettings, SourceSettings
from ._warnings import warn_phases_past_total, warn_retries_before_breaker


def check_objects(config: RuntimeConfig) -> None:
    """Hold a config built in code to the rules the file's schema gives the same keys, field by field (a
    ``concurrency`` of 0, which delivered nothing and reported success; a scheme or api that does not exist; a
    base_url that is not http(s)), then to its rules across the keys of a section (what each auth scheme
    needs) and on how many connections and mapping entries it has, all from the one schema, and to the rules
    across sections (:func:`check_across_sections`). The routes' rules (a target naming a connection that is
    not defined) are ``plan_routes``', for both. A config loaded from a file passed all of these already, and
    passes here. ``ConfigError`` names the key and the rule, never the value."""
    if config.checked:  # loaded from a file: these held there
        return
    for connection in config.connections:
        _check_record(config, connection, ("connections", connection.name))
    for index, route in enumerate(config.mappings):
        _check_record(config, route, ("mappings", index))
    _check_record(config, config.events, ("events",))
    _check_record(config, config.delivery, ("delivery",))
    _check_record(config, config.journal, ("journal",))
    _check_serve_sections(config)
    _check_counts(config)
    check_across_sections(config)


def _check_serve_sections(config: RuntimeConfig) -> None:
    """``sources`` and ``serve`` of a config built in code, given as a file gives them (mappings), held to the
    schema's rules for those sections: the body caps, the durations, the secrets each source type needs."""
    properties, defs = _schema()["properties"], _schema()["$defs"]
    for key in ("sources", "serve"):
        given = getattr(config, key)
        if given:
            validator = _Validator({**properties[key], "$defs": defs})
            _raise_first(config, validator.iter_errors(_as_given(given)), (key,))


def check_serve_settings(settings: ServeSettings) -> None:
    """Hold a ``ServeSettings`` given to ``Service`` as it is (built in code, or changed after
    ``serve_settings``) to the rules the file's schema gives ``serve`` and ``sources``, field by field and
    across the keys of each source (the secret each type needs; a bigcommerce source's header), with the
    loader's words (``resweep`` at most ``resweep_cap`` and ``keep_bodies`` at most ``dedup_window`` held the
    settings when they were built). ``ConfigError`` names the key and the rule, never the value; it has no
    location, as the settings were not read from a file."""
    _check_record(None, settings, ("serve",))
    names = _Validator({"propertyNames": _schema()["properties"]["sources"]["propertyNames"]})
    _raise_first(None, names.iter_errors(dict.fromkeys(settings.sources)), ("sources",))
    for name, source in settings.sources.items():
        _check_record(None, source, ("sources", name))


def _as_given(value: Any) -> Any:
    """A section given in code as the file would give it; what has no JSON form is left for the schema to
    refuse by its type."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_as_given(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _as_given(item) for key, item in value.items()}
    return value


# The keys a file spells differently from the objects, as a record built in code gives them: held to the
# file's rules for those keys, and present for the rules across keys (a shopify source needs a secret).
_FILE_KEYS: dict[type[Any], Callable[[Any], dict[str, Any]]] = {
    SourceSettings: lambda source: (
        {"secret": [secret.decode("utf-8", "replace") for secret in source.secrets]} if source.secrets else {}
    ),
    Enrichment: lambda enrichment: {
        "fetch": {name: getattr(path, "text", path) for name, path in enrichment.fetch.items()},
        **({"topics": sorted(enrichment.topics)} if enrichment.topics else {}),
    },
}


_FILE_KEY_VALIDATORS: dict[tuple[type[Any], str], jsonschema.protocols.Validator] = {}


def _file_key_validator(cls: type[Any], key: str) -> jsonschema.protocols.Validator:
    """The schema the file gives ``key`` of ``cls``'s section, a key that is no field of ``cls``."""
    if (cls, key) not in _FILE_KEY_VALIDATORS:
        schema = {**_section(cls)["properties"][key], "$defs": _schema()["$defs"]}
        _FILE_KEY_VALIDATORS[cls, key] = _Validator(schema)
    return _FILE_KEY_VALIDATORS[cls, key]


_COUNT_KEYWORDS = ("minItems", "maxItems", "minProperties", "maxProperties")


def _check_counts(config: RuntimeConfig) -> None:
    """The file's rules on how many connections and mapping entries a config has (at least one each), from
    the schema's top-level keys, with its words: an empty ``mappings`` ran and routed every event nowhere."""
    given: dict[str, Any] = {
        "connections": {connection.name: None for connection in config.connections},
        "mappings": [None] * len(config.mappings),
    }
    properties = _schema()["properties"]
    for key, value in given.items():
        rules = {
            keyword: properties[key][keyword] for keyword in _COUNT_KEYWORDS if keyword in properties[key]
        }
        _raise_first(config, _Validator(rules).iter_errors(value), (key,))


EXTERNAL_ID_FIELDS = ("key", "mapping", "target", "source_hash")


def check_across_sections(config: RuntimeConfig) -> None:
    """The rules that the schema cannot say, for a config loaded from a file and one built in code alike: a
    journal in one place, the placeholders of ``delivery.idempotency.external_id``, and ``serve``'s bounds
    that span two keys (``_pairs``; the records hold their own when built); and warnings (``_warnings``) for
    retries that give up before the breaker opens and for a timeout longer than its total."""
    if config.journal.path is not None and config.journal.url is not None:
        raise config.error(
            "journal: takes path (an SQLite file) or url (PostgreSQL), not both", ("journal", "url")
        )
    template = config.delivery.idempotency.external_id
    for placeholder in re.findall(r"\{([^{}]*)\}", template):
        if placeholder not in EXTERNAL_ID_FIELDS:
            raise config.error(
                "external_id template has an unknown placeholder; use "
                + ", ".join("{" + f + "}" for f in EXTERNAL_ID_FIELDS),
                ("delivery", "idempotency", "external_id"),
            )
    # The records check their own pairs when built; serve is the one section a config built in code gives as
    # a file does, so its pairs are checked on the section (a file's again, having passed before the build).
    check_pairs({"serve": config.serve}, config.locations)
    warn_retries_before_breaker(config)
    warn_phases_past_total(config)


class _NotJSON(Exception):
    """A value only code can give (a compiled mapping): the file's schema has nothing to say about it."""


def _check_record(config: RuntimeConfig | None, record: Any, path: PathKey) -> None:
    written: dict[str, Any] = {}  # the keys a file would give for this record, for the rules across them
    for field in dataclasses.fields(record):
        if field.metadata.get("not_a_key"):
            continue
        value = getattr(record, field.name)
        where = (*path, field.name)
        if value is None:  # left out: the default applies
            continue
        if dataclasses.is_dataclass(value):
            _check_record(config, value, where)
            continue
        if isinstance(value, Mapping) and value and all(dataclasses.is_dataclass(v) for v in value.values()):
            for key, item in value.items():  # a route's targets
                _check_record(config, item, (*where, key))
            continue
        try:
            instance = _as_json(value)
        except _NotJSON:
            continue
        written[field.name] = instance
        _raise_first(config, _field_validator(field, type(record).__module__).iter_errors(instance), where)
    derive = _FILE_KEYS.get(type(record))
    for key, instance in (derive(record) if derive is not None else {}).items():
        written[key] = instance
        _raise_first(config, _file_key_validator(type(record), key).iter_errors(instance), (*path, key))
    across = _across_validator(type(record))
    if across is not None:
        _raise_first(config, across.iter_errors(written), path)


def _raise_first(
    config: RuntimeConfig | None, errors: Iterable[jsonschema.ValidationError], path: PathKey
) -> None:
    """The most relevant of ``errors`` as a ConfigError, located where ``config``'s file wrote it (None:
    settings built in code, with no file to point at)."""
    error = jsonschema.exceptions.best_match(errors)
    if error is not None:
        at: PathKey = (*path, *error.absolute_path)
        message, at = _explain(error, at)
        raise ConfigError(f"{dotted(at)}: {message}", location=config.where(at) if config else None)


_ACROSS_KEYS = ("allOf", "anyOf", "oneOf", "not")


_ACROSS_VALIDATORS: dict[type[Any], jsonschema.protocols.Validator | None] = {}


def _across_validator(cls: type[Any]) -> jsonschema.protocols.Validator | None:
    """The rules the file's schema gives across the keys of ``cls``'s section (``_SECTION_EXTRAS``: what each
    auth scheme needs, base_url or region), as the schema has them; None for a section without any."""
    if cls not in _ACROSS_VALIDATORS:
        section = _section(cls)
        rules = {keyword: section[keyword] for keyword in _ACROSS_KEYS if keyword in section}
        schema = {**rules, "$defs": _schema()["$defs"]}
        _ACROSS_VALIDATORS[cls] = _Validator(schema) if rules else None
    return _ACROSS_VALIDATORS[cls]


@functools.cache
def _field_validator(field: dataclasses.Field[Any], module: str) -> jsonschema.protocols.Validator:
    """The schema the file gives one field's key, with the file's $defs (durations, sections) to refer to."""
    annotation = eval(field.type, vars(sys.modules[module])) if isinstance(field.type, str) else field.type
    schema = {**_key(annotation, field, required=False), "$defs": _schema()["$defs"]}
    return _Validator(schema)


def _as_json(value: Any) -> Any:
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_as_json(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _as_json(item) for key, item in value.items()}
    raise _NotJSON
