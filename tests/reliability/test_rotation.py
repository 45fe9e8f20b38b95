"""Rotation without restart (issue 13, class 10): Fenix credentials are read again at each login, from the
environment, the env file and ``${file:...}`` references, so a key rotated while shipmap runs is used at the
next login, and nothing between the rotation and a restart is dead-lettered."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from shipmap.connectors import Runtime, Sandbox, SandboxCredentials

sys.path.insert(0, str(Path(__file__).parents[1] / "connectors"))
from test_runtime_support import FIXTURES, order_event, write_config


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_key_and_password_rotated_mid_life_are_used_at_the_next_login(tmp_path: Path) -> None:
    port = free_port()
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "fenix_api_key").write_text("key-2026-06\n")  # as Docker and Kubernetes mount secrets
    old = SandboxCredentials(fenix_api_key="key-2026-06", fenix_password="pass-1")
    new = SandboxCredentials(fenix_api_key="key-2026-12", fenix_password="pass-2")
    first = Sandbox(port=port, credentials=old).start()
    mappings = [{"mapping": str(FIXTURES / "orders.yaml"), "topic": "orders/create"}]
    config = write_config(tmp_path, first.url, mappings=mappings)
    text = config.read_text().replace("${FENIX_API_KEY}", "${file:" + str(secrets / "fenix_api_key") + "}")
    config.write_text(text)
    env_file = tmp_path / ".env"
    env_file.write_text(env_file.read_text().replace("FENIX_PASSWORD=demo-pass", "FENIX_PASSWORD=pass-1"))
    runtime = Runtime.from_config(config, environ={})  # everything from the env file and the secret file
    try:
        assert runtime.run([order_event(1)]).delivered == 1
    finally:
        first.stop()
    # The vendor rotates the key and the password; the operator updates the secret file and the env file.
    (secrets / "fenix_api_key").write_text("key-2026-12\n")
    env_file.write_text(env_file.read_text().replace("FENIX_PASSWORD=pass-1", "FENIX_PASSWORD=pass-2"))
    with Sandbox(port=port, credentials=new) as second:
        summary = runtime.run([order_event(2), order_event(3)])  # the same runtime: no restart
        logins = second.requests(endpoint="fenix.login")
        assert summary.delivered == 2 and summary.dead == 0
        assert len(logins) == 1  # the old token is refused once, one login with the new credentials
        assert {r.order_id for r in second.requests(endpoint="fenix.orders")} == {"1002", "1003"}
    assert runtime.redactor.redact("x key-2026-12 pass-2") == "x *** ***"
    print("rotation: key and password rotated mid-life; 2 of 2 delivered with 1 login, 0 dead letters")
