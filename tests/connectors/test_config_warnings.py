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
from shipmap.connectors import BreakerSettings, DeliverySettings, RetryPolicy, Runtime, Timeouts, load_config
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


# A timeout's phase longer than its total: total ends every attempt first, so that timeout never fires. A
# warning, not an error: a config that loaded before goes on loading, and its attempts end as they did.
NEVER_FIRES = "total ends every attempt first, so this timeout never fires; make {phase} at most total"


def _with_fenix_timeout(tmp_path: Path, **keys: str) -> Path:
    connections = copy.deepcopy(BASE_CONFIG["connections"])
    connections["fenix"]["timeout"] = keys
    # Retries that reach the breaker: the timeout's warning alone.
    return write_config(tmp_path, URL, connections=connections, delivery={"retry": {"max_attempts": 5}})


def test_a_phase_longer_than_its_total_is_a_located_warning_and_the_config_loads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _with_fenix_timeout(tmp_path, read="2m")
    with caplog.at_level(logging.WARNING, logger="shipmap.connectors.config"):
        config = load_config(path, environ=environ(URL))
    assert _warnings(caplog) == [
        f"{_located(path, 'read: 2m')}: connections.fenix.timeout.read (2m) is longer than"
        " connections.fenix.timeout.total (1m, its default): " + NEVER_FIRES.format(phase="read")
    ]
    fenix = next(c for c in config.connections if c.name == "fenix")
    assert fenix.timeout is not None and (fenix.timeout.read, fenix.timeout.total) == (120.0, 60.0)


def test_the_timeout_warning_is_at_total_when_the_file_wrote_it_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _with_fenix_timeout(tmp_path, connect="3s", pool="2s", total="1s")
    with caplog.at_level(logging.WARNING, logger="shipmap.connectors.config"):
        load_config(path, environ=environ(URL))
    at_total = _located(path, "total: 1s")
    assert _warnings(caplog) == [
        f"{at_total}: connections.fenix.timeout.{phase} ({seconds}) is longer than connections.fenix.timeout.total"
        " (1s): " + NEVER_FIRES.format(phase=phase)
        for phase, seconds in (("connect", "3s"), ("pool", "2s"))
    ]


@pytest.mark.parametrize(
    "keys",
    [{"read": "1s", "total": "1s"}, {"total": "1s"}, {"connect": "2s"}],
    ids=["equal", "phases-left-at-their-defaults", "below-the-default-total"],
)
def test_a_timeout_within_its_total_says_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, keys: dict[str, str]
) -> None:
    """A phase left at its default (30s) past a short total given alone is not the author's choice."""
    path = _with_fenix_timeout(tmp_path, **keys)
    with caplog.at_level(logging.WARNING, logger="shipmap.connectors.config"):
        load_config(path, environ=environ(URL))
    assert _warnings(caplog) == []


def test_a_single_duration_never_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``timeout: 2m`` gives every phase 2m and total twice it (4m)."""
    path = write_config(tmp_path, URL, delivery={"timeout": "2m", "retry": {"max_attempts": 5}})
    with caplog.at_level(logging.WARNING, logger="shipmap.connectors.config"):
        config = load_config(path, environ=environ(URL))
    assert _warnings(caplog) == [] and config.delivery.timeout.total == 240.0


def test_a_timeout_built_in_code_is_warned_alike(caplog: pytest.LogCaptureFixture) -> None:
    from test_config import _in_code

    retry = RetryPolicy(max_attempts=5)
    quiet = DeliverySettings(retry=retry, timeout=Timeouts(total=10.0))  # the phases left out: nothing
    assert (quiet.timeout.read, quiet.timeout.phase("read")) == (None, 30.0)  # left out, and in use
    loud = DeliverySettings(retry=retry, timeout=Timeouts(connect=90.0))
    # Given equal to its default, a phase is given, as a file that writes it gives it (it read as left out).
    default_given = DeliverySettings(retry=retry, timeout=Timeouts(read=30.0, total=10.0))
    with caplog.at_level(logging.WARNING, logger="shipmap.connectors.config"):
        Runtime(_in_code(delivery=quiet))
        Runtime(_in_code(delivery=loud))
        Runtime(_in_code(delivery=default_given))
    assert _warnings(caplog) == [
        "config: delivery.timeout.connect (90s) is longer than delivery.timeout.total (1m): "
        + NEVER_FIRES.format(phase="connect"),
        "config: delivery.timeout.read (30s) is longer than delivery.timeout.total (10s): "
        + NEVER_FIRES.format(phase="read"),
    ]


def test_validate_shows_the_timeout_warning_and_strict_makes_it_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _with_fenix_timeout(tmp_path, write="90s")
    warning = (
        f"{_located(path, 'write: 90s')}: warning: connections.fenix.timeout.write (90s) is longer than"
        " connections.fenix.timeout.total (1m, its default): " + NEVER_FIRES.format(phase="write")
    )
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert (out.startswith(f"ok {path} "), err) == (True, warning + "\n")

    assert main(["validate", str(path), "--format", "json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)["files"]
    assert report["ok"] is True
    assert [(p["severity"], p["type"], p["text"]) for p in report["problems"]] == [
        ("warning", "ConfigWarning", warning)
    ]

    assert main(["validate", str(path), "--strict"]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", warning.replace(": warning: ", ": error: ", 1) + "\n")
