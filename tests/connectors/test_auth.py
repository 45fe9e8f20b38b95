"""Auth schemes against the sandbox over real HTTP on 127.0.0.1: logins, expiry, 401 recovery, concurrency."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from shipmap.connectors import (
    ApiKeyAuth,
    AuthError,
    BasicAuth,
    BearerAuth,
    FenixSessionAuth,
    Redactor,
    Sandbox,
)
from shipmap.connectors._deliver._transport import AiohttpTransport, Sender
from shipmap.connectors._redact import SLOT_KEEP

SEEDS = Path(__file__).parents[1] / "fixtures" / "seeds"


def order_payload(order_id: str = "18879048253891") -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((SEEDS / "fenix_order_example.json").read_text())
    payload["id"] = order_id
    return payload


def dg_payload(external_id: str = "ext-1") -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((SEEDS / "dg_execution_example.json").read_text())
    payload["external_id"] = payload["inputs"]["external_id"] = external_id
    return payload


def fenix_auth(sandbox: Sandbox, **kwargs: Any) -> FenixSessionAuth:
    return FenixSessionAuth(
        login_url=f"{sandbox.url}/login",
        username="demo-user",
        password="demo-pass",
        api_key="demo-api-key",
        store_name="demo-store",
        **kwargs,
    )


def logins(sandbox: Sandbox) -> int:
    return int(sandbox.stats()["by_endpoint"].get("fenix.login", 0))


def rejected(sandbox: Sandbox, endpoint: str, status: int) -> int:
    return int(sandbox.stats()["rejected"].get(endpoint, {}).get(str(status), 0))


def test_basic_auth_reads_its_credentials_again_after_a_401_and_sends_again_when_they_changed(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """The sandbox wants demo-key/demo-secret; the auth starts with a rotated-out secret. The 401 reads the
    credentials again (DG's names: key and secret); they changed, so the request goes again and lands."""
    redactor = Redactor()
    reads: list[int] = []

    def reread() -> dict[str, str]:
        reads.append(1)
        return {"key": "demo-key", "secret": "demo-secret"}

    auth = BasicAuth("demo-key", "rotated-out-secret", redactor=redactor, reread=reread)
    assert auth.retry_unauthorized  # a 401 that survives this is a refusal: the breaker, not a dead letter
    with caplog.at_level("WARNING", logger="shipmap.connectors.auth"), httpx.Client(auth=auth) as client:
        first = client.post(f"{sandbox.url}/execution", json=dg_payload("ext-r1"))
        second = client.post(f"{sandbox.url}/execution", json=dg_payload("ext-r2"))
    assert (first.status_code, second.status_code) == (200, 200)
    assert len(reads) == 1 and rejected(sandbox, "dg.execution", 401) == 1  # once, then the new ones
    assert "basic credentials refused (HTTP 401) and changed since they were read (rotated)" in caplog.text
    assert redactor.redact("demo-secret rotated-out-secret") == "*** ***"


@pytest.mark.parametrize(
    "found",
    [{"token": "still-the-old-one"}, ValueError("connections.s.auth.token: ${file:/gone} cannot be read")],
    ids=["unchanged", "unreadable"],
)
def test_a_401_with_credentials_unchanged_or_unreadable_is_answered_as_it_came(
    sandbox: Sandbox, found: dict[str, str] | ValueError, caplog: pytest.LogCaptureFixture
) -> None:
    def reread() -> dict[str, str]:
        if isinstance(found, ValueError):
            raise found
        return found

    auth = BearerAuth("still-the-old-one", reread=reread)  # DG wants Basic: every request is refused
    with caplog.at_level("WARNING", logger="shipmap.connectors.auth"), httpx.Client(auth=auth) as client:
        response = client.post(f"{sandbox.url}/execution", json=dg_payload())
    assert response.status_code == 401
    assert rejected(sandbox, "dg.execution", 401) == 1  # sent once: nothing new to send it with
    said = "cannot read them again: connections.s.auth.token" in caplog.text
    assert said is isinstance(found, ValueError)


def test_basic_auth_reaches_dg_and_registers_its_secrets(sandbox: Sandbox) -> None:
    redactor = Redactor()
    auth = BasicAuth("demo-key", "demo-secret", redactor=redactor)
    with httpx.Client(auth=auth) as client:
        response = client.post(f"{sandbox.url}/execution", json=dg_payload())
    assert response.status_code == 200
    token = base64.b64encode(b"demo-key:demo-secret").decode()
    assert redactor.redact(f"Basic {token} demo-secret") == "Basic *** ***"
    assert auth.preview_headers() == {"Authorization": "Basic ***"}
    assert sandbox.requests(endpoint="dg.execution")[0].external_id == "ext-1"


def test_basic_auth_with_a_wrong_secret_gets_401(sandbox: Sandbox) -> None:
    with httpx.Client(auth=BasicAuth("demo-key", "wrong-secret")) as client:
        response = client.post(f"{sandbox.url}/execution", json=dg_payload())
    assert response.status_code == 401
    assert rejected(sandbox, "dg.execution", 401) == 1


def test_fenix_session_logs_in_once_and_sends_the_four_headers(sandbox: Sandbox) -> None:
    redactor = Redactor()
    auth = fenix_auth(sandbox, redactor=redactor)
    with httpx.Client(auth=auth, base_url=sandbox.url) as client:
        for number in range(3):
            response = client.post(f"/api/v1/orders/{number}/created", json=order_payload(str(number)))
            assert response.status_code == 201
    assert logins(sandbox) == 1
    assert auth.logins == 1 and auth.generation == 1
    recorded = sandbox.requests(endpoint="fenix.orders")
    assert [r.order_id for r in recorded] == ["0", "1", "2"]
    assert recorded[0].headers["store_name"] == "demo-store"
    assert {"authtoken", "x-api-key", "x-identity"} <= set(recorded[0].headers)
    # The token and identity the login returned are now secrets of this redactor.
    token = auth._token
    assert token is not None and redactor.redact(f"t={token}") == "t=***"
    assert redactor.redact("demo-pass demo-api-key") == "*** ***"


def test_token_expiring_mid_run_is_refreshed_ahead_of_time(sandbox_factory: Callable[..., Sandbox]) -> None:
    server = sandbox_factory(token_ttl=1.0)
    auth = fenix_auth(server, token_ttl=1.0, refresh_margin=0.4)
    with httpx.Client(auth=auth, base_url=server.url) as client:
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < 2.2:
            response = client.post(f"/api/v1/orders/{sent}/created", json=order_payload(str(sent)))
            assert response.status_code == 201
            sent += 1
            time.sleep(0.05)
    # Refreshed before the server expired the token: three logins over 2.2 s of 1 s tokens, and no 401.
    assert logins(server) == auth.logins >= 3
    assert rejected(server, "fenix.orders", 401) == 0
    assert len(server.requests(endpoint="fenix.orders")) == sent


def test_a_session_that_logs_in_again_and_again_keeps_only_its_newest_tokens_masked(
    sandbox_factory: Callable[..., Sandbox],
) -> None:
    """Each login's token is a secret of the runtime's redactor while it may still be in use; a service that
    logs in every few hours for months keeps the newest few, not all."""
    server = sandbox_factory(token_ttl=1.0)
    redactor = Redactor()
    auth = fenix_auth(server, token_ttl=0.3, refresh_margin=0.2, redactor=redactor)
    tokens: list[str] = []
    with httpx.Client(auth=auth, base_url=server.url) as client:
        for number in range(SLOT_KEEP + 3):
            response = client.post(f"/api/v1/orders/{number}/created", json=order_payload(str(number)))
            assert response.status_code == 201
            assert auth._token is not None
            if auth._token not in tokens:
                tokens.append(auth._token)
            time.sleep(0.15)  # into the refresh margin: the next request logs in first
    assert len(tokens) == auth.logins >= SLOT_KEEP + 2, tokens
    assert redactor.redact(" ".join(tokens[-SLOT_KEEP:])) == " ".join(["***"] * SLOT_KEEP)
    assert redactor.redact(tokens[0]) == tokens[0]  # long expired: no longer masked, nor matched


def test_a_401_causes_one_fresh_login_and_one_retry(sandbox: Sandbox) -> None:
    auth = fenix_auth(sandbox)  # believes its token lasts 4 hours
    with httpx.Client(auth=auth, base_url=sandbox.url) as client:
        assert client.post("/api/v1/orders/1/created", json=order_payload("1")).status_code == 201
        assert sandbox.expire_tokens() == 1
        response = client.post("/api/v1/orders/2/created", json=order_payload("2"))
    assert response.status_code == 201
    assert rejected(sandbox, "fenix.orders", 401) == 1
    assert logins(sandbox) == 2 and auth.generation == 2
    assert [r.order_id for r in sandbox.requests(endpoint="fenix.orders")] == ["1", "2"]


def test_fifty_concurrent_requests_on_an_expired_token_cause_exactly_one_login(sandbox: Sandbox) -> None:
    auth = fenix_auth(sandbox)

    async def scenario() -> list[int]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(auth=auth, base_url=sandbox.url, limits=limits) as client:
            first = await client.post("/api/v1/orders/warmup/created", json=order_payload("warmup"))
            assert first.status_code == 201
            sandbox.expire_tokens()
            responses = await asyncio.gather(
                *(client.post(f"/api/v1/orders/{n}/created", json=order_payload(str(n))) for n in range(50))
            )
            return [r.status_code for r in responses]

    statuses = asyncio.run(scenario())
    assert statuses == [201] * 50
    assert logins(sandbox) == 2  # the first login, and exactly one after the expiry
    assert auth.generation == 2
    assert 1 <= rejected(sandbox, "fenix.orders", 401) <= 50
    assert len(sandbox.requests(endpoint="fenix.orders")) == 51


def test_concurrent_threads_on_an_expired_token_cause_exactly_one_login(sandbox: Sandbox) -> None:
    auth = fenix_auth(sandbox)
    statuses: list[int] = []
    with httpx.Client(auth=auth, base_url=sandbox.url, limits=httpx.Limits(max_connections=20)) as client:
        assert client.post("/api/v1/orders/w/created", json=order_payload("w")).status_code == 201
        sandbox.expire_tokens()
        barrier = threading.Barrier(20)

        def send(number: int) -> None:
            barrier.wait()
            statuses.append(
                client.post(f"/api/v1/orders/{number}/created", json=order_payload(str(number))).status_code
            )

        threads = [threading.Thread(target=send, args=(n,)) for n in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert statuses == [201] * 20
    assert logins(sandbox) == 2


def test_refused_login_raises_a_final_auth_error_without_the_password(sandbox: Sandbox) -> None:
    auth = FenixSessionAuth(
        login_url=f"{sandbox.url}/login",
        username="demo-user",
        password="not-the-password",
        api_key="demo-api-key",
        store_name="demo-store",
    )
    with httpx.Client(auth=auth, base_url=sandbox.url) as client, pytest.raises(AuthError) as caught:
        client.post("/api/v1/orders/1/created", json=order_payload("1"))
    assert caught.value.status == 401 and caught.value.retryable is False
    assert "not-the-password" not in caught.value.render()
    assert sandbox.requests(endpoint="fenix.orders") == []


def test_login_that_hits_a_5xx_is_retryable(sandbox: Sandbox) -> None:
    sandbox.set_faults("login=true,schedule=503")
    with (
        httpx.Client(auth=fenix_auth(sandbox), base_url=sandbox.url) as client,
        pytest.raises(AuthError) as caught,
    ):
        client.post("/api/v1/orders/1/created", json=order_payload("1"))
    assert caught.value.status == 503 and caught.value.retryable is True


def test_api_key_and_bearer_put_their_header_and_register_the_secret() -> None:
    seen: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(204)

    redactor = Redactor()
    transport = httpx.MockTransport(handler)
    with httpx.Client(
        transport=transport, auth=ApiKeyAuth("k-123456", header="X-Key", redactor=redactor)
    ) as client:
        client.get("http://127.0.0.1/a")
    with httpx.Client(transport=transport, auth=BearerAuth("tok-abcdef", redactor=redactor)) as client:
        client.get("http://127.0.0.1/b")
    assert seen[0]["x-key"] == "k-123456"
    assert seen[1]["authorization"] == "Bearer tok-abcdef"
    assert redactor.redact("k-123456 tok-abcdef") == "*** ***"


@pytest.mark.parametrize(
    ("login_body", "reason"),
    [
        (b"[" * 60_000, "Fenix login response is not JSON"),
        (
            b'{"authToken": "tok\\r\\nX-Injected: 1", "x-identity": "id-1"}',
            "Fenix login response's authToken cannot be sent as a header: it is not printable ASCII",
        ),
        (
            b'{"authToken": "t\\u00e9ken-secret", "x-identity": "id-1"}',
            "Fenix login response's authToken cannot be sent as a header: it is not printable ASCII",
        ),
        (
            b'{"authToken": "tok-1", "x-identity": "id\\u0000one"}',
            "Fenix login response's x-identity cannot be sent as a header: it is not printable ASCII",
        ),
    ],
    ids=["nested-too-deeply", "line-break-in-token", "non-ascii-token", "nul-in-identity"],
)
def test_a_malformed_login_answer_is_an_auth_error_that_names_the_field_never_a_crash(
    login_body: bytes, reason: str
) -> None:
    """A login answer that parses to nothing usable (JSON nested past the parser's depth, a token or identity
    that cannot go out as a header) is the AuthError that says so, as on the delivery's path: not a
    RecursionError, ValueError or UnicodeEncodeError out of the send (an internal error that stops a run),
    and no order request leaves with a broken header."""
    paths: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = next(
                (int(v.split(":", 1)[1]) for v in lines if v.lower().startswith("content-length:")), 0
            )
            await reader.readexactly(length)
            paths.append(lines[0].split(" ")[1])
            body = login_body if paths[-1] == "/login" else b""
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        finally:
            writer.close()

    async def main() -> AuthError:
        listener = await asyncio.start_server(handle, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
        auth = FenixSessionAuth(
            login_url=f"{url}/login", username="demo-user", password="demo-pass", api_key="k", store_name="s"
        )
        transport = AiohttpTransport()
        try:
            async with httpx.AsyncClient(auth=auth, transport=transport) as client:
                sender = Sender(client, auth, transport)
                with pytest.raises(AuthError) as caught:
                    await sender.send(
                        "POST", f"{url}/api/v1/orders/1/created", b"{}", {}, success_as_status=True
                    )
                return caught.value
        finally:
            listener.close()

    error = asyncio.run(main())
    assert error.message == reason
    assert error.status == 200 and error.retryable is False
    assert "secret" not in error.render() and "X-Injected" not in error.render()
    assert paths == ["/login"]  # the order never left


def test_a_401_before_a_fresh_login_is_read_only_up_to_the_cap_and_its_connection_closed() -> None:
    """httpx reads a response whole before an auth flow's next request: a 401 whose body never ends (or is
    300 MB) held the re-login until the read timeout, and its connection stayed checked out. The flow reads 64
    KiB of it and closes it; on a pool of one connection the login and the request sent again still go."""
    paths: list[str] = []
    stalled = asyncio.Event()  # set at the end: the stalled 401's handler may finish

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                length = next(
                    (int(v.split(":", 1)[1]) for v in lines if v.lower().startswith("content-length:")), 0
                )
                await reader.readexactly(length)
                paths.append(lines[0].split(" ")[1])
                if paths[-1] == "/login":
                    token = b"token-%d" % paths.count("/login")
                    body = b'{"authToken": "%s", "x-identity": "id-1"}' % token
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                elif len(paths) == 3:  # the second order: 401, 10 MB announced, 200 KB sent, then nothing
                    writer.write(
                        b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 200_000
                    )
                    with contextlib.suppress(ConnectionError):
                        await writer.drain()
                    await stalled.wait()
                    return
                else:
                    writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        finally:
            writer.close()

    async def main() -> list[int]:
        listener = await asyncio.start_server(handle, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
        auth = FenixSessionAuth(
            login_url=f"{url}/login", username="demo-user", password="demo-pass", api_key="k", store_name="s"
        )
        transport = AiohttpTransport(limits=httpx.Limits(max_connections=1))
        try:
            async with httpx.AsyncClient(auth=auth, transport=transport, timeout=5.0) as client:
                # Through httpx and its auth flow, as every request goes when a proxy is configured.
                return [(await client.post(f"{url}/api/v1/orders/{n}/created", content=b"{}")).status_code
                        for n in (1, 2)]  # fmt: skip
        finally:
            stalled.set()
            listener.close()

    assert asyncio.run(main()) == [201, 201]
    assert paths == [
        "/login",
        "/api/v1/orders/1/created",
        "/api/v1/orders/2/created",  # 401, its body stalled
        "/login",
        "/api/v1/orders/2/created",
    ]
