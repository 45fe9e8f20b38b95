"""Stopping a service: ``Service.stop()`` from another thread, a signal in the first instants of a start, and
the exit code of each signal.

- ``stop()`` set an asyncio.Event from the caller's thread, which asyncio does not allow (the loop is not
  woken, and a debug loop refuses the call outright); a program that runs ``serve()`` on a thread of its own
  stops it from another one.
- A SIGTERM before the delivery thread had built its feed was lost on the way to it: the service waited out
  its whole ``drain_timeout`` (30 s here) with nothing to deliver.
- ``shipmap serve`` exits 0 after a drain, whichever signal asked for it (README's exit-code table).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from shipmap.connectors import Runtime
from shipmap.connectors._serve import Service

from .harness import SERVE_FIXTURES, environment

NOWHERE = "http://127.0.0.1:9"  # nothing is delivered: the services here stay idle
DRAIN = 30.0  # the fixture's serve.drain_timeout: a stop that is lost waits this long
PROMPTLY = 10.0  # well under DRAIN, with room for a loaded machine


def _config(directory: Path) -> Path:
    for item in SERVE_FIXTURES.glob("*.yaml"):
        shutil.copy(item, directory / item.name)
    config = directory / "serve.yaml"
    assert f"  drain_timeout: {DRAIN:g}s\n" in config.read_text()
    return config


def _wait(condition: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.parametrize("now", [False, True], ids=["stop", "stop-now"])
def test_stop_from_another_thread_stops_an_idle_service_promptly(tmp_path: Path, now: bool) -> None:
    runtime = Runtime.from_config(_config(tmp_path), environ=environment(NOWHERE))
    service = Service(runtime)
    ready = threading.Event()
    outcome: dict[str, Any] = {}

    def serve() -> None:
        try:
            # A debug loop refuses a call from another thread (RuntimeError in the caller) where a plain one
            # would only not wake up: the embedding program's thread stops it safely or the test says so.
            outcome["summary"] = asyncio.run(service.serve(on_ready=lambda _: ready.set()), debug=True)
        except BaseException as error:  # reported by the assertions below
            outcome["error"] = error

    thread = threading.Thread(target=serve, name="embedding-program-service", daemon=True)
    thread.start()
    try:
        assert ready.wait(60), outcome
        # Idle: listening, the delivery loop waiting on an empty inbox; nothing comes to wake either loop.
        _wait(lambda: runtime.live is not None, "the delivery loop's first run")
        assert httpx.get(f"{service.url}/readyz", timeout=10).status_code == 200
    finally:
        started = time.monotonic()
        service.stop(now=now)  # from this thread, not the service's
        thread.join(DRAIN + 30)
    took = time.monotonic() - started
    assert not thread.is_alive()
    assert "error" not in outcome, outcome
    assert took < PROMPTLY, f"stop() took {took:.1f} s"
    summary = outcome["summary"]
    assert summary is not None and summary.delivered == 0 and summary.dead == 0
    service.stop()  # after the end: nothing to do, and no error


def test_stop_before_serve_starts_is_kept(tmp_path: Path) -> None:
    """A program that stops the service before its thread got to ``serve()``: serve returns at once."""
    runtime = Runtime.from_config(_config(tmp_path), environ=environment(NOWHERE))
    service = Service(runtime)
    service.stop()
    started = time.monotonic()
    summary = asyncio.run(service.serve(on_ready=lambda _: None))
    assert time.monotonic() - started < PROMPTLY
    assert summary is not None and summary.events == 0


def _serve_process(directory: Path) -> subprocess.Popen[str]:
    entry = "from shipmap.connectors._cli import entry; entry()"
    return subprocess.Popen(
        [sys.executable, "-c", entry, "serve", str(_config(directory)), "--port", "0"],
        cwd=directory,
        env=environment(NOWHERE),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("when", ["first-line", "ready"])
def test_serve_stops_promptly_and_exits_0_on_either_signal(tmp_path: Path, signum: int, when: str) -> None:
    """``first-line``: signalled as soon as it prints its first line, while its delivery thread is still
    building its feed (the stop was lost, and the drain waited its whole 30 s); ``ready``: once it is ready."""
    process = _serve_process(tmp_path)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("shipmap serve: listening on "), first + process.stderr.read()  # type: ignore[union-attr]
        if when == "ready":
            url = first.split("(", 1)[1].split("/hooks/", 1)[0]
            _wait(lambda: _ready(url), "/readyz to answer 200")
        started = time.monotonic()
        process.send_signal(signum)
        out, err = process.communicate(timeout=DRAIN + 60)
        took = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert process.returncode == 0, err
    assert took < PROMPTLY, f"took {took:.1f} s to stop:\n{err}"
    assert "draining: intake closed" in err and "stopped: 0 events handed to delivery" in err
    assert "drain deadline reached" not in err and "Traceback" not in err
    assert "interrupted" not in err  # not the 130 line of an interrupted command
    assert "events" in out  # the summary, as after any drain


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
