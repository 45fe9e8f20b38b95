"""The run config is bounded and located like a mapping, and no secret reaches any output (issue 13, classes
4, 5 and 8): alias bombs, huge numbers, deep nesting, a binary env file, credentials in a URL, a credential
that cannot go in a header; and a growing input whose cut-off last line is read again by the next run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from shipmap.connectors import EXIT_DEAD_LETTERS, ConfigError, Sandbox, load_config
from shipmap.connectors._cli import main
from shipmap.connectors._store._journal import Journal

sys.path.insert(0, str(Path(__file__).parents[1] / "connectors"))
from test_runtime_support import environ, order_event, write_config

ALIAS_BOMB = "".join(
    f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]\n"
    for prev, name in zip(
        ["x0", *[f"x{i}" for i in range(1, 9)]], [f"x{i}" for i in range(1, 10)], strict=True
    )
)


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("x0: &x0 [lol]\n" + ALIAS_BOMB + "connections: {}\n", "more than 200000 nodes (an alias bomb?)", 3),
        ("version: " + "9" * 5000 + "\n", "a number too long to read", 1),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply", 1),
        ("connections: !!python/object:os.system {}\n", "is not allowed in a config file", 1),
        ("a: 1\na: 2\n", "duplicate key 'a'", 2),
    ],
)
def test_a_hostile_config_is_a_located_error_with_exit_2(
    tmp_path: Path, text: str, message: str, line: int, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "shipmap.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert message in caught.value.message
    assert caught.value.exit_code == 2 and caught.value.line is not None and caught.value.line <= line
    assert main(["run", str(path), "--input", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:" in err and "Traceback" not in err


def test_an_env_file_that_is_binary_is_a_config_error_at_its_first_bad_byte(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9", env_file=False)
    (tmp_path / "secrets.bin").write_bytes(bytes(range(256)) * 64)
    config.write_text("env_file: secrets.bin\n" + config.read_text())
    with pytest.raises(ConfigError) as caught:
        load_config(config, environ=environ("http://127.0.0.1:9"))
    assert caught.value.message == (
        "cannot read env file: not UTF-8 text (byte 0x80: invalid start byte); save it as UTF-8"
    )
    assert str(caught.value.location) == f"{tmp_path / 'secrets.bin'}:2:118"  # 0x80, after the \n at 0x0a
    assert caught.value.exit_code == 2


def test_credentials_in_a_base_url_are_refused_without_echoing_them(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9")
    config.write_text(
        config.read_text().replace("${SANDBOX_URL}", "http://${DG_API_KEY}:${DG_API_SECRET}@h", 1)
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config, environ=environ("http://127.0.0.1:9"))
    rendered = caught.value.render()
    assert "connections.fenix.base_url" in rendered and "auth" in rendered
    assert "demo-key" not in rendered and "demo-secret" not in rendered
    assert caught.value.line is not None


@pytest.mark.parametrize("password", ["pässwörd", "line\nbreak", "tab\x00nul"])
def test_a_credential_that_cannot_go_in_a_header_names_the_variable_never_the_value(
    tmp_path: Path, password: str
) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9", env_file=False)
    env = {**environ("http://127.0.0.1:9"), "FENIX_PASSWORD": password}
    with pytest.raises(ConfigError) as caught:
        load_config(config, environ=env)
    rendered = caught.value.render()
    assert "FENIX_PASSWORD" in rendered and "cannot be sent in an HTTP header" in rendered
    assert password not in rendered and password[1:4] not in rendered


def test_a_cut_off_last_line_is_read_again_by_the_next_run_and_its_rejection_resolved(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, sandbox.url)
    events = tmp_path / "events.ndjson"
    last = json.dumps(order_event(2))
    events.write_text(json.dumps(order_event(1)) + "\n" + last[:40])  # the writer is mid-line
    argv = ["run", str(config), "--input", str(events), "--no-progress", "--workers", "0"]
    assert main(argv) == EXIT_DEAD_LETTERS
    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        [rejected] = journal.rejected()
    assert rejected.origin.endswith(":2") and "cut off" in rejected.reason
    with events.open("a") as out:
        out.write(last[40:] + "\n")  # the rest arrives
    assert main(argv) == 0
    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        assert journal.rejected() == []
    assert sorted(r.order_id for r in sandbox.requests(endpoint="fenix.orders")) == ["1001", "1002"]
    assert main(["dead-letters", str(config)]) == 0
    print("growing input: exit 8 with the cut-off line rejected, then exit 0, rejection resolved, 2 of 2")
