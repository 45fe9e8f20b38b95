"""The README's examples are real: its mapping compiles and its run config dry-runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from shipmap.connectors._cli import main
from shipmap.engine import parse_mapping

ROOT = Path(__file__).parent.parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
ENTRY = "from shipmap.connectors._cli import entry; entry()"
ORDER = json.loads((ROOT / "tests/fixtures/real/shopify/order_rest_get_with_fulfillment.json").read_text())


def _block(first_line: str) -> str:
    start = README.index(first_line)
    return README[start : README.index("```", start)]


def test_the_mapping_in_one_minute_compiles_and_maps_the_real_order() -> None:
    mapping = parse_mapping(_block("# acme.yaml\n"), file="README.md")
    payload = mapping.transform(ORDER, validate=False)["order"]
    assert payload["id"] == "450789469"
    assert payload["fulfillment_status"] == "NOT_FILLED"
    assert payload["line_items"][0]["price"] == {"value": 199, "currency": "USD"}


def test_validate_names_what_the_short_mapping_leaves_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "acme.yaml").write_text(_block("# acme.yaml\n"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # the README's reader runs it beside the file: its paths are printed as given
    assert main(["validate", "acme.yaml"]) == 2
    assert capsys.readouterr().err == _block("acme.yaml:12:7: error: order.total_weight")


def test_a_failing_field_prints_as_the_readme_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    required = _block("# acme.yaml\n").replace(
        'sku: {path: sku, default: ""}', "sku: {path: sku, required: true}"
    )
    (tmp_path / "acme.yaml").write_text(required, encoding="utf-8")
    order = json.loads(json.dumps(ORDER))
    order["order"]["line_items"][1]["sku"] = None
    (tmp_path / "order.json").write_text(json.dumps(order), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["preview", "acme.yaml", "order.json"]) == 4
    assert capsys.readouterr().err == _block("order.json:1: acme.yaml:")


def test_a_skipped_target_says_why_as_the_readme_quotes(capsys: pytest.CaptureFixture[str]) -> None:
    quoted = re.search(
        r"`(cancel: skipped \(when is false \(line \d+\)\))` for `shopify/order_cancelled`", README
    )
    assert quoted is not None
    source = ROOT / "tests/fixtures/real/shopify/order_rest_get_with_fulfillment.json"
    assert main(["preview", "shopify/order_cancelled", str(source)]) == 0
    assert quoted.group(1) in capsys.readouterr().err.splitlines()


def test_the_run_config_dry_runs(tmp_path: Path) -> None:
    (tmp_path / "shipmap.yaml").write_text(_block("# shipmap.yaml\n"))
    (tmp_path / "acme_fulfillment.yaml").write_text(
        (ROOT / "tests/fixtures/engine/shopify_order_min.yaml").read_text(encoding="utf-8")
    )
    (tmp_path / "events.ndjson").write_text(
        json.dumps({"topic": "orders/create", "payload": ORDER["order"]}) + "\n"
    )
    secrets = {
        "FENIX_URL": "http://127.0.0.1:9",
        "FENIX_USERNAME": "readme-user",
        "FENIX_PASSWORD": "readme-password-123",
        "FENIX_API_KEY": "readme-api-key-123",
        "DG_API_KEY": "readme-dg-key",
        "DG_API_SECRET": "readme-dg-secret",
    }
    result = subprocess.run(
        [sys.executable, "-c", ENTRY, "run", "shipmap.yaml", "--input", "events.ndjson", "--dry-run"],
        cwd=tmp_path,
        env={**os.environ, **secrets},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "POST http://127.0.0.1:9/api/v1/orders/450789469/created" in result.stdout
    for name in ("FENIX_PASSWORD", "FENIX_API_KEY", "DG_API_SECRET"):
        assert secrets[name] not in result.stdout + result.stderr


def test_the_ready_mappings_commands_print_what_the_readme_says(capsys: pytest.CaptureFixture[str]) -> None:
    commands = _block("shipmap preview shopify/order tests/fixtures/")
    preview, test = commands.splitlines()
    _, command, mapping, source = preview.split()
    assert main([command, mapping, str(ROOT / source)]) == 0
    assert json.loads(capsys.readouterr().out)["order"]["id"] == "450789469"
    shown = re.search(r'"(\d+ passed, 0 failed)"', test)
    assert shown is not None, test
    assert main(["test", str(ROOT / "mappings")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == shown.group(1)
