"""The sandbox answers 400 (or 401) with a reason for each bad input, never a 500 and a traceback (issue
13, classes 11 and 12): non-ASCII credentials, impossible date-times, unbounded fault specs."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
from collections.abc import Iterator

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


def test_a_fault_plan_given_as_an_object_is_held_to_the_specs_bounds(sandbox: Sandbox) -> None:
    """The object form of a plan once took a retry_after the spec refuses: every injected 429 then answered
    500 with a traceback (an HTTP date past the platform's time_t). Refused at set time, as the spec is."""
    plan = {"retry_after": 10**20, "retry_after_date": True, "rate_limit_rate": 1.0}
    response = httpx.post(f"{sandbox.url}/_sandbox/faults", json=plan)
    assert response.status_code == 400, response.text
    assert response.json()["errors"] == [
        {"field": "faults", "message": "retry_after must be 0 to 3600 seconds, got 100000000000000000000"}
    ]
    assert httpx.post(f"{sandbox.url}/execution", json={}).status_code == 401  # no plan took effect


def test_a_fault_plan_nested_too_deeply_is_400_not_500(sandbox: Sandbox) -> None:
    headers = {"content-type": "application/json"}
    for path in ("/_sandbox/faults", "/_sandbox/source-faults"):
        response = httpx.post(f"{sandbox.url}{path}", content=b"[" * 50_000, headers=headers)
        assert response.status_code == 400, response.text
        assert response.json()["errors"] == [
            {"field": "faults", "message": "not JSON: arrays or objects nested too deeply"}
        ]


def test_a_body_past_the_cap_is_413_and_never_kept(sandbox: Sandbox) -> None:
    """An API body past 10 MiB (with its length, or chunked without one) and a fault plan past 64 KiB are
    refused with 413 and a reason; the sandbox goes on answering."""
    big = b'{"pad": "' + b"x" * (10 * 1024 * 1024) + b'"}'

    def chunked() -> Iterator[bytes]:
        for start in range(0, len(big), 1 << 20):
            yield big[start : start + (1 << 20)]

    headers = {"content-type": "application/json"}
    with httpx.Client(base_url=sandbox.url, timeout=30) as client:
        answers = [
            client.post("/execution", content=big, headers=headers),
            client.post("/api/v1/orders/1/created", content=chunked(), headers=headers),
            client.post("/_sandbox/faults", content=b"5xx=0.1," * 10_000),
        ]
        assert [a.status_code for a in answers] == [413, 413, 413]
        assert answers[0].json()["errors"] == [{"field": "(body)", "message": "larger than 10,485,760 bytes"}]
        assert answers[2].json()["errors"] == [{"field": "(body)", "message": "larger than 65,536 bytes"}]
        assert client.post("/execution", json={}).status_code == 401  # still answering
    assert sandbox.stats()["rejected"]["dg.execution"]["413"] == 1
    assert sandbox.stats()["rejected"]["fenix.orders"]["413"] == 1
    assert sandbox.requests() == []


def test_a_request_head_past_64_kib_is_refused_with_431(sandbox: Sandbox) -> None:
    """uvicorn on httptools keeps every header line it is sent: a client that never ends its head grew the
    sandbox's memory without bound. Past 64 KiB it gets 431 and the connection closes; the others go on."""
    answer = b""
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=10) as sock:
        sock.sendall(b"POST /execution HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        with contextlib.suppress(OSError):
            for line in range(20_000):  # 1 MB of header lines, if nobody stops reading
                sock.sendall(b"X-Filler-%d: %s\r\n" % (line, b"y" * 40))
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:200]
    assert answer.endswith(b"the request's head (target and headers) is larger than 64 KiB")
    assert httpx.get(f"{sandbox.url}/_sandbox/health").json() == {"status": "ok"}
