"""Issue 7, part 5: known secret values never appear anywhere shipmap writes.

Unique credentials are set for the sandbox and, through environment variables, for the runner. Every command
runs (live ``run`` with -vv and faults that force re-logins and retries, ``run --dry-run``, ``dead-letters``,
``replay``, ``preview``, ``validate``, a run with refused credentials, a config error on a secret-valued
key), then stdout, stderr, the journal (raw bytes of every file and every row of every table), the sandbox's
JSONL record and the dry-run text are searched for every secret: the configured ones, the Basic-auth
``base64(key:secret)``, and every ``authToken`` and ``x-identity`` the sandbox issued.
"""

from __future__ import annotations

import base64
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import yaml
from harness import DELIVERY, ShipmapRun, build_workload, environment, shipmap_command, write_config
from shipmap.connectors import Sandbox, SandboxCredentials

SECRETS = {
    "FENIX_USERNAME": "acme-integration-user",  # not a secret; shows in the sandbox record, on purpose
    "FENIX_PASSWORD": "fenix-pw-Q7v!x9#Lk2$z",
    "FENIX_API_KEY": "fenix-api-key-5d3e8c1a9b",
    "FENIX_STORE_NAME": "acme-store",
    "DG_API_KEY": "dg-key-41c9e07f",
    "DG_API_SECRET": "dg-secret-b8/2+Zq=Rm",
}
WRONG = {"FENIX_PASSWORD": "wrong-fenix-pw-3Jd8s", "DG_API_SECRET": "wrong-dg-secret-Pz41q"}
KINDS = [
    "order",
    "cancel",
    "fulfillment",
    "shipstation",
    "aftership",
    "refused-400",
    "mapping-fails",
    "not-json",
]


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def secret_forms(secrets: Mapping[str, str]) -> dict[str, str]:
    """Each secret in every form it could take in text: raw, JSON-escaped and URL-encoded."""
    found: dict[str, str] = {}
    for name, value in secrets.items():
        found[name] = value
        found[f"{name} (JSON)"] = json.dumps(value)[1:-1]
        found[f"{name} (URL)"] = quote(value, safe="")
    return found


def journal_text(directory: Path) -> str:
    """Every row of every table of the journal, as text (sqlite's own dump)."""
    database = directory / "journal.db"
    connection = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return "\n".join(connection.iterdump())
    finally:
        connection.close()


def journal_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.glob("journal.db*")) if p.is_file())


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX subprocess handling")
def test_no_secret_appears_in_any_output(tmp_path: Path, sandbox_factory: Callable[..., Sandbox]) -> None:
    credentials = SandboxCredentials(
        fenix_username=SECRETS["FENIX_USERNAME"],
        fenix_password=SECRETS["FENIX_PASSWORD"],
        fenix_api_key=SECRETS["FENIX_API_KEY"],
        fenix_store_name=SECRETS["FENIX_STORE_NAME"],
        dg_api_key=SECRETS["DG_API_KEY"],
        dg_api_secret=SECRETS["DG_API_SECRET"],
    )
    record = tmp_path / "sandbox-record.jsonl"
    # Tokens expire every 4th Fenix request and 1 answer in 10 is a 5xx: re-logins, 401s and retries get
    # logged. One request at a time, so the same seed gives the same faults on every run.
    sandbox = sandbox_factory(credentials=credentials, faults="5xx=0.1,expire-every=4,seed=5", record=record)
    workload = build_workload(0, seed=3, kinds=KINDS * 3)
    live = tmp_path / "live"
    live.mkdir()
    delivery = {**DELIVERY, "concurrency": 1}
    run = ShipmapRun(live, sandbox, workload, delivery=delivery, credentials=SECRETS, extra_args=("-vv",))
    env = run.env
    outputs: dict[str, str] = {}

    def shipmap(name: str, *args: str, cwd: Path = live, environ: Mapping[str, str] = env) -> str:
        done = subprocess.run(
            [*shipmap_command(), *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=cwd,
            env=dict(environ),
        )
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        outputs[f"{name} (stdout)"] = done.stdout
        outputs[f"{name} (stderr)"] = done.stderr
        return done.stdout + done.stderr

    config, events = str(run.config), str(run.input)
    dry = shipmap("dry run", "-vv", "run", config, "--input", events, "--dry-run")
    try:
        assert run.until_done(timeout=120) == 8
    finally:
        run.close()
    outputs["live run (stdout)"] = run.outputs[-1]
    outputs["live run (stderr, -vv)"] = run.log()
    shipmap("dead-letters", "dead-letters", config)
    shipmap("dead-letters --json", "dead-letters", config, "--json")
    shipmap("replay", "-vv", "replay", config, "--no-progress")
    shipmap("dry run after", "run", config, "--input", events, "--dry-run")
    source = live / "order.json"
    source.write_text(json.dumps(json.loads(workload.lines[0])["payload"]), encoding="utf-8")
    shipmap("preview", "preview", "shopify/order", str(source), "--json")
    shipmap("validate", "validate", "shopify/order", "shopify/fulfillment", "aftership/tracking")

    # Refused credentials: the login and the DG calls fail; both open their breakers, and the reasons are logged.
    refused = tmp_path / "refused"
    refused.mkdir()
    # A refused login opens the Fenix breaker (issue 13): a short outage wait, then the run leaves it pending.
    write_config(refused, delivery={**delivery, "breaker": {"cooldown": "100ms", "outage_wait": "1s"}})
    refused_env = environment(sandbox.url, {**SECRETS, **WRONG})
    shipmap("refused run", "-vv", "run", "shipmap.yaml", "--input", events, "--no-progress",
            cwd=refused, environ=refused_env)  # fmt: skip
    shipmap(
        "refused dead-letters", "dead-letters", "shipmap.yaml", "--json", cwd=refused, environ=refused_env
    )
    # The same refusals again (the next run re-sends what waited), logged as JSON: masked in that form too.
    shipmap("refused again (json logs)", "-vv", "--log-format", "json", "run", "shipmap.yaml", "--input",
            events, "--no-progress", cwd=refused, environ=refused_env)  # fmt: skip
    json_logs = [json.loads(line) for line in outputs["refused again (json logs) (stderr)"].splitlines()]

    # A config error on a key that holds a secret names the key and the line, never the value.
    broken = tmp_path / "broken"
    broken.mkdir()
    text = yaml.safe_load((refused / "shipmap.yaml").read_text(encoding="utf-8"))
    text["connections"]["fenix"]["auth"]["token_ttl"] = "${FENIX_PASSWORD}"
    (broken / "shipmap.yaml").write_text(yaml.safe_dump(text), encoding="utf-8")
    config_error = shipmap("config error", "run", "shipmap.yaml", "--input", events, cwd=broken, environ=env)
    literal = tmp_path / "literal"
    literal.mkdir()
    text = yaml.safe_load((refused / "shipmap.yaml").read_text(encoding="utf-8"))
    text["connections"]["fenix"]["auth"]["password"] = SECRETS["FENIX_PASSWORD"]  # written into the file
    (literal / "shipmap.yaml").write_text(yaml.safe_dump(text), encoding="utf-8")
    literal_out = shipmap("literal secret", "run", "shipmap.yaml", "--input", events, "--dry-run",
                          cwd=literal, environ=env)  # fmt: skip

    tokens = sorted(sandbox._state._tokens)  # every authToken this sandbox issued (test-only peek)
    secrets = {k: v for k, v in SECRETS.items() if k not in ("FENIX_USERNAME", "FENIX_STORE_NAME")}
    secrets["DG Basic credentials"] = basic(SECRETS["DG_API_KEY"], SECRETS["DG_API_SECRET"])
    secrets["Fenix username:password"] = basic(SECRETS["FENIX_USERNAME"], SECRETS["FENIX_PASSWORD"])
    secrets.update({f"wrong {k}": v for k, v in WRONG.items()})
    secrets["wrong DG Basic credentials"] = basic(SECRETS["DG_API_KEY"], WRONG["DG_API_SECRET"])
    secrets.update({f"authToken #{n}": token for n, token in enumerate(tokens)})
    secrets["x-identity"] = sandbox._state.identity
    forms = secret_forms(secrets)

    # The search must have something to search: the runs really happened, with these credentials.
    logins = sandbox.requests(endpoint="fenix.login")
    assert len(tokens) >= 3 and len(logins) == len(tokens)
    assert {r.headers.get("username") for r in logins} == {SECRETS["FENIX_USERNAME"]}
    assert "authToken: ***" in dry and "Authorization: Basic ***" in dry and "x-identity: ***" in dry
    assert "HTTP 400" in outputs["dead-letters (stdout)"]
    assert "logging in again" in outputs["live run (stderr, -vv)"]
    # DG's refused secret (read again after the 401: unchanged) opens its breaker; nothing is dead-lettered.
    assert "HTTP 401: the credentials are refused" in outputs["refused run (stderr)"]
    assert any("HTTP 401: the credentials are refused" in r["message"] for r in json_logs)
    assert "token_ttl" in config_error and config_error.count("\n") >= 1
    assert "written literally" in literal_out
    journal = journal_text(live)
    assert 'INSERT INTO "deliveries"' in journal and "datetime()" in journal
    recorded = record.read_text(encoding="utf-8")
    assert recorded.count("\n") == len(sandbox.requests()) > 10
    assert '"authtoken": "***"' in recorded and '"x-identity": "***"' in recorded

    places: dict[str, str | bytes] = dict(outputs)
    places["journal rows (live)"] = journal
    places["journal rows (refused)"] = journal_text(refused)
    places["journal files (live)"] = journal_bytes(live)
    places["journal files (refused)"] = journal_bytes(refused)
    places["sandbox JSONL record"] = recorded
    places["dry-run text"] = dry
    leaks = [
        f"{secret} found in {place}"
        for place, content in places.items()
        for secret, value in forms.items()
        if (value.encode() if isinstance(content, bytes) else value) in content
    ]
    assert not leaks, "\n".join(leaks)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT")
def test_the_sandbox_command_shows_no_secret(tmp_path: Path) -> None:
    """`shipmap sandbox` with credentials from the environment, at -vv, serving a login and a DG call."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPMAP_")}
    env.update(
        SHIPMAP_SANDBOX_FENIX_PASSWORD=SECRETS["FENIX_PASSWORD"],
        SHIPMAP_SANDBOX_FENIX_API_KEY=SECRETS["FENIX_API_KEY"],
        SHIPMAP_SANDBOX_DG_API_KEY=SECRETS["DG_API_KEY"],
        SHIPMAP_SANDBOX_DG_API_SECRET=SECRETS["DG_API_SECRET"],
    )
    record = tmp_path / "record.jsonl"
    server = subprocess.Popen(
        [*shipmap_command(), "-vv", "sandbox", "--port", "0", "--record", str(record)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert server.stdout is not None
        ready, _, _ = select.select([server.stdout], [], [], 30)
        assert ready, "the sandbox printed no URL within 30 s"
        url = server.stdout.readline().strip()  # the base URL is alone on the first line
        assert url.startswith("http://127.0.0.1:"), url
        login = httpx.post(
            f"{url}/login",
            headers={
                "username": "demo-user",
                "password": SECRETS["FENIX_PASSWORD"],
                "x-api-key": SECRETS["FENIX_API_KEY"],
            },
            timeout=10,
        )
        assert login.status_code == 200
        token, identity = login.json()["authToken"], login.json()["x-identity"]
        refused = httpx.post(f"{url}/login", headers={"username": "demo-user", "password": WRONG["FENIX_PASSWORD"],
                                                      "x-api-key": SECRETS["FENIX_API_KEY"]}, timeout=10)  # fmt: skip
        assert refused.status_code == 401
        assert WRONG["FENIX_PASSWORD"] not in refused.text and SECRETS["FENIX_API_KEY"] not in refused.text
        execution = httpx.post(
            f"{url}/execution",
            auth=(SECRETS["DG_API_KEY"], SECRETS["DG_API_SECRET"]),
            json={"action_id": "a", "external_id": "e", "inputs": {"external_id": "e", "shipment_data": {
                "order_id": "1", "shipment_id": "2", "tracking_number": "3", "carrier_code": "ups", "items": []}}},
            timeout=10,
        )  # fmt: skip
        assert execution.status_code == 200, execution.text
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=20)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
    assert server.returncode == 130, err[-2000:]  # Ctrl-C, as every command answers it
    assert "credentials: custom" in err
    recorded = record.read_text(encoding="utf-8")
    assert recorded.count("\n") == 2  # the login and the execution
    secrets = {k: v for k, v in SECRETS.items() if k not in ("FENIX_USERNAME", "FENIX_STORE_NAME")}
    secrets["wrong FENIX_PASSWORD"] = WRONG["FENIX_PASSWORD"]
    secrets["DG Basic credentials"] = basic(SECRETS["DG_API_KEY"], SECRETS["DG_API_SECRET"])
    secrets.update({"authToken": token, "x-identity": identity})
    forms = secret_forms(secrets)
    places = {"stdout": out, "stderr (-vv)": err, "record": recorded}
    leaks = [f"{s} in {p}" for p, text in places.items() for s, v in forms.items() if v in text]
    assert not leaks, leaks
