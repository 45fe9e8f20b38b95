"""The day's Shopify webhooks, signed, from a real HTTP client to `shipmap serve`, delivered to the sandbox.

    .venv/bin/python examples/acme_outfitters/serve_day.py

1. starts the sandbox (Fenix and Digital Genius) on a free port of 127.0.0.1;
2. plans the Shopify events of events.ndjson with config.yaml (the dry run): the exact requests they should
   cause;
3. starts `shipmap serve examples/acme_outfitters/config.yaml` as a process of its own, on a free port;
4. posts each Shopify webhook with httpx, as Shopify does: the raw body, X-Shopify-Topic, X-Shopify-Webhook-Id
   and X-Shopify-Hmac-Sha256 (base64 HMAC-SHA256 under the app secret from demo.env); then posts three of them
   again (Shopify retrying) and one forged;
5. waits until the service has delivered, stops it with SIGTERM (it drains and prints its summary);
6. checks that every planned request arrived exactly once and nothing else did, and that the repeats were
   acknowledged as duplicates and the forgery refused with 401.

Exit code 0 when all of that holds, 1 otherwise. The service's journal and inbox are in
examples/acme_outfitters/.shipmap/serve/ (git-ignored), emptied at the start.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from run_day import canonical, show
from shipmap.connectors import Runtime, Sandbox
from shipmap.engine import read_documents

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "config.yaml"
EVENTS = HERE / "events.ndjson"
STATE = HERE / ".shipmap" / "serve"
Request = tuple[str, str, str]


def demo_secret() -> str:
    for line in (HERE / "demo.env").read_text().splitlines():
        if line.startswith("ACME_SHOPIFY_WEBHOOK_SECRET="):
            return line.split("=", 1)[1]
    raise SystemExit("demo.env has no ACME_SHOPIFY_WEBHOOK_SECRET")


def signed(event: dict[str, Any], secret: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event["payload"], ensure_ascii=False).encode()
    digest = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return body, {
        "Content-Type": "application/json",
        "X-Shopify-Topic": event["topic"],
        "X-Shopify-Webhook-Id": event["id"],
        "X-Shopify-Shop-Domain": event["shop"],
        "X-Shopify-Hmac-Sha256": digest,
    }


def start_service(env: dict[str, str], state: Path) -> tuple[subprocess.Popen[str], str, list[str]]:
    command = [sys.executable, "-c", "from shipmap.connectors._cli import entry; entry()", "serve", str(CONFIG),
               "--port", "0", "--journal", str(state / "journal.db"), "--inbox", str(state / "inbox.db")]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    if not first.startswith("shipmap serve: listening on "):
        process.kill()
        raise SystemExit("shipmap serve did not start:\n" + first + process.stderr.read())
    errors: list[str] = []
    threading.Thread(target=lambda: errors.extend(process.stderr or ()), daemon=True).start()
    return process, first.split()[4], errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state", type=Path, default=STATE, help="journal and inbox directory (emptied)")
    state = parser.parse_args(argv).state
    shutil.rmtree(state, ignore_errors=True)
    secret = demo_secret()
    events = [r.document for r in read_documents(EVENTS) if r.document.get("source") == "shopify"]
    topics = Counter(e["topic"] for e in events)
    print(f"Acme Outfitters, Thursday 2024-11-14: {len(events)} Shopify webhooks from {show(EVENTS)}")
    print("  " + ", ".join(f"{topic} {count}" for topic, count in sorted(topics.items())))
    with Sandbox() as sandbox:
        env = {**os.environ, "ACME_SANDBOX_URL": sandbox.url}
        runtime = Runtime.from_config(CONFIG, environ=env, journal=state / "plan.db")
        planned: Counter[Request] = Counter()
        for entry in runtime.plan(events):
            if entry.action == "send":
                assert entry.method is not None and entry.url is not None
                planned[(entry.method, urlsplit(entry.url).path, canonical(entry.body))] += 1
        process, url, errors = start_service(env, state)
        print(f"sandbox {sandbox.url}; shipmap serve {url} (POST /hooks/shopify)\n")
        answers: Counter[str] = Counter()
        started = time.perf_counter()
        with httpx.Client(timeout=10) as client:
            for event in events:
                body, headers = signed(event, secret)
                answer = client.post(f"{url}/hooks/shopify", content=body, headers=headers)
                answers[
                    f"{answer.status_code} {answer.json().get('status') or answer.json().get('error')}"
                ] += 1
            posting = time.perf_counter() - started
            for event in events[:3]:  # Shopify retrying webhooks it did not see answered
                body, headers = signed(event, secret)
                answer = client.post(f"{url}/hooks/shopify", content=body, headers=headers)
                answers[f"{answer.status_code} {answer.json()['status']} (a repeat)"] += 1
            body, headers = signed(events[0], "not-the-app-secret")
            forged = client.post(f"{url}/hooks/shopify", content=body, headers=headers)
            answers[f"{forged.status_code} {forged.json()['error']} (forged)"] += 1
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                arrived_now = sum(1 for r in sandbox.requests() if r.endpoint != "fenix.login")
                if (
                    arrived_now >= sum(planned.values())
                    and client.get(f"{url}/readyz").json()["queue_depth"] == 0
                ):
                    break
                time.sleep(0.1)
            metrics = client.get(f"{url}/metrics").text
        process.send_signal(signal.SIGTERM)
        summary, _ = process.communicate(timeout=30)
        recorded = sandbox.requests()
    print("the client's answers: " + ", ".join(f"{k} x{v}" for k, v in sorted(answers.items())))
    print(
        f"posted {len(events)} webhooks in {posting * 1000:.0f} ms ({len(events) / posting:.0f}/s, each committed before its 200)"
    )
    print("\nshipmap serve, stopped with SIGTERM, printed:")
    for line in summary.splitlines():
        print("  " + line)
    wanted = (
        "shipmap_webhooks_accepted_total",
        "shipmap_webhooks_duplicate_total",
        "shipmap_webhooks_rejected_total",
    )
    print("from /metrics:")
    for line in metrics.splitlines():
        if line.startswith(wanted):
            print("  " + line)
    arrived: Counter[Request] = Counter(
        (r.method, r.path, canonical(r.body)) for r in recorded if r.endpoint != "fenix.login"
    )
    missing, extra = planned - arrived, arrived - planned
    repeats_ok = (
        answers.get("200 duplicate (a repeat)") == 3 and answers.get("401 bad_signature (forged)") == 1
    )
    ok = not missing and not extra and repeats_ok and process.returncode == 0
    verdict = (
        "each exactly once. OK"
        if not missing and not extra
        else f"{sum(missing.values())} missing, {sum(extra.values())} unexpected"
    )
    print(
        f"\ncheck: {sum(planned.values())} requests planned from {len(events)} webhooks, {sum(arrived.values())} arrived: {verdict}"
    )
    if not repeats_ok:
        print("  the repeats were not all acknowledged as duplicates, or the forgery was not refused")
    if process.returncode != 0:
        print("  shipmap serve exited with", process.returncode, "".join(errors[-20:]))
    print("OK: every webhook arrived exactly once" if ok else "FAILED: see above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
