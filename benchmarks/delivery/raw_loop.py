"""The floor for shipmap's HTTP client: a minimal httpx async loop posting ready payloads to the sandbox.

One ``httpx.AsyncClient`` with a pool of CONCURRENCY connections, one Fenix login, then CONCURRENCY workers
posting the prepared payloads (JSON-encoded per request, as any client must) and checking each answer is 201.
No mapping, no validation, no journal, no retries, no logging. Prints one JSON line: events, elapsed seconds
(from before the login to the last answer) and this process's CPU seconds.

    python benchmarks/delivery/raw_loop.py URL PAYLOADS.json CONCURRENCY
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import httpx

USERNAME, PASSWORD, API_KEY, STORE = "demo-user", "demo-pass", "demo-api-key", "demo-store"


async def post_all(base: str, items: list[tuple[str, Any]], concurrency: int) -> None:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30.0) as client:
        login = await client.post(
            "/login", headers={"username": USERNAME, "password": PASSWORD, "x-api-key": API_KEY}
        )
        login.raise_for_status()
        session = login.json()
        headers = {
            "store_name": STORE,
            "authToken": session["authToken"],
            "x-api-key": API_KEY,
            "x-identity": session["x-identity"],
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        queue = iter(items)

        async def worker() -> None:
            for path, payload in queue:
                body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
                response = await client.post(path, content=body, headers=headers)
                if response.status_code != 201:
                    raise SystemExit(f"{path}: HTTP {response.status_code} {response.text[:500]}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def main() -> None:
    base, payload_file, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if not base.startswith(("http://127.0.0.1:", "http://localhost:")):
        raise SystemExit(f"refusing to send anywhere but 127.0.0.1: {base}")
    with open(payload_file, encoding="utf-8") as handle:
        items = [(path, payload) for path, payload in json.load(handle)]
    cpu = time.process_time()
    start = time.perf_counter()
    asyncio.run(post_all(base, items, concurrency))
    elapsed = time.perf_counter() - start
    print(json.dumps({"events": len(items), "elapsed_s": elapsed, "cpu_s": time.process_time() - cpu}))


if __name__ == "__main__":
    main()
