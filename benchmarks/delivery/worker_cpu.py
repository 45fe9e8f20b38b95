"""The mapping worker's CPU per event, alone: what ``shipmap run``'s worker process does, without the network.

    .venv/bin/python benchmarks/delivery/worker_cpu.py [--events 5000] [--rounds 3] [--profile]

Runs the worker's own loop (``_intake._producers.produce_packed``: read the NDJSON input, route, map with the
checked generated code, encode the payload, derive the keys, pack) over the delivery benchmark's events (the
real Shopify order with varying ids) with the delivery benchmark's config, pickles each batch as the pipe
does, then unpickles and unpacks them as the main process does. Prints CPU ms per event for the worker's side
and for the main process's side of the pipe, and the bytes per event that cross it. Nothing is sent: the
connection's address is never contacted. On a busy machine, CPU per event is the figure to read; a real run
adds what sharing two cores with the main process costs (``bench_delivery.py`` measures that, split by process
through ``run_cpu.py``). ``--profile`` prints the worker loop's cProfile, top 30 by own time.
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _bench import ORDER_MAPPING
from bench_delivery import CONFIG, CREDENTIALS
from bench_memory import generate


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    arguments.add_argument("--events", type=int, default=5000, help="events per round (default 5000)")
    arguments.add_argument("--rounds", type=int, default=3, help="rounds, each in this process (default 3)")
    arguments.add_argument("--profile", action="store_true", help="print a cProfile of one more round")
    options = arguments.parse_args()

    from shipmap.connectors import Runtime
    from shipmap.connectors._intake._producers import produce_packed
    from shipmap.connectors._map._steps import unpack
    from shipmap.engine import read_documents

    with tempfile.TemporaryDirectory(prefix="shipmap-worker-cpu-") as scratch:
        directory = Path(scratch)
        events = directory / "events.ndjson"
        generate(events, options.events)
        config = directory / "shipmap.yaml"
        config.write_text(
            CONFIG.format(
                url="http://127.0.0.1:9", mapping=ORDER_MAPPING, concurrency=8, journal="journal.db"
            )
        )
        runtime = Runtime.from_config(config, environ=CREDENTIALS)

        def worker_side() -> list[bytes]:
            return [
                pickle.dumps(("batch", batch), protocol=pickle.HIGHEST_PROTOCOL)
                for batch in produce_packed(runtime.mapper, read_documents([events]))
            ]

        worker_side()  # the first events write each target's checked code: a start-up cost, left out
        rows = []
        for _ in range(options.rounds):
            start = time.process_time()
            messages = worker_side()
            worker = time.process_time() - start
            start = time.process_time()
            for message in messages:
                _, batch = pickle.loads(message)
                for packed in batch:
                    unpack(packed)
            main_side = time.process_time() - start
            rows.append((worker, main_side, sum(len(message) for message in messages)))
        if options.profile:
            import cProfile
            import pstats

            profile = cProfile.Profile()
            profile.runcall(worker_side)
            pstats.Stats(profile).sort_stats("tottime").print_stats(30)
    count = options.events
    report = {
        "events": count,
        "rounds": options.rounds,
        "worker_cpu_ms_per_event": [round(1000 * worker / count, 4) for worker, _, _ in rows],
        "main_unpack_cpu_ms_per_event": [round(1000 * main_side / count, 4) for _, main_side, _ in rows],
        "pipe_bytes_per_event": round(rows[0][2] / count),
        "worker_median_ms": round(1000 * statistics.median(worker for worker, _, _ in rows) / count, 4),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
