"""The sandbox answers 400 (or 401) with a reason for each bad input, never a 500 and a traceback (issue
13, classes 11 and 12): non-ASCII credentials, impossible date-times, unbounded fault specs."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from shipmap.connectors import Sandbox
from shipmap.engine import get_kind


def login(sandbox: Sandbox, password: bytes) -> httpx.Response:
    headers = [(b"username", b"demo-user"), (b"password", password), (b"x-api-key", b"demo-api-key")]
    return httpx.post(f"{sandbox.url}/login", headers=headers)


@pytest.mark.parametrize("password", ["pässwörd".encode(), b"\xff\xfe", "демо".encode()])
def test_non_ascii_fenix_credentials_are_refused_with_401(sandbox: Sandbox, password: bytes) -> None:
    response = login(sandbox, password)
    assert response.status_code == 401, response.text
    assert "password" in response.text


def test_non_ascii_basic_credentials_are_refused_with_401(sandbox: Sandbox) -> None:
    token = base64.b64encode("clé:sécret".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
    body = {"action_id": "a", "external_id": "x", "inputs": {"shipment_data": {}}}
    response = httpx.post(f"{sandbox.url}/execution", json=body, headers=headers)
    assert response.status_code == 401 and "do not match" in response.text


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("2020-13-45T25:61:61-05:00", False),
        ("2020-02-30T10:14:15Z", False),
        ("2020-04-31T10:14:15Z", False),
        ("2020-01-23T10:14:15-25:00", False),
        ("2020-01-23T10:14:15-05:00", True),
        ("2020-12-31T23:59:59.5+14:00", True),
    ],
)
def test_the_kinds_date_time_check_accepts_real_date_times_only(value: str, valid: bool) -> None:
    kind = get_kind("fenix.order_cancel")
    schema_fields = json.dumps(kind.schema)
    assert "offset_datetime" in schema_fields
    problems = [
        message for parts, message in kind.problems({"cancelled_at": value}) if "cancelled_at" in parts
    ]
    assert (not problems) is valid, problems


@pytest.mark.parametrize("spec", ["slow=0:1e308", "slow=0.5:nan", "retry-after=999999", "seed=" + "9" * 500])
def test_the_sandbox_refuses_an_unbounded_fault_spec_with_400(sandbox: Sandbox, spec: str) -> None:
    response = httpx.post(f"{sandbox.url}/_sandbox/faults", json={"spec": spec})
    assert response.status_code == 400, response.text
    assert "fault spec" in response.text or "delay" in response.text
