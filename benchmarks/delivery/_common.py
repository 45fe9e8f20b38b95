"""What every raw loop shares: its arguments, the Fenix credentials, the payloads and the JSON line it prints.

Each raw loop posts the very payloads ``shipmap run`` produces (computed beforehand by bench_delivery.py),
JSON-encoding each one per request as any client must, at CONCURRENCY requests in flight, after one Fenix
login. No mapping, no validation, no journal, no retries, no logging: the floor for its HTTP library.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

USERNAME, PASSWORD, API_KEY, STORE = "demo-user", "demo-pass", "demo-api-key", "demo-store"
LOGIN_HEADERS = {"username": USERNAME, "password": PASSWORD, "x-api-key": API_KEY}


def session_headers(session: dict[str, str]) -> dict[str, str]:
    """The headers of every order call after a login (the login answer's authToken and x-identity)."""
    return {
        "store_name": STORE,
        "authToken": session["authToken"],
        "x-api-key": API_KEY,
        "x-identity": session["x-identity"],
        "Content-Type": "application/json",
        "Accept": "application/json",
    }


def encode(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def main(post_all: Callable[[str, list[tuple[str, Any]], int], Coroutine[Any, Any, None]]) -> None:
    """``python LOOP.py URL PAYLOADS.json CONCURRENCY``: run ``post_all`` and print events, elapsed seconds
    (from before the login to the last answer) and this process's CPU seconds as one JSON line."""
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
