"""The aiohttp transport and the delivery's direct path, over real sockets on 127.0.0.1: the same bytes on the
wire as httpx's own transport, the Fenix session's 401 recovery, httpx's exceptions, and streamed bodies."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from shipmap.connectors import BasicAuth, FenixSessionAuth, Sandbox
from shipmap.connectors._deliver._transport import AiohttpTransport, Sender
from test_auth import order_payload, rejected
from test_runtime_support import order_event, write_config

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(answer: Answer, seen: list[dict[str, str]]) -> AsyncIterator[str]:
    """An HTTP/1.1 server written by hand: records each request's headers (names lower-cased), then lets
    ``answer`` write whatever it likes. Yields its base URL."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                lines = head.decode("latin-1").split("\r\n")[1:-2]
                headers = {
                    name.lower(): value.strip() for name, _, value in (x.partition(":") for x in lines)
                }
                await reader.readexactly(int(headers.get("content-length", "0")))
                seen.append(headers)
                await answer(reader, writer)
                if writer.is_closing():
                    return
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


async def created(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    body = b'{"ok":true}'
    writer.write(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n")
    writer.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()


def test_the_direct_path_sends_the_headers_httpx_sends() -> None:
    seen: list[dict[str, str]] = []
    request_headers = {"Content-Type": "application/json", "Idempotency-Key": "key-1"}

    async def main() -> None:
        async with raw_server(created, seen) as url:
            for transport in (AiohttpTransport(), httpx.AsyncHTTPTransport()):
                auth = BasicAuth("demo-key", "demo-secret")
                async with httpx.AsyncClient(
                    auth=auth, headers={"X-Store": "s1"}, transport=transport
                ) as client:
                    response = await Sender(client, auth, transport).send(
                        "POST", f"{url}/orders/1", b'{"id":1}', request_headers
                    )
                    assert response.status_code == 201 and await response.aread() == b'{"ok":true}'
                    await response.aclose()

    asyncio.run(main())
    direct, through_httpx = seen
    assert direct == through_httpx
    assert direct["authorization"].startswith("Basic ") and direct["idempotency-key"] == "key-1"
    assert {"host", "user-agent", "accept", "accept-encoding", "x-store", "content-length"} <= set(direct)


def test_an_expired_fenix_token_on_the_direct_path_means_one_login_and_a_resend(sandbox: Sandbox) -> None:
    auth = FenixSessionAuth(
        login_url=f"{sandbox.url}/login",
        username="demo-user",
        password="demo-pass",
        api_key="demo-api-key",
        store_name="demo-store",
    )
    statuses: list[int] = []

    async def main() -> None:
        transport = AiohttpTransport()
        async with httpx.AsyncClient(auth=auth, transport=transport) as client:
            sender = Sender(client, auth, transport)

            async def post(number: int) -> None:
                order_id = str(18879048253000 + number)
                body = json.dumps(order_payload(order_id)).encode()
                url = f"{sandbox.url}/api/v1/orders/{order_id}/created"
                response = await sender.send("POST", url, body, {"Content-Type": "application/json"})
                statuses.append(response.status_code)
                await response.aclose()

            await post(0)  # logs in through the auth flow: no headers are ready yet
            assert auth.ready_headers() is not None
            await post(1)  # the direct path
            sandbox.expire_tokens()
            await asyncio.gather(*(post(n) for n in range(2, 10)))  # eight 401s, one login, eight resends

    asyncio.run(main())
    assert statuses == [201] * 10
    assert auth.logins == 2 and sandbox.stats()["by_endpoint"]["fenix.login"] == 2
    assert len(sandbox.requests(endpoint="fenix.orders")) == 10
    assert rejected(sandbox, "fenix.orders", 401) == 8  # each expired token was sent once, on the direct path


def test_aiohttp_failures_are_the_httpx_errors_httpcore_raises() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async def send(url: str, timeout: httpx.Timeout) -> None:
        transport = AiohttpTransport()
        async with httpx.AsyncClient(transport=transport, timeout=timeout) as client:
            await Sender(client, BasicAuth("demo-key", "demo-secret"), transport).send("POST", url, b"{}", {})

    async def main() -> None:
        seen: list[dict[str, str]] = []
        async with raw_server(hang_up, seen) as url:
            with pytest.raises(httpx.RemoteProtocolError):
                await send(url, httpx.Timeout(5.0))
        async with raw_server(never_answer, seen) as url:
            with pytest.raises(httpx.ReadTimeout):
                await send(url, httpx.Timeout(5.0, read=0.2))
        closed = url  # that server is gone: nothing listens on its port any more
        with pytest.raises(httpx.ConnectError):
            await send(closed, httpx.Timeout(5.0))

    asyncio.run(main())


def test_a_body_that_does_not_come_with_the_headers_is_streamed() -> None:
    chunk, chunks = b"x" * 65536, 64  # 4 MB, sent in pieces with pauses

    async def slow_large(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: %d\r\n\r\n" % (len(chunk) * chunks)
        )
        for _ in range(chunks):
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.01)

    read: list[int] = []

    async def main() -> None:
        seen: list[dict[str, str]] = []
        async with raw_server(slow_large, seen) as url:
            transport = AiohttpTransport()
            async with httpx.AsyncClient(transport=transport) as client:
                response = await Sender(client, BasicAuth("demo-key", "demo-secret"), transport).send(
                    "POST", url, b"{}", {}
                )
                assert response.status_code == 500
                async for piece in response.aiter_bytes():
                    read.append(len(piece))
                    if sum(read) >= 100_000:
                        break
                await response.aclose()

    asyncio.run(main())
    assert 100_000 <= sum(read) < len(chunk) * chunks


def test_an_httpx_client_on_the_transport_sends_streamed_bodies_and_gets_httpx_responses() -> None:
    seen: list[dict[str, str]] = []

    async def body() -> AsyncIterator[bytes]:
        yield b'{"id":'
        yield b"1}"

    async def main() -> Any:
        async with (
            raw_server(created, seen) as url,
            httpx.AsyncClient(transport=AiohttpTransport()) as client,
        ):
            response = await client.post(url, content=body())
            return response.status_code, response.json(), response.reason_phrase

    assert asyncio.run(main()) == (201, {"ok": True}, "Created")
    assert seen[0].get("transfer-encoding") == "chunked"


def test_a_plain_request_from_httpx_takes_the_direct_path_with_the_headers_httpx_sends() -> None:
    # The Fenix login: a POST with an empty body, through the client and its auth flow, not through Sender.
    seen: list[dict[str, str]] = []
    login_headers = {"username": "demo-user", "password": "demo-pass", "x-api-key": "demo-api-key"}
    opened: list[object] = []

    async def main() -> None:
        async with raw_server(created, seen) as url:
            for transport in (AiohttpTransport(), httpx.AsyncHTTPTransport()):
                async with httpx.AsyncClient(transport=transport, headers={"X-Store": "s1"}) as client:
                    response = await client.post(f"{url}/login", headers=login_headers)
                    assert response.status_code == 201 and response.json() == {"ok": True}
                    assert response.request.url == f"{url}/login"
                    if isinstance(transport, AiohttpTransport):
                        opened.append(transport._session)  # aiohttp's, made only when it carries a request

    asyncio.run(main())
    direct, through_httpx = seen
    assert direct == through_httpx and direct["content-length"] == "0"
    assert opened == [None]


def test_a_run_on_http_never_imports_aiohttp(tmp_path: Path, sandbox: Sandbox) -> None:
    # Its import costs ~0.1 s of CPU; the login and the deliveries all go on the direct path.
    config = write_config(tmp_path, sandbox.url)
    events = tmp_path / "events.ndjson"
    events.write_text("".join(json.dumps(order_event(number)) + "\n" for number in range(3)))
    probe = (
        "import sys; from shipmap.connectors._cli import main;"
        f"code = main(['run', {str(config)!r}, '--input', {str(events)!r}, '--no-progress']);"
        "print(code, sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'yarl')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.stdout.strip().splitlines()[-1] == "0 []", done.stdout + done.stderr
    assert sandbox.stats()["by_endpoint"] == {"fenix.login": 1, "fenix.orders": 3}
