"""bench_serve: how fast `shipmap serve` acknowledges signed webhooks, each committed to its inbox first.

    .venv/bin/python benchmarks/bench_serve.py [--quick] [--json FILE]

Three processes on this machine: the sandbox (`shipmap sandbox`, Fenix and DG), `shipmap serve` on the
acme_outfitters config (Shopify source, the ready mappings, journal and inbox on disk, synchronous=normal),
and this one, a load generator that speaks HTTP/1.1 over raw asyncio sockets with prepared requests, so it
costs the measured service as little CPU as possible. The bodies are the real Shopify order webhook
(tests/fixtures/real/shopify/orders_cancelled_webhook.json, byte-identical to orders/create), each with its
own order id, signed with X-Shopify-Hmac-Sha256.

1. **burst**: N webhooks as fast as 32 keep-alive connections take them: accepted per second. The service
   delivers at the same time, in the same process; the inbox absorbs what delivery has not caught up with.
2. **steady**: 200 webhooks per second, paced, for a number of seconds: p50, p99 and max of the time from
   the request's first byte to its 200 (the acknowledgement latency), with delivery running alongside.
3. **catch-up**: how long the service then takes to deliver everything it acknowledged.

Targets (issue 15): >= 1,000 accepted per second; p99 < 50 ms at 200/s.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ACME = REPO / "examples" / "acme_outfitters"
ORDER = json.loads(
    (REPO / "tests" / "fixtures" / "real" / "shopify" / "orders_cancelled_webhook.json").read_text()
)
SECRET = "bench-shopify-secret"
ENTRY = "from shipmap.connectors._cli import entry; entry()"


def requests_for(count: int, start: int, host: str) -> list[bytes]:
    out = []
    for i in range(start, start + count):
        body = json.dumps(dict(ORDER, id=7_000_000 + i, name=f"#B{i}")).encode()
        digest = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()
        head = (
            f"POST /hooks/shopify HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Shopify-Topic: orders/create\r\n"
            f"X-Shopify-Webhook-Id: bench-{i}\r\nX-Shopify-Hmac-Sha256: {digest}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, request: bytes) -> int:
        self.writer.write(request)
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return int(status_line.split()[1])


async def connect(host: str, port: int, count: int) -> list[Connection]:
    return [Connection(*await asyncio.open_connection(host, port)) for _ in range(count)]


async def burst(host: str, port: int, requests: list[bytes], connections: int = 32) -> dict[str, Any]:
    conns = await connect(host, port, connections)
    queue = list(reversed(requests))
    statuses: dict[int, int] = {}

    async def worker(conn: Connection) -> None:
        while queue:
            status = await conn.send(queue.pop())
            statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - started
    for conn in conns:
        conn.writer.close()
    accepted = statuses.get(200, 0)
    return {"sent": len(requests), "accepted": accepted, "statuses": statuses, "seconds": elapsed,
            "accepted_per_second": accepted / elapsed}  # fmt: skip


async def steady(host: str, port: int, requests: list[bytes], rate: float) -> dict[str, Any]:
    conns = await connect(host, port, 16)
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for conn in conns:
        idle.put_nowait(conn)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    late = 0

    async def one(request: bytes) -> None:
        conn = await idle.get()
        began = time.perf_counter()
        status = await conn.send(request)
        latencies.append(time.perf_counter() - began)
        statuses[status] = statuses.get(status, 0) + 1
        idle.put_nowait(conn)

    tasks = []
    start = time.perf_counter()
    for index, request in enumerate(requests):
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.005:
            late += 1
        tasks.append(asyncio.create_task(one(request)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    for conn in conns:
        conn.writer.close()
    latencies.sort()
    return {
        "sent": len(requests),
        "rate_target": rate,
        "rate_achieved": len(requests) / elapsed,
        "statuses": statuses,
        "sent_late_by_the_generator": late,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "max_ms": 1000 * latencies[-1],
    }


def thread_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of the service's main thread (intake: uvicorn, verification, inbox commits) and of its
    other threads (delivery: mapping, journal, sending), from /proc (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    main = other = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        seconds = (int(fields[11]) + int(fields[12])) / tick
        if int(task.name) == pid:
            main += seconds
        else:
            other += seconds
    return main, other


def start(command: list[str], env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def wait_delivered(sandbox_url: str, count: int, limit: float = 600) -> float:
    """Seconds until the sandbox has taken ``count`` order posts. Polled every 2 s: the sandbox's stats
    walk every record it holds, and polling them often would slow the very deliveries being waited for."""
    began = time.perf_counter()
    while delivered(sandbox_url) < count and time.perf_counter() - began < limit:
        time.sleep(2)
    return time.perf_counter() - began


def delivered(sandbox_url: str) -> int:
    import httpx

    stats = httpx.get(f"{sandbox_url}/_sandbox/stats", timeout=10).json()
    return int(stats.get("by_endpoint", {}).get("fenix.orders", 0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the figures here")
    parser.add_argument("--burst", type=int, default=5000, help="webhooks in the burst (default 5000)")
    parser.add_argument("--seconds", type=float, default=15, help="length of the steady phase (default 15)")
    args = parser.parse_args(argv)
    burst_count = 500 if args.quick else args.burst
    steady_seconds = 3 if args.quick else args.seconds
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    # The acme config without its rate limit (200/s, burst 400), which would answer the burst with 429s.
    config = work / "config.yaml"
    config.write_text(
        (ACME / "config.yaml").read_text().replace("    rate_limit: {per_second: 200, burst: 400}\n", "")
    )
    shutil.copy(ACME / "demo.env", work / "demo.env")
    env = {**os.environ, "ACME_SHOPIFY_WEBHOOK_SECRET": SECRET}
    sandbox, sandbox_url = start([sys.executable, "-c", ENTRY, "sandbox", "--port", "0"], env, work)
    env["ACME_SANDBOX_URL"] = sandbox_url
    serve, line = start(
        [
            sys.executable,
            "-c",
            ENTRY,
            "serve",
            str(config),
            "--port",
            "0",
            "--journal",
            str(work / "journal.db"),
            "--inbox",
            str(work / "inbox.db"),
        ],
        env,
        work,
    )
    try:
        url = line.split()[4]
        host, port = url.removeprefix("http://").split(":")
        print(f"bench_serve on {platform.node()} ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}); "
              f"sandbox {sandbox_url}, shipmap serve {url}")  # fmt: skip
        burst_requests = requests_for(burst_count, 0, f"{host}:{port}")
        steady_requests = requests_for(int(200 * steady_seconds), burst_count, f"{host}:{port}")
        cpu_before = thread_cpu(serve.pid)
        first = asyncio.run(burst(host, int(port), burst_requests))
        cpu_after = thread_cpu(serve.pid)
        intake_ms = 1000 * (cpu_after[0] - cpu_before[0]) / max(1, first["accepted"])
        first["intake_cpu_ms_per_webhook"] = intake_ms
        print(f"burst:  {first['accepted']}/{first['sent']} accepted in {first['seconds']:.2f} s = "
              f"{first['accepted_per_second']:.0f} accepted/s (target >= 1000), statuses {first['statuses']}")  # fmt: skip
        print(f"        the service's intake thread used {intake_ms:.2f} ms of CPU per accepted webhook: "
              f"{1000 / intake_ms:.0f} accepted/s per core it has to itself")  # fmt: skip
        behind = first["accepted"] - delivered(sandbox_url)
        caught_up = wait_delivered(sandbox_url, first["accepted"])
        print(f"        {behind} not yet delivered when the burst ended; all delivered {caught_up:.1f} s later"
              f" ({behind / caught_up:.0f} deliveries/s while nothing else arrived)")  # fmt: skip
        second = asyncio.run(steady(host, int(port), steady_requests, 200.0))
        print(f"steady: {second['sent']} at {second['rate_achieved']:.0f}/s: ack latency p50 {second['p50_ms']:.1f} ms, "
              f"p99 {second['p99_ms']:.1f} ms (target < 50), max {second['max_ms']:.1f} ms; statuses {second['statuses']}")  # fmt: skip
        total = first["accepted"] + second["statuses"].get(200, 0)
        after = wait_delivered(sandbox_url, total)
        print(f"        all {delivered(sandbox_url)} delivered {after:.1f} s after the steady phase")
        first["met"] = first["accepted_per_second"] >= 1000
        second["met"] = second["p99_ms"] < 50
        verdict = first["met"] and second["met"]
        print("targets met" if verdict else "targets NOT met")
        if args.json:
            args.json.write_text(
                json.dumps({"burst": first, "steady": second, "catch_up_seconds": caught_up}, indent=2)
            )
    finally:
        for process in (serve, sandbox):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
