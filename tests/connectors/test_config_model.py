"""The config's JSON Schema is generated from the config dataclasses (``_config/_schema.py``): a field is a key,
with its type, default, bounds and description. These tests hold the schema's sections to the fields (the
keys only the file spells are the listed few), check that a new field becomes a key with no other code, and
that building a file gives each field the file's value, or else the dataclass's default."""

from __future__ import annotations

import copy
import dataclasses
import re
import sys
import typing
from collections.abc import Iterator
from dataclasses import field
from pathlib import Path
from textwrap import dedent
from typing import Any, Literal

import pytest
import yaml
from shipmap.connectors import (
    AuthSettings,
    ConfigError,
    Connection,
    DeliverySettings,
    EventSettings,
    IdempotencySettings,
    JournalSettings,
    MappingRoute,
    RetryPolicy,
    TargetRoute,
    Timeouts,
    config_schema,
    load_config,
)
from shipmap.connectors._config import build_section
from shipmap.connectors._config._model import parse_duration
from shipmap.connectors._config._schema import _section
from shipmap.connectors._config._serve_model import Enrichment, RateLimit, ServeSettings, SourceSettings
from shipmap.connectors._config_key import about
from shipmap.connectors._deliver._breaker import BreakerSettings
from test_runtime_support import BASE_CONFIG, FIXTURES, environ, write_config

URL = "http://127.0.0.1:9"
ENV = environ(URL)


def section(pointer: str) -> dict[str, Any]:
    found: Any = config_schema()
    for part in pointer.split("/"):
        found = found[int(part)] if isinstance(found, list) else found[part]
    assert isinstance(found, dict)
    return found


# (schema section, its dataclass, keys only the file has, fields only the objects have)
SECTIONS = [
    ("$defs/connection", Connection, {"region"}, {"name"}),  # region -> base_url; name is the mapping key
    # DG's names for username and password
    ("$defs/auth", AuthSettings, {"key", "secret"}, {"reader"}),
    ("$defs/timeout/anyOf/1", Timeouts, set(), set()),
    ("$defs/breaker", BreakerSettings, set(), set()),
    ("$defs/events", EventSettings, set(), set()),
    ("$defs/route", MappingRoute, {"topic"}, {"topics"}),  # one topic or a list -> a tuple
    ("$defs/target_route", TargetRoute, set(), set()),
    ("$defs/delivery", DeliverySettings, set(), set()),
    ("$defs/delivery/properties/retry", RetryPolicy, set(), set()),
    ("$defs/delivery/properties/idempotency", IdempotencySettings, set(), set()),
    ("$defs/journal", JournalSettings, set(), set()),
    # shipmap serve's sections: a source's name is the mapping key, its secret one string or two
    ("$defs/source", SourceSettings, {"secret"}, {"name", "secrets"}),
    ("$defs/source/properties/rate_limit", RateLimit, set(), set()),
    ("$defs/enrich", Enrichment, set(), set()),  # topics and fetch: written as the file has them
    ("$defs/serve", ServeSettings, set(), {"sources"}),  # the sources section, beside serve
]


@pytest.mark.parametrize(
    ("pointer", "cls", "file_only", "object_only"), SECTIONS, ids=[s[0] for s in SECTIONS]
)
def test_each_schema_section_and_its_dataclass_name_the_same_keys(
    pointer: str, cls: type[Any], file_only: set[str], object_only: set[str]
) -> None:
    keys = set(section(pointer)["properties"])
    fields = {field.name for field in dataclasses.fields(cls)}
    assert (keys - fields, fields - keys) == (file_only, object_only)


@pytest.mark.parametrize(("pointer", "cls"), [(s[0], s[1]) for s in SECTIONS], ids=[s[0] for s in SECTIONS])
def test_each_key_shows_its_fields_default(pointer: str, cls: type[Any]) -> None:
    properties, required = section(pointer)["properties"], section(pointer).get("required", [])
    for item in dataclasses.fields(cls):  # a key the file must give shows no default
        if (
            item.name in properties
            and item.name not in required
            and isinstance(item.default, str | int | float)
            and item.default != ""
        ):
            assert properties[item.name]["default"] == item.default, item.name
        elif item.name in properties and "schema_default" in item.metadata:  # None: left out, adapts
            assert properties[item.name]["default"] == item.metadata["schema_default"], item.name


@pytest.mark.parametrize(
    ("pointer", "section_path", "key", "upper", "in_use"),
    [
        (
            "$defs/delivery/properties/retry",
            ("delivery", "retry"),
            "backoff_base",
            "backoff_cap",
            "first_backoff",
        ),
        ("$defs/breaker", ("delivery", "breaker"), "cooldown", "cooldown_cap", "first_cooldown"),
        ("$defs/serve", ("serve",), "resweep", "resweep_cap", "first_resweep"),
    ],
    ids=["backoff_base", "cooldown", "resweep"],
)
def test_a_lower_keys_schema_default_written_runs_as_left_out_or_is_refused(
    tmp_path: Path, pointer: str, section_path: tuple[str, ...], key: str, upper: str, in_use: str
) -> None:
    """What an editor inserts for the lower key of a pair (the schema's ``default``) is the value in use when
    the key is left out, under the default cap or a longer one; under a shorter cap, written, it is refused,
    located: never a config that loads and runs otherwise than the one that left it out."""
    schema = section(pointer)["properties"][key]
    default = schema["default"]
    assert schema["description"].endswith(f", at most {upper}.")  # the text says the rest

    def record(**keys: Any) -> Any:
        """The record of ``section_path`` loaded from a file whose section is ``keys`` alone."""
        config = copy.deepcopy(BASE_CONFIG)
        config["delivery"].pop("retry")  # the base's own backoff keys
        parent = config
        for name in section_path[:-1]:
            parent = parent.setdefault(name, {})
        parent[section_path[-1]] = keys
        path = write_config(tmp_path, URL)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        found: Any = load_config(path, environ=ENV)
        if section_path == ("serve",):  # the section as the file gives it, built as serve_settings does
            return build_section(ServeSettings, dict(found.serve), inbox="i", sources={})
        for name in section_path:
            found = getattr(found, name)
        return found

    for cap in ({}, {upper: f"{default * 4}s"}):  # the default cap, and a longer one
        left_out, written = record(**cap), record(**cap, **{key: default})
        assert (getattr(left_out, key), getattr(written, key)) == (None, default)
        assert getattr(written, in_use) == getattr(left_out, in_use) == default
    shorter = {upper: f"{default / 2}s"}
    assert getattr(record(**shorter), in_use) == default / 2
    with pytest.raises(ConfigError) as caught:
        record(**shorter, **{key: default})
    assert caught.value.message.startswith(f"{'.'.join(section_path)}.{key}: must be at most {upper} (")
    assert caught.value.location is not None


@pytest.mark.parametrize(
    ("pointer", "key"),
    [("$defs/auth", "refresh_margin"), ("$defs/serve", "keep_bodies")],
    ids=["refresh_margin", "keep_bodies"],
)
def test_a_lower_key_whose_default_written_would_run_otherwise_has_no_schema_default(
    pointer: str, key: str
) -> None:
    """refresh_margin: 5m written on an 8m token is used as given, left out it is 4m
    (test_config_pairs); keep_bodies: 7d written under a 30d dedup_window drops bodies sooner than left out,
    which keeps them for the window. Their Default: text alone says it."""
    schema = section(pointer)["properties"][key]
    assert "default" not in schema and "Default: " in schema["description"]


def test_a_new_field_is_a_new_key_with_its_type_bounds_and_default() -> None:
    @dataclasses.dataclass(frozen=True)
    class Settings:
        name: str = field(metadata=about("Who.", minLength=2))
        mode: Literal["a", "b"] = "a"
        tries: int | None = field(default=None, metadata=about(minimum=1, default_text="no limit"))
        wait: float = field(default=90.0, metadata=about("How long.", duration=True))
        limits: BreakerSettings = field(default_factory=BreakerSettings)

    assert _section(Settings) == {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 2, "description": "Who."},
            "mode": {"enum": ["a", "b"], "description": "Default: a.", "default": "a"},
            "tries": {"type": "integer", "minimum": 1, "description": "Default: no limit."},
            "wait": {"$ref": "#/$defs/duration", "description": "How long. Default: 90s.", "default": 90.0},
            "limits": {"$ref": "#/$defs/breaker"},
        },
    }


def test_the_schema_is_generated_once_and_handed_out_as_a_copy() -> None:
    first = config_schema()
    first["$defs"]["breaker"]["properties"].clear()
    assert "failures" in config_schema()["$defs"]["breaker"]["properties"]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "shipmap.yaml"
    path.write_text(dedent(text).lstrip())
    return path


def test_a_file_that_leaves_every_key_out_gets_the_dataclass_defaults(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            f"""
            connections:
              dg: {{api: dg, base_url: "http://127.0.0.1:9"}}
            mappings:
              - mapping: {FIXTURES / "shipments.yaml"}
            """,
        ),
        environ=ENV,
    )
    (connection,) = config.connections
    assert connection == Connection("dg", "dg", "http://127.0.0.1:9")
    assert config.mappings == (MappingRoute(str(FIXTURES / "shipments.yaml")),)
    assert (config.events, config.delivery) == (EventSettings(), DeliverySettings())
    assert config.journal == JournalSettings(path=(tmp_path / ".shipmap" / "journal.db").resolve())


def test_a_file_that_gives_every_key_sets_every_field(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            f"""
            events: {{body: payload, topic: topic, routing: first}}
            connections:
              dg:
                api: dg
                region: us
                auth: {{scheme: basic, key: k-1234, secret: s-1234}}
                timeout: 7s
              shop:
                api: generic
                base_url: "http://127.0.0.1:9"
                auth: {{scheme: api_key, api_key: a-1234, header: x-key, prefix: "Key "}}
                headers: {{x-tenant: acme}}
                timeout: {{connect: 1s, read: 2s, write: 3s, pool: 4s, total: 5s}}
                breaker: {{failures: 3, cooldown: 2s, cooldown_cap: 1m, outage_wait: 10m}}
                idempotency_header: X-Once
                max_rate: 12.5
              fenix:
                api: fenix
                base_url: "http://127.0.0.1:9"
                auth: {{scheme: fenix_session, username: u, password: p-1234, api_key: f-1234,
                        store_name: acme, login_path: /auth, token_ttl: 2h, refresh_margin: 90s}}
            mappings:
              - mapping: {FIXTURES / "shipments.yaml"}
                topic: [shipments/create]
                match: "payload != null"
                body: payload
                default_zone: Europe/Paris
                targets:
                  notify: {{connection: dg, path: /x, method: PUT, enabled: false}}
            delivery:
              concurrency: 3
              timeout: {{total: 9s}}
              retry: {{max_attempts: 2, backoff_base: 100ms, backoff_cap: 2s, jitter: none, retry_after_cap: 5s}}
              idempotency: {{external_id: "x-{{key}}", prefer_mapping: false}}
              response_excerpt_chars: 100
              breaker: {{failures: 9}}
              workers: 0
            journal: {{path: j.db, synchronous: full, lease: 1m}}
            """,
        ),
        environ=ENV,
    )
    dg, shop, fenix = config.connections
    assert dg == Connection(
        "dg",
        "dg",
        "https://flow-server.us.dgdeepai.com",
        AuthSettings("basic", username="k-1234", password="s-1234"),
        timeout=Timeouts(7.0, 7.0, 7.0, 7.0, 60.0),
    )
    assert shop == Connection(
        "shop",
        "generic",
        "http://127.0.0.1:9",
        AuthSettings("api_key", api_key="a-1234", header="x-key", prefix="Key "),
        headers={"x-tenant": "acme"},
        timeout=Timeouts(1.0, 2.0, 3.0, 4.0, 5.0),
        idempotency_header="X-Once",
        breaker=BreakerSettings(failures=3, cooldown=2.0, cooldown_cap=60.0, outage_wait=600.0),
        max_rate=12.5,
    )
    assert fenix.auth == AuthSettings(
        "fenix_session",
        username="u",
        password="p-1234",
        api_key="f-1234",
        store_name="acme",
        login_path="/auth",
        token_ttl=7200.0,
        refresh_margin=90.0,
    )
    assert config.events == EventSettings(body="payload", topic="topic", routing="first")
    assert config.mappings == (
        MappingRoute(
            str(FIXTURES / "shipments.yaml"),
            match="payload != null",
            topics=("shipments/create",),
            body="payload",
            default_zone="Europe/Paris",
            targets={"notify": TargetRoute(connection="dg", path="/x", method="PUT", enabled=False)},
        ),
    )
    assert config.delivery == DeliverySettings(
        concurrency=3,
        timeout=Timeouts(total=9.0),
        retry=RetryPolicy(2, 0.1, 2.0, "none", 5.0),
        idempotency=IdempotencySettings("x-{key}", prefer_mapping=False),
        response_excerpt_chars=100,
        breaker=BreakerSettings(failures=9),
        workers=0,
    )
    assert config.journal == JournalSettings((tmp_path / "j.db").resolve(), "full", lease=60.0)


DOCS = Path(__file__).resolve().parents[2] / "docs"
# Where each generated section's keys are listed: docs/runtime.md's "Every key" table, docs/serve.md's.
DOCUMENTED_AS = {
    "events": ("runtime.md", "events."),
    "connection": ("runtime.md", "connections.N."),
    "route": ("runtime.md", "mappings[]."),
    "target_route": ("runtime.md", "mappings[].targets.T."),
    "delivery": ("runtime.md", "delivery."),
    "breaker": ("runtime.md", "delivery.breaker."),
    "journal": ("runtime.md", "journal."),
    "source": ("serve.md", "sources.S."),
    "enrich": ("serve.md", "sources.S.enrich."),
    "serve": ("serve.md", "serve."),
}


def documented_keys(page: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each generated key that ``page``'s table lists, dotted as there, with its schema."""
    for name, (listed_in, prefix) in DOCUMENTED_AS.items():
        if listed_in != page:
            continue
        pending = [(prefix, section(f"$defs/{name}"))]
        while pending:
            at, node = pending.pop()
            for key, value in node["properties"].items():
                if "properties" in value:  # an inline section: its keys are listed one by one
                    pending.append((f"{at}{key}.", value))
                elif not _holds_a_listed_section(value):
                    yield at + key, value


@pytest.mark.parametrize("page", ["runtime.md", "serve.md"])
def test_every_key_of_the_generated_schema_is_in_the_docs_table(page: str) -> None:
    text = (DOCS / page).read_text(encoding="utf-8")
    assert [key for key, _ in documented_keys(page) if f"`{key}`" not in text] == []


@pytest.mark.parametrize(
    ("page", "read"),
    [
        ("runtime.md", {"delivery.concurrency": "8", "journal.lease": "`30s`"}),
        ("serve.md", {"serve.port": "`8080`", "sources.S.tolerance": "`5m`"}),
    ],
)
def test_the_docs_table_gives_each_key_the_default_the_schema_gives(page: str, read: dict[str, str]) -> None:
    # The table's default column, against the "Default: ..." the schema generates from the field (a duration
    # may be written in another unit: 60s is 1m).
    rows = {}
    for line in (DOCS / page).read_text(encoding="utf-8").splitlines():
        if found := re.fullmatch(r"\| `([^`]+)` \|.*\|([^|]*)\|", line):
            rows.setdefault(found[1], found[2].strip())
    wrong = []
    for key, schema in documented_keys(page):
        said = re.search(r"Default: (.*)\.$", schema.get("description", ""))
        if said and not _same_default(rows.get(key, ""), said[1]):
            wrong.append((key, rows.get(key), said[1]))
    assert wrong == []
    assert {key: rows.get(key) for key in read} == read  # the table was read


def _same_default(documented: str, generated: str) -> bool:
    documented = documented.replace("`", "").strip()
    try:
        return parse_duration(documented) == parse_duration(generated)
    except ValueError:
        return documented.lower() == generated.replace("`", "").lower()


def _holds_a_listed_section(value: dict[str, Any]) -> bool:
    refs = {value.get("$ref"), (value.get("additionalProperties") or {}).get("$ref")}
    return any(f"#/$defs/{name}" in refs for name in DOCUMENTED_AS)


def _records_in(annotation: Any) -> Iterator[type[Any]]:
    """The dataclasses a field's type names: itself, or inside a union, a tuple or a mapping."""
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        yield annotation
    for arm in typing.get_args(annotation):
        yield from _records_in(arm)


def test_every_section_a_config_built_in_code_can_set_is_exported() -> None:
    # DeliverySettings.breaker and Connection.breaker are BreakerSettings: without it exported, a program
    # could not set what a file's `breaker:` sets (outage_wait, say) without importing a private module.
    import shipmap.connectors as public
    import shipmap.engine as engine

    exported = {getattr(public, name) for name in public.__all__} | {
        getattr(engine, n) for n in engine.__all__
    }
    seen: set[type[Any]] = set()
    pending: list[type[Any]] = [public.RuntimeConfig]
    while pending:
        record = pending.pop()
        if record in seen:
            continue
        seen.add(record)
        module = vars(sys.modules[record.__module__])
        for each in dataclasses.fields(record):
            if each.metadata.get("not_a_key") or not each.init:
                continue
            annotation = eval(each.type, module) if isinstance(each.type, str) else each.type
            pending.extend(_records_in(annotation))
    assert {r.__name__ for r in seen if r not in exported} == set()
    assert public.BreakerSettings is BreakerSettings
