"""shipmap studio's JSON API over real HTTP: the token, confinement to its directory, bad input, evaluation,
the dry-run requests, and the cases file (run and "Save as case")."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from shipmap.connectors._cli._cases import load_suite
from shipmap.connectors._cli.test import run_case
from shipmap.connectors._studio import Studio
from shipmap.engine import load_mapping, parse_mapping
from test_studio_support import MAPPING, SAMPLE, evaluate, make_workspace


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return make_workspace(tmp_path)


@pytest.fixture
def studio(workspace: Path) -> Iterator[Studio]:
    with Studio(workspace) as running:
        yield running


@pytest.fixture
def client(studio: Studio) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=studio.base_url, headers={"X-Shipmap-Token": studio.token}, timeout=30) as c:
        yield c


def test_the_url_binds_loopback_and_every_api_call_checks_the_token(studio: Studio) -> None:
    assert studio.url.startswith("http://127.0.0.1:") and f"?token={studio.token}" in studio.url
    assert len(studio.token) >= 32
    paths = ["/api/workspace", "/api/schema", f"/api/file?path={MAPPING}"]
    for path in paths:
        assert httpx.get(studio.base_url + path).status_code == 403
        other = "y" if studio.token.endswith("x") else "x"  # one character off, never the token itself
        wrong = httpx.get(studio.base_url + path, headers={"X-Shipmap-Token": studio.token[:-1] + other})
        assert wrong.status_code == 403
        assert "token" in wrong.json()["error"]
        separator = "&" if "?" in path else "?"
        assert httpx.get(f"{studio.base_url}{path}{separator}token={studio.token}").status_code == 200
    posted = httpx.post(studio.base_url + "/api/evaluate", json={"mapping": "x"})
    assert posted.status_code == 403
    # The page itself carries no data; it loads only its own files (the policy forbids anything else).
    page = httpx.get(studio.base_url + "/")
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert "http" not in page.text.replace('href="/static', "").replace('src="/static', "")


def test_a_foreign_host_header_is_refused(studio: Studio) -> None:
    # A page elsewhere that rebinds its DNS name to 127.0.0.1 still sends its own Host.
    response = httpx.get(
        studio.base_url + "/api/workspace",
        headers={"Host": "attacker.example", "X-Shipmap-Token": studio.token},
    )
    assert response.status_code == 400


def test_no_file_outside_the_directory_is_read_or_written(
    client: httpx.Client, workspace: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.yaml"
    secret.write_text("shipmap: 1\nname: secret\n", encoding="utf-8")
    (workspace / "link.yaml").symlink_to(secret)
    (workspace / "linked_dir").symlink_to(tmp_path)
    outside = [
        "../secret.yaml",
        str(secret),
        "samples/../../secret.yaml",
        "link.yaml",
        "linked_dir/secret.yaml",
    ]
    for path in outside:
        read = client.get("/api/file", params={"path": path})
        assert read.status_code == 403, path
        assert "outside" in read.json()["error"] or "only paths inside" in read.json()["error"]
        write = client.put("/api/file", params={"path": path}, json={"text": "overwritten"})
        assert write.status_code == 403, path
    assert secret.read_text(encoding="utf-8") == "shipmap: 1\nname: secret\n"
    assert client.put("/api/file", params={"path": "../new.yaml"}, json={"text": "x"}).status_code == 403
    assert not (tmp_path / "new.yaml").exists()
    # Neither the symlinked mapping nor anything behind the symlinked folder is listed.
    listing = client.get("/api/workspace").json()
    assert "link.yaml" not in listing["mappings"]
    assert not any(name.startswith("linked_dir") for name in listing["samples"] + listing["mappings"])
    for endpoint in ("/api/evaluate", "/api/cases/run", "/api/cases/save"):
        body = {"mapping": "shipmap: 1", "mapping_file": "../secret.yaml", "sample": "{}"}
        assert client.post(endpoint, json=body).status_code == 403, endpoint
    saved = client.post(
        "/api/cases/save",
        json={
            "mapping": "shipmap: 1",
            "mapping_file": MAPPING,
            "sample": "{}",
            "sample_file": "../secret.yaml",
        },
    )
    assert saved.status_code == 403


def test_env_files_keys_and_the_journal_never_reach_the_page(client: httpx.Client, workspace: Path) -> None:
    # They sit in the directory the studio serves, but the page opens only mappings, configs and samples.
    secret = "fenix-live-password-4b1c"
    (workspace / ".env").write_text(f"FENIX_PASSWORD={secret}\n", encoding="utf-8")
    (workspace / "keys").mkdir()
    (workspace / "keys" / "fenix.key").write_text(secret, encoding="utf-8")
    (workspace / "env-link.yaml").symlink_to(workspace / ".env")  # named like a mapping, leads to .env
    for path in (".env", "keys/fenix.key", "env-link.yaml"):
        read = client.get("/api/file", params={"path": path})
        assert read.status_code == 403, path
        assert secret not in read.text
        assert read.json()["error"] == (
            f"{path}: the studio reads and writes only mappings, cases files, run configs and samples "
            "(.yaml, .yml, .json, .ndjson, .jsonl)"
        )
        assert client.put("/api/file", params={"path": path}, json={"text": "X=1"}).status_code == 403
    assert (workspace / ".env").read_text(encoding="utf-8") == f"FENIX_PASSWORD={secret}\n"
    # The run config's requests still use it (as shipmap run would), redacted.
    result = evaluate(client, workspace)
    assert secret not in json.dumps(result)
    assert result["targets"][0]["request"]["headers"]["authToken"] == "***"  # type: ignore[index]


def test_a_symbolic_link_that_loops_is_an_error_for_that_file_and_left_out_of_the_listing(
    client: httpx.Client, workspace: Path
) -> None:
    """Path.resolve() raises RuntimeError for a link that loops (Python 3.11): every call that named one, and
    the listing with one anywhere in the folder, was a 500 'internal error: RuntimeError(...)'."""
    (workspace / "loop.yaml").symlink_to("loop.yaml")
    (workspace / "samples" / "a.json").symlink_to("b.json")
    (workspace / "samples" / "b.json").symlink_to("a.json")
    (workspace / "folder").symlink_to("folder")
    listing = client.get("/api/workspace")
    assert listing.status_code == 200
    assert listing.json()["mappings"] == ["driftwood.yaml", "shopify/order.yaml"]
    assert listing.json()["samples"] == [SAMPLE, "samples/order_completed.json", "shopify/samples/order.json"]
    mapping = (workspace / MAPPING).read_text(encoding="utf-8")
    calls = [
        ("GET", "/api/file", {"params": {"path": "loop.yaml"}}, "loop.yaml"),
        ("PUT", "/api/file", {"params": {"path": "loop.yaml"}, "json": {"text": "x"}}, "loop.yaml"),
        ("GET", "/api/file", {"params": {"path": "folder/x.yaml"}}, "folder/x.yaml"),
        ("POST", "/api/evaluate", {"json": {"mapping": mapping, "mapping_file": "loop.yaml", "sample": "{}"}},
         "loop.yaml"),
        ("POST", "/api/cases/run", {"json": {"mapping": mapping, "mapping_file": "loop.yaml"}}, "loop.yaml"),
        ("POST", "/api/cases/save",
         {"json": {"mapping": mapping, "mapping_file": MAPPING, "sample": "{}", "sample_file": "samples/a.json"}},
         "samples/a.json"),
    ]  # fmt: skip
    for method, path, options, named in calls:
        response = client.request(method, path, **options)
        assert (response.status_code, response.json()) == (
            400,
            {"error": f"{named}: Too many levels of symbolic links"},
        ), (method, path)
    assert os.readlink(workspace / "loop.yaml") == "loop.yaml"  # nothing was written through it
    assert client.get("/api/file", params={"path": MAPPING}).status_code == 200  # the studio still serves


def test_a_case_whose_source_is_outside_the_directory_is_not_read(
    client: httpx.Client, workspace: Path, tmp_path: Path
) -> None:
    (tmp_path / "elsewhere.json").write_text('{"id": 1}', encoding="utf-8")
    cases = workspace / "driftwood.cases.yaml"
    cases.write_text(
        "cases:\n  - name: outside\n    source: ../elsewhere.json\n    expect: {order: {id: '1'}}\n",
        encoding="utf-8",
    )
    mapping = (workspace / MAPPING).read_text(encoding="utf-8")
    result = client.post("/api/cases/run", json={"mapping": mapping, "mapping_file": MAPPING}).json()
    assert result["cases"][0]["ok"] is False
    assert "outside the studio's directory" in result["cases"][0]["messages"][0]


def test_the_payload_the_requests_and_the_unread_fields(client: httpx.Client, workspace: Path) -> None:
    result = evaluate(client, workspace)
    expected = load_mapping(workspace / MAPPING).transform(
        json.loads((workspace / SAMPLE).read_text(encoding="utf-8"))
    )
    (order,) = result["targets"]  # type: ignore[misc]
    assert order["status"] == "ok" and order["kind"] == "fenix.order"
    assert order["payload"] == expected["order"]
    assert order["route"] == "POST /api/v1/orders/5237/created"
    request = order["request"]
    # The tutorial's config names ${FENIX_BASE_URL} and friends; without .env they come from .env.example.
    assert request["method"] == "POST"
    assert request["url"] == "http://127.0.0.1:8765/api/v1/orders/5237/created"
    assert request["headers"]["authToken"] == "***" and request["headers"]["x-api-key"] == "***"
    assert request["body"] == expected["order"]
    assert "config.yaml" in result["requests_note"] and ".env.example" in result["requests_note"]  # type: ignore[operator]
    text = json.dumps(result)
    for secret in ("demo-pass", "demo-api-key"):
        assert secret not in text
    assert "customer_ip_address" in result["unread"]  # type: ignore[operator]
    assert result["unread_count"] == len(result["unread"])  # type: ignore[arg-type]
    # A sample of 5,000 distinct keys: the first 1,000 fields never read are listed, all are counted.
    wide = json.loads((workspace / SAMPLE).read_text(encoding="utf-8"))
    wide["meta"] = {f"key{number}": number for number in range(5000)}
    many = evaluate(client, workspace, sample=json.dumps(wide))
    assert len(many["unread"]) == 1000  # type: ignore[arg-type]
    assert many["unread_count"] == result["unread_count"] + 5000  # type: ignore[operator]
    assert result["diagnostics"] == []


def test_one_variable_taken_from_the_env_example_is_counted_as_1_variable(
    client: httpx.Client, workspace: Path
) -> None:
    given = (
        "FENIX_BASE_URL=http://127.0.0.1:8765\nFENIX_USERNAME=u\nFENIX_PASSWORD=p-word\nFENIX_API_KEY=k-key\n"
    )
    (workspace / ".env").write_text(given, encoding="utf-8")  # all but FENIX_STORE_NAME
    note = evaluate(client, workspace)["requests_note"]
    assert note == "the connections of config.yaml; 1 variable set nowhere else taken from .env.example", note


def test_without_a_config_the_requests_go_to_the_sandbox_defaults(
    client: httpx.Client, workspace: Path
) -> None:
    (workspace / "config.yaml").unlink()
    result = evaluate(client, workspace)
    (order,) = result["targets"]  # type: ignore[misc]
    assert order["request"]["url"] == "http://127.0.0.1:8765/api/v1/orders/5237/created"
    assert "sandbox" in result["requests_note"]  # type: ignore[operator]


def test_a_broken_mapping_is_a_located_diagnostic_in_the_cli_wording(
    client: httpx.Client, workspace: Path
) -> None:
    text = (workspace / MAPPING).read_text(encoding="utf-8")
    broken = text.replace('"sum(line_items[].quantity)"', '"sum(line_items[].quantity"')
    result = evaluate(client, workspace, mapping=broken)
    assert result["mapping"]["ok"] is False  # type: ignore[index]
    (diagnostic,) = result["diagnostics"]  # type: ignore[misc]
    with pytest.raises(Exception) as raised:
        parse_mapping(broken, file=MAPPING)
    assert diagnostic["text"] == raised.value.render()  # type: ignore[attr-defined]
    assert (
        diagnostic["line"]
        == text.splitlines().index(next(line for line in text.splitlines() if "sum(line_items" in line)) + 1
    )
    assert result["targets"] == []
    garbage = evaluate(client, workspace, mapping="targets: [\n  {")
    assert garbage["mapping"]["ok"] is False  # type: ignore[index]
    assert garbage["diagnostics"][0]["text"].startswith(f"{MAPPING}:")  # type: ignore[index]


def test_contract_problems_and_skipped_targets_are_reported(client: httpx.Client, workspace: Path) -> None:
    text = (workspace / MAPPING).read_text(encoding="utf-8")
    invalid = text.replace("value: {literal: 0}   # WooCommerce", "value: {literal: heavy}   # WooCommerce")
    result = evaluate(client, workspace, mapping=invalid)
    (order,) = result["targets"]  # type: ignore[misc]
    assert order["status"] == "invalid"
    assert [p["field"] for p in order["problems"]] == ["order.total_weight.value"]
    assert (
        order["problems"][0]["line"]
        == invalid.splitlines().index(next(line for line in invalid.splitlines() if "literal: heavy" in line))
        + 1
    )
    # shipmap run would dead-letter it rather than send it, and says why.
    assert order["request"]["action"] == "dead"
    assert "is not a valid fenix.order" in order["request"]["reason"]
    guarded = (
        text
        + "  dg:\n    kind: dg.execution\n    when: \"status == 'shipped'\"\n    fields: {action_id: {literal: a}}\n"
    )
    result = evaluate(client, workspace, mapping=guarded)
    order, dg = result["targets"]  # type: ignore[misc]
    when_line = guarded.splitlines().index("    when: \"status == 'shipped'\"") + 1
    assert dg == {
        "name": "dg",
        "target": "dg",
        "kind": "dg.execution",
        "line": dg["line"],
        "status": "skipped",
        "reason": f"when is false (line {when_line})",  # the engine's own words, as preview prints them
    }
    # The tutorial's config has no Digital Genius connection: run would refuse it, and so does the plan.
    assert "no connection has api: dg" in result["requests_note"]  # type: ignore[operator]
    assert "request" not in order


def test_a_fan_out_target_shows_each_payload_and_its_request(client: httpx.Client, workspace: Path) -> None:
    mapping = (
        "shipmap: 1\nname: fan\ntargets:\n  cancel:\n    kind: fenix.order_cancel\n    each: orders\n"
        "    key: id\n    fields:\n      id: {path: id, type: id}\n      status: {literal: CANCELLED}\n"
        "      cancelled_at: {literal: '2024-11-14T10:00:00Z'}\n      cancel_reason: {literal: customer}\n"
    )
    result = evaluate(client, workspace, mapping=mapping, sample='{"orders": [{"id": 7}, {"id": 8}]}')
    labels = [entry["name"] for entry in result["targets"]]  # type: ignore[union-attr]
    assert labels == ["cancel[7]", "cancel[8]"]
    urls = [entry["request"]["url"] for entry in result["targets"]]  # type: ignore[union-attr]
    assert urls == [
        "http://127.0.0.1:8765/api/v1/orders/7/created",
        "http://127.0.0.1:8765/api/v1/orders/8/created",
    ]
    # A fan-out over thousands of elements: the first 200 cards (with their requests); the rest not mapped.
    many = json.dumps({"orders": [{"id": number} for number in range(1, 251)]})
    capped = evaluate(client, workspace, mapping=mapping, sample=many)
    assert [entry["name"] for entry in capped["targets"]] == [f"cancel[{n}]" for n in range(1, 201)]  # type: ignore[union-attr]
    assert capped["cut"]["fan_outs"] == [{"target": "cancel", "mapped": 200, "not_mapped": 50}]  # type: ignore[index]
    assert capped["left_off"] == 0
    assert capped["targets"][-1]["request"]["url"].endswith("/orders/200/created")  # type: ignore[index]
    assert result["left_off"] == 0
    assert result["cut"] is None
    # Every element failing: the first 100 errors are located, the rest counted.
    failing = evaluate(
        client, workspace, mapping=mapping.replace("path: id,", "path: nope, required: true,"), sample=many
    )
    (failed,) = failing["targets"]  # type: ignore[misc]
    assert failed["status"] == "failed"
    assert failed["error"]["text"].count("error: required field has no value") == 100
    assert failed["error"]["text"].endswith("\n… 150 more errors not shown (shipmap preview prints them all)")
    assert len(failing["diagnostics"]) == 100  # type: ignore[arg-type]
    empty = evaluate(client, workspace, mapping=mapping, sample='{"orders": []}')
    assert empty["targets"][0]["reason"] == "each: orders found no elements"  # type: ignore[index]


def test_samples_not_json_ndjson_and_arrays(client: httpx.Client, workspace: Path) -> None:
    bad = evaluate(client, workspace, sample='{\n  "id": 1,,\n}', sample_name="pasted")
    error = bad["sample"]["error"]  # type: ignore[index]
    assert (error["file"], error["line"], error["column"]) == ("pasted", 2, 11)
    assert error["text"].startswith("pasted:2:11: error: not JSON: Expecting property name")
    assert bad["targets"] == []
    ndjson = '{"id": 1, "status": "pending", "line_items": []}\n{"id": 2, "status": "nope"}\n'
    second = evaluate(client, workspace, sample=ndjson, sample_name="events.ndjson", index=1)
    assert [d["origin"] for d in second["sample"]["documents"]] == ["events.ndjson:1", "events.ndjson:2"]  # type: ignore[index]
    (order,) = second["targets"]  # type: ignore[misc]
    assert order["status"] == "failed" and "order.status" in order["error"]["text"]
    array = evaluate(client, workspace, sample='[{"id": 1}, {"id": 2}, {"id": 3}]', sample_name="a.json")
    assert len(array["sample"]["documents"]) == 3  # type: ignore[index]
    empty = evaluate(client, workspace, sample="  ")
    assert empty["sample"]["empty"] is True  # type: ignore[index]


def test_run_the_cases_file_against_the_edited_mapping(client: httpx.Client, workspace: Path) -> None:
    text = (workspace / MAPPING).read_text(encoding="utf-8")
    passing = client.post("/api/cases/run", json={"mapping": text, "mapping_file": MAPPING}).json()
    assert (passing["passed"], passing["failed"]) == (3, 0)
    edited = text.replace("first_name: shipping.first_name", "first_name: shipping.last_name")
    edited = edited.replace("email: billing.email", "email: billing.phone")
    failing = client.post("/api/cases/run", json={"mapping": edited, "mapping_file": MAPPING}).json()
    first = failing["cases"][0]
    assert first["ok"] is False
    assert (
        'order.customer.email: expected "rosa.delgado@example.com", got "(214) 555-0179"' in first["messages"]
    )


def test_save_as_case_appends_to_the_cases_file_and_it_passes(client: httpx.Client, workspace: Path) -> None:
    cases = workspace / "driftwood.cases.yaml"
    before = cases.read_text(encoding="utf-8")
    text = (workspace / MAPPING).read_text(encoding="utf-8")
    sample = (workspace / "samples" / "order_completed.json").read_text(encoding="utf-8")
    saved = client.post(
        "/api/cases/save",
        json={
            "mapping": text,
            "mapping_file": MAPPING,
            "sample": sample,
            "sample_file": "samples/order_completed.json",
            "name": "the completed order",
        },
    ).json()
    assert saved["file"] == "driftwood.cases.yaml" and saved["name"] == "the completed order"
    after = cases.read_text(encoding="utf-8")
    assert after.startswith(before)  # appended: every comment and line of the file kept
    assert "source: samples/order_completed.json" in after
    suite = load_suite(cases)
    case = suite.cases[-1]
    assert case.name == "the completed order" and case.exact == {"order"}
    assert run_case(load_mapping(workspace / MAPPING), case).ok
    # A pasted sample is saved inline; the same name again gets a number.
    again = client.post(
        "/api/cases/save",
        json={"mapping": text, "mapping_file": MAPPING, "sample": sample, "name": "the completed order"},
    ).json()
    assert again["name"] == "the completed order (2)"
    inline = load_suite(cases).cases[-1]
    assert inline.source == json.loads(sample)
    assert run_case(load_mapping(workspace / MAPPING), inline).ok


def test_save_as_case_creates_the_cases_file_and_records_errors(
    client: httpx.Client, workspace: Path
) -> None:
    (workspace / "driftwood.cases.yaml").unlink()
    text = (workspace / MAPPING).read_text(encoding="utf-8")
    saved = client.post(
        "/api/cases/save",
        json={
            "mapping": text,
            "mapping_file": MAPPING,
            "sample": '{"id": 9, "status": "cancelled"}',
            "name": "x",
        },
    )
    assert saved.status_code == 200, saved.text
    (case,) = load_suite(workspace / "driftwood.cases.yaml").cases
    assert case.errors == [{"type": "TransformError", "target": "order", "field": "order.status"}]
    assert run_case(load_mapping(workspace / MAPPING), case).ok
    refused = client.post(
        "/api/cases/save",
        json={"mapping": "shipmap: [", "mapping_file": MAPPING, "sample": "{}", "name": "y"},
    )
    assert refused.status_code == 400 and "does not compile" in refused.json()["error"]


def test_save_as_case_expects_no_payload_of_a_fan_out_target_that_failed(
    client: httpx.Client, workspace: Path
) -> None:
    """One shipment's item names no product: `shipmap test` fails the whole fulfillment target, so a
    payload saved for its other shipment could never be compared (the case fails, or passed unchecked)."""
    real = Path(__file__).resolve().parents[1] / "fixtures"
    event = json.loads((real / "derived/bigcommerce/order_218_event.json").read_text(encoding="utf-8"))
    event["shipments"][1]["items"] = [{"order_product_id": 999, "quantity": 1}]
    text = (Path(__file__).resolve().parents[2] / "mappings/bigcommerce/shipment.yaml").read_text(
        encoding="utf-8"
    )
    saved = client.post(
        "/api/cases/save",
        json={
            "mapping": text,
            "mapping_file": "shipment.yaml",
            "sample": json.dumps(event),
            "name": "one bad item",
        },
    )
    assert saved.status_code == 200, saved.text
    (case,) = load_suite(workspace / "shipment.cases.yaml").cases
    assert [error["target"] for error in case.errors] == ["fulfillment"]
    assert sorted(case.expect) == ["shipment[11]", "shipment[12]"]
    result = run_case(parse_mapping(text, file="shipment.yaml"), case)
    assert result.ok, result.messages


FAN_OUT = (
    "shipmap: 1\nname: fan\ntargets:\n  cancel:\n    kind: fenix.order_cancel\n    each: orders\n"
    "    fields:\n      id: {path: id, type: id, required: true}\n      status: {literal: CANCELLED}\n"
    "      cancelled_at: {literal: '2024-11-14T10:00:00Z'}\n      cancel_reason: {literal: customer}\n"
)


def save_fan_out_case(client: httpx.Client, workspace: Path, orders: list[dict[str, int]], name: str) -> Any:
    (workspace / "fan.yaml").write_text(FAN_OUT, encoding="utf-8")
    saved = client.post(
        "/api/cases/save",
        json={
            "mapping": FAN_OUT,
            "mapping_file": "fan.yaml",
            "sample": json.dumps({"orders": orders}),
            "name": name,
        },
    )
    assert saved.status_code == 200, saved.text
    case = load_suite(workspace / "fan.cases.yaml").cases[-1]
    assert case.name == name
    assert run_case(load_mapping(workspace / "fan.yaml"), case).ok
    return case


def test_save_as_case_pins_at_most_the_payloads_the_page_shows_and_says_so(
    client: httpx.Client, workspace: Path
) -> None:
    """A fan-out of 250 elements: the case pins the first 200 payloads (the page's cards), not all of them (a
    sample of 100,000 elements made a cases file of 100,000 payloads), its description says so, and it passes
    under shipmap test, which maps and validates the other 50."""
    case = save_fan_out_case(client, workspace, [{"id": number} for number in range(1, 251)], "many")
    assert list(case.expect) == [f"cancel[{index}]" for index in range(200)]
    text = (workspace / "fan.cases.yaml").read_text(encoding="utf-8")
    assert (
        "description: 'Saved by shipmap studio: expect pins the first 200 payloads of 250 (cancel 250); shipmap"
        " test maps and validates the others, without comparing them.'"
    ) in text.replace("\n      ", " ")
    few = save_fan_out_case(client, workspace, [{"id": 1}, {"id": 2}], "few")  # all of them: no description
    assert list(few.expect) == ["cancel[0]", "cancel[1]"]
    assert text.count("description:") == (workspace / "fan.cases.yaml").read_text(encoding="utf-8").count(
        "description:"
    )


def test_save_as_case_pins_no_payload_of_a_fan_out_that_fails(client: httpx.Client, workspace: Path) -> None:
    """One element of three fails: shipmap test sees the target fail at it and never compares the other two's
    payloads (expect is for a target that does not fail), so the case pins the error alone, not two dead
    expectations."""
    case = save_fan_out_case(client, workspace, [{"id": 1}, {}, {"id": 3}], "one fails")
    assert case.expect == {}
    assert case.errors == [{"type": "TransformError", "target": "cancel", "field": "cancel[1].id"}]


def test_save_the_mapping(client: httpx.Client, workspace: Path) -> None:
    response = client.put(f"/api/file?path={MAPPING}", json={"text": "shipmap: 1\n"})
    assert response.status_code == 200
    assert (workspace / MAPPING).read_text(encoding="utf-8") == "shipmap: 1\n"
    assert not [name for name in os.listdir(workspace) if name.endswith(".tmp")]
    missing = client.get("/api/file", params={"path": "nope.yaml"})
    assert missing.status_code == 404


def test_the_schema_lists_keys_kinds_fields_and_functions(client: httpx.Client) -> None:
    schema = client.get("/api/schema").json()
    assert {key["name"] for key in schema["keys"]["target"]} >= {"kind", "when", "from", "fields"}
    assert {key["name"] for key in schema["keys"]["field"]} >= {"path", "template", "literal", "each"}
    order = schema["kinds"]["fenix.order"]
    assert order["route"] == "POST /api/v1/orders/{id}/created"
    assert order["fields"]["id"]["required"] is True
    assert order["fields"]["line_items"]["array"] is True
    assert "sku" in order["fields"]["line_items"]["fields"]
    assert {"money", "datetime", "sum"} <= {function["name"] for function in schema["functions"]}


def test_the_command_prints_the_url_serves_it_and_stops_on_ctrl_c(workspace: Path) -> None:
    shipmap = Path(sys.executable).with_name("shipmap")
    process = subprocess.Popen(
        [str(shipmap), "studio", str(workspace)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(2)]
        assert lines[0] == f"shipmap studio serving {workspace.resolve()}\n"
        match = re.fullmatch(r"open (http://127\.0\.0\.1:\d+)/\?token=([\w-]+)\n", lines[1])
        assert match, lines
        base, token = match.groups()
        listing = httpx.get(f"{base}/api/workspace", headers={"X-Shipmap-Token": token}, timeout=10)
        assert listing.json()["mappings"] == ["driftwood.yaml", "shopify/order.yaml"]
        assert httpx.get(f"{base}/api/workspace", timeout=10).status_code == 403
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=15)
    assert process.returncode == 130  # Ctrl-C, as everywhere in the CLI
    assert process.stderr is not None
    assert "Traceback" not in process.stderr.read()


def test_the_command_refuses_a_directory_that_does_not_exist(tmp_path: Path) -> None:
    shipmap = Path(sys.executable).with_name("shipmap")
    done = subprocess.run(
        [str(shipmap), "studio", str(tmp_path / "nope")], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"shipmap studio: {tmp_path / 'nope'}: ")
    assert "Traceback" not in done.stderr


def test_enrichment_documents_go_beside_the_sample(client: httpx.Client, workspace: Path) -> None:
    # As shipmap serve does after its declared GETs: the fetched documents become keys beside the event's.
    mapping = "shipmap: 1\nname: skinny\ntargets:\n  order:\n    kind: fenix.order\n    fields:\n      id: {path: order.id, type: id}\n"
    documents = '{"order": {"id": 100}}'
    result = evaluate(
        client,
        workspace,
        mapping=mapping,
        sample='{"data": {"id": 100}}',
        sample_name="hook.json",
        documents=documents,
    )
    (order,) = result["targets"]  # type: ignore[misc]
    assert order["payload"]["id"] == "100"
    assert "data.id" in result["unread"]  # type: ignore[operator]
    bad = evaluate(client, workspace, mapping=mapping, sample="{}", documents='{\n "order": }')
    assert bad["documents_error"]["text"].startswith("documents:2:11: error: not JSON: Expecting value")  # type: ignore[index]
    assert bad["targets"] == []
    listed = evaluate(client, workspace, mapping=mapping, sample="{}", documents="[1]")
    assert "a JSON object" in listed["documents_error"]["message"]  # type: ignore[index]
    saved = client.post(
        "/api/cases/save",
        json={
            "mapping": mapping,
            "mapping_file": "skinny.yaml",
            "sample": '{"data": {"id": 100}}',
            "name": "enriched",
            "documents": documents,
        },
    )
    assert saved.status_code == 200, saved.text
    (case,) = load_suite(workspace / "skinny.cases.yaml").cases
    assert case.source == {"data": {"id": 100}, "order": {"id": 100}}
    assert case.expect == {"order": {"id": "100"}}  # a payload that breaks its contract is pinned as it is,
    assert case.errors[0]["type"] == "PayloadValidationError"  # with its contract problem expected
    assert run_case(parse_mapping(mapping, file="skinny.yaml"), case).ok


def test_an_internal_error_is_said_by_its_type_and_message_not_its_repr(
    client: httpx.Client, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug inside shipmap (no input of a user's raises it: the engine's own entry points are made to) reads
    as `internal error: RuntimeError: …`, never as Python's `RuntimeError('…')`."""
    from shipmap.connectors._studio import _app, _evaluate

    def engine_bug(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the engine's bug")

    monkeypatch.setattr(_evaluate, "parse_mapping", engine_bug)
    [diagnostic] = evaluate(client, workspace)["diagnostics"]  # type: ignore[misc]
    assert diagnostic["message"] == "internal error: RuntimeError: the engine's bug"
    monkeypatch.setattr(_app, "run_cases", engine_bug)
    mapping = (workspace / MAPPING).read_text(encoding="utf-8")
    answer = client.post("/api/cases/run", json={"mapping": mapping, "mapping_file": MAPPING})
    assert (answer.status_code, answer.json()) == (
        500,
        {"error": "internal error: RuntimeError: the engine's bug"},
    )
