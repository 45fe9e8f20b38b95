"""The raw httpx loop: one ``httpx.AsyncClient`` (httpcore and h11 underneath, httpx's default transport).

A pool of CONCURRENCY connections, one Fenix login, then CONCURRENCY workers posting the prepared payloads and
checking each answer is 201 (see _common.py).

    python benchmarks/delivery/raw_loop.py URL PAYLOADS.json CONCURRENCY
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from _common import LOGIN_HEADERS, encode, main, session_headers


async def post_all(base: str, items: list[tuple[str, Any]], concurrency: int) -> None:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30.0) as client:
        login = await client.post("/login", headers=LOGIN_HEADERS)
        login.raise_for_status()
        headers = session_headers(login.json())
        queue = iter(items)

        async def worker() -> None:
            for path, payload in queue:
                response = await client.post(path, content=encode(payload), headers=headers)
                if response.status_code != 201:
                    raise SystemExit(f"{path}: HTTP {response.status_code} {response.text[:500]}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))


if __name__ == "__main__":
    main(post_all)
