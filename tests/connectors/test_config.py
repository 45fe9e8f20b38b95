"""The runtime config: loading, ${VAR} secrets, schema errors with file:line:col, routing defaults."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from textwrap import dedent
from typing import Any

import jsonschema
import pytest
import yaml
from shipmap.connectors import (
    AuthSettings,
    ConfigError,
    Connection,
    DeliverySettings,
    IdempotencySettings,
    JournalSettings,
    MappingRoute,
    RetryPolicy,
    Runtime,
    RuntimeConfig,
    TargetRoute,
    config_schema,
    load_config,
)
from shipmap.connectors._cli import main
from shipmap.connectors._config import parse_duration, plan_routes
from test_runtime_support import BASE_CONFIG, FIXTURES, environ

ENV = environ("http://127.0.0.1:9")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "shipmap.yaml"
    path.write_text(dedent(text).lstrip())
    return path


MINIMAL = f"""
connections:
  fenix:
    api: fenix
    base_url: http://127.0.0.1:9
    auth:
      scheme: fenix_session
      username: ${{FENIX_USERNAME}}
      password: ${{FENIX_PASSWORD}}
      api_key: ${{FENIX_API_KEY}}
      store_name: demo-store
mappings:
  - mapping: {FIXTURES / "orders.yaml"}
"""


def test_the_published_schema_is_valid_and_accepts_the_example_config() -> None:
    schema = config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    # The schema describes the config once ${VAR} references are filled in.
    text = (FIXTURES / "runtime.yaml").read_text().replace("${SANDBOX_URL}", "http://127.0.0.1:9")
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(text))
    base = yaml.safe_dump(BASE_CONFIG).replace("${SANDBOX_URL}", "http://127.0.0.1:9")
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(base))


def _worded(node: Any) -> list[dict[str, Any]]:
    """Every schema in ``node`` that carries shipmap's own words (``x-error``)."""
    if isinstance(node, list):
        return [found for item in node for found in _worded(item)]
    if not isinstance(node, dict):
        return []
    here = [node] if "x-error" in node else []
    return here + [found for value in node.values() for found in _worded(value)]


def test_the_printed_schema_gives_editors_shipmaps_words_and_stays_a_valid_schema(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """VS Code's JSON language service and the Red Hat YAML language server show a schema's ``errorMessage``
    instead of "Incorrect type" or "String does not match the pattern": ``shipmap schema --config`` gives each
    rule with words of shipmap's (``x-error``) the same text there, and in the branches an editor reports
    (a duration's number and string). It stays a schema that Draft 2020-12 and Draft 7 accept."""
    assert main(["schema", "--config"]) == 0
    schema = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft7Validator.check_schema(schema)
    worded = _worded(schema)
    assert len(worded) >= 10 and all(node["errorMessage"] == node["x-error"] for node in worded)
    duration = schema["$defs"]["duration"]
    assert [branch["errorMessage"] for branch in duration["anyOf"]] == [duration["x-error"]] * 2
    [bearer] = [
        branch["then"]
        for branch in schema["$defs"]["auth"]["allOf"]
        if branch["if"]["properties"]["scheme"] == {"const": "bearer"} and "properties" in branch["then"]
    ]
    assert bearer["properties"]["login_path"]["errorMessage"] == (
        "applies only to fenix_session auth, and the scheme is bearer: no other scheme logs in"
    )
    # Plain jsonschema validates with it as before: a key its scheme ignores is refused, the rest accepted.
    validator = jsonschema.Draft202012Validator(schema)
    config = {
        "connections": {
            "x": {
                "api": "generic",
                "base_url": "http://127.0.0.1:9",
                "auth": {"scheme": "bearer", "token": "abcd", "login_path": "/in"},
            }
        },
        "mappings": [{"mapping": "m.yaml"}],
    }
    assert [error.validator for error in validator.iter_errors(config)] == ["not"]
    del config["connections"]["x"]["auth"]["login_path"]
    validator.validate(config)


def test_the_example_config_loads_with_every_setting(tmp_path: Path) -> None:
    config = load_config(FIXTURES / "runtime.yaml", environ=ENV)
    fenix, dg = config.connections
    assert (fenix.name, fenix.api, fenix.base_url) == ("fenix", "fenix", "http://127.0.0.1:9")
    assert fenix.auth.scheme == "fenix_session" and fenix.auth.password == "demo-pass"
    # Left out: None, and the margin adapts to the token's life, which is the default.
    assert (fenix.auth.token_ttl, fenix.auth.refresh_margin) == (None, None)
    assert fenix.auth.in_use("token_ttl") == 4 * 3600 and fenix.auth.in_use("login_path") == "/login"
    assert dg.auth.scheme == "basic" and (dg.auth.username, dg.auth.password) == ("demo-key", "demo-secret")
    assert config.events.topic == "topic" and config.events.body == "payload"
    assert config.mappings[0].topics == ("orders/create", "orders/updated")
    assert config.delivery.concurrency == 4
    assert config.delivery.timeout.read == 10.0
    retry = config.delivery.retry
    assert (retry.max_attempts, retry.backoff_base, retry.backoff_cap, retry.retry_after_cap) == (
        5,
        0.05,
        1.0,
        2.0,
    )
    assert config.journal.path == (FIXTURES / ".shipmap" / "journal.db").resolve()
    assert {"demo-pass", "demo-api-key", "demo-secret", "demo-key"} <= config.secrets
    assert not [secret for secret in config.secrets if secret in repr(config)]
    routes = plan_routes(config)
    assert [r.name for r in routes] == ["acme-orders", "acme-shipments"]
    shipments = routes[1].targets
    assert shipments["fulfillment"].connection.name == "fenix"
    assert shipments["notify"].connection.name == "dg"
    assert shipments["fulfillment"].path == "/api/v1/order/{order_id}/fulfillment/{id}/created"


def test_a_dg_region_becomes_its_url(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        connections:
          dg:
            api: dg
            region: us
            auth: {{scheme: basic, key: "${{DG_API_KEY}}", secret: "${{DG_API_SECRET}}"}}
        mappings:
          - mapping: {FIXTURES / "shipments.yaml"}
            targets:
              fulfillment: {{enabled: false, connection: dg}}
        """,
    )
    config = load_config(path, environ=ENV)
    assert config.connections[0].base_url == "https://flow-server.us.dgdeepai.com"


def test_secrets_come_from_a_dotenv_file_but_the_environment_wins(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    (tmp_path / ".env").write_text(
        "# demo\nexport FENIX_USERNAME=from-dotenv\nFENIX_PASSWORD='dotenv pass'\nFENIX_API_KEY=dotenv-key # c\n"
    )
    config = load_config(path, environ={"FENIX_USERNAME": "from-environ"})
    auth = config.connections[0].auth
    assert (auth.username, auth.password, auth.api_key) == ("from-environ", "dotenv pass", "dotenv-key")


def test_a_missing_variable_names_the_variable_and_where_it_is_used(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={"FENIX_USERNAME": "u", "FENIX_API_KEY": "key-1234"})
    error = caught.value
    # No .env beside it: the message does not speak of one (the hint says there is none).
    assert error.message == "connections.fenix.auth.password: environment variable FENIX_PASSWORD is not set"
    assert (error.file, error.line, error.column) == (str(path), 8, 17)
    assert error.exit_code == 2


def test_a_missing_variable_with_an_env_file_says_it_is_not_there_either(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    (tmp_path / ".env").write_text("FENIX_API_KEY=key-1234\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={"FENIX_USERNAME": "u"})
    assert caught.value.message == (
        "connections.fenix.auth.password: environment variable FENIX_PASSWORD is not set (nor in the env file)"
    )
    assert caught.value.hint is None


def test_a_missing_variable_without_the_env_file_says_to_copy_the_example_beside_it(tmp_path: Path) -> None:
    """`shipmap init` writes .env.example beside the config; a reader who skipped copying it to .env is told."""
    path = write(tmp_path, MINIMAL)
    environ = {"FENIX_USERNAME": "u", "FENIX_API_KEY": "key-1234"}
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ)
    assert (
        caught.value.hint
        == f"there is no {tmp_path / '.env'} beside {path}: set the variable, or write it there as NAME=value"
    )
    (tmp_path / ".env.example").write_text("FENIX_PASSWORD=demo-pass\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ)
    env, example = tmp_path / ".env", tmp_path / ".env.example"
    assert caught.value.hint == f"there is no {env}: copy the example beside the config (cp {example} {env})"
    assert "demo-pass" not in caught.value.render()
    (tmp_path / ".env").write_text("")  # an env file that lacks the variable: nothing to copy
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ)
    assert caught.value.hint is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "cannot be read: No such file or directory"), (b"\xff\xfe-not-utf-8", "not UTF-8 text")],
    ids=["missing", "not-utf-8"],
)
def test_a_secret_file_that_cannot_be_read_says_why_where_it_is_used(
    tmp_path: Path, content: bytes | None, reason: str
) -> None:
    secret = tmp_path / "secrets" / "fenix_password"
    if content is not None:
        secret.parent.mkdir()
        secret.write_bytes(content)
    path = write(tmp_path, MINIMAL.replace("${FENIX_PASSWORD}", "${file:" + str(secret) + "}"))
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=ENV)
    error = caught.value
    assert error.message == f"connections.fenix.auth.password: file reference {secret}: {reason}"
    assert (error.file, error.line, error.column) == (str(path), 8, 17)


def test_an_unknown_key_points_at_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("    base_url:", "    base_ulr: x\n    base_url:"))
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=ENV)
    assert "unknown key 'base_ulr'" in caught.value.message
    assert (caught.value.line, caught.value.column) == (4, 5)
    assert str(caught.value).startswith(f"{path}:4:5: error:")


def test_errors_never_quote_config_values(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "store_name: demo-store", "store_name: demo-store\n      token_ttl: super-secret-value"
    )
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=ENV)
    rendered = caught.value.render()
    assert "super-secret-value" not in rendered
    assert "token_ttl" in rendered and "duration" in rendered
    assert caught.value.line == 11


def test_a_secret_of_the_wrong_type_is_reported_without_its_value(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("${FENIX_PASSWORD}", "98765432109"))
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=ENV)
    assert "98765432109" not in caught.value.render()
    assert "password: must be a string" in caught.value.message
    assert caught.value.line == 8


@pytest.mark.parametrize(
    ("secret", "values", "message"),
    [
        # An empty variable (SHOPIFY_SECRET= in the env file) was "must be a list": the list branch's type.
        ('"${SHOPIFY_SECRET}"', {"SHOPIFY_SECRET": ""}, "sources.shop.secret: is empty: it must be at least 4 characters long"),
        ('"${SHOPIFY_SECRET}"', {"SHOPIFY_SECRET": "abc"}, "sources.shop.secret: must be at least 4 characters long"),
        ('["${SHOPIFY_SECRET}", "${OLD}"]', {"SHOPIFY_SECRET": "shpss_new", "OLD": ""}, "sources.shop.secret[1]: is empty: it must be at least 4 characters long"),
    ],
)  # fmt: skip
def test_a_secret_too_short_for_its_branch_is_said_so_not_that_it_is_no_list(
    tmp_path: Path, secret: str, values: dict[str, str], message: str
) -> None:
    path = write(tmp_path, SOURCE.replace('["${SHOPIFY_SECRET}", SECRET]', secret))
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={**ENV, **values})
    assert caught.value.message == message and caught.value.exit_code == 2
    assert "shpss_new" not in caught.value.render()


def test_an_empty_username_needs_at_least_1_character_not_characters(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={**ENV, "FENIX_USERNAME": ""})
    assert (
        caught.value.message
        == "connections.fenix.auth.username: is empty: it must be at least 1 character long"
    )
    assert caught.value.line == 7  # username:


def test_a_literal_secret_is_warned_about_by_key_and_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, MINIMAL.replace("${FENIX_PASSWORD}", "plain-text-pw"))
    with caplog.at_level(logging.WARNING, logger="shipmap.connectors.config"):
        load_config(path, environ=ENV)
    [record] = caplog.records
    assert f"{path}:8:17" in record.getMessage()
    assert "connections.fenix.auth.password is written literally" in record.getMessage()
    assert "plain-text-pw" not in caplog.text


SOURCE = (
    MINIMAL
    + """
sources:
  shop:
    type: shopify
    secret: ["${SHOPIFY_SECRET}", SECRET]
"""
)


@pytest.mark.parametrize(
    ("written", "mistake"),
    [
        ("${SHOPIFY_WEBHOOK_SECRET", "a reference '${' has no closing '}'"),
        ("shpss_${2b7}", "a reference '${...}' holds neither a variable name"),
        ("${SHOPIFY_SECRET:-shpss_fallback}", "a reference '${...}' holds neither a variable name"),
        ("${}", "the reference '${}' names nothing"),
        ("${file:}", "the file reference '${file:}' names no file"),
    ],
)
def test_a_reference_written_wrong_is_a_located_error_that_never_shows_it(
    tmp_path: Path, written: str, mistake: str
) -> None:
    """Kept as text, a broken reference would be the secret itself (a webhook signed with it accepted)."""
    path = write(tmp_path, SOURCE.replace("SECRET]", f'"{written}"]'))
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={**ENV, "SHOPIFY_SECRET": "shpss_current"})
    error = caught.value
    assert error.message.startswith(f"sources.shop.secret[1]: {mistake}"), error.message
    assert (error.file, error.line, error.column) == (str(path), 17, 35)
    assert (
        error.hint
        == "a reference is ${VAR} or ${file:/path}; $$ is a literal $ (the value is not shown: it may be a secret)"
    )
    assert error.exit_code == 2
    shown = error.render()
    assert written not in shown or written in mistake  # ${} and ${file:} name the mistake itself
    assert not any(part in shown for part in ("SHOPIFY_WEBHOOK", "2b7", "shpss", "fallback"))


def test_a_literal_webhook_secret_is_warned_about_as_an_auth_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, SOURCE.replace("SECRET]", '"$${literally}"]'))
    with caplog.at_level(logging.WARNING, logger="shipmap.connectors.config"):
        load_config(path, environ={**ENV, "SHOPIFY_SECRET": "shpss_current"})
    [record] = caplog.records  # the first secret is a reference; the second, $${ as written, is text
    assert record.getMessage() == (
        f"{path}:17:35: sources.shop.secret[1] is written literally in the config; use a ${{ENV_VAR}} reference"
    )
    assert "literally}" not in caplog.text


def test_basic_auth_needs_its_credentials(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        connections:
          dg: {{api: dg, region: eu, auth: {{scheme: basic, key: k}}}}
        mappings:
          - mapping: {FIXTURES / "orders.yaml"}
        """,
    )
    with pytest.raises(ConfigError, match="basic auth needs username and password"):
        load_config(path, environ=ENV)


@pytest.mark.parametrize(
    ("connection", "message"),
    [
        ("{api: fenix, region: eu}", "needs base_url (or, for a dg connection, region), not both"),
        ("{api: dg, region: eu, base_url: 'http://x'}", "not both"),
        ("{api: dg, region: asia}", "must be one of"),
        ("{api: dg, base_url: 'ftp://x'}", "must be an http:// or https:// URL"),
    ],
)
def test_connection_url_rules(tmp_path: Path, connection: str, message: str) -> None:
    path = write(tmp_path, f"connections:\n  c: {connection}\nmappings:\n  - mapping: x.yaml\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=ENV)
    assert message in caught.value.message
    assert caught.value.line == 2


def test_two_connections_of_one_api_need_an_explicit_route(tmp_path: Path) -> None:
    text = MINIMAL.replace("mappings:", "  fenix2: {api: fenix, base_url: 'http://127.0.0.1:8'}\nmappings:")
    config = load_config(write(tmp_path, text), environ=ENV)
    with pytest.raises(ConfigError) as caught:
        plan_routes(config)
    assert "several connections have api: fenix" in caught.value.message
    assert "mappings[0].targets.order.connection" in caught.value.message
    assert caught.value.line == 13


def test_an_override_for_a_target_the_mapping_lacks_points_at_it(tmp_path: Path) -> None:
    text = MINIMAL + "    targets:\n      orders: {connection: fenix}\n"
    with pytest.raises(ConfigError) as caught:
        Runtime.from_config(write(tmp_path, text), environ=ENV)
    assert "mapping 'acme-orders' has no target 'orders' (its targets: order)" in caught.value.message
    assert (caught.value.line, caught.value.column) == (14, 7)


def test_an_unknown_connection_name_is_an_error(tmp_path: Path) -> None:
    text = MINIMAL + "    targets:\n      order: {connection: nowhere}\n"
    with pytest.raises(ConfigError, match="names a connection that is not defined"):
        Runtime.from_config(write(tmp_path, text), environ=ENV)


@pytest.mark.parametrize(
    ("added", "message", "where"),
    [
        (
            '    match: "payload.id =="\n',
            "mappings[0].match: not a valid JMESPath expression at character 14",
            (13, 12),
        ),
        (
            '    body: "payload[?"\n',
            "mappings[0].body: not a valid JMESPath expression at character 10",
            (13, 11),
        ),
        (
            'events:\n  topic: "headers.[x"\n',
            "events.topic: not a valid JMESPath expression at character 11",
            (14, 10),
        ),
    ],
    ids=["match", "body", "events.topic"],
)
def test_a_bad_jmespath_expression_names_its_key_and_points_at_it(
    tmp_path: Path, added: str, message: str, where: tuple[int, int]
) -> None:
    path = write(tmp_path, MINIMAL + added)
    with pytest.raises(ConfigError) as caught:
        Runtime.from_config(path, environ=ENV)
    assert caught.value.message == message
    assert (caught.value.line, caught.value.column) == where
    assert caught.value.exit_code == 2


def test_topic_routing_needs_events_topic(tmp_path: Path) -> None:
    text = MINIMAL + "    topic: orders/create\n"
    with pytest.raises(ConfigError, match=r"events\.topic is not set"):
        Runtime.from_config(write(tmp_path, text), environ=ENV)


def test_a_missing_mapping_file_points_at_the_entry(tmp_path: Path) -> None:
    text = MINIMAL.replace(str(FIXTURES / "orders.yaml"), "./nope.yaml")
    with pytest.raises(ConfigError) as caught:
        Runtime.from_config(write(tmp_path, text), environ=ENV)
    assert caught.value.message == "mapping file does not exist"
    assert caught.value.line == 12


def test_external_id_templates_only_take_known_placeholders(tmp_path: Path) -> None:
    text = MINIMAL + "delivery:\n  idempotency: {external_id: 'x-{order_id}'}\n"
    with pytest.raises(ConfigError, match="unknown placeholder"):
        load_config(write(tmp_path, text), environ=ENV)


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("connections: {a: 1\n", "not valid YAML", 2),
        ("connections: {}\nconnections: {}\n", "duplicate key 'connections'", 2),
        ("- 1\n", "a config file is a mapping", 1),
        ("connections: !!python/object:os.system {}\n", "is not allowed in a config file", 1),
    ],
)
def test_yaml_problems(tmp_path: Path, text: str, message: str, line: int) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), environ=ENV)
    assert message in caught.value.message
    assert caught.value.line == line


def test_durations() -> None:
    assert [parse_duration(v) for v in (3, 0.5, "50ms", "30s", "5m", "4h", "30d")] == [
        3,
        0.5,
        0.05,
        30,
        300,
        14400,
        2592000,
    ]
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_dollar_dollar_is_a_literal_dollar(tmp_path: Path) -> None:
    text = MINIMAL.replace("store_name: demo-store", "store_name: price$$store")
    config = load_config(write(tmp_path, text), environ=ENV)
    assert config.connections[0].auth.store_name == "price$store"


def test_schema_is_package_data() -> None:
    text = json.dumps(config_schema())
    assert '"fenix_session"' in text and '"retry_after_cap"' in text


def test_a_bad_events_body_expression_points_at_it(tmp_path: Path) -> None:
    text = MINIMAL + 'events:\n  body: "payload["\n'
    with pytest.raises(ConfigError) as caught:
        Runtime.from_config(write(tmp_path, text), environ=ENV)
    assert "not a valid JMESPath expression" in caught.value.message
    assert caught.value.line == 14


def test_the_repr_of_config_objects_built_in_code_shows_no_secret() -> None:
    # basic's username is the DG API key; an extra header may carry a credential; a PostgreSQL URL its password.
    dg = Connection(
        "dg",
        "dg",
        "https://flow-server.eu.dgdeepai.com",
        AuthSettings("basic", "dg-api-key-1234", "dg-api-secret-1234"),
        headers={"X-Shop-Token": "shop-token-1234", "Accept": "application/json"},
    )
    journal = JournalSettings(url="postgresql://shipmap:pg-password-1234@db.internal:5432/shipmap")
    shown = repr(dg) + repr(journal) + repr(dg.auth)
    for secret in ("dg-api-key-1234", "dg-api-secret-1234", "shop-token-1234", "pg-password-1234"):
        assert secret not in shown
    assert "headers={'X-Shop-Token': '***', 'Accept': '***'}" in repr(dg)
    assert "url='postgresql://shipmap@db.internal:5432/shipmap'" in repr(journal)
    # What is not a secret stays: a Fenix username, the scheme, the base_url.
    fenix = AuthSettings("fenix_session", username="fenix-user", password="pw-1234", api_key="key-1234")
    assert "username='fenix-user'" in repr(fenix) and "pw-1234" not in repr(fenix)
    assert "base_url='https://flow-server.eu.dgdeepai.com'" in repr(dg) and "scheme='basic'" in repr(dg)


def _in_code(**changes: Any) -> RuntimeConfig:
    fenix = Connection(
        "fenix",
        "fenix",
        changes.pop("base_url", "http://127.0.0.1:9"),
        AuthSettings(
            changes.pop("scheme", "fenix_session"),
            username="u",
            password="pass-1234",
            api_key="key-1234",
            store_name="s",
        ),
    )
    route = MappingRoute(str(FIXTURES / "orders.yaml"), targets=changes.pop("targets", {}))
    return RuntimeConfig(connections=(fenix,), mappings=(route,), **changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        # concurrency 0 delivered nothing and reported success (summary.ok, nothing dead)
        ({"delivery": DeliverySettings(concurrency=0)}, "delivery.concurrency: must be at least 1"),
        (
            {"delivery": DeliverySettings(retry=RetryPolicy(max_attempts=0))},
            "delivery.retry.max_attempts: must be at least 1",
        ),
        ({"scheme": "fenix-session"}, "connections.fenix.auth.scheme: must be one of"),
        ({"base_url": "ftp://127.0.0.1:9"}, "connections.fenix.base_url: must be an http:// or https:// URL"),
        (
            {"targets": {"order": TargetRoute(method="GET")}},  # type: ignore[arg-type]
            'mappings[0].targets.order.method: must be one of "POST", "PUT", "PATCH"',
        ),
        ({"journal": JournalSettings(url="mysql://db/x")}, "journal.url: must be a postgresql:// URL"),
    ],
)
def test_a_config_built_in_code_is_held_to_the_files_rules(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Runtime(_in_code(**changes))
    assert caught.value.message.startswith(message), caught.value.message
    assert "pass-1234" not in str(caught.value) and "key-1234" not in str(caught.value)


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        (
            AuthSettings("fenix_session", username="u", api_key="key-1234", store_name="s"),
            "connections.fenix.auth: missing required key password",
        ),
        (
            AuthSettings("basic", username="key-1234"),
            "connections.fenix.auth: basic auth needs username and password (or key and secret)",
        ),
        (AuthSettings("api_key"), "connections.fenix.auth: missing required key api_key"),
        (AuthSettings("bearer"), "connections.fenix.auth: missing required key token"),
    ],
    ids=["fenix_session", "basic", "api_key", "bearer"],
)
def test_a_config_built_in_code_is_held_to_the_files_rules_across_keys(
    tmp_path: Path, auth: AuthSettings, message: str
) -> None:
    """Only field-by-field rules were applied to a config built in code: a fenix_session without its password
    built a Runtime whose logins sent an empty one. The rules across keys are the schema's, applied to the
    objects as to the file, with the file's message (a file gets it at its line)."""
    config = dataclasses.replace(
        _in_code(), connections=(Connection("fenix", "fenix", "http://127.0.0.1:9", auth),)
    )
    with pytest.raises(ConfigError) as caught:
        Runtime(config)
    assert (caught.value.message, caught.value.location, caught.value.exit_code) == (message, None, 2)
    assert "key-1234" not in str(caught.value)
    # The file: the same message, at the auth section's line.
    written = {
        "connections": {
            "fenix": {
                "api": "fenix",
                "base_url": "http://127.0.0.1:9",
                "auth": {
                    k: v for k, v in dataclasses.asdict(auth).items() if v is not None and k != "reader"
                },
            }
        },
        "mappings": [{"mapping": str(FIXTURES / "orders.yaml")}],
    }
    path = tmp_path / "shipmap.yaml"
    path.write_text(yaml.safe_dump(written, sort_keys=False))
    with pytest.raises(ConfigError) as from_file:
        load_config(path, environ={})
    assert (from_file.value.message, str(from_file.value.location)) == (message, f"{path}:6:7")


def test_a_config_built_in_code_is_held_to_the_rules_across_sections(tmp_path: Path) -> None:
    """The external_id placeholders were checked while a file was built into objects, so a config built in
    code with '{nope}' ran and sent the text as it is; a target naming a connection that is not defined was
    (and is) refused for both, by plan_routes."""
    config = _in_code(delivery=DeliverySettings(idempotency=IdempotencySettings(external_id="sm-{nope}")))
    with pytest.raises(ConfigError) as caught:
        Runtime(config)
    assert (caught.value.message, caught.value.exit_code) == (
        "external_id template has an unknown placeholder; use {key}, {mapping}, {target}, {source_hash}",
        2,
    )
    with pytest.raises(ConfigError) as caught:
        Runtime(_in_code(targets={"order": TargetRoute(connection="nope")}))
    assert caught.value.message == "target 'order' names a connection that is not defined (defined: fenix)"


@pytest.mark.parametrize(
    ("changes", "file_text", "message", "at"),
    [
        (
            {"mappings": ()},
            MINIMAL.split("mappings:")[0] + "mappings: []\n",
            "mappings: must have at least 1 entry",
            11,
        ),
        (
            {"connections": ()},
            "connections: {}\n" + "mappings:" + MINIMAL.split("mappings:")[1],
            "connections: must have at least 1 entry",
            1,
        ),
        (
            {"journal": JournalSettings(path=Path("journal.db"), url="postgresql://db.internal/shipmap")},
            MINIMAL + "journal:\n  path: journal.db\n  url: postgresql://db.internal/shipmap\n",
            "journal: takes path (an SQLite file) or url (PostgreSQL), not both",
            15,  # the url's line
        ),
    ],
    ids=["no-mappings", "no-connections", "journal-path-and-url"],
)
def test_a_config_built_in_code_is_refused_what_the_file_is_refused_in_the_same_words(
    tmp_path: Path, changes: dict[str, Any], file_text: str, message: str, at: int
) -> None:
    """Runtime(config) accepted a config with no mapping entries (every event went unrouted, and the run
    reported success) and a journal with both a file and a database (the url won, silently)."""
    with pytest.raises(ConfigError) as caught:
        Runtime(dataclasses.replace(_in_code(), **changes))
    assert (caught.value.message, caught.value.location, caught.value.exit_code) == (message, None, 2)
    with pytest.raises(ConfigError) as from_file:
        load_config(write(tmp_path, file_text), environ=ENV)
    assert (from_file.value.message, from_file.value.exit_code) == (message, 2)
    assert from_file.value.location is not None and from_file.value.location.line == at


def test_a_loaded_postgresql_journal_has_no_file_and_passes_the_checks_when_changed_in_code(
    tmp_path: Path,
) -> None:
    """The loader gave a url journal the default file too; a change in code (``from_config``'s overrides) gets
    the config checked again, which refuses a journal with both."""
    path = write(tmp_path, MINIMAL + "journal: postgresql://db.internal/shipmap\n")
    loaded = load_config(path, environ=ENV)
    assert (loaded.journal.url, loaded.journal.path) == ("postgresql://db.internal/shipmap", None)
    runtime = Runtime.from_config(path, environ=ENV, concurrency=2)
    assert (runtime.config.journal.location, runtime.config.delivery.concurrency) == (
        "postgresql://db.internal/shipmap",
        2,
    )


def test_a_loaded_config_is_not_checked_again_but_one_changed_in_code_is(tmp_path: Path) -> None:
    """load_config's checks are check_objects' and more, so a Runtime does not run them again (a few ms of
    every run's start); a config made from it with dataclasses.replace is new, and checked."""
    path = write(tmp_path, MINIMAL)
    loaded = load_config(path, environ=ENV)
    assert loaded.checked
    Runtime(loaded)
    changed = dataclasses.replace(loaded, delivery=DeliverySettings(concurrency=0))
    assert not changed.checked
    with pytest.raises(ConfigError) as caught:
        Runtime(changed)
    assert caught.value.message == "delivery.concurrency: must be at least 1"


def test_a_config_built_in_code_within_the_rules_builds_a_runtime() -> None:
    runtime = Runtime(
        _in_code(
            delivery=DeliverySettings(concurrency=1, retry=RetryPolicy(max_attempts=1, backoff_base=0)),
            targets={"order": TargetRoute(method="PUT")},
        )
    )
    assert runtime.config.delivery.concurrency == 1


def test_a_config_path_that_does_not_read_is_the_same_config_error_from_the_library_and_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing file was already a ConfigError worded as the CLI words it (the OS's reason, no [Errno 2], no
    location: there is no file to point into); a path holding a NUL was Python's ValueError 'embedded null
    byte' from load_config and Runtime.from_config."""

    missing = tmp_path / "missing.yaml"
    for path, message in (
        (missing, f"cannot read config file {missing}: No such file or directory"),
        (
            f"{tmp_path}/a\x00b.yaml",
            f"cannot read config file {tmp_path}/a\\x00b.yaml: a path cannot hold a NUL character",
        ),
    ):
        for load in (load_config, Runtime.from_config):
            with pytest.raises(ConfigError) as caught:
                load(path, environ={})
            assert (caught.value.message, caught.value.location, caught.value.exit_code) == (message, None, 2)
    assert main(["run", str(missing), "--input", "-"]) == 2
    assert capsys.readouterr().err == f"error: cannot read config file {missing}: No such file or directory\n"
