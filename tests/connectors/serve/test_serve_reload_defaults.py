"""``kill -HUP`` of a live ``shipmap serve`` after its file writes ``serve`` and ``journal`` keys at the values
they run with left out: the reload compares the loaded settings, so nothing is said to wait for a restart."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
from shipmap.connectors import Sandbox

from .harness import ServeProcess

NOT_APPLIED = "but a reload does not apply it: restart to apply"


def test_serve_and_journal_keys_written_at_their_defaults_are_no_change_a_reload_warns_of(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    serve = ServeProcess(tmp_path, source_sandbox.url)
    text = serve.config.read_text()
    assert "  drain_timeout: 30s\n" in text and "  path: .shipmap/journal.db\n" in text
    serve.start()

    def reload(written: str, count: int) -> None:
        serve.config.write_text(written)
        assert serve.process is not None
        serve.process.send_signal(signal.SIGHUP)
        serve.wait_until(
            lambda: sum("reloaded " in line for line in serve.errors) == count, timeout=30, what="the reload"
        )

    try:
        # dedup_window's default is 7d, synchronous's normal: written, they run as left out.
        at_defaults = text.replace(
            "  drain_timeout: 30s\n", "  drain_timeout: 30s\n  dedup_window: 7d\n"
        ).replace("  path: .shipmap/journal.db\n", "  path: .shipmap/journal.db\n  synchronous: normal\n")
        reload(at_defaults, 1)
        [line] = [line for line in serve.errors if "reloaded " in line]
        assert line.rstrip().endswith("serve.yaml: no change it applies"), line
        # A key that does change: its warning comes, and it is the only one (the first reload said none).
        reload(at_defaults.replace("drain_timeout: 30s", "drain_timeout: 20s"), 2)
        serve.wait_until(
            lambda: any(NOT_APPLIED in line for line in serve.errors), timeout=30, what="the warning"
        )
        [warning] = [line for line in serve.errors if NOT_APPLIED in line]
        assert "serve.drain_timeout changed in" in warning, warning
        with httpx.Client(timeout=10) as client:
            assert client.get(f"{serve.url}/healthz").status_code == 200
        assert serve.terminate() == 0
    finally:
        serve.kill()
