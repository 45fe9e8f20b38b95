"""Bounds on duration keys (30s, 5m, 500ms): declared once on the field (``about(duration=True,
exclusiveMinimum=0)``), held for a file whichever way it writes the duration, and for a config built in code.

The schema turned a duration into a ``$ref`` and dropped the field's bounds: ``serve.body_timeout: 0s`` passed
though its field said "more than 0", and so did a lease, a timeout or a breaker cooldown of 0."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from shipmap.connectors import (
    BreakerSettings,
    ConfigError,
    Connection,
    DeliverySettings,
    JournalSettings,
    Runtime,
    Timeouts,
    load_config,
)
from shipmap.connectors._cli import main
from shipmap.connectors._config._schema import DURATION_BOUNDS, config_schema
from shipmap.connectors._serve import serve_settings
from test_runtime_support import BASE_CONFIG, environ, write_config

SOURCES = {"shop": {"type": "shopify", "secret": "${SHOPIFY_SECRET}"}}
INTAKE_DEADLINE_WHY = (
    "it sits between what a healthy commit takes (milliseconds) and how long a sender waits for its answer"
    " (Shopify 5s; the most patient, WooCommerce, 1m)"
)
RECONNECT_WHY = (
    "shorter, a database restart stops every worker; longer, a worker spends that long on its own copy of the"
    " breakers and its share of max_rate, apart from the others"
)


def _config(tmp_path: Path, section: str, key: str, written: str) -> tuple[Path, int, int]:
    """A config whose ``section`` gives ``key: written`` (written as the YAML text is), with the line and
    column of the value."""
    changes: dict[str, Any] = {"sources": SOURCES}
    if section == "serve":
        changes["serve"] = {key: "PLACEHOLDER"}
    elif section == "journal":
        changes["journal"] = {"path": "journal.db", key: "PLACEHOLDER"}
    elif section == "sources.hooks":
        changes["sources"] = {
            "hooks": {
                "type": "generic",
                "signature": "standard-webhooks",
                "secret": "${SHOPIFY_SECRET}",
                key: "PLACEHOLDER",
            }
        }
    elif section == "connections.fenix.breaker":
        connections = dict(BASE_CONFIG["connections"])
        connections["fenix"] = {**connections["fenix"], "breaker": {key: "PLACEHOLDER"}}
        changes["connections"] = connections
    else:
        assert section == "delivery", section
        changes["delivery"] = {key: "PLACEHOLDER"}
    path = write_config(tmp_path, "http://127.0.0.1:9", **changes)
    text = path.read_text().replace("PLACEHOLDER", written)
    path.write_text(text)
    line = next(n for n, row in enumerate(text.splitlines(), 1) if row.strip().startswith(f"{key}: "))
    column = text.splitlines()[line - 1].index(written) + 1
    (tmp_path / ".env").write_text((tmp_path / ".env").read_text() + "SHOPIFY_SECRET=shpss_secret_value\n")
    return path, line, column


@pytest.mark.parametrize(
    ("section", "key", "written", "message"),
    [
        ("serve", "body_timeout", "0s", "serve.body_timeout: must be more than 0s"),
        ("serve", "body_timeout", "0", "serve.body_timeout: must be more than 0s"),
        ("journal", "lease", "-5", "journal.lease: must be more than 0s"),
        ("delivery", "timeout", "0ms", "delivery.timeout: must be more than 0s"),  # every phase at once
        (
            "connections.fenix.breaker",
            "cooldown",
            "0s",
            "connections.fenix.breaker.cooldown: must be more than 0s",
        ),
        (
            "serve",
            "dedup_window",
            "30m",
            "serve.dedup_window: must be at least 1h: it spans a sender's retries of one webhook, which end"
            " within days (Shopify's within 4 hours), and the inbox looks for ids to forget hourly",
        ),
        (
            "serve",
            "dedup_window",
            "91d",
            "serve.dedup_window: must be at most 90d: it spans a sender's retries of one webhook, which end"
            " within days (Shopify's within 4 hours), and the inbox looks for ids to forget hourly",
        ),
        (
            "sources.hooks",
            "tolerance",
            "2h",
            "sources.hooks.tolerance: must be at most 1h: a signed webhook older than the shortest"
            " serve.dedup_window could be replayed once its id is forgotten",
        ),
        # Raised to 50ms in silence before: a rule outside the field's declaration, and a file that said
        # otherwise than what ran.
        (
            "serve",
            "resweep",
            "10ms",
            "serve.resweep: must be at least 50ms: a shorter wait would spin on parked work",
        ),
        (
            "serve",
            "resweep_cap",
            "0",
            "serve.resweep_cap: must be at least 50ms: a shorter wait would spin on parked work",
        ),
        (
            "journal",
            "reconnect_deadline",
            "500ms",
            f"journal.reconnect_deadline: must be at least 1s: {RECONNECT_WHY}",
        ),
        (
            "journal",
            "reconnect_deadline",
            "2h",
            f"journal.reconnect_deadline: must be at most 1h: {RECONNECT_WHY}",
        ),
        (
            "serve",
            "intake_deadline",
            "50ms",
            f"serve.intake_deadline: must be at least 100ms: {INTAKE_DEADLINE_WHY}",
        ),
        (
            "serve",
            "intake_deadline",
            "2m",
            f"serve.intake_deadline: must be at most 1m: {INTAKE_DEADLINE_WHY}",
        ),
        # A source's own, the same bounds (WooCommerce's 1m is the longest a sender waits).
        (
            "sources.hooks",
            "intake_deadline",
            "90s",
            f"sources.hooks.intake_deadline: must be at most 1m: {INTAKE_DEADLINE_WHY}",
        ),
        (
            "sources.hooks",
            "intake_deadline",
            "0",
            f"sources.hooks.intake_deadline: must be at least 100ms: {INTAKE_DEADLINE_WHY}",
        ),
        # A duration key without bounds of its own: the duration's rule (0 or more) still holds.
        (
            "serve",
            "drain_timeout",
            "-1",
            "serve.drain_timeout: must be a number of seconds (0 or more) or a duration such as 500ms, 30s, 5m,"
            " 4h or 30d",
        ),
    ],
    ids=[
        "0s",
        "0",
        "negative",
        "timeout-0ms",
        "cooldown-0s",
        "dedup_window-under",
        "dedup_window-over",
        "tolerance-over",
        "resweep-10ms",
        "resweep_cap-0",
        "reconnect_deadline-under",
        "reconnect_deadline-over",
        "intake_deadline-under",
        "intake_deadline-over",
        "source-intake_deadline-over",
        "source-intake_deadline-0",
        "negative-unbounded",
    ],
)
def test_a_duration_out_of_its_bounds_is_a_located_config_error_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str, key: str, written: str, message: str
) -> None:
    path, line, column = _config(tmp_path, section, key, written)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ("http://127.0.0.1:9") | {"SHOPIFY_SECRET": "shpss_secret_value"})
    assert caught.value.message == message
    assert str(caught.value.location) == f"{path}:{line}:{column}"
    # The command line: the same error, located, exit 2, nothing sent and no traceback.
    events = tmp_path / "events.jsonl"
    events.write_text("")
    code = main(["run", str(path), "--input", str(events)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"{path}:{line}:{column}: error: {message}"), err
    assert "Traceback" not in err and "shpss_secret_value" not in err


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("0s", "delivery.timeout.connect: must be more than 0s"),
        ("soon", "delivery.timeout.connect: must be a number of seconds (0 or more) or a duration such as 500ms,"
         " 30s, 5m, 4h or 30d"),
    ],
)  # fmt: skip
def test_a_timeouts_phase_out_of_bounds_is_named_and_located_not_the_whole_timeout(
    tmp_path: Path, written: str, message: str
) -> None:
    """The timeout is a duration or a mapping of phases: a phase that is wrong was reported as "must be a
    duration, or an object with connect, read, ...", at the timeout's key."""
    path, line, _ = _config(tmp_path, "delivery", "timeout", f"{{read: 5s, connect: {written}}}")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ("http://127.0.0.1:9") | {"SHOPIFY_SECRET": "shpss_secret_value"})
    column = path.read_text().splitlines()[line - 1].index(f"connect: {written}") + len("connect: ") + 1
    assert (caught.value.message, str(caught.value.location)) == (message, f"{path}:{line}:{column}")


def test_a_duration_within_its_bounds_loads_as_seconds(tmp_path: Path) -> None:
    path, _, _ = _config(tmp_path, "serve", "keep_bodies", "7d")
    config = load_config(
        path, environ=environ("http://127.0.0.1:9") | {"SHOPIFY_SECRET": "shpss_secret_value"}
    )
    assert config.serve["keep_bodies"] == "7d"
    path, _, _ = _config(tmp_path, "serve", "dedup_window", "90d")  # the longest
    config = load_config(
        path, environ=environ("http://127.0.0.1:9") | {"SHOPIFY_SECRET": "shpss_secret_value"}
    )
    settings = serve_settings(config)
    assert (settings.dedup_window, settings.keep_bodies, settings.bodies_kept_for) == (
        90 * 86400,
        None,
        90 * 86400,
    )
    path, _, _ = _config(tmp_path, "serve", "body_timeout", "1ms")
    load_config(path, environ=environ("http://127.0.0.1:9") | {"SHOPIFY_SECRET": "shpss_secret_value"})
    # The shortest resweep is taken as written, not raised.
    path, _, _ = _config(tmp_path, "serve", "resweep", "50ms")
    config = load_config(
        path, environ=environ("http://127.0.0.1:9") | {"SHOPIFY_SECRET": "shpss_secret_value"}
    )
    assert serve_settings(config).resweep == 0.05


def _in_code(**changes: Any) -> Any:
    from test_config import _in_code as build

    return build(**changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"delivery": DeliverySettings(timeout=Timeouts(connect=0.0))},
            "delivery.timeout.connect: must be more than 0s",
        ),
        ({"journal": JournalSettings(lease=-1.0)}, "journal.lease: must be more than 0s"),
        (
            {"journal": JournalSettings(reconnect_deadline=7200.0)},
            f"journal.reconnect_deadline: must be at most 1h: {RECONNECT_WHY}",
        ),
        (
            {"delivery": DeliverySettings(breaker=BreakerSettings(cooldown_cap=0.0))},
            "delivery.breaker.cooldown_cap: must be more than 0s",
        ),
        (
            {"delivery": DeliverySettings(timeout=Timeouts(total=float("nan")))},
            "delivery.timeout.total: must be more than 0s",
        ),
    ],
    ids=["connect-0", "lease-negative", "reconnect_deadline-2h", "cooldown_cap-0", "total-nan"],
)
def test_a_config_built_in_code_is_held_to_the_same_duration_bounds(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Runtime(_in_code(**changes))
    assert (caught.value.message, caught.value.location, caught.value.exit_code) == (message, None, 2)


def test_a_connections_own_breaker_built_in_code_is_held_to_them_too() -> None:
    config = _in_code()
    fenix: Connection = config.connections[0]
    changed = dataclasses.replace(fenix, breaker=BreakerSettings(cooldown=0.0))
    with pytest.raises(ConfigError) as caught:
        Runtime(dataclasses.replace(config, connections=(changed,)))
    assert caught.value.message == "connections.fenix.breaker.cooldown: must be more than 0s"


def test_the_bounds_come_from_the_fields_declaration_alone() -> None:
    """The schema carries each duration field's bounds from its ``about(...)``; a single timeout for every
    phase is held to the bounds of all of them."""
    defs = config_schema()["$defs"]
    for field in dataclasses.fields(Timeouts):
        declared = {
            k: field.metadata[k] for k in ("minimum", "maximum", "exclusiveMinimum") if k in field.metadata
        }
        assert defs["timeout"]["anyOf"][1]["properties"][field.name][DURATION_BOUNDS] == declared
    assert defs["timeout"][DURATION_BOUNDS] == {"exclusiveMinimum": 0}
    assert defs["serve"]["properties"]["body_timeout"][DURATION_BOUNDS] == {"exclusiveMinimum": 0}
    assert DURATION_BOUNDS not in defs["serve"]["properties"]["drain_timeout"]  # none declared
    assert defs["serve"]["properties"]["dedup_window"][DURATION_BOUNDS] == {
        "minimum": 3600,
        "maximum": 90 * 86400,
        "why": "it spans a sender's retries of one webhook, which end within days (Shopify's within 4 hours),"
        " and the inbox looks for ids to forget hourly",
    }
    assert defs["journal"]["properties"]["reconnect_deadline"][DURATION_BOUNDS] == {
        "minimum": 1,
        "maximum": 3600,
        "why": RECONNECT_WHY,
    }
    assert defs["serve"]["properties"]["intake_deadline"][DURATION_BOUNDS] == {
        "minimum": 0.1,
        "maximum": 60,
        "why": INTAKE_DEADLINE_WHY,
    }
    source_deadline = defs["source"]["properties"]["intake_deadline"]
    assert source_deadline[DURATION_BOUNDS] == defs["serve"]["properties"]["intake_deadline"][DURATION_BOUNDS]
    assert DURATION_BOUNDS not in defs["serve"]["properties"]["keep_bodies"]  # bounded by dedup_window alone
    for key in ("resweep", "resweep_cap"):
        assert defs["serve"]["properties"][key][DURATION_BOUNDS] == {
            "minimum": 0.05,
            "why": "a shorter wait would spin on parked work",
        }
