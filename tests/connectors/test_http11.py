"""The direct path's own HTTP/1.1 connections (connectors/_deliver/_http11.py), against servers written by hand on
127.0.0.1: keep-alive reuse, every framing of an answer, and that no connection is ever lent on while an
answer on it may still come (a timeout, an error, a body left half-read)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from shipmap.connectors import BasicAuth
from shipmap.connectors._deliver._transport import AiohttpTransport, Sender

Answer = Callable[[int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Seen:
    def __init__(self) -> None:
        self.connections = 0
        self.most_at_once = 0
        self.open = 0
        self.requests: list[str] = []  # request lines, in arrival order


@asynccontextmanager
async def server(answer: Answer) -> AsyncIterator[tuple[str, Seen]]:
    """Reads each request whole (Content-Length bodies), then ``answer(number, reader, writer)`` writes
    whatever it likes; ``number`` counts requests from 0 across connections."""
    seen = Seen()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections += 1
        seen.open += 1
        seen.most_at_once = max(seen.most_at_once, seen.open)
        try:
            while not writer.is_closing():
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                length = next(
                    (
                        int(line.split(":", 1)[1])
                        for line in lines
                        if line.lower().startswith("content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                seen.requests.append(lines[0])
                await answer(len(seen.requests) - 1, reader, writer)
        finally:
            seen.open -= 1
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}", seen
    finally:
        listener.close()


def answer_with(status: int, body: bytes) -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body)


@asynccontextmanager
async def direct(limit: int = 8) -> AsyncIterator[Callable[[str], Awaitable[httpx.Response]]]:
    """POSTs on the delivery's direct path (an AiohttpTransport, fixed credentials: headers ready)."""
    transport = AiohttpTransport(limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit))
    auth = BasicAuth("demo-key", "demo-secret")
    async with httpx.AsyncClient(auth=auth, transport=transport) as client:
        sender = Sender(client, auth, transport)

        async def post(url: str) -> httpx.Response:
            return await sender.send("POST", url, b'{"id":1}', {"Content-Type": "application/json"})

        yield post


def test_one_keep_alive_connection_carries_one_request_after_another() -> None:
    async def created(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(answer_with(201, b'{"n":%d}' % number))

    async def main() -> tuple[list[bytes], Seen]:
        bodies = []
        async with server(created) as (url, seen), direct() as post:
            for number in range(5):
                response = await post(f"{url}/orders/{number}?x=1")
                assert response.status_code == 201 and response.reason_phrase == "X"
                bodies.append(await response.aread())
                await response.aclose()
        return bodies, seen

    bodies, seen = asyncio.run(main())
    assert bodies == [b'{"n":%d}' % n for n in range(5)]
    assert seen.connections == 1
    assert seen.requests == [f"POST /orders/{n}?x=1 HTTP/1.1" for n in range(5)]


def test_chunked_informational_and_close_delimited_answers_are_read_whole() -> None:
    async def framed(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if number == 0:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for piece in (b"ab", b"cde", b"f"):
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
                await asyncio.sleep(0.01)
            writer.write(b"0\r\n\r\n")
        elif number == 1:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + answer_with(201, b"after 100"))
        else:  # no length, no chunks: the body ends when the server closes
            writer.write(b"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\nuntil the end")
            await writer.drain()
            writer.close()

    async def main() -> list[tuple[int, bytes]]:
        got = []
        async with server(framed) as (url, _), direct() as post:
            for _ in range(3):
                response = await post(f"{url}/orders")
                got.append((response.status_code, await response.aread()))
                await response.aclose()
        return got

    assert asyncio.run(main()) == [(200, b"abcdef"), (201, b"after 100"), (500, b"until the end")]


def test_no_connection_is_lent_on_while_an_answer_on_it_may_still_come() -> None:
    """A request cancelled by its deadline, a body left half-read and a garbage answer each close their
    connection: the next request gets its own answer on a new one, never the late or leftover bytes."""

    async def tricky(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if number == 0:
            await asyncio.sleep(0.3)  # after the client gave up
            writer.write(answer_with(201, b"late"))
        elif number == 2:
            writer.write(b"HTTP/1.1 500 X\r\nContent-Length: 400000\r\n\r\n" + b"x" * 100_000)
            await writer.drain()
            await asyncio.sleep(0.3)
            writer.write(b"x" * 300_000)
        elif number == 4:
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        else:
            writer.write(answer_with(202, b"mine %d" % number))

    async def main() -> tuple[list[object], Seen]:
        got: list[object] = []
        async with server(tricky) as (url, seen), direct() as post:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await post(f"{url}/a")
            response = await post(f"{url}/b")
            got.append(await response.aread())
            response = await post(f"{url}/c")
            async for piece in response.aiter_bytes():
                got.append(piece[:1])
                break
            await response.aclose()
            response = await post(f"{url}/d")
            got.append(await response.aread())
            with pytest.raises(httpx.RemoteProtocolError):
                await post(f"{url}/e")
            response = await post(f"{url}/f")
            got.append(await response.aread())
        return got, seen

    got, seen = asyncio.run(main())
    assert got == [b"mine 1", b"x", b"mine 3", b"mine 5"]
    assert seen.connections == 4  # a new one after the timeout, the half-read body and the garbage


def test_an_answer_whose_headers_never_end_is_refused_at_the_cap() -> None:
    """The read deadline only fires on silence: a server that keeps sending header lines is refused once they
    pass 64 KiB, and the next request gets its own answer on a new connection."""

    async def endless(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if number == 0:
            writer.write(b"HTTP/1.1 200 X\r\n")
            with contextlib.suppress(ConnectionError):
                for line in range(100_000):  # 3 MB of header lines, if nobody stops reading
                    writer.write(b"X-Filler-%d: %s\r\n" % (line, b"y" * 16))
                    if line % 100 == 0:
                        await writer.drain()
            return
        writer.write(answer_with(202, b"mine %d" % number))

    async def main() -> tuple[str, bytes, Seen]:
        async with server(endless) as (url, seen), direct() as post:
            with pytest.raises(httpx.RemoteProtocolError) as refused:
                await post(f"{url}/a")
            response = await post(f"{url}/b")
            return str(refused.value), await response.aread(), seen

    message, body, seen = asyncio.run(main())
    assert message == "the answer's headers exceed 64 KiB"
    assert body == b"mine 1"
    assert seen.connections == 2


def test_a_connection_the_server_closed_while_idle_is_not_used_again() -> None:
    async def then_close(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(answer_with(201, b"%d" % number))
        await writer.drain()
        writer.close()  # keep-alive was not refused, but the server hangs up once idle

    async def main() -> tuple[list[bytes], Seen]:
        got = []
        async with server(then_close) as (url, seen), direct() as post:
            for _ in range(3):
                response = await post(f"{url}/orders")
                got.append(await response.aread())
                await asyncio.sleep(0.05)  # the close reaches the client while the connection is idle
        return got, seen

    got, seen = asyncio.run(main())
    assert got == [b"0", b"1", b"2"] and seen.connections == 3


def test_the_pool_opens_at_most_its_limit_of_connections() -> None:
    async def slow(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.02)
        writer.write(answer_with(201, b"%d" % number))

    async def main() -> tuple[list[int], Seen]:
        async with server(slow) as (url, seen), direct(limit=2) as post:

            async def one() -> int:
                response = await post(f"{url}/orders")
                await response.aread()
                return response.status_code

            statuses = await asyncio.gather(*(one() for _ in range(8)))
        return statuses, seen

    statuses, seen = asyncio.run(main())
    assert statuses == [201] * 8
    assert seen.most_at_once <= 2 and len(seen.requests) == 8


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_https_on_the_direct_path_checks_the_certificate(tmp_path: Path) -> None:
    """A certificate made for 127.0.0.1: trusted through the transport's ``verify`` it carries the requests;
    with the default trust store it is refused as httpcore refuses it, with httpx.ConnectError."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    make = [
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=127.0.0.1",
    ]
    make += ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(make, check=True, capture_output=True)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                writer.write(answer_with(201, b"over TLS"))
                await writer.drain()
        writer.close()

    async def post(url: str, verify: ssl.SSLContext | bool) -> bytes:
        transport = AiohttpTransport(verify=verify)
        auth = BasicAuth("demo-key", "demo-secret")
        async with httpx.AsyncClient(auth=auth, transport=transport) as client:
            response = await Sender(client, auth, transport).send("POST", url, b"{}", {})
            return await response.aread()

    async def main() -> None:
        listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=served)
        url = f"https://127.0.0.1:{listener.sockets[0].getsockname()[1]}/orders"
        try:
            trusted = ssl.create_default_context(cafile=str(cert))
            assert await post(url, trusted) == b"over TLS"
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await post(url, True)
        finally:
            listener.close()

    asyncio.run(main())


def test_a_delivery_gets_a_whole_success_as_its_status_and_anything_else_as_a_response() -> None:
    # What Deliverer.send asks for: a 2xx that came whole is its status alone, its connection back in the
    # pool; an error answer, or a success whose body is still coming, is a response to read as before.
    async def answers(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if number == 2:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{")
            await writer.drain()
            await headers_read.wait()  # the rest only once the client has the answer's head
            writer.write(b'"a":1}')
        else:
            writer.write(answer_with((201, 503, 0, 202)[number], b'{"n":%d}' % number))

    headers_read = asyncio.Event()

    async def main() -> tuple[list[object], Seen]:
        transport = AiohttpTransport()
        auth = BasicAuth("demo-key", "demo-secret")
        got: list[object] = []
        async with (
            server(answers) as (url, seen),
            httpx.AsyncClient(auth=auth, transport=transport) as client,
        ):
            sender = Sender(client, auth, transport)
            for number in range(4):
                answer = await sender.send("POST", f"{url}/o/{number}", b"{}", {}, success_as_status=True)
                if isinstance(answer, int):
                    got.append(answer)
                else:
                    if number == 2:
                        headers_read.set()
                    got.append((answer.status_code, await answer.aread()))
                    await answer.aclose()
        return got, seen

    got, seen = asyncio.run(main())
    assert got == [201, (503, b'{"n":1}'), (200, b'{"a":1}'), 202]
    assert seen.connections == 1  # every answer read whole: one keep-alive connection throughout


def test_bytes_after_a_whole_answer_are_never_taken_for_the_next_requests_answer() -> None:
    """A server that sends more than one answer to a request (a stray second answer, or the start of one):
    the answer that came whole stands, and the connection is closed, so the next request gets its own answer
    on a new one, not a parse of the leftover bytes glued to it, nor the stray answer's status."""

    async def stray(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if number == 0:
            writer.write(answer_with(201, b"mine 0") + b"HTTP/1.1 409 Conf")  # a stray answer's start
        elif number == 2:
            writer.write(answer_with(201, b"mine 2") + answer_with(409, b"stray"))  # a whole stray answer
        else:
            writer.write(answer_with(202, b"mine %d" % number))

    async def main() -> tuple[list[tuple[int, bytes]], Seen]:
        got = []
        async with server(stray) as (url, seen), direct() as post:
            for name in "abcd":
                response = await post(f"{url}/{name}")
                got.append((response.status_code, await response.aread()))
                await response.aclose()
        return got, seen

    got, seen = asyncio.run(main())
    assert got == [(201, b"mine 0"), (202, b"mine 1"), (201, b"mine 2"), (202, b"mine 3")]
    assert seen.connections == 3  # a new one after each answer that had bytes after it
