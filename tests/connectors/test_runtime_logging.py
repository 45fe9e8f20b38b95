"""Two runtimes in one process, against the sandbox over real HTTP: a named runtime's log records carry its
name as ``shipmap_runtime``, so that a standard logging filter or format tells them apart."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from shipmap.connectors import Runtime, Sandbox, load_config
from test_runtime_support import environ, order_event, shipment_event, write_config

# A breaker that opens at the first 5xx and probes 50 ms later: a run logs its opening and closing.
QUICK_BREAKER = {"breaker": {"failures": 1, "cooldown": "50ms"}}


def _runtime_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name.startswith("shipmap.connectors.")]


def test_each_named_runtime_marks_its_own_records_and_an_unnamed_one_marks_none(
    tmp_path: Path, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    folders = {name: tmp_path / name for name in ("eu", "us", "plain")}
    for folder in folders.values():
        folder.mkdir()
    configs = {
        name: write_config(folder, sandbox.url, delivery=QUICK_BREAKER) for name, folder in folders.items()
    }
    env = environ(sandbox.url)
    eu = Runtime.from_config(configs["eu"], environ=env, name="eu")
    us = Runtime(load_config(configs["us"], environ=env), name="us")
    plain = Runtime.from_config(configs["plain"], environ=env)
    assert (eu.name, us.name, plain.name) == ("eu", "us", None)
    caplog.set_level(logging.INFO, logger="shipmap")

    seen: dict[str, set[str]] = {}
    for name, runtime in (("eu", eu), ("us", us)):
        caplog.clear()
        sandbox.set_faults("schedule=503")  # the first order answers 503: the breaker opens, then closes
        summary = runtime.run([order_event(1), shipment_event(1)])
        assert summary.ok and summary.delivered == 3  # the order, and the shipment's two targets
        records = _runtime_records(caplog)
        assert {getattr(record, "shipmap_runtime", None) for record in records} == {name}
        seen[name] = {record.name for record in records}
    # The login, the breaker's opening and closing, the retry and each delivery's line: each logger a run
    # goes through marks its records.
    for loggers in seen.values():
        assert {
            "shipmap.connectors.auth",
            "shipmap.connectors.breaker",
            "shipmap.connectors.delivery",
            "shipmap.connectors.deliveries",
        } <= loggers, loggers

    caplog.clear()
    sandbox.set_faults("schedule=503")
    assert plain.run([order_event(2)]).ok
    records = _runtime_records(caplog)
    assert records and not any(hasattr(record, "shipmap_runtime") for record in records)


def test_a_handler_filters_and_formats_on_the_runtime_name(
    tmp_path: Path, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """What an embedding program writes: one handler per runtime, a filter on the attribute, the name in the
    format (``defaults`` fills it for records of other libraries)."""
    for name in ("eu", "us"):
        (tmp_path / name).mkdir()
    env = environ(sandbox.url)
    eu = Runtime.from_config(write_config(tmp_path / "eu", sandbox.url), environ=env, name="eu")
    us = Runtime.from_config(write_config(tmp_path / "us", sandbox.url), environ=env, name="us")
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.addFilter(lambda record: getattr(record, "shipmap_runtime", None) == "us")
    handler.setFormatter(
        logging.Formatter("[%(shipmap_runtime)s] %(name)s: %(message)s", defaults={"shipmap_runtime": "-"})
    )
    shipmap_logger = logging.getLogger("shipmap")
    shipmap_logger.addHandler(handler)
    caplog.set_level(logging.INFO, logger="shipmap")
    try:
        assert eu.run([order_event(1)]).ok
        assert us.run([order_event(2)]).ok
    finally:
        shipmap_logger.removeHandler(handler)
    lines = written.getvalue().splitlines()
    assert lines and all(line.startswith("[us] shipmap.connectors.") for line in lines), lines
    assert any(line.startswith("[us] shipmap.connectors.deliveries: delivered ") for line in lines), lines
