"""``serve`` and ``sources`` built in code are held to the file's rules, from the one schema, in its words.

A ``RuntimeConfig`` built in code had its delivery, journal and connections checked (``check_objects``) but not
its ``serve`` and ``sources``, and a ``ServeSettings`` handed to ``Service`` was never checked: a body cap of
0, a source without its secret, a resweep of 0 all started a service."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from shipmap.connectors import ConfigError, Runtime
from shipmap.connectors._config import compile_expression
from shipmap.connectors._config._serve_model import Enrichment, PathTemplate, RateLimit
from shipmap.connectors._serve import ServeSettings, Service, SourceSettings
from test_config import _in_code


def _settings(tmp_path: Path, **source: Any) -> ServeSettings:
    fields: dict[str, Any] = {
        "name": "shop",
        "type": "shopify",
        "secrets": (b"shpss_secret_value",),
        **source,
    }
    return ServeSettings(inbox=tmp_path / "inbox.db", sources={"shop": SourceSettings(**fields)})


def _runtime() -> Runtime:
    return Runtime(_in_code())


@pytest.mark.parametrize(
    ("serve", "source", "message"),
    [
        ({"max_body": 0}, {}, "serve.max_body: must be at least 1"),
        ({"port": 70000}, {}, "serve.port: must be at most 65535"),
        ({"body_timeout": 0.0}, {}, "serve.body_timeout: must be more than 0s"),
        ({"intake_deadline": 0.0}, {}, "serve.intake_deadline: must be at least 100ms: it sits between"),
        ({"intake_max_waiting": 0}, {}, "serve.intake_max_waiting: must be at least 1"),
        (
            {"resweep": 0.01},
            {},
            "serve.resweep: must be at least 50ms: a shorter wait would spin on parked work",
        ),
        ({}, {"max_body": 65 * 1024 * 1024}, "sources.shop.max_body: must be at most 67108864"),
        ({}, {"secrets": ()}, "sources.shop: missing required key secret"),
        ({}, {"secrets": (b"abc",)}, "sources.shop.secret[0]: must be at least 4 characters long"),
        (
            {},
            {"secrets": (b"first-secret", b"second-secret", b"third-secret")},
            "sources.shop.secret: breaks the 'maxItems' rule of the config schema",
        ),
        ({}, {"type": "bigcommerce"}, "sources.shop: missing required key header"),
        ({}, {"type": "github"}, 'sources.shop.type: must be one of "shopify", "woocommerce"'),
        ({}, {"signature": "md5"}, "sources.shop.signature: must be one of"),
        ({}, {"tolerance": 0.0}, "sources.shop.tolerance: must be more than 0s"),
        ({}, {"tolerance": 3601.0}, "sources.shop.tolerance: must be at most 1h: a signed webhook older"),
        ({}, {"rate_limit": RateLimit(per_second=0.0, burst=1)}, "sources.shop.rate_limit.per_second"),
        ({}, {"intake_deadline": 61.0}, "sources.shop.intake_deadline: must be at most 1m: it sits between"),
    ],
    ids=[
        "max_body-0",
        "port",
        "body_timeout-0",
        "intake_deadline-0",
        "intake_max_waiting-0",
        "resweep-10ms",
        "source-max_body",
        "no-secret",
        "short-secret",
        "three-secrets",
        "bigcommerce-no-header",
        "type",
        "signature",
        "tolerance-0",
        "tolerance-over",
        "rate-0",
        "source-intake_deadline-61s",
    ],
)
def test_settings_given_to_a_service_are_held_to_the_files_rules(
    tmp_path: Path, serve: dict[str, Any], source: dict[str, Any], message: str
) -> None:
    settings = dataclasses.replace(_settings(tmp_path, **source), **serve)
    with pytest.raises(ConfigError) as caught:
        Service(_runtime(), settings)
    assert caught.value.message.startswith(message), caught.value.message
    assert (caught.value.location, caught.value.exit_code) == (None, 2)
    assert "shpss_secret_value" not in caught.value.message and "abc" not in caught.value.message


def test_an_enrichment_built_in_code_is_held_to_the_rules_of_its_fetch(tmp_path: Path) -> None:
    config = _in_code()
    relative = PathTemplate("orders/{payload.id}", ("orders/", compile_expression("payload.id", config, ())))
    enrich = Enrichment(connection="fenix", topics=frozenset(), fetch={"order": relative})
    with pytest.raises(ConfigError) as caught:
        Service(Runtime(config), _settings(tmp_path, enrich=enrich))
    assert caught.value.message == "sources.shop.enrich.fetch.order: must be a path starting with /"
    empty = Enrichment(connection="fenix", topics=frozenset(), fetch={}, concurrency=1)
    with pytest.raises(ConfigError) as caught:
        Service(Runtime(config), _settings(tmp_path, enrich=empty))
    assert caught.value.message == "sources.shop.enrich.fetch: must have at least 1 entry"


def test_a_source_name_that_cannot_be_a_url_is_refused(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    renamed = dataclasses.replace(settings, sources={"a shop": settings.sources["shop"]})
    with pytest.raises(ConfigError) as caught:
        Service(_runtime(), renamed)
    assert caught.value.message == (
        "sources: a source's name must start with a letter, a digit or '_' and hold only those, '.' and '-'"
        " (it is the end of its URL, /hooks/{name})"
    )


def test_valid_settings_built_in_code_make_a_service(tmp_path: Path) -> None:
    settings = dataclasses.replace(
        _settings(tmp_path, rate_limit=RateLimit(per_second=5.0, burst=5)), port=0, resweep=0.05
    )
    assert Service(_runtime(), settings).settings is settings


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"serve": {"max_body": 0}}, "serve.max_body: must be at least 1"),
        ({"serve": {"resweep": "10ms"}}, "serve.resweep: must be at least 50ms"),
        ({"serve": {"body_timeout": "0s"}}, "serve.body_timeout: must be more than 0s"),
        ({"serve": {"intake_max_waiting": 100_000}}, "serve.intake_max_waiting: must be at most 65536"),
        ({"serve": {"prot": 8080}}, "serve.prot: unknown key 'prot' (allowed: body_timeout, "),
        ({"sources": {"shop": {"type": "shopify"}}}, "sources.shop: missing required key secret"),
        (
            {"sources": {"shop": {"type": "shopify", "secret": "abc"}}},
            "sources.shop.secret: must be at least 4 characters long",
        ),
        (
            {"sources": {"shop": {"type": "shopify", "secret": "shpss_secret_value", "max_body": -1}}},
            "sources.shop.max_body: must be at least 1",
        ),
    ],
    ids=[
        "max_body",
        "resweep",
        "body_timeout",
        "intake_max_waiting",
        "unknown-key",
        "no-secret",
        "short-secret",
        "source-max_body",
    ],
)
def test_serve_and_sources_of_a_runtime_config_built_in_code_are_checked(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Runtime(_in_code(**changes))
    assert caught.value.message.startswith(message), caught.value.message
    assert (caught.value.location, caught.value.exit_code) == (None, 2)
    assert "shpss_secret_value" not in caught.value.message


def test_a_runtime_config_built_in_code_with_valid_sections_serves(tmp_path: Path) -> None:
    config = _in_code(
        sources={"shop": {"type": "shopify", "secret": "shpss_secret_value"}},
        serve={"port": 0, "inbox": str(tmp_path / "inbox.db"), "resweep": "50ms"},
    )
    service = Service(Runtime(config))
    assert (service.settings.port, service.settings.resweep) == (0, 0.05)
    assert service.settings.sources["shop"].secrets == (b"shpss_secret_value",)


def test_a_source_secret_given_in_code_is_masked_in_what_the_service_logs(tmp_path: Path) -> None:
    """The redactor learned a config's secrets from its file's ${...} references and its connections: a source
    secret given in code reached logs and records as it was."""
    runtime = _runtime()
    assert "shpss_secret_value" in runtime.redactor.redact("body: shpss_secret_value")
    Service(runtime, _settings(tmp_path))
    masked = runtime.redactor.redact('{"note": "shpss_secret_value", "url": "/x?k=shpss_secret_value"}')
    assert "shpss_secret_value" not in masked, masked
