"""Rotation without restart (issue 13, class 10): Fenix credentials are read again at each login, DG's (basic
auth) after a 401, from the environment, the env file and ``${file:...}`` references, so a key rotated while
shipmap runs is used at once, and nothing between the rotation and a restart is dead-lettered."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
from shipmap.connectors import Runtime, Sandbox, SandboxCredentials

sys.path.insert(0, str(Path(__file__).parents[1] / "connectors"))
from test_runtime_support import FIXTURES, order_event, shipment_event, write_config


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


def test_a_dg_secret_rotated_mid_life_is_read_again_after_its_first_401(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    secret_file = tmp_path / "dg_api_secret"
    secret_file.write_text("dg-secret-2026-06\n")
    old = SandboxCredentials(dg_api_key="dg-key-2026-06", dg_api_secret="dg-secret-2026-06")
    new = SandboxCredentials(dg_api_key="dg-key-2026-12", dg_api_secret="dg-secret-2026-12")
    mappings = [{"mapping": str(FIXTURES / "shipments.yaml"), "topic": "shipments/create"}]
    # A short breaker, so the refusal below parks its deliveries within the test.
    delivery = {"breaker": {"cooldown": "100ms", "cooldown_cap": "200ms", "outage_wait": "1s"}}
    with Sandbox(port=port, credentials=old) as first:
        config = write_config(tmp_path, first.url, mappings=mappings, delivery=delivery)
        config.write_text(config.read_text().replace("${DG_API_SECRET}", "${file:" + str(secret_file) + "}"))
        env_file = tmp_path / ".env"
        env_file.write_text(env_file.read_text().replace("DG_API_KEY=demo-key", "DG_API_KEY=dg-key-2026-06"))
        runtime = Runtime.from_config(
            config, environ={}
        )  # the key from the env file, the secret from its file
        assert runtime.run([shipment_event(1)]).delivered == 2  # the Fenix fulfillment and the DG execution

    # The vendor rotates the key and the secret; the operator has put the new key in place, not yet the secret.
    env_file.write_text(
        env_file.read_text().replace("DG_API_KEY=dg-key-2026-06", "DG_API_KEY=dg-key-2026-12")
    )
    with Sandbox(port=port, credentials=new) as second:
        with caplog.at_level("INFO", logger="shipmap.connectors"):
            waiting = runtime.run([shipment_event(2)])
        # A refusal of the credentials, not of the event: the breaker opens, nothing is dead-lettered.
        assert (waiting.delivered, waiting.dead, waiting.parked) == (1, 0, 1), waiting
        assert "HTTP 401: the credentials are refused" in caplog.text
        assert second.stats()["rejected"].get("dg.execution", {}).get("401", 0) >= 1

        # The secret is in place now: the next run sends what waited, with the new key and secret.
        secret_file.write_text("dg-secret-2026-12\n")
        caplog.clear()
        with caplog.at_level("WARNING", logger="shipmap.connectors"):
            summary = runtime.run([shipment_event(3)])
        assert (summary.delivered, summary.dead, summary.parked) == (3, 0, 0), summary
        assert (
            "basic credentials refused (HTTP 401) and changed since they were read (rotated)" in caplog.text
        )
        executed = {r.external_id for r in second.requests(endpoint="dg.execution")}
        assert len(executed) == 2  # the one that waited and the new one, each once
    assert runtime.redactor.redact("x dg-key-2026-12 dg-secret-2026-12") == "x *** ***"
