"""A run's journal write pattern alone: CPU (user, system) and bytes written per delivery.

    python benchmarks/journal/writes.py N PAGE_SIZE      (PAGE_SIZE 0: SQLite's default)

N deliveries of a 5.2 KB source and a 2.6 KB payload, settled in batches of 16 (sources and pending rows in one
transaction, with the marks waiting), delivered marks flushed every FLUSH (default 8). Environment switches for
experiments: NOMARK=1 (no delivered marks), NOSRC=1 with NOFK=1 (no sources), CKPT=1 (a checkpoint every 400).
Bytes written are the kernel's count for this process (/proc/self/io write_bytes: WAL, checkpoints).
"""

import hashlib
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

from shipmap.connectors._store._journal import Journal

N = int(sys.argv[1])
PAGE = int(sys.argv[2])
rng = random.Random(1)


def text(size: int, i: int) -> str:
    body = {"i": i, "pad": "".join(rng.choice("abcdefghij klmnop") for _ in range(size))}
    return json.dumps(body)


sources = [text(5200, i) for i in range(N)]
payloads = [text(2600, i) for i in range(N)]


def io() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes"):
            return int(line.split()[1])
    return 0


with tempfile.TemporaryDirectory(dir="/tmp") as d:
    path = Path(d) / "j.db"
    if PAGE:
        import sqlite3

        c = sqlite3.connect(path)
        c.execute(f"PRAGMA page_size={PAGE}")
        c.execute("VACUUM")
        c.close()
    j = Journal(path, exclusive=True)
    if os.environ.get("NOFK"):
        j._db.execute("PRAGMA foreign_keys=OFF")
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    w0 = io()
    t0 = time.perf_counter()
    marks = []
    for start in range(0, N, 16):
        idx = range(start, min(N, start + 16))
        rows = []
        digests = []
        for i in idx:
            dg = hashlib.sha256(sources[i].encode()).hexdigest()
            digests.append(dg)
            key = hashlib.sha256(f"k{i}".encode()).hexdigest()[:32]
            rows.append(
                (
                    key,
                    dg,
                    "m",
                    "order",
                    "fenix",
                    f"sm-{key}",
                    "POST",
                    "http://x/api/v1/orders",
                    payloads[i],
                    f"f:{i}",
                )
            )

        def body(idx=idx, digests=digests, rows=rows):
            if not os.environ.get("NOSRC"):
                j.put_sources(list(zip(digests, (sources[i] for i in idx), strict=True)))
            j.mark_pending_many(rows)
            if marks and not os.environ.get("NOMARK"):
                j.mark_delivered_many(list(marks))

        j.run_transaction(body)
        marks.clear()
        for r in rows:
            marks.append((r[0], 201, 1))
            if len(marks) >= int(os.environ.get("FLUSH", "8")):
                if not os.environ.get("NOMARK"):
                    j.mark_delivered_many(list(marks))
                marks.clear()
        if os.environ.get("CKPT") and start % 400 == 0:
            j._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    if marks:
        j.mark_delivered_many(marks)
    t1 = time.perf_counter()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    w1 = io()
    size = sum(f.stat().st_size for f in Path(d).iterdir())
    print(
        f"page {PAGE or 'default'}: cpu {(r1.ru_utime - r0.ru_utime) / N * 1e3:.3f} user + {(r1.ru_stime - r0.ru_stime) / N * 1e3:.3f} sys ms/delivery,"
        f" wall {(t1 - t0) / N * 1e3:.3f}, written {(w1 - w0) / N / 1024:.1f} KiB/delivery, files {size / N / 1024:.1f} KiB/delivery"
    )
    j.close()
