"""One bad event never stops the others (issue 13, classes 1 and 2): poison in a stream of valid events is
rejected or dead-lettered alone, with its reason, and every valid event is delivered exactly as it is in the
same stream without the poison. Strict JSON everywhere: no NaN, infinity or lone surrogate is journaled or
sent."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shipmap.connectors import EXIT_DEAD_LETTERS, Runtime, Sandbox
from shipmap.connectors._cli import main
from shipmap.connectors._store._journal import Journal
from shipmap.engine import read_documents

sys.path.insert(0, str(Path(__file__).parents[1] / "connectors"))
from test_runtime_support import FIXTURES, environ, order_event, write_config

# A template that raises a non-shipmap exception on one event only (dictsort on a list: AttributeError), and
# one that yields a function ({{ lookup }}: a value JSON cannot hold).
POISON_TEMPLATE = (
    '      number: "{{ (this.meta | dictsort | first | last) if this.meta is defined'
    ' else (lookup if this.use_lookup is defined else this.number) }}"\n'
)


def poison_config(directory: Path, url: str) -> Path:
    text = (FIXTURES / "orders.yaml").read_text().replace("      number: number\n", POISON_TEMPLATE)
    assert POISON_TEMPLATE in text
    (directory / "orders.yaml").write_text(text)
    mappings = [{"mapping": str(directory / "orders.yaml"), "topic": "orders/create"}]
    return write_config(directory, url, mappings=mappings)


def line(event: Any) -> bytes:
    return json.dumps(event).encode() + b"\n"


def _poison(number: int) -> dict[str, bytes]:
    """Each kind of poison, as one NDJSON line (bytes: some are not UTF-8)."""
    valid = json.dumps(order_event(number))
    return {
        "lone surrogate": valid.replace('"Ada"', '"\\ud800"').encode() + b"\n",
        "NaN": valid.replace('"phone": "5550100"', '"phone": NaN').encode() + b"\n",
        "Infinity": valid.replace('"qty": ', '"qty": -Infinity, "n": ').encode() + b"\n",
        "1e400": valid.replace('"qty": ', '"qty": 1e400, "n": ').encode() + b"\n",
        "not UTF-8": valid.replace('"Ada"', '"\xff"').encode("latin-1") + b"\n",
        "5000 digits": valid.replace('"qty": ', '"qty": ' + "9" * 5000 + ', "n": ').encode() + b"\n",
        "5000 deep": valid.replace('"phone": "5550100"', '"phone": ' + "[" * 5000 + "]" * 5000).encode()
        + b"\n",
        "template raises": line(order_event(number, meta=[1, 2])),
        "template yields a function": line(order_event(number, use_lookup=True)),
        "cut off": valid[: len(valid) // 2].encode() + b"\n",
    }


POISON_KINDS = tuple(_poison(0))


def test_each_poison_is_rejected_or_dead_lettered_alone_and_the_run_exits_8(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    config = poison_config(tmp_path, sandbox.url)
    poison = _poison(99)
    events = tmp_path / "events.ndjson"
    with events.open("wb") as out:
        for number, text in enumerate(poison.values(), start=1):
            out.write(line(order_event(number)))
            out.write(text)
        out.write(line(order_event(50)))
    code = main(["run", str(config), "--input", str(events), "--no-progress", "--workers", "0"])
    captured = capsys.readouterr()
    assert code == EXIT_DEAD_LETTERS
    assert "Traceback" not in captured.err
    delivered = sorted(int(r.order_id or 0) for r in sandbox.requests(endpoint="fenix.orders"))
    assert delivered == [1000 + n for n in [*range(1, len(poison) + 1), 50]]
    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        rejected = journal.rejected()
        dead = journal.dead_letters()
        payloads = [row.payload for row in journal.entries() if row.payload is not None]
    assert len(rejected) + len(dead) == len(poison)
    reasons = [r.reason for r in rejected] + [d.reason or "" for d in dead]
    assert all(reasons)
    assert sum("not strict JSON" in r for r in reasons) == 5  # surrogate, NaN, -Infinity, 1e400, 5000 digits
    assert any("AttributeError" in r and "order.number" in r for r in reasons)
    assert any("number: got a value of type function, which JSON cannot hold" in r for r in reasons)
    # The journal and the wire hold strict JSON only.
    for payload in payloads:
        json.dumps(payload, allow_nan=False)
    for record in sandbox.requests(endpoint="fenix.orders"):
        json.dumps(record.body, allow_nan=False)
    print(
        f"poison kinds {len(poison)}: rejected {len(rejected)}, dead-lettered {len(dead)}; delivered 11 of 11"
    )


def _run(directory: Path, url: str, stream: bytes) -> tuple[Runtime, Any]:
    config = poison_config(directory, url)
    (directory / "events.ndjson").write_bytes(stream)
    runtime = Runtime.from_config(config, environ=environ(url))
    summary = runtime.run(read_documents(directory / "events.ndjson"))
    return runtime, summary


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    numbers=st.lists(st.integers(1, 400), min_size=1, max_size=6, unique=True),
    poison=st.lists(st.tuples(st.sampled_from(POISON_KINDS), st.integers(0, 10)), min_size=1, max_size=4),
)
def test_random_poison_in_random_streams_never_changes_what_the_valid_events_deliver(
    tmp_path_factory: pytest.TempPathFactory,
    sandbox: Sandbox,
    numbers: list[int],
    poison: list[tuple[str, int]],
) -> None:
    valid = [line(order_event(n)) for n in numbers]
    sandbox.reset()
    _run(tmp_path_factory.mktemp("clean"), sandbox.url, b"".join(valid))
    expected = sorted(json.dumps(r.body, sort_keys=True) for r in sandbox.requests(endpoint="fenix.orders"))
    assert len(expected) == len(valid)
    stream = list(valid)
    for position, (kind, at) in enumerate(poison):
        stream.insert(at % (len(stream) + 1), _poison(1000 + position)[kind])
    sandbox.reset()
    directory = tmp_path_factory.mktemp("poisoned")
    _, summary = _run(directory, sandbox.url, b"".join(stream))
    got = sorted(json.dumps(r.body, sort_keys=True) for r in sandbox.requests(endpoint="fenix.orders"))
    assert got == expected
    assert not summary.ok and summary.rejected + summary.dead == len(poison)
    with Journal(directory / "journal.db", readonly=True) as journal:
        assert all(r.reason for r in journal.rejected())
        assert all(d.reason for d in journal.dead_letters())


# --- journal faults (class 7): injected through SQLite itself, a full disk and a read-only database ------------


@pytest.mark.parametrize(
    ("pragma", "message"),
    [
        ("max_page_count", "the disk holding the journal is full"),  # SQLITE_FULL, as on a full disk
        ("query_only", "the journal is read-only"),  # SQLITE_READONLY, as on a read-only mount
    ],
)
def test_a_journal_fault_mid_run_is_a_clear_exit_7_and_the_next_run_resumes_losing_nothing(
    tmp_path: Path,
    sandbox: Sandbox,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    pragma: str,
    message: str,
) -> None:
    from shipmap.connectors import _runtime

    config = write_config(tmp_path, sandbox.url)
    events = tmp_path / "events.ndjson"
    events.write_bytes(b"".join(line(order_event(n)) for n in range(1, 121)))

    class FaultyJournal(Journal):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if pragma == "max_page_count":  # room for the schema and a few batches, then SQLITE_FULL
                pages = self._db.execute("PRAGMA page_count").fetchone()[0]
                self._db.execute(f"PRAGMA max_page_count = {pages + 12}")
            else:
                self._db.execute("PRAGMA query_only = 1")

    monkeypatch.setattr(_runtime, "Journal", FaultyJournal)
    argv = ["run", str(config), "--input", str(events), "--no-progress", "--workers", "0"]
    assert main(argv) == 7
    err = capsys.readouterr().err
    assert message in err and "Nothing is lost" in err and "Traceback" not in err
    monkeypatch.undo()  # the cause is fixed
    assert main(argv) == 0
    delivered = {r.order_id for r in sandbox.requests(endpoint="fenix.orders")}
    assert delivered == {str(1000 + n) for n in range(1, 121)}
    print(f"journal fault {pragma}: exit 7, then resumed: {len(delivered)} of 120 delivered, 0 lost")


def test_the_sandbox_refuses_non_strict_json_and_bad_basic_auth_with_400_and_401(sandbox: Sandbox) -> None:
    import httpx

    body = json.dumps({"action_id": "a", "external_id": "x", "inputs": {}})
    cases = [
        body.replace('"x"', "NaN"),
        body.replace('"x"', "1e400"),
        body.replace('"x"', '"\\udc00"'),
        '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}",
    ]
    auth = {"Authorization": "Basic ZGVtby1rZXk6ZGVtby1zZWNyZXQ=", "Content-Type": "application/json"}
    for text in cases:
        response = httpx.post(f"{sandbox.url}/execution", content=text, headers=auth)
        assert response.status_code == 400, text[:40]
        assert "not valid JSON" in response.text
    bad = {"Authorization": b"Basic !!!\xff", "Content-Type": "application/json"}
    response = httpx.post(f"{sandbox.url}/execution", content=body, headers=bad)
    assert response.status_code == 401 and "not base64" in response.text


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_number_in_a_payload_is_a_located_field_error(value: float) -> None:
    from shipmap.engine import PayloadValidationError, load_mapping

    mapping = load_mapping(str(FIXTURES / "orders.yaml"))
    with pytest.raises(PayloadValidationError) as caught:
        mapping.transform(order_event(1, phone=value)["payload"])  # what preview and test do
    [problem] = caught.value.problems
    assert problem.field == "order.customer.phone" and "not a JSON number" in problem.message
    assert problem.location is not None and problem.location.line > 1


def test_preview_json_is_strict_json_even_for_a_payload_with_an_infinity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (FIXTURES / "orders.yaml").read_text()
    text = text.replace(
        "      number: number\n", "      number: number\n      total_price: '{{ 1e308 * 10 }}'\n"
    )
    (tmp_path / "inf.yaml").write_text(text)
    (tmp_path / "source.json").write_text(json.dumps(order_event(1)["payload"]))
    code = main(["preview", str(tmp_path / "inf.yaml"), str(tmp_path / "source.json"), "--json"])
    captured = capsys.readouterr()
    assert (
        code != 0 and "order.total_price: got inf, which is not a JSON number" in captured.err + captured.out
    )
    assert "Infinity" not in captured.out and "NaN" not in captured.out
    if captured.out.strip():  # whatever preview prints beside the error is strict JSON
        json.loads(captured.out, parse_constant=lambda name: pytest.fail(f"{name} in preview output"))
