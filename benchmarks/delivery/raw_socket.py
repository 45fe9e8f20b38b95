"""The raw asyncio socket loop: HTTP/1.1 written and read by hand on CONCURRENCY keep-alive connections.

No HTTP library at all: each worker owns one ``asyncio.open_connection`` stream, writes the request line,
headers and body, reads the status line and headers up to the blank line and then exactly Content-Length bytes
(the sandbox always sends one), and checks the status is 201. What the machine and the event loop allow: the
limit, not a target (see _common.py).

    python benchmarks/delivery/raw_socket.py URL PAYLOADS.json CONCURRENCY
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

from _common import LOGIN_HEADERS, encode, main, session_headers


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        length = None
        for line in header_lines:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if length is None:
            raise SystemExit(f"{path}: no Content-Length in the answer ({status_line})")
        return int(status_line.split(" ", 2)[1]), await self.reader.readexactly(length)


async def post_all(base: str, items: list[tuple[str, Any]], concurrency: int) -> None:
    url = urlsplit(base)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    connections = []
    for _ in range(concurrency):
        reader, writer = await asyncio.open_connection(host, port)
        connections.append(Connection(reader, writer, url.netloc))
    status, body = await connections[0].request("POST", "/login", LOGIN_HEADERS, b"")
    if status != 200:
        raise SystemExit(f"/login: HTTP {status} {body[:500]!r}")
    headers = session_headers(json.loads(body))
    queue = iter(items)

    async def worker(connection: Connection) -> None:
        for path, payload in queue:
            status, body = await connection.request("POST", path, headers, encode(payload))
            if status != 201:
                raise SystemExit(f"{path}: HTTP {status} {body[:500]!r}")

    try:
        await asyncio.gather(*(worker(connection) for connection in connections))
    finally:
        for connection in connections:
            connection.writer.close()


if __name__ == "__main__":
    main(post_all)
