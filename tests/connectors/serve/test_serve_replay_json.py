"""``shipmap replay --format json`` when a live ``shipmap serve`` carries the replay out, and with
``--rejected``: the run summary document as a standalone replay prints it, with what the command was told
and ``null`` (named in ``unknown``) for what it was not. A real service, the sandbox over HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx
from shipmap.connectors import EXIT_DEAD_LETTERS, Sandbox
from shipmap.connectors._store._journal import open_readonly

from .harness import ServeProcess, post_order
from .rejected_support import accept_and_reject, served_store
from .rejected_support import shipmap as _shipmap
from .replay_support import serve_a_broken_mapping, summary_document


def test_replay_format_json_through_a_running_service(tmp_path: Path) -> None:
    with Sandbox() as sandbox:
        serve = serve_a_broken_mapping(tmp_path, sandbox)
        try:
            with httpx.Client(timeout=10) as client:
                for order_id in (7_400_001, 7_400_002):
                    post_order(serve, client, order_id, f"replay-json-{order_id}")
            serve.wait_until(lambda: _dead(tmp_path) == 2, timeout=30, what="2 dead letters")
            still = _shipmap(
                tmp_path, sandbox, "replay", str(serve.config), "--no-progress", "--format", "json"
            )
            assert still.returncode == EXIT_DEAD_LETTERS, still.stdout + still.stderr
            document = summary_document(still)
            assert (document["ok"], document["events"], document["delivered"], document["dead"]) == (
                False,
                2,
                0,
                2,
            ), document
            assert document["unknown"] == [], document  # this service tells it all
            (row,) = document["targets"]
            assert (row["mapping"], row["target"], row["dead"], row["delivered"]) == (
                "shopify-order",
                "order",
                2,
                0,
            ), row
            # The contract refuses them before a request: no attempt, no latency.
            assert (row["attempts"], row["latency_seconds"]) == (0, {"p50": None, "p95": None, "p99": None})
            assert "replayed by shipmap serve: delivered 0, still dead 2" in still.stderr, still.stderr
            assert document["hints"] == [
                "replayed by shipmap serve: delivered 0, still dead 2, left pending 0, skipped 0"
            ], document
            assert serve.terminate() == 0
        finally:
            serve.kill()


def _dead(work: Path) -> int:
    journal = open_readonly(work / ".shipmap" / "journal.db")
    if journal is None:
        return 0
    with journal:
        return journal.dead_letter_count(None)


def test_replay_rejected_format_json_while_serve_runs_and_when_it_is_stopped(tmp_path: Path) -> None:
    with served_store(tmp_path) as (store, work, sandbox):
        serve = ServeProcess(work, sandbox.url).start()
        try:
            nothing = _shipmap(work, sandbox, "replay", str(serve.config), "--rejected", "--format", "json")
            assert nothing.returncode == 0, nothing.stdout + nothing.stderr
            document = summary_document(nothing)
            assert (document["events"], document["rejected"], document["delivered"], document["unknown"]) == (
                0,
                0,
                0,
                [],
            ), document
            assert document["hints"] == ["no rejected webhooks to replay"], document
            accept_and_reject(serve)
            config = str(serve.config)
            early = _shipmap(work, sandbox, "replay", config, "--rejected", "--format", "json")
            assert early.returncode == EXIT_DEAD_LETTERS, early.stdout + early.stderr
            document = summary_document(early)
            assert (document["ok"], document["events"], document["rejected"]) == (False, 1, 1), document
            # What delivery made of it is the service's: not counted here, so null, not 0.
            assert document["delivered"] is None and document["targets"] is None, document
            assert set(document["unknown"]) == {
                "delivered", "retried", "dead", "skipped", "unrouted", "recovered", "parked", "targets",
            }, document  # fmt: skip
            assert document["rejected_webhooks"] == {
                "to_replay": 1, "unreplayable": 0, "requeued": 1, "taken": 0, "rejected_again": 1, "waiting": 0,
            }  # fmt: skip
            assert "rejected again: 1" in early.stderr, early.stderr
            assert serve.terminate() == 0
        finally:
            serve.kill()
        store.add_order_999()
        stopped = _shipmap(work, sandbox, "replay", config, "--rejected", "--format", "json")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        document = summary_document(stopped)
        assert (document["ok"], document["events"], document["rejected"]) == (True, 1, None), document
        assert "rejected" in document["unknown"] and document["rejected_webhooks"] == {
            "to_replay": 1, "unreplayable": 0, "requeued": 1, "taken": None, "rejected_again": None,
            "waiting": None,
        }, document  # fmt: skip
        assert document["hints"] == [
            "shipmap serve is not running: requeued 1 webhook in the inbox; the next `shipmap serve` start"
            " fetches their documents again and delivers them"
        ], document
