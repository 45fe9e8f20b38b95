"""The main process's send path alone: CPU per request of ``Deliverer.send``, against the sandbox.

    .venv/bin/python benchmarks/delivery/send_cpu.py [--events 2000] [--rounds 5]

Maps the delivery benchmark's events (the real Shopify order with varying ids) as ``shipmap run``'s worker
does, then sends their requests with ``Deliverer.send`` (breaker, deadline, auth headers, the direct HTTP/1.1
path, the answer) at concurrency 8, after one Fenix login, against ``shipmap sandbox`` in its own process.
No journal, no log line, no pipe: what ``DeliveryWorkers.work`` spends inside ``send``. Prints this process's
CPU per request (user and system) for each round, then the median and the fastest: on a busy machine the
fastest round is the figure to compare between checkouts, run one after another.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _bench import ORDER_MAPPING
from bench_delivery import CONFIG, CREDENTIALS, SandboxProcess
from bench_memory import generate

CONCURRENCY = 8


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    arguments.add_argument("--events", type=int, default=2000, help="requests per round (default 2000)")
    arguments.add_argument("--rounds", type=int, default=5, help="rounds, each in this process (default 5)")
    options = arguments.parse_args()

    from shipmap.connectors import Runtime
    from shipmap.connectors._deliver._delivery import Deliverer
    from shipmap.connectors._deliver._request import OutboundRequest
    from shipmap.connectors._intake._producers import produce_packed
    from shipmap.connectors._map._steps import Event, Job, unpack
    from shipmap.engine import read_documents

    sandbox = SandboxProcess()
    try:
        with tempfile.TemporaryDirectory(prefix="shipmap-send-cpu-") as scratch:
            directory = Path(scratch)
            events = directory / "events.ndjson"
            generate(events, options.events)
            config = directory / "shipmap.yaml"
            config.write_text(
                CONFIG.format(url=sandbox.url, mapping=ORDER_MAPPING, concurrency=CONCURRENCY, journal="j.db")
            )
            runtime = Runtime.from_config(config, environ=CREDENTIALS)
            requests: list[OutboundRequest] = []
            for batch in produce_packed(runtime.mapper, read_documents([events])):
                for packed in batch:
                    item = unpack(packed)
                    if isinstance(item, Event):
                        requests.extend(step.request for step in item.steps if isinstance(step, Job))

            async def one_round() -> tuple[float, float]:
                deliverer = Deliverer(
                    runtime.connections, runtime.auths, runtime.config.delivery, runtime.redactor
                )
                async with deliverer:
                    first = await deliverer.send(requests[0])  # the login, outside the measure
                    assert first.delivered, first
                    queue = list(reversed(requests[1:]))

                    async def sender() -> None:
                        while queue:
                            outcome = await deliverer.send(queue.pop())
                            assert outcome.delivered, outcome

                    before = resource.getrusage(resource.RUSAGE_SELF)
                    await asyncio.gather(*(sender() for _ in range(CONCURRENCY)))
                    after = resource.getrusage(resource.RUSAGE_SELF)
                sent = len(requests) - 1
                return (after.ru_utime - before.ru_utime) / sent, (after.ru_stime - before.ru_stime) / sent

            totals = []
            for number in range(options.rounds):
                sandbox.call("POST", "/_sandbox/reset")
                user, system = asyncio.run(one_round())
                totals.append(user + system)
                print(f"round {number + 1}: {1e6 * (user + system):.1f} us/request ({1e6 * user:.1f} user)")
            print(
                f"send path: {1e6 * statistics.median(totals):.1f} us/request median, {1e6 * min(totals):.1f} "
                f"fastest, {len(requests) - 1} requests a round at concurrency {CONCURRENCY}"
            )
    finally:
        sandbox.stop()


if __name__ == "__main__":
    main()
