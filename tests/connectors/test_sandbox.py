"""The sandbox over real HTTP on 127.0.0.1: the seeds' own clients, every 400/401 case, the recorder, regions,
token expiry and the command line. Fault injection is in test_sandbox_faults.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from shipmap.connectors import Sandbox, SandboxConfig, SandboxCredentials
from shipmap.connectors._sandbox import DEFAULT_DUPLICATE_KEYS, _state
from shipmap.connectors._sandbox._recorder import Recorder
from shipmap.connectors._sandbox._source_api import SourceApi
from shipmap.connectors._sandbox._state import SandboxState

SEEDS = Path(__file__).resolve().parents[1] / "fixtures" / "seeds"
ORDER = json.loads((SEEDS / "fenix_order_example.json").read_text(encoding="utf-8"))
CANCEL = json.loads((SEEDS / "fenix_cancel_example.json").read_text(encoding="utf-8"))
DG_EXAMPLE = json.loads((SEEDS / "dg_execution_example.json").read_text(encoding="utf-8"))

FENIX_LOGIN = {"username": "demo-user", "password": "demo-pass", "x-api-key": "demo-api-key"}
DG_AUTH = ("demo-key", "demo-secret")
ORDER_PATH = f"/api/v1/orders/{ORDER['id']}/created"
FULFILLMENT = {
    "id": "FUL-1",
    "order_id": ORDER["id"],
    "shipment_status": "READY_TO_SHIP",
    "shipment_info": {
        "tracking_number": "1Z999AA10123456784",
        "tracking_company": "UPS",
        "shipping_service": "Ground",
        "shipcost": {"value": 7.5, "currency": "USD"},
    },
    "created_at": "2020-01-24T10:14:15-05:00",
    "line_items": [
        {
            "sku": "CAAD Optimo 3",
            "quantity": 1,
            "title": "CAAD Optimo",
            "price": {"value": 15, "currency": "USD"},
            "image_url": "",
        }
    ],
}
FULFILLMENT_PATH = f"/api/v1/order/{ORDER['id']}/fulfillment/FUL-1/created"
PARTIAL_CANCEL = {
    "id": ORDER["id"],
    "status": "PARTIALLY_CANCELLED",
    "cancelled_at": "2020-01-23T11:00:00-05:00",
    "cancel_reason": "one size out of stock",
    "line_items": [{"sku": "SKU1", "quantity": 3, "cancelled_quantity": 1}],
}

# The seed's curl example (000_dd7cb026441948e4.txt, "Example Request (Curl)"), verbatim.
DG_SEED_CURL = r"""#!/bin/bash

# Configuration variables
DG_API_KEY="your_api_key"  # Provided by Digital Genius
DG_API_SECRET="your_api_secret"  # Provided by Digital Genius
REGION="eu"
FLOW_ID="your_flow_id"  # Provided by Digital Genius
EXTERNAL_ID="SHIPMENT_REQ_$(date +%s)"  # Unique ID using timestamp (example)

# Generate the authentication token
DG_TOKEN=$(echo -n "${DG_API_KEY}:${DG_API_SECRET}" | base64)

# Create the payload with shipment data
PAYLOAD='{
  "action_id": "'"${FLOW_ID}"'",
  "external_id": "'"${EXTERNAL_ID}"'",
  "inputs": {
    "external_id": "'"${EXTERNAL_ID}"'",
    "shipment_data": {
      "order_id": "123",
      "shipment_id": "SHIP123456",
      "tracking_number": "RM123456789GB",
      "carrier_code": "royalmail",
      "items": [
        {
          "sku": "PROD123",
          "quantity": 1
        }
      ]
    }
  }
}'

# Make the API request using curl
curl -X POST \
  "https://flow-server.${REGION}.dgdeepai.com/execution" \
  -H "Authorization: Basic ${DG_TOKEN}" \
  -H "Content-Type: application/json" \
  -d "${PAYLOAD}"
"""

# The seed's Python example ("Example in Python"), verbatim.
DG_SEED_PYTHON = """import json
import requests
from base64 import b64encode
from datetime import datetime

# Configuration
api_key = "your_api_key"  # Provided by Digital Genius
api_secret = "your_api_secret"  # Provided by Digital Genius
region = "eu"
flow_id = "your_flow_id"  # Provided by Digital Genius
external_id = f"SHIPMENT_REQ_{int(datetime.now().timestamp())}"

# Generate authentication token
auth_token = b64encode(f"{api_key}:{api_secret}".encode("utf-8")).decode("ascii")

# Set headers
headers = {
    "Authorization": f"Basic {auth_token}",
    "Content-Type": "application/json"
}

# Prepare payload
payload = {
    "action_id": flow_id,
    "external_id": external_id,
    "inputs": {
        "external_id": external_id,
        "shipment_data": {
            "order_id": "123",
            "shipment_id": "SHIP123456",
            "tracking_number": "RM123456789GB",
            "carrier_code": "royalmail",
            "items": [
                {
                    "sku": "PROD123",
                    "quantity": 1
                }
            ]
        }
    }
}

# Send request
response = requests.post(
    f"https://flow-server.{region}.dgdeepai.com/execution",
    headers=headers,
    json=payload
)

# Handle response
print(f"Status Code: {response.status_code}")
print(response.json() if response.ok else response.text)
"""

# The seeds' placeholder credentials, so their clients run unchanged.
SEED_CREDENTIALS = SandboxCredentials(dg_api_key="your_api_key", dg_api_secret="your_api_secret")


def _local_env() -> dict[str, str]:
    """A child environment that cannot route 127.0.0.1 through a proxy."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["NO_PROXY"] = env["no_proxy"] = "*"
    return env


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=10) as client:
        yield client


def fenix_headers(client: httpx.Client, sandbox: Sandbox) -> dict[str, str]:
    login = client.post(f"{sandbox.url}/login", headers=FENIX_LOGIN)
    assert login.status_code == 200, login.text
    body = login.json()
    return {
        "store_name": "demo-store",
        "authToken": body["authToken"],
        "x-api-key": "demo-api-key",
        "x-identity": body["x-identity"],
        "content-type": "application/json",
    }


def error_fields(response: httpx.Response) -> dict[str, str]:
    return {e["field"]: e["message"] for e in response.json()["errors"]}


# ------------------------------------------------------------------------------------- the seeds' clients


def test_dg_seed_curl_example_runs_unchanged_but_for_the_url(sandbox_factory: Callable[..., Sandbox]) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    sb = sandbox_factory(credentials=SEED_CREDENTIALS)
    script = DG_SEED_CURL.replace("https://flow-server.${REGION}.dgdeepai.com", f"{sb.url}/${{REGION}}")
    assert script.count(sb.url) == 1
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=20, env=_local_env(), check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {}
    [recorded] = sb.requests(api="dg")
    assert recorded.region == "eu"
    assert recorded.status == 200
    assert recorded.headers["authorization"] == "***"
    assert recorded.body["action_id"] == "your_flow_id"
    assert recorded.external_id is not None and recorded.external_id.startswith("SHIPMENT_REQ_")
    assert recorded.body["inputs"]["shipment_data"]["items"] == [{"sku": "PROD123", "quantity": 1}]


def test_dg_seed_python_example_runs_unchanged_but_for_the_url(
    sandbox_factory: Callable[..., Sandbox],
) -> None:
    sb = sandbox_factory(credentials=SEED_CREDENTIALS)
    script = DG_SEED_PYTHON.replace("https://flow-server.{region}.dgdeepai.com", f"{sb.url}/{{region}}")
    assert script.count(sb.url) == 1
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        env=_local_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["Status Code: 200", "{}"]
    [recorded] = sb.requests(endpoint="dg.execution")
    assert recorded.region == "eu"
    assert recorded.headers["content-type"] == "application/json"
    assert recorded.body["inputs"]["external_id"] == recorded.external_id


def test_fenix_seed_login_then_order_create(sandbox: Sandbox, http: httpx.Client) -> None:
    # Authentication API: POST /login with the username, password and x-api-key headers.
    login = http.post(
        f"{sandbox.url}/login",
        headers={"username": "demo-user", "password": "demo-pass", "x-api-key": "demo-api-key"},
    )
    assert login.status_code == 200
    body = login.json()
    assert set(body) == {
        "id", "firstName", "lastName", "phone", "emailId", "type", "status", "organizationId", "authToken", "x-identity",
    }  # fmt: skip
    assert body["status"] == "ACTIVE" and body["type"] == "business_user"
    # Order Create/Update API with the five headers the seed lists, and its example payload.
    response = http.post(
        f"{sandbox.url}/api/v1/orders/{ORDER['id']}/created",
        headers={
            "store_name": "demo-store",
            "authToken": body["authToken"],
            "x-api-key": "demo-api-key",
            "x-identity": body["x-identity"],
            "content-type": "application/json",
        },
        content=json.dumps(ORDER),
    )
    assert response.status_code == 201
    assert response.content == b""  # the seed: Response Payload NA
    [recorded] = sandbox.requests(endpoint="fenix.orders")
    assert recorded.body == ORDER
    assert recorded.kind == "fenix.order"
    assert recorded.order_id == ORDER["id"]
    assert recorded.headers["store_name"] == "demo-store"
    for secret in ("authtoken", "x-api-key", "x-identity"):
        assert recorded.headers[secret] == "***"


def test_each_login_gives_a_fresh_token_and_the_same_identity(sandbox: Sandbox, http: httpx.Client) -> None:
    first = http.post(f"{sandbox.url}/login", headers=FENIX_LOGIN).json()
    second = http.post(f"{sandbox.url}/login", headers=FENIX_LOGIN).json()
    assert first["authToken"] != second["authToken"]
    assert first["x-identity"] == second["x-identity"]
    assert first["emailId"] == "demo-user"
    [login, _] = sandbox.requests(endpoint="fenix.login")
    assert login.headers["password"] == "***" and login.headers["username"] == "demo-user"


def test_cancel_partial_cancel_and_fulfillment_are_accepted(sandbox: Sandbox, http: httpx.Client) -> None:
    headers = fenix_headers(http, sandbox)
    assert http.post(sandbox.url + ORDER_PATH, headers=headers, json=CANCEL).status_code == 201
    assert http.post(sandbox.url + ORDER_PATH, headers=headers, json=PARTIAL_CANCEL).status_code == 201
    assert http.post(sandbox.url + FULFILLMENT_PATH, headers=headers, json=FULFILLMENT).status_code == 201
    kinds = [r.kind for r in sandbox.requests(api="fenix") if r.endpoint != "fenix.login"]
    assert kinds == ["fenix.order_cancel", "fenix.order_partial_cancel", "fenix.fulfillment"]
    [fulfillment] = sandbox.requests(endpoint="fenix.fulfillment")
    assert (fulfillment.order_id, fulfillment.fulfillment_id) == (ORDER["id"], "FUL-1")


def test_an_encoded_slash_in_an_order_id_is_one_id(sandbox: Sandbox, http: httpx.Client) -> None:
    headers = fenix_headers(http, sandbox)
    response = http.post(
        f"{sandbox.url}/api/v1/orders/A%2F1/created", headers=headers, json={**CANCEL, "id": "A/1"}
    )
    assert response.status_code == 201, response.text
    assert sandbox.requests(endpoint="fenix.orders")[0].order_id == "A/1"


# -------------------------------------------------------------------------------------------- 401 cases


def test_missing_x_identity_is_401(sandbox: Sandbox, http: httpx.Client) -> None:
    headers = fenix_headers(http, sandbox)
    del headers["x-identity"]
    response = http.post(sandbox.url + ORDER_PATH, headers=headers, json=ORDER)
    assert response.status_code == 401
    assert error_fields(response) == {"x-identity": "header is missing"}


def test_wrong_password_is_401(sandbox: Sandbox, http: httpx.Client) -> None:
    response = http.post(f"{sandbox.url}/login", headers={**FENIX_LOGIN, "password": "guess"})
    assert response.status_code == 401
    assert "authToken" not in response.json()
    assert list(error_fields(response)) == ["username/password"]


@pytest.mark.parametrize("header", ["username", "password", "x-api-key"])
def test_login_without_a_header_is_401_naming_it(sandbox: Sandbox, http: httpx.Client, header: str) -> None:
    headers = {k: v for k, v in FENIX_LOGIN.items() if k != header}
    response = http.post(f"{sandbox.url}/login", headers=headers)
    assert response.status_code == 401
    assert error_fields(response) == {header: "header is missing"}


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("authToken", "not-a-token"),
        ("store_name", "other-store"),
        ("x-api-key", "old-key"),
        ("x-identity", "nobody"),
    ],
)
def test_wrong_credentials_on_the_order_endpoint_are_401(
    sandbox: Sandbox, http: httpx.Client, header: str, value: str
) -> None:
    headers = {**fenix_headers(http, sandbox), header: value}
    response = http.post(sandbox.url + ORDER_PATH, headers=headers, json=ORDER)
    assert response.status_code == 401
    assert list(error_fields(response)) == [header]
    assert sandbox.requests(endpoint="fenix.orders") == []


def test_expired_token_is_401_until_the_next_login(
    sandbox_factory: Callable[..., Sandbox], http: httpx.Client
) -> None:
    sb = sandbox_factory(token_ttl=0.5)
    headers = fenix_headers(http, sb)
    assert http.post(sb.url + ORDER_PATH, headers=headers, json=ORDER).status_code == 201
    time.sleep(0.6)
    expired = http.post(sb.url + ORDER_PATH, headers=headers, json=ORDER)
    assert expired.status_code == 401
    assert "expired" in error_fields(expired)["authToken"]
    assert http.post(sb.url + ORDER_PATH, headers=fenix_headers(http, sb), json=ORDER).status_code == 201
    assert sb.stats()["rejected"] == {"fenix.orders": {"401": 1}}


def test_expire_tokens_now(sandbox: Sandbox, http: httpx.Client) -> None:
    headers = fenix_headers(http, sandbox)
    assert http.post(f"{sandbox.url}/_sandbox/tokens/expire").json() == {"expired": 1}
    response = http.post(sandbox.url + ORDER_PATH, headers=headers, json=ORDER)
    assert response.status_code == 401 and "expired" in error_fields(response)["authToken"]


def test_the_token_table_keeps_the_newest_tokens_and_forgets_the_oldest(
    sandbox: Sandbox, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that logs in for every request grew the table for the 5 hours a token is remembered. Past
    ``MAX_TOKENS`` the oldest is forgotten: it is a token the server does not know (401), the newest work."""
    monkeypatch.setattr(SandboxState, "MAX_TOKENS", 3)
    logins = [fenix_headers(http, sandbox) for _ in range(5)]
    assert sandbox.stats()["live_tokens"] == 3
    oldest = http.post(sandbox.url + ORDER_PATH, headers=logins[0], json=ORDER)
    assert oldest.status_code == 401
    assert error_fields(oldest)["authToken"] == "is not a token this server issued; log in to get one"
    for headers in logins[2:]:
        assert http.post(sandbox.url + ORDER_PATH, headers=headers, json=ORDER).status_code == 201
    # The two let go are counted where the live ones are: a 401 "not issued" is then explained.
    stats = http.get(f"{sandbox.url}/_sandbox/stats").json()
    assert (stats["live_tokens"], stats["tokens_forgotten"]) == (3, 2)
    http.post(f"{sandbox.url}/_sandbox/reset")
    assert http.get(f"{sandbox.url}/_sandbox/stats").json()["tokens_forgotten"] == 0


def test_tokens_forgotten_past_their_expiry_are_counted(
    sandbox: Sandbox, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An expired token is let go (an hour past its expiry; at once here) at the next login: counted in the
    stats' ``tokens_forgotten``, and sent again it is unknown, no longer expired."""
    monkeypatch.setattr(_state, "_TOKEN_MEMORY_SECONDS", 0.0)
    first, second = fenix_headers(http, sandbox), fenix_headers(http, sandbox)
    assert http.get(f"{sandbox.url}/_sandbox/stats").json()["tokens_forgotten"] == 0
    assert http.post(f"{sandbox.url}/_sandbox/tokens/expire").json() == {"expired": 2}
    third = fenix_headers(http, sandbox)  # the expired two are let go as this one is issued
    stats = http.get(f"{sandbox.url}/_sandbox/stats").json()
    assert (stats["live_tokens"], stats["tokens_forgotten"]) == (1, 2)
    for headers in (first, second):
        gone = http.post(sandbox.url + ORDER_PATH, headers=headers, json=ORDER)
        assert error_fields(gone)["authToken"] == "is not a token this server issued; log in to get one"
    assert http.post(sandbox.url + ORDER_PATH, headers=third, json=ORDER).status_code == 201


def test_the_source_api_request_record_says_how_many_it_let_go(
    sandbox_factory: Callable[..., Sandbox], http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``GET /_sandbox/source-requests`` keeps the newest ``KEPT`` GETs and, as the other tables do, counts
    the older ones it let go (``forgotten``, and the stats' ``source_api.forgotten``); a reset zeroes it."""
    monkeypatch.setattr(SourceApi, "KEPT", 3)
    sb = sandbox_factory()
    for n in range(5):
        assert http.get(f"{sb.url}/_source/bigcommerce/orders/{n}").status_code == 404
    record = http.get(f"{sb.url}/_sandbox/source-requests").json()
    assert (record["count"], record["forgotten"]) == (3, 2)
    assert [get["path"] for get in record["requests"]] == [
        f"/_source/bigcommerce/orders/{n}" for n in (2, 3, 4)
    ]
    source_api = http.get(f"{sb.url}/_sandbox/stats").json()["source_api"]
    assert (source_api["received"], source_api["forgotten"]) == (5, 2)
    http.post(f"{sb.url}/_sandbox/reset")
    assert http.get(f"{sb.url}/_sandbox/source-requests").json() == {
        "count": 0,
        "forgotten": 0,
        "requests": [],
    }


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Basic ZGVtby1rZXk6d3Jvbmc=",  # demo-key:wrong
        "Basic not base64!",
        "Basic ZGVtby1rZXlkZW1vLXNlY3JldA==",  # no colon
        "Bearer ZGVtby1rZXk6ZGVtby1zZWNyZXQ=",
    ],
)
def test_bad_basic_auth_is_401(sandbox: Sandbox, http: httpx.Client, authorization: str | None) -> None:
    headers = {"content-type": "application/json"}
    if authorization:
        headers["authorization"] = authorization
    response = http.post(f"{sandbox.url}/execution", headers=headers, json=DG_EXAMPLE)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    assert list(error_fields(response)) == ["Authorization"]
    assert sandbox.requests() == []


# -------------------------------------------------------------------------------------------- 400 cases


def test_missing_line_items_is_400_naming_it(sandbox: Sandbox, http: httpx.Client) -> None:
    order = {k: v for k, v in ORDER.items() if k != "line_items"}
    response = http.post(sandbox.url + ORDER_PATH, headers=fenix_headers(http, sandbox), json=order)
    assert response.status_code == 400
    assert response.json()["kind"] == "fenix.order"
    assert error_fields(response) == {"line_items": "is required but missing"}
    assert sandbox.requests(endpoint="fenix.orders") == []


def test_every_invalid_field_is_named(sandbox: Sandbox, http: httpx.Client) -> None:
    order = json.loads(json.dumps(ORDER))
    order["created_at"] = "2020-01-23 10:14:15"
    order["line_items"][0]["quantity"] = "one"
    del order["customer"]["email"]
    response = http.post(sandbox.url + ORDER_PATH, headers=fenix_headers(http, sandbox), json=order)
    assert response.status_code == 400
    assert set(error_fields(response)) == {"created_at", "customer.email", "line_items[0].quantity"}


def test_cancel_without_cancelled_at_is_400(sandbox: Sandbox, http: httpx.Client) -> None:
    cancel = {k: v for k, v in CANCEL.items() if k != "cancelled_at"}
    response = http.post(sandbox.url + ORDER_PATH, headers=fenix_headers(http, sandbox), json=cancel)
    assert response.status_code == 400
    assert response.json()["kind"] == "fenix.order_cancel"
    assert error_fields(response) == {"cancelled_at": "is required but missing"}


def test_url_and_body_ids_must_agree(sandbox: Sandbox, http: httpx.Client) -> None:
    headers = fenix_headers(http, sandbox)
    order = http.post(f"{sandbox.url}/api/v1/orders/999/created", headers=headers, json=ORDER)
    assert order.status_code == 400 and list(error_fields(order)) == ["id"]
    path = "/api/v1/order/OTHER/fulfillment/FUL-2/created"
    fulfillment = http.post(sandbox.url + path, headers=headers, json=FULFILLMENT)
    assert fulfillment.status_code == 400
    assert set(error_fields(fulfillment)) == {"id", "order_id"}


def test_invalid_dg_envelope_is_400_naming_the_field(sandbox: Sandbox, http: httpx.Client) -> None:
    envelope = json.loads(json.dumps(DG_EXAMPLE))
    del envelope["inputs"]["shipment_data"]["tracking_number"]
    envelope["surprise"] = 1
    response = http.post(f"{sandbox.url}/execution", auth=DG_AUTH, json=envelope)
    assert response.status_code == 400
    assert response.json()["kind"] == "dg.execution"
    assert error_fields(response) == {
        "inputs.shipment_data.tracking_number": "is required but missing",
        "surprise": "is not a field of this kind",
    }


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_400_naming_it(
    sandbox: Sandbox, http: httpx.Client, content_type: str | None
) -> None:
    fenix = {k: v for k, v in fenix_headers(http, sandbox).items() if k != "content-type"}
    dg: dict[str, str] = {}
    if content_type:
        fenix["content-type"] = dg["content-type"] = content_type
    for response in (
        http.post(sandbox.url + ORDER_PATH, headers=fenix, content=json.dumps(ORDER)),
        http.post(f"{sandbox.url}/execution", auth=DG_AUTH, headers=dg, content=json.dumps(DG_EXAMPLE)),
    ):
        assert response.status_code == 400
        assert list(error_fields(response)) == ["content-type"]
    assert sandbox.requests(api="dg") == []


def test_json_content_type_with_charset_is_accepted(sandbox: Sandbox, http: httpx.Client) -> None:
    headers = {"content-type": "Application/JSON; charset=utf-8"}
    response = http.post(
        f"{sandbox.url}/execution", auth=DG_AUTH, headers=headers, content=json.dumps(DG_EXAMPLE)
    )
    assert response.status_code == 200


def test_invalid_json_is_400(sandbox: Sandbox, http: httpx.Client) -> None:
    headers = fenix_headers(http, sandbox)
    response = http.post(sandbox.url + ORDER_PATH, headers=headers, content=b'{"id": ')
    assert response.status_code == 400
    assert list(error_fields(response)) == ["(body)"]
    not_object = http.post(f"{sandbox.url}/execution", auth=DG_AUTH, json=[1, 2])
    assert not_object.status_code == 400 and list(error_fields(not_object)) == ["(body)"]


# --------------------------------------------------------------------------------------------- regions


@pytest.mark.parametrize(
    ("path", "host", "region"),
    [
        ("/execution", None, "eu"),
        ("/eu/execution", None, "eu"),
        ("/us/execution", None, "us"),
        ("/execution", "flow-server.us.dgdeepai.com", "us"),
        ("/execution", "flow-server.eu.dgdeepai.com:443", "eu"),
        ("/us/execution", "flow-server.eu.dgdeepai.com", "us"),  # an explicit prefix wins
    ],
)
def test_region_by_prefix_or_host(
    sandbox: Sandbox, http: httpx.Client, path: str, host: str | None, region: str
) -> None:
    headers = {"host": host} if host else {}
    response = http.post(sandbox.url + path, auth=DG_AUTH, headers=headers, json=DG_EXAMPLE)
    assert response.status_code == 200
    assert [r.region for r in sandbox.requests(api="dg")] == [region]


def test_unknown_region_is_404(sandbox: Sandbox, http: httpx.Client) -> None:
    response = http.post(f"{sandbox.url}/asia/execution", auth=DG_AUTH, json=DG_EXAMPLE)
    assert response.status_code == 404
    assert "asia" in response.json()["message"]


# -------------------------------------------------------------------------------------------- recorder


def _dg(http: httpx.Client, sb: Sandbox, external_id: str, order_id: str = "123") -> httpx.Response:
    envelope = json.loads(json.dumps(DG_EXAMPLE))
    envelope["external_id"] = envelope["inputs"]["external_id"] = external_id
    envelope["inputs"]["shipment_data"]["order_id"] = order_id
    return http.post(f"{sb.url}/execution", auth=DG_AUTH, json=envelope)


def test_requests_are_queryable_over_http(sandbox: Sandbox, http: httpx.Client) -> None:
    headers = fenix_headers(http, sandbox)
    http.post(sandbox.url + ORDER_PATH, headers=headers, json=ORDER)
    http.post(sandbox.url + ORDER_PATH, headers=headers, json=CANCEL)
    _dg(http, sandbox, "E1")

    def query(**params: Any) -> list[dict[str, Any]]:
        response = http.get(f"{sandbox.url}/_sandbox/requests", params=params)
        assert response.status_code == 200
        body = response.json()
        assert body["count"] == len(body["requests"])
        return list(body["requests"])

    assert [r["endpoint"] for r in query()] == ["fenix.login", "fenix.orders", "fenix.orders", "dg.execution"]
    assert [r["external_id"] for r in query(api="dg")] == ["E1"]
    assert [r["kind"] for r in query(endpoint="fenix.orders")] == ["fenix.order", "fenix.order_cancel"]
    assert [r["body"] for r in query(kind="fenix.order_cancel")] == [CANCEL]
    seqs = [r["seq"] for r in query()]
    assert [r["seq"] for r in query(since=seqs[1])] == seqs[2:]
    assert all(r["headers"]["x-api-key"] == "***" for r in query(api="fenix"))
    assert http.get(f"{sandbox.url}/_sandbox/requests", params={"since": "x"}).status_code == 400


def test_stats_count_endpoints_rejections_and_duplicates(sandbox: Sandbox, http: httpx.Client) -> None:
    headers = fenix_headers(http, sandbox)
    for _ in range(2):
        assert http.post(sandbox.url + ORDER_PATH, headers=headers, json=ORDER).status_code == 201
        assert http.post(sandbox.url + FULFILLMENT_PATH, headers=headers, json=FULFILLMENT).status_code == 201
    http.post(sandbox.url + ORDER_PATH, headers=headers, json=CANCEL)
    _dg(http, sandbox, "E1")
    _dg(http, sandbox, "E1")
    _dg(http, sandbox, "E1", order_id="456")  # same external_id, different body
    _dg(http, sandbox, "E2")
    http.post(f"{sandbox.url}/execution", auth=("demo-key", "nope"), json=DG_EXAMPLE)

    stats = http.get(f"{sandbox.url}/_sandbox/stats").json()
    assert stats == sandbox.stats()
    assert stats["accepted"] == 10
    assert stats["by_endpoint"] == {
        "dg.execution": 4,
        "fenix.fulfillment": 2,
        "fenix.login": 1,
        "fenix.orders": 3,
    }
    assert stats["by_kind"]["fenix.order"] == 2 and stats["by_kind"]["fenix.order_cancel"] == 1
    assert stats["rejected"] == {"dg.execution": {"401": 1}}
    dups = stats["duplicates"]
    [dg] = dups["dg_external_id"]
    assert (dg["key"], dg["count"], dg["distinct_bodies"]) == ("E1", 3, 2)
    [order] = dups["fenix_order_id"]
    assert (order["key"], order["count"], order["distinct_bodies"]) == (ORDER["id"], 3, 2)
    assert order["kinds"] == ["fenix.order", "fenix.order_cancel"]
    [fulfillment] = dups["fenix_fulfillment"]
    assert (fulfillment["order_id"], fulfillment["fulfillment_id"]) == (ORDER["id"], "FUL-1")
    assert (fulfillment["count"], fulfillment["distinct_bodies"]) == (2, 1)
    assert sandbox.duplicates() == dups


def test_the_recorder_keeps_the_newest_requests_and_counts_every_one(
    sandbox_factory: Callable[..., Sandbox], http: httpx.Client
) -> None:
    sb = sandbox_factory(keep=3)
    headers = fenix_headers(http, sb)  # the login is request 1
    for n in range(4):
        order = {**ORDER, "id": f"K{n}"}
        assert (
            http.post(f"{sb.url}/api/v1/orders/K{n}/created", headers=headers, json=order).status_code == 201
        )
    assert [r.order_id for r in sb.requests()] == ["K1", "K2", "K3"]
    listed = http.get(f"{sb.url}/_sandbox/requests").json()
    assert listed["count"] == 3 and [r["seq"] for r in listed["requests"]] == [3, 4, 5]
    stats = sb.stats()
    assert (stats["accepted"], stats["kept"], stats["dropped"]) == (5, 3, 2)
    assert stats["by_endpoint"] == {"fenix.login": 1, "fenix.orders": 4}
    # The duplicate check still sees a key whose first copy was let go.
    assert (
        http.post(
            f"{sb.url}/api/v1/orders/K0/created", headers=headers, json={**ORDER, "id": "K0"}
        ).status_code
        == 201
    )
    [again] = sb.duplicates()["fenix_order_id"]
    assert (again["key"], again["seqs"]) == ("K0", [2, 6])
    sb.reset()
    assert (sb.stats()["kept"], sb.stats()["dropped"]) == (0, 0)


def test_the_duplicate_check_remembers_the_newest_keys_and_counts_what_it_lets_go(
    sandbox_factory: Callable[..., Sandbox], http: httpx.Client
) -> None:
    """A sandbox left running stays bounded: past ``duplicate_keys`` distinct keys the oldest is let go."""
    sb = sandbox_factory(duplicate_keys=3)
    headers = fenix_headers(http, sb)

    def post(order_id: str) -> None:
        answer = http.post(
            f"{sb.url}/api/v1/orders/{order_id}/created", headers=headers, json={**ORDER, "id": order_id}
        )
        assert answer.status_code == 201

    for order_id in ("D1", "D2", "D3", "D3", "D4"):  # D4 is the fourth distinct key: D1 is let go
        post(order_id)
    assert [(d["key"], d["count"]) for d in sb.duplicates()["fenix_order_id"]] == [("D3", 2)]
    assert sb.stats()["duplicate_keys_forgotten"] == 1
    post("D1")  # remembered no more: a first sighting again, not a duplicate (D2 is let go for it)
    post("D4")
    assert [(d["key"], d["count"]) for d in sb.duplicates()["fenix_order_id"]] == [("D3", 2), ("D4", 2)]
    assert sb.stats()["duplicate_keys_forgotten"] == 2
    sb.reset()
    assert sb.stats()["duplicate_keys_forgotten"] == 0
    with pytest.raises(ValueError, match="duplicate_keys must be 1 or more, got 0"):
        SandboxConfig(duplicate_keys=0)


def test_the_duplicate_check_stays_at_its_cap_over_http(
    sandbox_factory: Callable[..., Sandbox], http: httpx.Client
) -> None:
    """``GET /_sandbox/stats`` says how many keys the duplicate check holds (never past ``duplicate_keys``) and
    how many it let go; a remembered key sent again is a duplicate, a forgotten one a first sighting."""
    sb = sandbox_factory(duplicate_keys=3)

    def stats() -> dict[str, Any]:
        answer = http.get(f"{sb.url}/_sandbox/stats")
        assert answer.status_code == 200
        return dict(answer.json())

    for n in range(1, 6):
        assert _dg(http, sb, f"E{n}").status_code == 200
    counted = stats()
    assert (counted["duplicate_keys_remembered"], counted["duplicate_keys_forgotten"]) == (3, 2)
    assert _dg(http, sb, "E5").status_code == 200  # remembered: a duplicate
    assert _dg(http, sb, "E1").status_code == 200  # forgotten: a first sighting (E3 is let go for it)
    counted = stats()
    assert [(d["key"], d["count"]) for d in counted["duplicates"]["dg_external_id"]] == [("E5", 2)]
    assert (counted["duplicate_keys_remembered"], counted["duplicate_keys_forgotten"]) == (3, 3)


def test_the_duplicate_check_left_at_its_default_cap_stays_within_the_memory_docs_say() -> None:
    """``--duplicate-keys`` left alone: turning over twice its cap of keys seen once holds at most the ~31 MB
    docs/sandbox.md says, and a key listed in full (100 seqs, 100 distinct bodies) ~2.1 KB, so ~105 MB at the
    cap at most. The old default, 200,000, held ~190 MB of keys seen once and ~4.8 GB listed in full. The
    table is fed as ``record`` feeds it (``_see``), without the requests ``keep`` holds beside it."""
    recorder = Recorder(keep=1)
    body = {"id": 18879048253891}  # only its hash is kept: a small one spares the test hashing 17 KB orders
    tracemalloc.start()
    try:
        for number in range(2 * DEFAULT_DUPLICATE_KEYS):
            recorder._see(("fenix_order_id", str(18879048253891 + number)), number + 1, body, "fenix.order")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 36 * 1024 * 1024, f"{peak / 1e6:.1f} MB"
    counted = recorder.stats()
    assert counted["duplicate_keys_remembered"] == DEFAULT_DUPLICATE_KEYS
    assert counted["duplicate_keys_forgotten"] == DEFAULT_DUPLICATE_KEYS

    listed = Recorder(keep=1, duplicate_keys=100)
    tracemalloc.start()
    try:
        for number in range(200):  # each key listed in full, the table turned over once
            for sighting in range(100):
                listed._see(
                    ("dg_external_id", f"E{number}"), 100 * number + sighting, {"n": sighting}, "dg.execution"
                )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    full = listed.duplicates()["dg_external_id"]
    assert [(len(d["seqs"]), d["distinct_bodies"]) for d in full] == [(100, 100)] * 100
    assert peak / 100 * DEFAULT_DUPLICATE_KEYS < 120 * 1024 * 1024, f"{peak / 100:.0f} bytes a key"


def test_a_key_sent_many_times_lists_its_first_hundred_sightings_and_counts_them_all(
    sandbox_factory: Callable[..., Sandbox], http: httpx.Client
) -> None:
    sb = sandbox_factory()
    headers = fenix_headers(http, sb)
    for _ in range(120):
        answer = http.post(f"{sb.url}/api/v1/orders/R1/created", headers=headers, json={**ORDER, "id": "R1"})
        assert answer.status_code == 201
    [repeated] = sb.duplicates()["fenix_order_id"]
    assert (repeated["count"], len(repeated["seqs"]), repeated["seqs"][:2]) == (120, 100, [2, 3])


def test_keep_zero_keeps_every_request_and_a_negative_keep_is_refused(
    sandbox_factory: Callable[..., Sandbox], http: httpx.Client
) -> None:
    sb = sandbox_factory(keep=0)
    headers = fenix_headers(http, sb)
    for n in range(3):
        http.post(f"{sb.url}/api/v1/orders/Z{n}/created", headers=headers, json={**ORDER, "id": f"Z{n}"})
    assert len(sb.requests()) == 4 and sb.stats()["dropped"] == 0
    with pytest.raises(ValueError, match=r"keep must be 0 \(all\) or more requests, got -1"):
        SandboxConfig(keep=-1)


def test_reset_forgets_records_counts_and_tokens(sandbox: Sandbox, http: httpx.Client) -> None:
    headers = fenix_headers(http, sandbox)
    http.post(sandbox.url + ORDER_PATH, headers=headers, json=ORDER)
    assert http.post(f"{sandbox.url}/_sandbox/reset").json() == {"status": "reset"}
    assert sandbox.requests() == []
    assert sandbox.stats()["accepted"] == 0
    assert http.post(sandbox.url + ORDER_PATH, headers=headers, json=ORDER).status_code == 401


def test_jsonl_record_file_is_redacted(
    sandbox_factory: Callable[..., Sandbox], http: httpx.Client, tmp_path: Path
) -> None:
    record = tmp_path / "requests.jsonl"
    sb = sandbox_factory(record=record)
    headers = fenix_headers(http, sb)
    http.post(sb.url + ORDER_PATH, headers=headers, json=ORDER)
    _dg(http, sb, "E1")
    # Rejected, so not recorded:
    http.post(sb.url + ORDER_PATH, headers={**headers, "x-identity": "x"}, json=ORDER)
    text = record.read_text(encoding="utf-8")
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["endpoint"] for line in lines] == ["fenix.login", "fenix.orders", "dg.execution"]
    assert lines[1]["body"] == ORDER
    assert lines == [r.to_dict() for r in sb.requests()]
    for secret in ("demo-pass", "demo-api-key", headers["authToken"], headers["x-identity"], "ZGVtby1rZXk6"):
        assert secret not in text


def test_concurrent_requests_are_all_recorded_once(sandbox: Sandbox) -> None:
    def send(start: int) -> None:
        with httpx.Client(trust_env=False, timeout=10) as client:
            for i in range(start, start + 10):
                assert _dg(client, sandbox, f"C{i}").status_code == 200

    threads = [threading.Thread(target=send, args=(n * 10,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    recorded = sandbox.requests(api="dg")
    assert sorted(r.external_id or "" for r in recorded) == sorted(f"C{i}" for i in range(60))
    assert len({r.seq for r in recorded}) == 60
    assert sandbox.stats()["duplicates"]["dg_external_id"] == []


# ------------------------------------------------------------------------------------ lifecycle, config


def test_context_manager_serves_then_releases_the_port(http: httpx.Client) -> None:
    with Sandbox() as sb, Sandbox() as other:
        assert sb.url.startswith("http://127.0.0.1:") and sb.port != other.port
        assert http.get(f"{sb.url}/_sandbox/health").json() == {"status": "ok"}
        _dg(http, sb, "only-here")
        assert other.requests() == []
        url = sb.url
    with pytest.raises(httpx.ConnectError):
        http.get(f"{url}/_sandbox/health")
    with pytest.raises(RuntimeError):
        _ = sb.url


def test_custom_credentials_replace_the_demo_ones(
    sandbox_factory: Callable[..., Sandbox], http: httpx.Client
) -> None:
    creds = SandboxCredentials(
        fenix_username="u", fenix_password="p", fenix_api_key="k", fenix_store_name="s"
    )
    sb = sandbox_factory(config=SandboxConfig(credentials=creds))
    assert http.post(f"{sb.url}/login", headers=FENIX_LOGIN).status_code == 401
    login = http.post(f"{sb.url}/login", headers={"username": "u", "password": "p", "x-api-key": "k"})
    assert login.status_code == 200


def test_an_unwritable_record_file_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        Sandbox(record=tmp_path / "missing-dir" / "requests.jsonl")


def test_credentials_load_order(tmp_path: Path) -> None:
    path = tmp_path / "creds.yaml"
    path.write_text(
        "fenix:\n  username: file-user\n  password: file-pass\ndg:\n  api_key: file-key\n", encoding="utf-8"
    )
    env = {"SHIPMAP_SANDBOX_FENIX_PASSWORD": "env-pass", "SHIPMAP_SANDBOX_DG_API_KEY": "env-key"}
    creds = SandboxCredentials.load(path, env, {"dg_api_key": "flag-key", "fenix_api_key": None})
    assert creds == SandboxCredentials(
        fenix_username="file-user", fenix_password="env-pass", dg_api_key="flag-key"
    )
    assert SandboxCredentials.load().is_demo()
    bad = tmp_path / "bad.json"
    bad.write_text('{"fenix": {"user": "x"}}', encoding="utf-8")
    with pytest.raises(Exception, match=r"unknown key fenix\.user"):
        SandboxCredentials.load(bad)


@pytest.mark.parametrize(
    ("name", "content", "error"),
    [
        (
            "creds.json",
            b"\xff\xfehunter2-pass",
            "creds.json:1:1: error: cannot read sandbox credentials file: not UTF-8 text (byte 0xff: invalid start "
            "byte); save it as UTF-8",
        ),
        (  # was at 1:1 wherever the byte was
            "creds.yaml",
            b"fenix:\n  username: caf\xc3\xa9\n  password: hunter2-p\xe9ss\n",
            "creds.yaml:3:22: error: cannot read sandbox credentials file: not UTF-8 text (byte 0xe9: invalid "
            "continuation byte); save it as UTF-8",
        ),
        (
            "creds.json",
            b'{"fenix": {"password": "hunter2-pass",}}',
            "creds.json:1:39: error: sandbox credentials file is not valid JSON: Expecting property name "
            "enclosed in double quotes",
        ),
        (
            "creds.yaml",
            b"fenix:\n  password: old-pass\n  password: hunter2-pass\n",
            "creds.yaml:3:3: error: duplicate key 'password' (first written at line 2)",
        ),
    ],
    ids=["not-utf-8", "not-utf-8-later", "bad-json", "duplicate-key"],
)
def test_a_credentials_file_that_does_not_read_is_located_and_never_quoted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes, error: str
) -> None:
    """The file holds passwords: the error names its line and column, never the text there (no caret line)."""
    from shipmap.connectors._cli import main

    path = tmp_path / name
    path.write_bytes(content)
    assert (
        main(["sandbox", "--port", "0", "--credentials", str(path)]) == 2
    )  # a wrong file: as a wrong config
    err = capsys.readouterr().err
    assert err == f"{tmp_path}/{error}\n"
    assert "hunter2" not in err


# ------------------------------------------------------------------------------------------ command line


@pytest.mark.parametrize(
    ("stop", "code", "said"),
    [(signal.SIGINT, 130, "shipmap: interrupted\n"), (signal.SIGTERM, 0, "  Ctrl-C stops.\n")],
)
def test_cli_serves_until_stopped(
    tmp_path: Path, http: httpx.Client, stop: signal.Signals, code: int, said: str
) -> None:
    """Ctrl-C ends it as it ends every command (``shipmap: interrupted``, 130); SIGTERM, a service manager's
    stop, with 0 and nothing more to say."""
    creds = tmp_path / "creds.json"
    creds.write_text(
        json.dumps({"fenix": {"password": "file-pass"}, "dg": {"api_key": "file-key"}}), encoding="utf-8"
    )
    record = tmp_path / "out.jsonl"
    env = {**_local_env(), "SHIPMAP_SANDBOX_DG_API_KEY": "env-key"}
    command = [
        sys.executable, "-c", "import sys; from shipmap.connectors._cli import main; sys.exit(main())",
        "sandbox", "--port", "0", "--token-ttl", "60", "--faults", "schedule=503", "--record", str(record),
        "--credentials", str(creds), "--dg-api-secret", "flag-secret",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), process.stderr.read() if process.stderr else ""
        envelope = {**DG_EXAMPLE, "external_id": "cli"}

        def send(key: str) -> int:
            return http.post(f"{url}/execution", auth=(key, "flag-secret"), json=envelope).status_code

        # The key from the environment beats the file's; the secret from the flag; then the schedule.
        assert [send("env-key"), send("env-key"), send("file-key")] == [503, 200, 401]
        login = http.post(f"{url}/login", headers={**FENIX_LOGIN, "password": "file-pass"})
        assert login.status_code == 200
        process.send_signal(stop)
        assert process.wait(timeout=10) == code
        assert process.stderr is not None
        errors = process.stderr.readlines()
        assert errors[-1] == said and "Traceback" not in "".join(errors), errors
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines()]
    assert [line["endpoint"] for line in lines] == ["dg.execution", "fenix.login"]


def test_cli_takes_fenix_down_with_a_plan_of_its_own_while_dg_answers(http: httpx.Client) -> None:
    command = [
        sys.executable, "-c", "import sys; from shipmap.connectors._cli import main; sys.exit(main())",
        "sandbox", "--port", "0", "--faults", "schedule=429", "--fenix-faults", "5xx=1:503",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_local_env()
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), process.stderr.read()
        said = ""
        while not said.endswith("  Ctrl-C stops.\n"):
            said += process.stderr.readline()
        assert "faults: schedule=429; fenix faults: 5xx=1:503\n" in said, said
        envelope = {**DG_EXAMPLE, "external_id": "cli"}
        answers = [
            http.post(f"{url}/execution", auth=("demo-key", "demo-secret"), json=envelope) for _ in "ab"
        ]
        assert [answer.status_code for answer in answers] == [429, 200]  # the plan for both answers DG
        login = http.post(f"{url}/login", headers=FENIX_LOGIN)
        assert login.status_code == 200
        order = http.post(f"{url}/api/v1/orders/1/created", json={"id": "1"})
        assert (order.status_code, order.headers["x-sandbox-fault-plan"]) == (503, "fenix")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_rejects_a_bad_fault_spec_of_one_api(capsys: pytest.CaptureFixture[str]) -> None:
    from shipmap.connectors._cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["sandbox", "--dg-faults", "5xx=2"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --dg-faults: fault spec part '5xx=2': 2 is not a probability between 0 and 1" in err, err


def test_cli_rejects_a_negative_keep(capsys: pytest.CaptureFixture[str]) -> None:
    from shipmap.connectors._cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["sandbox", "--keep", "-5"])
    assert exit_info.value.code == 2
    assert "argument --keep: -5 is not 0 or more" in capsys.readouterr().err


def test_cli_caps_the_faulted_list_and_the_fault_identities(
    http: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    command = [
        sys.executable, "-c", "import sys; from shipmap.connectors._cli import main; sys.exit(main())",
        "sandbox", "--port", "0", "--faults", "5xx=1:503", "--faulted", "2", "--fault-identities", "2",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_local_env()
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        for n in range(3):
            headers = {"Idempotency-Key": f"cli-{n}"}
            answer = http.post(f"{url}/execution", auth=DG_AUTH, headers=headers, json=DG_EXAMPLE)
            assert answer.status_code == 503
        faulted = http.get(f"{url}/_sandbox/faulted").json()
        assert (faulted["count"], faulted["forgotten"]) == (2, 1)
        plan = http.get(f"{url}/_sandbox/faults").json()
        assert (plan["identities"], plan["identities_forgotten"]) == (2, 1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    from shipmap.connectors._cli import main

    for flag in ("--faulted", "--fault-identities"):
        with pytest.raises(SystemExit) as exit_info:
            main(["sandbox", flag, "0"])
        assert exit_info.value.code == 2
        assert f"argument {flag}: 0 is not" in capsys.readouterr().err


def test_cli_rejects_a_bad_fault_spec(capsys: pytest.CaptureFixture[str]) -> None:
    from shipmap.connectors._cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["sandbox", "--faults", "5xx=0.5,bogus=1"])
    assert exit_info.value.code == 2
    assert "bogus=1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda path: path.write_text("{}"), "is a file, not a directory"),
        (lambda path: None, "does not exist"),
        (lambda path: path.symlink_to(path), "cannot be read: Too many levels of symbolic links"),
    ],
    ids=["a-file", "missing", "symlink-loop"],
)
def test_cli_rejects_source_documents_that_are_no_directory(tmp_path: Path, make: Any, reason: str) -> None:
    """A file started a sandbox whose fake source API answered 404 to every GET: a usage error now. (Run as
    a process with a timeout: a sandbox that starts would serve until killed.)"""
    documents = tmp_path / "order.json"
    make(documents)
    command = [
        sys.executable, "-c", "import sys; from shipmap.connectors._cli import main; sys.exit(main())",
        "sandbox", "--port", "0", "--source-documents", str(documents),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("usage: shipmap sandbox")
    assert done.stderr.endswith(
        f"shipmap sandbox: error: argument --source-documents: {str(documents)!r} {reason}\n"
    )


def test_a_whole_order_with_status_cancelled_is_an_order_update(sandbox: Sandbox, http: httpx.Client) -> None:
    headers = fenix_headers(http, sandbox)
    cancelled_order = {**ORDER, "status": "CANCELLED", "cancelled_at": "2020-01-24T09:00:00-05:00"}
    response = http.post(sandbox.url + ORDER_PATH, headers=headers, json=cancelled_order)
    assert response.status_code == 201, response.text
    [recorded] = sandbox.requests(endpoint="fenix.orders")
    assert recorded.kind == "fenix.order"
    # A whole order that breaks the order contract is explained as an order, not as a short cancel.
    broken = {k: v for k, v in cancelled_order.items() if k != "line_items"}
    response = http.post(sandbox.url + ORDER_PATH, headers=headers, json=broken)
    assert response.status_code == 400
    assert response.json()["kind"] == "fenix.order"
    assert error_fields(response) == {"line_items": "is required but missing"}
