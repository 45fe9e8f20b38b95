"""``--jobs N``: preview, test and run --dry-run over inputs larger than one chunk print, in a process pool,
exactly what one process prints, in input order, with the same exit code."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from shipmap.connectors._cli import main
from shipmap.connectors._cli._cases import _CasesLoader as CasesLoader
from shipmap.connectors._map._parallel import ordered_map

FIXTURES = Path(__file__).parent.parent / "fixtures"
ORDER = json.loads(
    (FIXTURES / "real/shopify/order_rest_get_with_fulfillment.json").read_text(encoding="utf-8")
)
REPO = Path(__file__).resolve().parent.parent.parent
ACME = REPO / "examples/acme_outfitters"


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _tagged(chunk: list[int], context: str) -> tuple[str, list[int], int]:
    return context, chunk, os.getpid()


def _tag(context: str, chunk: list[int]) -> tuple[str, list[int], int]:
    return _tagged(chunk, context)


def _fail_on_three(context: None, chunk: int) -> int:
    if chunk == 3:
        raise ValueError("chunk three")
    return chunk


def test_the_pool_keeps_input_order_and_runs_in_other_processes() -> None:
    chunks = [[n, n + 1] for n in range(0, 80, 2)]
    results = list(ordered_map(_tag, "ctx", chunks, jobs=2))
    assert [chunk for _, chunk, _ in results] == chunks
    assert {context for context, _, _ in results} == {"ctx"}
    assert os.getpid() not in {pid for _, _, pid in results}
    # One process, or a single chunk: no pool at all.
    assert {pid for _, _, pid in ordered_map(_tag, "ctx", chunks, jobs=1)} == {os.getpid()}
    assert [pid for _, _, pid in ordered_map(_tag, "ctx", chunks[:1], jobs=2)] == [os.getpid()]


def test_an_error_in_a_worker_surfaces_at_its_place_in_the_order() -> None:
    seen: list[int] = []
    with pytest.raises(ValueError, match="chunk three"):
        for result in ordered_map(_fail_on_three, None, range(10), jobs=2):
            seen.append(result)
    assert seen == [0, 1, 2]


def test_preview_with_jobs_prints_what_one_process_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = []
    for n in range(600):
        order = json.loads(json.dumps(ORDER))
        order["order"]["id"] = 1000 + n
        if n == 300:
            order["order"]["line_items"] = "not a list"  # a mapping failure, reported at its place
        lines.append(json.dumps(order) if n != 450 else "{not json")
    source = tmp_path / "orders.ndjson"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    one = _run(capsys, "preview", "shopify/order", str(source), "--jobs", "1")
    two = _run(capsys, "preview", "shopify/order", str(source), "--jobs", "2")
    assert one == two
    code, out, err = two
    assert code == 4  # the transform error's exit code is the worst one
    ids = [json.loads(line).get("order", {}).get("id") for line in out.splitlines()]
    assert ids[:3] == ["1000", "1001", "1002"] and ids[-1] == "1599"
    assert f"{source}:451" in err and "not JSON" in err
    assert err.index(f"{source}:301") < err.index(f"{source}:451")


def test_dry_run_with_jobs_prints_what_one_process_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = (ACME / "events.ndjson").read_text(encoding="utf-8")
    source = tmp_path / "events.ndjson"
    source.write_text(events * 3, encoding="utf-8")  # 333 lines: two chunks
    args = [
        "run",
        str(ACME / "config.yaml"),
        "-i",
        str(source),
        "--dry-run",
        "--journal",
        str(tmp_path / "j.db"),
    ]
    one = _run(capsys, *args, "--jobs", "1")
    two = _run(capsys, *args, "--jobs", "2")
    assert one[:2] == two[:2]
    assert f"{source}:333" in two[1]
    assert two[1].rstrip().endswith("nothing was sent")
    assert not (tmp_path / "j.db").exists()


def test_shipmap_test_with_jobs_reports_what_one_process_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (REPO / "mappings/shopify/order.cases.yaml").read_text(encoding="utf-8")
    suite = yaml.load(text, Loader=CasesLoader)  # the cases format's own SafeLoader
    base = REPO / "mappings/shopify"
    cases = []
    for n in range(40):
        for case in suite["cases"]:
            copy = dict(case, name=f"{case['name']} #{n}")
            if isinstance(copy.get("source"), str):
                copy["source"] = str(base / copy["source"])
            cases.append(copy)
    broken = dict(cases[45], name="broken copy", expect={"order": {"id": "wrong"}})
    cases.insert(45, broken)
    cases_file = tmp_path / "order.cases.yaml"
    cases_file.write_text(
        yaml.safe_dump({"mapping": str(base / "order.yaml"), "cases": cases}), encoding="utf-8"
    )
    one = _run(capsys, "test", str(cases_file), "--jobs", "1")
    two = _run(capsys, "test", str(cases_file), "--jobs", "2")
    assert one == two
    code, out, _ = two
    assert code == 1
    assert out.index("FAIL  broken copy") < out.index(f"PASS  {cases[46]['name']}")
    assert out.rstrip().endswith(f"{len(cases) - 1} passed, 1 failed")
