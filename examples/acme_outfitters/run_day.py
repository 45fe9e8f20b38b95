"""`make run`: one day of Acme Outfitters' webhooks, delivered end to end to a local sandbox of Fenix and DG.

    .venv/bin/python examples/acme_outfitters/run_day.py [--faults '5xx=0.2,429=0.1,seed=7'] [--hold 60]

1. starts the sandbox (shipmap.connectors.Sandbox) on a free port of 127.0.0.1;
2. loads config.yaml (the ready mappings, routed by webhook topic; credentials from demo.env, the sandbox URL
   from ACME_SANDBOX_URL, which this script sets) and plans the day: the exact requests events.ndjson should
   cause (the dry run);
3. runs it for real: route, map, journal, deliver, retry;
4. prints the run summary and what the sandbox's recorder saw, checks that every planned request arrived
   exactly once and nothing else did, and writes the recorded requests (credentials masked) to
   out/arrived.jsonl.

Exit code 0 when every event's payloads arrived exactly once, 1 otherwise. The journal is
examples/acme_outfitters/.shipmap/journal.db (git-ignored), deleted at the start so every run delivers the whole
day again; after a run, `shipmap dead-letters examples/acme_outfitters/config.yaml` reads it. With --faults, 5xx
and 429 answers are retried and the check stays exact; drop and slow faults can make a retried request arrive
twice (shipmap delivers at least once), and the check reports those.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shipmap.connectors import RedactingFilter, RunSummary, Runtime, Sandbox
from shipmap.engine import read_documents

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "config.yaml"
EVENTS = HERE / "events.ndjson"
MASKED_HEADERS = ("username", "store_name")  # the sandbox masks passwords, keys and tokens; these too

Request = tuple[str, str, str]  # method, path, canonical JSON body


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", metavar="SPEC", help="sandbox fault plan, e.g. '5xx=0.2,429=0.1,seed=7'")
    parser.add_argument("--hold", type=float, default=0, metavar="SECONDS", help="keep the sandbox up after")
    parser.add_argument("--events", type=Path, default=EVENTS, help="the events (default: events.ndjson)")
    parser.add_argument("--out", type=Path, default=HERE / "out", help="where arrived.jsonl goes")
    parser.add_argument("--state", type=Path, default=HERE / ".shipmap", help="journal directory (emptied)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )

    shutil.rmtree(args.state, ignore_errors=True)  # a fresh journal: a rerun delivers the whole day again
    events = list(read_documents(args.events))
    topics = Counter(
        json.loads(line)["topic"] for line in args.events.read_text(encoding="utf-8").splitlines()
    )
    print(f"Acme Outfitters, Thursday 2024-11-14: {len(events)} webhook events from {show(args.events)}")
    print("  " + ", ".join(f"{topic} {count}" for topic, count in sorted(topics.items())))

    with Sandbox(faults=args.faults) as sandbox:
        runtime = Runtime.from_config(
            CONFIG,
            environ={**os.environ, "ACME_SANDBOX_URL": sandbox.url},
            journal=args.state / "journal.db",
        )
        for handler in logging.getLogger().handlers:
            handler.addFilter(RedactingFilter(runtime.redactor))
        faults = f"; faults {args.faults}" if args.faults else ""
        print(f"sandbox {sandbox.url} (Fenix and Digital Genius, demo credentials from demo.env{faults})\n")

        planned: Counter[Request] = Counter()
        not_sent = []
        for entry in runtime.plan(events):
            if entry.action == "send":
                assert entry.method is not None and entry.url is not None
                planned[(entry.method, urlsplit(entry.url).path, canonical(entry.body))] += 1
            else:
                not_sent.append(entry)
        summary = runtime.run(events)
        recorded = sandbox.requests()
        stats = sandbox.stats()
        if args.hold > 0:
            print(
                f"holding the sandbox for {args.hold:g} s: {sandbox.url}/_sandbox/requests  {sandbox.url}/_sandbox/stats"
            )
            time.sleep(args.hold)

    print_summary(summary)
    print_recorder(stats, planned_repeats=sum(count - 1 for count in planned.values()))
    arrived: Counter[Request] = Counter(
        (r.method, r.path, canonical(r.body)) for r in recorded if r.endpoint != "fenix.login"
    )
    missing, extra = planned - arrived, arrived - planned
    ok = summary.ok and summary.unrouted == 0 and not not_sent and not missing and not extra
    if missing or extra:
        verdict = f"{sum(missing.values())} missing, {sum(extra.values())} unexpected (a retry the server saw twice?)"
    elif not ok:
        verdict = f"but {len(not_sent) or summary.dead + summary.unrouted} not sent"
    else:
        verdict = "each exactly once. OK"
    print(
        f"\ncheck: {sum(planned.values())} requests planned from {len(events)} events, "
        f"{sum(arrived.values())} arrived: {verdict}"
    )
    for entry in not_sent:
        label = f"{entry.mapping}.{entry.target}" if entry.target else f"{entry.mapping or ''} (mapping)"
        reason = (entry.reason or "").splitlines()[0] if entry.reason else ""
        print(f"  not sent: {show(Path(entry.origin or '-'))} {label}: {entry.action}: {reason}")
    for method, path, _ in list(missing)[:10]:
        print(f"  missing: {method} {path}")
    for method, path, _ in list(extra)[:10]:
        print(f"  unexpected: {method} {path}")

    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / "arrived.jsonl"
    with target.open("w", encoding="utf-8") as handle:
        for request in recorded:
            handle.write(json.dumps(masked(request.to_dict()), ensure_ascii=False) + "\n")
    print(f"wrote the {len(recorded)} recorded requests (credentials masked) to {show(target)}")
    print(f"the journal: shipmap dead-letters --journal {show(args.state / 'journal.db')}")
    print("OK: every event arrived" if ok else "FAILED: see above")
    return 0 if ok else 1


def canonical(body: Any) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def masked(record: dict[str, Any]) -> dict[str, Any]:
    headers = dict(record.get("headers") or {})
    for name in MASKED_HEADERS:
        if name in headers:
            headers[name] = "***"
    return {**record, "headers": headers}


def show(path: Path) -> str:
    """Relative to the current directory when below it (make run runs from the repository root)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def print_summary(summary: RunSummary) -> None:
    rows = [("target", "delivered", "retried", "dead", "skipped", "p50", "p95")]
    for stats in sorted(summary.targets.values(), key=lambda s: s.label):
        p = stats.percentiles()
        rows.append(
            (
                stats.label,
                str(stats.delivered),
                str(stats.retried),
                str(stats.dead),
                str(stats.skipped),
                ms(p["p50"]),
                ms(p["p95"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(
                cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
            )
        )
    print(
        f"delivered {summary.delivered}, retried {summary.retried}, dead {summary.dead}; events {summary.events}, "
        f"unrouted {summary.unrouted}, rejected {summary.rejected}; in {summary.elapsed:.2f} s"
    )


def print_recorder(stats: dict[str, Any], *, planned_repeats: int) -> None:
    print("\nwhat the sandbox accepted, by endpoint (its recorder):")
    kinds = stats.get("by_kind", {})
    for endpoint, count in sorted(stats.get("by_endpoint", {}).items()):
        detail = ""
        if endpoint == "fenix.orders":
            detail = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()) if k.startswith("fenix.order"))
        print(f"  {endpoint:18} {count:4}  {detail}".rstrip())
    rejected = stats.get("rejected") or {}
    faults = stats.get("faults") or {}
    print(
        f"  rejected: {json.dumps(rejected) if rejected else 'none'};  injected faults: {json.dumps(faults) if faults else 'none'}"
    )
    print("keys that arrived more than once (an order created, then updated or cancelled, is expected here):")
    names = {
        "fenix_order_id": "Fenix order ids",
        "fenix_fulfillment": "Fenix fulfillments",
        "dg_external_id": "DG external_ids",
    }
    same_body = 0
    for key, label in names.items():
        entries = stats.get("duplicates", {}).get(key, [])
        same_body += sum(entry["count"] - entry["distinct_bodies"] for entry in entries)
        print(f"  {label:20} {len(entries):4}")
    retries = same_body - planned_repeats
    print(
        f"  the same body again  {same_body:4}  ({planned_repeats} planned: two events that map to one payload, "
        f"such as a cancel in orders/cancelled and orders/updated; {retries} retries the server saw twice)"
    )


if __name__ == "__main__":
    sys.exit(main())
