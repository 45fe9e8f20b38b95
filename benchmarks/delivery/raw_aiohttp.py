"""The raw aiohttp loop: one ``aiohttp.ClientSession`` with a connector of CONCURRENCY connections.

One Fenix login, then CONCURRENCY workers posting the prepared payloads and reading each answer whole,
checking it is 201 (see _common.py).

    python benchmarks/delivery/raw_aiohttp.py URL PAYLOADS.json CONCURRENCY
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from _common import LOGIN_HEADERS, encode, main, session_headers


async def post_all(base: str, items: list[tuple[str, Any]], concurrency: int) -> None:
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30.0)
    async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as session:
        async with session.post("/login", headers=LOGIN_HEADERS) as login:
            login.raise_for_status()
            headers = session_headers(await login.json())
        queue = iter(items)

        async def worker() -> None:
            for path, payload in queue:
                async with session.post(path, data=encode(payload), headers=headers) as response:
                    body = await response.read()
                    if response.status != 201:
                        raise SystemExit(f"{path}: HTTP {response.status} {body[:500]!r}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))


if __name__ == "__main__":
    main(post_all)
