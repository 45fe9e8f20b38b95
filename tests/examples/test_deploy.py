"""examples/deploy: the systemd unit's commands and the config it names, run for real (without systemd).

The unit's ExecStart starts ``shipmap serve`` on the example config, its paths under /etc and /var/lib moved
into a temporary directory and its endpoint the sandbox; a signed Shopify webhook is delivered; the secret file
is rotated and ExecReload (``/bin/kill -HUP $MAINPID``) applies it; KillSignal drains the service within the
unit's TimeoutStopSec, which must leave the config's drain its whole time."""

from __future__ import annotations

import base64
import configparser
import hashlib
import hmac
import json
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from shipmap.connectors import Sandbox
from shipmap.connectors._config import load_config
from shipmap.connectors._serve import serve_settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "examples" / "deploy"
ORDER = (REPO / "tests" / "fixtures" / "real" / "shopify" / "orders_cancelled_webhook.json").read_bytes()
SECRETS = {
    "fenix_password": "demo-pass",
    "fenix_api_key": "demo-api-key",
    "shopify_webhook_secret": "shpss_deploy_first_secret",
}
ROTATED = "shpss_deploy_rotated_secret"
DRAIN_MARGIN_S = 10  # systemd's kill must come well after the drain's deadline


def unit() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd's keys are case-sensitive
    parser.read_string((DEPLOY / "shipmap-serve.service").read_text())
    return parser["Service"]


def installed(root: Path, sandbox_url: str) -> Path:
    """The example as installed under ``root``: the config, its env file and its secret files."""
    text = (DEPLOY / "shipmap.yaml").read_text()
    text = text.replace("/etc/shipmap/", f"{root}/etc/shipmap/").replace("/var/lib/shipmap/", f"{root}/var/")
    text = text.replace("  host: 0.0.0.0\n  port: 8080\n", "  host: 127.0.0.1\n  port: 0\n")
    etc = root / "etc" / "shipmap"
    (etc / "secrets").mkdir(parents=True)
    (root / "var").mkdir()
    config = etc / "shipmap.yaml"
    config.write_text(text)
    environment = (DEPLOY / "shipmap.env").read_text()
    environment = re.sub(r"FENIX_BASE_URL=.*", f"FENIX_BASE_URL={sandbox_url}", environment)
    environment = re.sub(r"FENIX_USERNAME=.*", "FENIX_USERNAME=demo-user", environment)
    (etc / "shipmap.env").write_text(
        re.sub(r"FENIX_STORE_NAME=.*", "FENIX_STORE_NAME=demo-store", environment)
    )
    for name, value in SECRETS.items():
        (etc / "secrets" / name).write_text(value + "\n")
    return config


def seconds(value: str) -> float:
    found = re.fullmatch(r"(\d+)(s|min)?", value.strip())
    assert found, f"a TimeoutStopSec this test reads: {value!r}"
    return int(found.group(1)) * (60 if found.group(2) == "min" else 1)


def signed(body: bytes, topic: str, webhook_id: str, secret: str) -> dict[str, str]:
    signature = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": signature,
        "X-Shopify-Webhook-Id": webhook_id,
    }


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.05)


@dataclass
class Running:
    """The unit's service as started by ``the_units_service``: its root URL and what it printed so far."""

    process: subprocess.Popen[str]
    url: str
    out: list[str]
    err: list[str]


@contextmanager
def the_units_service(config: Path, cwd: Path) -> Iterator[Running]:
    """The unit's ExecStart on ``config`` (the example as ``installed``), once it listens; killed at the end
    if it still runs."""
    command = shlex.split(unit()["ExecStart"])
    assert command[0].endswith("/shipmap") and "/etc/shipmap/shipmap.yaml" in command
    argv = [sys.executable, "-c", "from shipmap.connectors._cli import entry; entry()"]
    argv += [str(config) if arg == "/etc/shipmap/shipmap.yaml" else arg for arg in command[1:]]
    process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=lambda: out.extend(iter(process.stdout.readline, "")), daemon=True),  # type: ignore[union-attr]
        threading.Thread(target=lambda: err.extend(iter(process.stderr.readline, "")), daemon=True),  # type: ignore[union-attr]
    ]
    for reader in readers:
        reader.start()
    try:
        wait_until(lambda: any("listening on " in line for line in out), "serve to listen")
        url = re.search(r"listening on (http://\S+) ", "".join(out))
        assert url is not None, out
        yield Running(process, url.group(1), out, err)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        for reader in readers:
            reader.join(timeout=10)


def test_the_unit_runs_the_example_reloads_a_rotated_secret_and_drains_within_its_stop_timeout(
    tmp_path: Path,
) -> None:
    service = unit()
    with Sandbox() as sandbox:
        config = installed(tmp_path, sandbox.url)
        drain = serve_settings(load_config(config)).drain_timeout
        assert seconds(service["TimeoutStopSec"]) >= drain + DRAIN_MARGIN_S

        # docs/deploy.md's check before the first start: the config, its secrets and mappings load.
        checked = subprocess.run(
            [sys.executable, "-c", "from shipmap.connectors._cli import entry; entry()", "validate", str(config)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert checked.returncode == 0, checked.stderr
        assert (
            checked.stdout == f"ok {config} (a runtime config: 1 connection, 2 mappings entries, 1 source)\n"
        )
        with the_units_service(config, tmp_path) as running:
            hook = f"{running.url}/hooks/shop"

            def post(number: int, topic: str, secret: str) -> int:
                body = json.dumps({**json.loads(ORDER), "id": 8_100_000 + number}).encode()
                return httpx.post(
                    hook, content=body, headers=signed(body, topic, f"d{number}", secret)
                ).status_code

            def delivered() -> int:
                return len(sandbox.requests(endpoint="fenix.orders"))

            assert post(1, "orders/create", SECRETS["shopify_webhook_secret"]) == 200
            wait_until(lambda: delivered() == 1, "the order at Fenix")

            # The secret rotates: the file is rewritten, then `systemctl reload` runs ExecReload.
            (tmp_path / "etc" / "shipmap" / "secrets" / "shopify_webhook_secret").write_text(ROTATED + "\n")
            process = running.process
            reload = [process.pid if arg == "$MAINPID" else arg for arg in shlex.split(service["ExecReload"])]
            subprocess.run([str(arg) for arg in reload], check=True, timeout=10)
            wait_until(
                lambda: any("reloaded" in line and "shop: secrets" in line for line in running.err),
                "the reload",
            )
            assert post(2, "orders/cancelled", SECRETS["shopify_webhook_secret"]) == 401
            assert post(3, "orders/cancelled", ROTATED) == 200
            wait_until(lambda: delivered() == 2, "the cancel at Fenix")

            process.send_signal(getattr(signal, service["KillSignal"]))
            assert process.wait(timeout=seconds(service["TimeoutStopSec"])) == 0
    logged = [json.loads(line) for line in running.err if line.startswith("{")]
    assert logged and all({"time", "level", "logger", "message"} <= record.keys() for record in logged)
    said = "".join(running.out + running.err)
    for secret in [*SECRETS.values(), ROTATED]:
        assert secret not in said


DOCS = (REPO / "docs" / "deploy.md").read_text()


def test_the_page_explains_every_line_of_the_units_service_section() -> None:
    table = DOCS.split("## The unit, line by line", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([A-Za-z]+)(?:=[^`]*)?`", table))
    assert set(unit().keys()) - named == set()


def test_the_pages_validate_lines_are_what_validate_prints(tmp_path: Path) -> None:
    """The page's `validate` output and its located error, for the config as installed at /etc/shipmap."""
    config = installed(tmp_path, "http://127.0.0.1:9")
    secret = tmp_path / "etc" / "shipmap" / "secrets" / "fenix_password"
    secret.unlink()
    secret.mkdir()  # unreadable to anyone, root included (the page's user gets "Permission denied")

    def validate() -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-c", "from shipmap.connectors._cli import entry; entry()", "validate"]
        return subprocess.run(
            [*command, str(config)], capture_output=True, text=True, timeout=60, check=False
        )

    failed = validate()
    said = " ".join(failed.stderr.replace(str(tmp_path), "").split())
    page = " ".join(DOCS.split())
    assert failed.returncode == 2, failed.stderr
    reason = "cannot be read: Is a directory"
    assert said.endswith(reason) and said.replace(reason, "cannot be read: Permission denied") in page, said
    secret.rmdir()
    secret.write_text(SECRETS["fenix_password"] + "\n")
    checked = validate()
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.replace(str(tmp_path), "") in DOCS
