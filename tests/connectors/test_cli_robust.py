"""No traceback from the CLI, ever: a closed pipe, bad option values, Ctrl-C during a run, a bug."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from shipmap.connectors import Journal, Sandbox
from shipmap.connectors._cli import main
from test_runtime_support import order_event, write_config

CLI = [sys.executable, "-c", "import sys; from shipmap.connectors._cli import main; sys.exit(main())"]
ORDER = Path(__file__).parents[1] / "fixtures" / "real" / "shopify" / "order_rest_get_with_fulfillment.json"


def test_version_comes_from_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out == f"shipmap {version('shipmap')}\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sandbox", "--port", "99999"], "argument --port: 99999 is not a TCP port"),
        (["sandbox", "--port", "http"], "argument --port: 'http' is not a whole number"),
        (["sandbox", "--host", " "], "argument --host: is empty: give an IP address or a host name"),
        (["run", "cfg.yaml", "--concurrency", "0"], "argument --concurrency: 0 is not 1 or more"),
        (["serve", "cfg.yaml", "--port", "70000"], "argument --port: 70000 is not a TCP port"),
        (["serve", "cfg.yaml", "--port", "-1"], "argument --port: -1 is not a TCP port"),
        # It was refused once the config loaded, as the config's key: "serve.host: is empty".
        (["serve", "cfg.yaml", "--host", ""], "argument --host: is empty: give an IP address or a host name"),
        (["replay", "cfg.yaml", "--concurrency", "x"], "argument --concurrency: 'x' is not a whole number"),
        (["preview", "shopify/order", "o.json", "--jobs", "0"], "argument -j/--jobs: 0 is not 1 or more"),
        (["test", "m.yaml", "--jobs", "two"], "argument -j/--jobs: 'two' is not a whole number"),
        # A URL that may carry a credential is not echoed; one with a query would journal its key.
        (
            ["journal", "move-pending", "j.db", "fenix", "--from", "ftp://u:s3cr3tkey@b", "--to", "http://b"],
            "argument --from: the value is not a base URL",
        ),
        (
            [
                "journal",
                "move-pending",
                "j.db",
                "fenix",
                "--from",
                "http://a",
                "--to",
                "http://b/?key=s3cr3tkey",
            ],
            "argument --to: a query string or fragment (?..., #...) is refused",
        ),
        # status prints the URL it asked: a password in it was printed too.
        (
            ["status", "cfg.yaml", "--url", "http://u:s3cr3tkey@127.0.0.1:8080"],
            "argument --url: credentials in the URL (user:password@host) are refused",
        ),
        (
            ["status", "cfg.yaml", "--url", "127.0.0.1:8080"],
            "argument --url: '127.0.0.1:8080' is not a base URL",
        ),
    ],
)
def test_a_bad_option_value_is_a_usage_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: shipmap {argv[0]}")
    assert message in err
    assert "Traceback" not in err and "s3cr3tkey" not in err


def test_a_closed_pipe_stops_the_output_quietly(tmp_path: Path) -> None:
    # Enough documents that the output outgrows the pipe's buffer long after the reader has gone.
    source = tmp_path / "orders.ndjson"
    line = json.dumps(json.loads(ORDER.read_text())) + "\n"
    source.write_text(line * 400)
    shipmap = subprocess.Popen(
        [*CLI, "preview", "shopify/order", str(source), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert shipmap.stdout is not None and shipmap.stderr is not None
    first = shipmap.stdout.readline()
    assert json.loads(first)["order"]["id"] == "450789469"
    shipmap.stdout.close()  # what `| head -1` does
    err = shipmap.stderr.read().decode()
    assert shipmap.wait(timeout=60) == 141  # 128 + SIGPIPE, as a shell reports `cat big | head -1`
    assert err == ""


def test_a_bug_is_one_line_without_the_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from shipmap.connectors._cli import validate

    def broken(args: object) -> int:
        raise RuntimeError("token=s3cr3t")  # a message that might quote config is never shown

    monkeypatch.setattr(validate, "run", broken)
    assert main(["validate", "x.yaml"]) == 70
    err = capsys.readouterr().err
    assert re.fullmatch(
        r"shipmap validate: internal error: RuntimeError at test_cli_robust\.py:\d+ \(a bug in shipmap; -vv logs the traceback\)\n",
        err,
    )


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT")
def test_ctrl_c_mid_run_is_one_line_exit_130_and_the_next_run_resumes(
    tmp_path: Path, sandbox_factory: Callable[..., Sandbox]
) -> None:
    server = sandbox_factory(faults="slow=1:0.02")
    # Retries that reach the breaker: stderr holds the interruption alone, not the config's warning about them.
    config = write_config(tmp_path, server.url, delivery={"concurrency": 2, "retry": {"max_attempts": 5}})
    events = tmp_path / "events.ndjson"
    total = 150
    events.write_text("".join(json.dumps(order_event(n)) + "\n" for n in range(total)))
    command = [*CLI, "run", str(config), "--input", str(events), "--no-progress"]

    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.monotonic() + 30
    while len(server.requests(endpoint="fenix.orders")) < 10:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.005)
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 130
    lines = [line for line in err.decode().splitlines() if " INFO shipmap." not in line]
    assert lines == ["shipmap: interrupted"]

    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        interrupted = journal.counts()
    assert 0 < interrupted.get("delivered", 0) < total  # it really stopped mid-run, with its marks kept

    second = subprocess.run(command, capture_output=True, cwd=tmp_path, timeout=120)
    assert second.returncode == 0, second.stderr.decode()[-2000:]
    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        assert journal.counts() == {"delivered": total}
    orders = [r.order_id for r in server.requests(endpoint="fenix.orders")]
    assert set(orders) == {str(1000 + n) for n in range(total)}
    # Resumed, not restarted: what was delivered and marked before Ctrl-C was not sent again.
    assert len(orders) - total <= total - interrupted["delivered"]
    assert len(orders) < 2 * total - 5


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda path: None, "No such file or directory"),
        (lambda path: path.symlink_to(path), "Too many levels of symbolic links"),
        (
            lambda path: path.write_text("{}"),
            "not a directory: the studio serves a folder of mappings and samples",
        ),
    ],
    ids=["missing", "symlink-loop", "a-file"],
)
def test_studio_on_a_directory_it_cannot_serve_says_why_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Callable[[Path], object], reason: str
) -> None:
    """It printed Python's "[Errno 2] No such file or directory: '/missing'" after the path it had named."""
    directory = tmp_path / "studio"
    make(directory)
    assert main(["studio", str(directory)]) == 2
    assert capsys.readouterr() == ("", f"shipmap studio: {directory}: {reason}\n")
