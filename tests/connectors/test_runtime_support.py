"""Helpers shared by the runtime tests (no tests here): configs for a sandbox, and event generators."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from shipmap.connectors import Journal

FIXTURES = Path(__file__).parents[1] / "fixtures" / "runtime"
SECRETS = ("demo-pass", "demo-api-key", "demo-secret", "ZGVtby1rZXk6ZGVtby1zZWNyZXQ=")  # the last: key:secret


def environ(url: str) -> dict[str, str]:
    return {
        "SANDBOX_URL": url,
        "FENIX_USERNAME": "demo-user",
        "FENIX_PASSWORD": "demo-pass",
        "FENIX_API_KEY": "demo-api-key",
        "DG_API_KEY": "demo-key",
        "DG_API_SECRET": "demo-secret",
    }


BASE_CONFIG: dict[str, Any] = {
    "version": 1,
    "connections": {
        "fenix": {
            "api": "fenix",
            "base_url": "${SANDBOX_URL}",
            "auth": {
                "scheme": "fenix_session",
                "username": "${FENIX_USERNAME}",
                "password": "${FENIX_PASSWORD}",
                "api_key": "${FENIX_API_KEY}",
                "store_name": "demo-store",
            },
        },
        "dg": {
            "api": "dg",
            "base_url": "${SANDBOX_URL}",
            "auth": {"scheme": "basic", "key": "${DG_API_KEY}", "secret": "${DG_API_SECRET}"},
        },
    },
    "events": {"topic": "topic", "body": "payload"},
    "mappings": [
        {"mapping": str(FIXTURES / "orders.yaml"), "topic": ["orders/create", "orders/updated"]},
        {"mapping": str(FIXTURES / "shipments.yaml"), "topic": "shipments/create"},
    ],
    "delivery": {
        "concurrency": 4,
        "timeout": "5s",
        "retry": {"max_attempts": 4, "backoff_base": "10ms", "backoff_cap": "100ms", "retry_after_cap": "2s"},
    },
    "journal": {"path": "journal.db"},
}


def write_config(directory: Path, url: str | None = None, *, env_file: bool = True, **changes: Any) -> Path:
    """A config file in ``directory`` (with a .env holding the sandbox URL and demo credentials).

    ``changes`` replace top-level sections; ``delivery`` is merged, two levels deep, so a test can set one
    knob.
    """
    config = copy.deepcopy(BASE_CONFIG)
    for key, value in changes.items():
        if key == "delivery":
            for knob, setting in value.items():
                if isinstance(setting, dict):
                    config["delivery"].setdefault(knob, {}).update(setting)
                else:
                    config["delivery"][knob] = setting
        else:
            config[key] = value
    path = directory / "shipmap.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    if env_file and url is not None:
        lines = [f"{name}={value}" for name, value in environ(url).items()]
        (directory / ".env").write_text("\n".join(lines) + "\n")
    return path


def order_event(number: int, *, topic: str = "orders/create", **payload_changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": 1000 + number,
        "number": f"#{1000 + number}",
        "created_at": "2024-03-01T10:00:00-05:00",
        "currency": "USD",
        "email": f"shopper{number}@example.com",
        "phone": "5550100",
        "address": {
            "first_name": "Ada",
            "last_name": "Lovelace",
            "address1": "1 Main St",
            "city": "Springfield",
            "zip": "12345",
            "country_code": "US",
        },
        "shipping": {"title": "Ground", "price": "5.00"},
        "items": [{"sku": f"SKU-{number}", "qty": 1 + number % 3, "title": "Tee", "price": "15.00"}],
    }
    payload.update(payload_changes)
    return {"topic": topic, "payload": payload}


def shipment_event(number: int, *, notify: bool = True) -> dict[str, Any]:
    return {
        "topic": "shipments/create",
        "payload": {
            "shipment_id": f"S-{number}",
            "order_id": 1000 + number,
            "tracking": f"1Z{number:06d}",
            "carrier": "UPS",
            "notify": notify,
            "items": [{"sku": f"SKU-{number}", "qty": 1, "title": "Tee", "price": "15.00"}],
        },
    }


WAIT_DEADLINE = 120.0  # a bound on a test's own waits for an outcome, so a broken run fails, never hangs


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds; TimeoutError naming ``what`` after ``WAIT_DEADLINE``."""
    deadline = time.monotonic() + WAIT_DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        threading.Event().wait(0.01)


def recorded_statements(journal: Journal, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """The statements ``journal`` runs from now on, with their parameters, as they run."""
    statements: list[tuple[str, Any]] = []
    execute = journal._db.execute

    def recording(sql: str, parameters: Any = ()) -> Any:
        statements.append((sql, parameters))
        return execute(sql, parameters)

    monkeypatch.setattr(journal._db, "execute", recording)
    return statements
