"""Config warnings: what a config may say but its author would want to know, at its place, while the config
loads. Retries that give up before the breaker opens: with ``delivery.retry.max_attempts`` below a
connection's ``breaker.failures``, a delivery alone on a connection that is down is dead-lettered before the
breaker opens to hold it pending (a soak's 1-second vendor restart did it, at 4 attempts and 5 failures).
``shipmap validate`` reports the warnings as its own (errors with --strict)."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from shipmap.connectors import BreakerSettings, DeliverySettings, RetryPolicy, Runtime, load_config
from shipmap.connectors._cli import main
from test_runtime_support import BASE_CONFIG, environ, write_config

URL = "http://127.0.0.1:9"
WHAT = (
    "in an outage, a delivery alone on {named} is dead-lettered after 4 attempts, before the breaker opens (at"
    " {failures} failures in a row) to hold it pending; make max_attempts at least failures"
)


def _located(path: Path, written: str, nth: int = 1) -> str:
    """``path:line:col`` of the value of the ``nth`` line that is ``written`` (``key: value``)."""
    lines = path.read_text().splitlines()
    line = [n for n, row in enumerate(lines, 1) if row.strip() == written][nth - 1]
    column = lines[line - 1].index(written) + len(written.split(": ")[0]) + 3
    return f"{path}:{line}:{column}"


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "shipmap.connectors.config"]


def test_max_attempts_below_the_default_failures_is_a_located_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The tests' own combination (max_attempts 4, the default 5 failures), said once for the two connections
    that share delivery.breaker, at the key the file wrote; the config loads."""
    path = write_config(tmp_path, URL)
    with caplog.at_level(logging.WARNING, logger="shipmap.connectors.config"):
        load_config(path, environ=environ(URL))
    message = (
        "delivery.retry.max_attempts (4) is below delivery.breaker.failures (5, its default): "
        + WHAT.format(named="connections fenix, dg", failures=5)
    )
    assert _warnings(caplog) == [f"{_located(path, 'max_attempts: 4')}: {message}"]


def test_the_warning_is_at_the_key_written_later_and_names_a_connections_own_breaker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    connections = copy.deepcopy(BASE_CONFIG["connections"])
    connections["dg"]["breaker"] = {"failures": 5}  # connections come before delivery: max_attempts is later
    path = write_config(
        tmp_path, URL, connections=connections, delivery={"breaker": {"failures": 6}}
    )  # delivery.breaker comes after delivery.retry: failures is later
    with caplog.at_level(logging.WARNING, logger="shipmap.connectors.config"):
        load_config(path, environ=environ(URL))
    assert _warnings(caplog) == [
        f"{_located(path, 'max_attempts: 4')}: delivery.retry.max_attempts (4) is below"
        " connections.dg.breaker.failures (5): " + WHAT.format(named="connection dg", failures=5),
        f"{_located(path, 'failures: 6')}: delivery.retry.max_attempts (4) is below"
        " delivery.breaker.failures (6): " + WHAT.format(named="connection fenix", failures=6),
    ]


@pytest.mark.parametrize(
    "delivery",
    [{"retry": {"max_attempts": 5}}, {"breaker": {"failures": 4}}, {"breaker": {"failures": 1}}],
    ids=["attempts-equal", "failures-equal", "failures-below"],
)
def test_max_attempts_at_least_failures_says_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, delivery: dict[str, Any]
) -> None:
    """At max_attempts == failures, the last attempt's failure opens the breaker and the delivery waits:
    nothing to warn about."""
    path = write_config(tmp_path, URL, delivery=delivery)
    with caplog.at_level(logging.WARNING, logger="shipmap.connectors.config"):
        load_config(path, environ=environ(URL))
    assert _warnings(caplog) == []


def test_a_config_built_in_code_is_warned_alike(caplog: pytest.LogCaptureFixture) -> None:
    from test_config import _in_code

    delivery = DeliverySettings(retry=RetryPolicy(max_attempts=2), breaker=BreakerSettings(failures=3))
    with caplog.at_level(logging.WARNING, logger="shipmap.connectors.config"):
        Runtime(_in_code(delivery=delivery))
    assert _warnings(caplog) == [
        "config: delivery.retry.max_attempts (2) is below delivery.breaker.failures (3): in an outage, a"
        " delivery alone on connection fenix is dead-lettered after 2 attempts, before the breaker opens (at 3"
        " failures in a row) to hold it pending; make max_attempts at least failures"
    ]


def test_validate_shows_the_warning_and_strict_makes_it_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was only a log line on stderr, and the JSON report said nothing."""
    path = write_config(tmp_path, URL)
    warning = (
        f"{_located(path, 'max_attempts: 4')}: warning: delivery.retry.max_attempts (4) is below"
        " delivery.breaker.failures (5, its default): "
        + WHAT.format(named="connections fenix, dg", failures=5)
    )
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == warning + "\n"
    assert out.startswith(f"ok {path} (a runtime config: 2 connections")

    assert main(["validate", str(path), "--format", "json"]) == 0
    out, err = capsys.readouterr()
    (report,) = json.loads(out)["files"]
    assert err == "" and report["ok"] is True
    assert report["problems"] == [
        {
            "severity": "warning",
            "type": "ConfigWarning",
            "message": warning.split(": warning: ", 1)[1],
            "field": None,
            "location": {
                "file": str(path),
                "line": int(warning.split(":")[1]),
                "column": int(warning.split(":")[2]),
            },
            "text": warning,
        }
    ]

    assert main(["validate", str(path), "--strict"]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", warning.replace(": warning: ", ": error: ", 1) + "\n")
