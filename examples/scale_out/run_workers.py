"""Three `shipmap run` workers share one PostgreSQL journal; one is killed with SIGKILL mid-run and started again.

    .venv/bin/python examples/scale_out/run_workers.py [--postgres URL] [--orders 2400] [--workers 3] [--keep]

1. creates a database on the PostgreSQL server at --postgres (default: the one `make postgres` starts, whose
   URL is in .postgres-url) and brings it to the journal's schema with `shipmap journal migrate`;
2. starts the sandbox (shipmap.connectors.Sandbox) on a free port of 127.0.0.1;
3. writes N Shopify orders (the real REST sample from tests/fixtures/real, ids and names varied), one share per
   worker, as each host of a real deployment would get its own input;
4. starts the workers together: `shipmap run config.yaml --input share-K.ndjson`, each a process of its own;
5. once the sandbox has accepted a quarter of the orders, kills worker 1 with SIGKILL: what it had journaled
   and not yet marked delivered stays `pending`, under its leases;
6. starts worker 1 again on the same share, as a supervisor's restart would: it skips what the journal records as
   delivered, and its pending deliveries are sent once their leases lapse (by it, or by a worker still waiting
   for others);
7. checks: every order arrived; an order that arrived twice was in flight at the kill, and both copies carried
   the same Idempotency-Key (the endpoint can tell them apart from a new order); the journal holds every
   delivery as delivered; the workers together kept to the connection's shared max_rate.

Exit code 0 when the check passes, 1 when it does not, 2 without a PostgreSQL server. The database is dropped
at the end unless --keep. The workers' logs and summaries are in --state (default examples/scale_out/.state).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import yaml
from shipmap.connectors import Journal, Sandbox

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CONFIG = HERE / "config.yaml"
ORDER = REPO / "tests" / "fixtures" / "real" / "shopify" / "order_rest_get_with_fulfillment.json"
SHIPMAP = Path(sys.executable).with_name("shipmap")
MAX_RATE = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))["connections"]["fenix"]["max_rate"]
DEADLINE_S = 300.0  # for any one wait: the workers, the sandbox's count before the kill


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", metavar="URL", help="a PostgreSQL server URL (default: .postgres-url)")
    parser.add_argument("--orders", type=int, default=2400, help="how many orders (default 2400)")
    parser.add_argument("--workers", type=int, default=3, help="how many workers (default 3)")
    parser.add_argument("--state", type=Path, default=HERE / ".state", help="inputs and logs (emptied)")
    parser.add_argument("--keep", action="store_true", help="keep the database (its URL is printed)")
    args = parser.parse_args(argv)
    if args.workers < 2 or args.orders < 4 * args.workers:
        parser.error("give at least 2 workers and 4 orders per worker")
    server = args.postgres or _made_server()
    if server is None:
        print("no PostgreSQL server: `make postgres` starts one, or give --postgres URL", file=sys.stderr)
        return 2

    import psycopg  # the [postgresql] extra, as for any PostgreSQL journal

    name = f"shipmap_scale_out_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    database = server.rsplit("/", 1)[0] + "/" + name
    try:
        return _demo(args, database)
    finally:
        if args.keep:
            print(f"the journal's database is kept: {_display(database)}")
        else:
            with psycopg.connect(server, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _demo(args: argparse.Namespace, database: str) -> int:
    shutil.rmtree(args.state, ignore_errors=True)
    args.state.mkdir(parents=True)
    shares = _write_shares(args.state, args.orders, args.workers)
    _cli("journal", "migrate", database)
    print(f"{args.orders} Shopify orders in {args.workers} shares; the journal: {_display(database)}")
    with Sandbox() as sandbox:
        environ = {**os.environ, "SCALE_SANDBOX_URL": sandbox.url, "SCALE_JOURNAL_URL": database}
        print(
            f"sandbox {sandbox.url}; {args.workers} workers start, concurrency 4 each, max_rate {MAX_RATE}/s shared"
        )
        workers = [_Worker(number, share, args.state, environ) for number, share in enumerate(shares, 1)]
        try:
            _wait_for(lambda: _accepted(sandbox) >= args.orders // 4, "a quarter of the orders to arrive")
            victim = workers[0]
            victim.kill()
            at_kill = _accepted(sandbox)
            print(
                f"worker 1 killed with SIGKILL after {at_kill} orders had arrived; started again on its share"
            )
            victim.start()
            codes = [worker.wait() for worker in workers]
        finally:
            for worker in workers:
                worker.stop()
        recorded = sandbox.requests(endpoint="fenix.orders")
    with Journal(database, readonly=True) as journal:
        counts = journal.counts()
    for worker in workers:
        print(f"  worker {worker.number}: exit {worker.codes}, {worker.summary_line()}")
    return _check(args.orders, recorded, counts, codes)


class _Worker:
    """One `shipmap run` process on its share; started again by ``start`` after a kill."""

    def __init__(self, number: int, share: Path, state: Path, environ: dict[str, str]) -> None:
        self.number, self.share, self.environ = number, share, environ
        self.out = state / f"worker-{number}.out"
        self.log = state / f"worker-{number}.log"
        self.codes: list[int] = []  # the exit code of each of its processes, in order
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with self.out.open("ab") as out, self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(SHIPMAP),
                    "run",
                    str(CONFIG),
                    "--input",
                    str(self.share),
                    "--no-progress",
                    "--workers",
                    "0",
                ],
                stdout=out,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=self.environ,
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.codes.append(self.process.wait(timeout=DEADLINE_S))

    def wait(self) -> int:
        assert self.process is not None
        code = self.process.wait(timeout=DEADLINE_S)
        self.codes.append(code)
        return code

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=DEADLINE_S)

    def summary_line(self) -> str:
        lines = [line for line in _read(self.out).splitlines() if line.startswith("events ")]
        return lines[-1] if lines else "no summary"


def _check(orders: int, recorded: list[Any], counts: dict[str, int], codes: list[int]) -> int:
    arrivals: defaultdict[str, list[str | None]] = defaultdict(list)
    for request in recorded:
        arrivals[request.order_id or ""].append(request.headers.get("idempotency-key"))
    repeated = {order: keys for order, keys in arrivals.items() if len(keys) > 1}
    same_key = all(len(set(keys)) == 1 and keys[0] for keys in repeated.values())
    per_second = Counter(datetime.fromisoformat(r.received_at).replace(microsecond=0) for r in recorded)
    busiest = max(per_second.values(), default=0)
    print(f"arrived: {len(arrivals)} of {orders} orders, {len(recorded)} requests; {len(repeated)} orders twice"
          f" (in flight at the kill), {'each with the same Idempotency-Key' if same_key else 'NOT with one key'}")  # fmt: skip
    print(f"the journal: {', '.join(f'{state} {count}' for state, count in sorted(counts.items()))}")
    print(f"the busiest second: {busiest} requests (max_rate {MAX_RATE}/s, shared by the workers)")
    ok = (
        len(arrivals) == orders
        and same_key
        and counts == {"delivered": orders}
        and all(code == 0 for code in codes)
    )
    print(
        "OK: every order arrived, none lost to the kill" if ok else "FAILED: see above and the workers' logs"
    )
    return 0 if ok else 1


def _write_shares(state: Path, orders: int, workers: int) -> list[Path]:
    """``orders`` copies of the real REST order, ids 1000000000.. and names #100000.., dealt out in turn."""
    document = json.loads(ORDER.read_text(encoding="utf-8"))
    shares = [state / f"share-{number}.ndjson" for number in range(1, workers + 1)]
    handles: list[IO[str]] = [share.open("w", encoding="utf-8") for share in shares]
    try:
        for index in range(orders):
            document["order"]["id"] = 1_000_000_000 + index
            document["order"]["name"] = f"#{100_000 + index}"
            handles[index % workers].write(json.dumps(document, separators=(",", ":")) + "\n")
    finally:
        for handle in handles:
            handle.close()
    return shares


def _accepted(sandbox: Sandbox) -> int:
    return int(sandbox.stats()["by_endpoint"].get("fenix.orders", 0))


def _wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what} after {DEADLINE_S:.0f} s")
        time.sleep(0.02)


def _cli(*arguments: str) -> None:
    result = subprocess.run([str(SHIPMAP), *arguments], capture_output=True, text=True, timeout=DEADLINE_S)
    if result.returncode != 0:
        raise SystemExit(f"shipmap {arguments[0]} {arguments[1]} failed: {result.stderr.strip()}")


def _made_server() -> str | None:
    made = REPO / ".postgres-url"
    return made.read_text(encoding="utf-8").splitlines()[0] if made.is_file() else None


def _display(url: str) -> str:
    """The URL without its password, as shipmap's own output shows one."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""


if __name__ == "__main__":
    sys.exit(main())
