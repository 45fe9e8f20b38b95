"""The replay request file between ``shipmap replay`` and a running ``shipmap serve``: what the command says
when the service has not carried a request out in time, when it failed, and the result when it did."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from shipmap.connectors import JournalError
from shipmap.connectors._serve._replays import ReplayRequests, replays_path


def test_a_request_is_waited_for_then_said_queued_failed_or_returned(tmp_path: Path) -> None:
    path = replays_path(tmp_path / "journal.db")
    with ReplayRequests(path, serving=True) as service, ReplayRequests(path) as command:
        assert ReplayRequests.service_running(path)
        first = command.submit(["abc"])
        with pytest.raises(JournalError) as queued:
            command.outcome(first, time.monotonic(), 3, does="replays it", do="replay")
        assert queued.value.message == (
            f"shipmap serve has not carried out replay request {first} within 3 s; it stays queued and the "
            "service replays it when it can (see `shipmap dead-letters`)"
        )
        service.finish(first, {"error": "the journal's disk is full"}, failed=True)
        with pytest.raises(JournalError) as failed:
            command.outcome(first, time.monotonic() + 5, 5, does="replays it", do="replay")
        assert failed.value.message == "shipmap serve could not replay: the journal's disk is full"
        second = command.submit_rows([7])
        service.finish(second, {"requeued": 1})
        assert command.outcome(second, time.monotonic() + 5, 5, does="-", do="-") == {"requeued": 1}
