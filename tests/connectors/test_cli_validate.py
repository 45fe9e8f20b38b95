"""``shipmap validate DIR``: every mapping and cases file under it, each checked as what it is."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from shipmap.connectors._cli import main
from shipmap.connectors._config import load_config
from shipmap.connectors._config._serve_model import DEFAULT_ENRICH_CONCURRENCY
from shipmap.connectors._serve._settings import enrichments, serve_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def retailer(tmp_path: Path) -> Path:
    """A retailer's repository: two mappings with their cases, plus YAML that is neither (a CI file)."""
    for name in ("order", "fulfillment"):
        shutil.copy(ROOT / f"mappings/shopify/{name}.yaml", tmp_path / f"{name}.yaml")
        (tmp_path / f"{name}.cases.yaml").write_text(
            f"cases:\n  - name: inline\n    source: {{id: 1}}\n    skipped: [{'order' if name == 'order' else 'fulfillment'}]\n"
        )
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / ".github" / "workflows" / "ci.yml").write_text("on: push\njobs: {}\n")
    return tmp_path


def test_a_directory_validates_every_mapping_and_cases_file(
    retailer: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(retailer), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    kinds = {Path(entry["file"]).name: entry["kind"] for entry in report["files"]}
    assert kinds == {
        "order.yaml": "mapping",
        "order.cases.yaml": "cases",
        "fulfillment.yaml": "mapping",
        "fulfillment.cases.yaml": "cases",
    }


def test_a_broken_cases_file_and_a_typo_in_a_mapping_are_one_error_each(
    retailer: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (retailer / "order.cases.yaml").write_text(
        "cases:\n  - name: a\n    source: {id: 1}\n    skiped: [order]\n"
    )
    order = retailer / "fulfillment.yaml"
    order.write_text(order.read_text().replace("tracking_number: ", "trackng_number: ", 1))
    assert main(["validate", str(retailer)]) == 2
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 2, err
    assert "order.cases.yaml:4:5: error:" in err and "skiped" in err
    assert "trackng_number is not a field of fenix.fulfillment; did you mean 'tracking_number'?" in err
    assert f"ok {retailer / 'order.yaml'} " in out
    assert (
        f"ok {retailer / 'fulfillment.yaml'} " not in out
        and f"ok {retailer / 'order.cases.yaml'} " not in out
    )


def test_a_case_naming_a_target_the_mapping_lacks(retailer: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (retailer / "order.cases.yaml").write_text(
        "cases:\n  - name: a\n    source: {id: 1}\n    skipped: [ordr]\n"
    )
    assert main(["validate", str(retailer / "order.cases.yaml")]) == 2
    assert "names target 'ordr', which" in capsys.readouterr().err


def test_a_fan_out_targets_payloads_are_named_with_their_key(
    retailer: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fan-out target (each:) gives one payload per element, named target[key] as shipmap test and preview
    name them: a case names those, or the target itself where it is skipped whole (in a case of its own: a
    case that skips shipment and expects shipment[EC1.2] could never pass, and is refused)."""
    shutil.copy(ROOT / "mappings/woocommerce/fulfillment.yaml", retailer / "fulfillment.yaml")
    cases = retailer / "fulfillment.cases.yaml"
    cases.write_text(
        "cases:\n  - name: a\n    source: {id: 1}\n"
        '    expect: {"fulfillment[94001]": {}, "shipment[EC1.2]": {}}\n'
        '    skipped: ["fulfillment[7]"]\n'
        '    absent: ["fulfillment[94001].shipment_status"]\n'
        "  - name: b\n    source: {id: 1}\n"
        '    skipped: [shipment, "fulfillment[7]"]\n'
    )
    assert main(["validate", str(cases)]) == 0
    assert capsys.readouterr().out == f"ok {cases} (2 cases)\n"


@pytest.mark.parametrize(
    ("file", "case", "message"),
    [
        (  # a fan-out target's payload named without its key: no payload has that name
            "fulfillment",
            "expect: {fulfillment: {}}",
            "case 'a' names payload 'fulfillment', which {mapping} does not produce: target 'fulfillment' "
            "fans out (each:), one payload per element, each named 'fulfillment[key]'",
        ),
        (
            "fulfillment",
            "absent: [fulfillment.shipment_status]",
            "case 'a' names payload 'fulfillment', which {mapping} does not produce: target 'fulfillment' "
            "fans out (each:), one payload per element, each named 'fulfillment[key]'",
        ),
        (  # a one-payload target written with a key
            "order",
            'expect: {"order[7]": {}}',
            "case 'a' names target 'order[7]', which {mapping} does not have (it has order): target 'order' "
            "does not fan out (no each:), so its one payload is named 'order'",
        ),
        (  # an unknown target, with or without a key
            "fulfillment",
            'expect: {"fulfilment[7]": {}}',
            "case 'a' names target 'fulfilment[7]', which {mapping} does not have (it has fulfillment, shipment)",
        ),
        (
            "fulfillment",
            'skipped: ["shipment[]"]',
            "case 'a' names target 'shipment[]', which {mapping} does not have (it has fulfillment, shipment)",
        ),
    ],
)
def test_a_case_naming_a_payload_the_mapping_cannot_produce(
    retailer: Path, capsys: pytest.CaptureFixture[str], file: str, case: str, message: str
) -> None:
    shutil.copy(ROOT / "mappings/woocommerce/fulfillment.yaml", retailer / "fulfillment.yaml")
    cases = retailer / f"{file}.cases.yaml"
    cases.write_text(f"cases:\n  - name: a\n    source: {{id: 1}}\n    {case}\n")
    assert main(["validate", str(cases)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"{cases}:2:5: error: {message.format(mapping=retailer / f'{file}.yaml')}\n"), err
    assert main(["validate", str(cases), "--format", "json"]) == 2
    [problem] = json.loads(capsys.readouterr().out)["files"][0]["problems"]
    assert problem["location"] == {"file": str(cases), "line": 2, "column": 5}


def test_the_ready_mappings_and_their_cases_validate(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--strict", str(ROOT / "mappings"), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    cases = [entry for entry in report["files"] if entry["kind"] == "cases"]
    assert len(cases) == len(list((ROOT / "mappings").rglob("*.cases.yaml"))) > 0
    assert all(entry["ok"] and not entry["problems"] for entry in report["files"])


def test_a_directory_without_mappings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path)]) == 2
    assert "no mappings or cases files found in" in capsys.readouterr().err


def test_a_runtime_config_is_checked_as_run_and_serve_load_it(
    retailer: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Named on the command line, a runtime config loads with its env file and secrets, and its mappings
    compile; a missing secret is one located error. A directory, and pre-commit's --skip-other-yaml, leave
    configs alone: they need secrets that a repository's checks do not have."""
    for name in ("config.yaml", "demo.env"):
        shutil.copy(ROOT / "examples" / "acme_outfitters" / name, retailer / name)
    monkeypatch.setenv("ACME_SANDBOX_URL", "http://127.0.0.1:9")
    config = retailer / "config.yaml"
    assert main(["validate", str(config)]) == 0
    assert capsys.readouterr().out == (
        f"ok {config} (a runtime config: 2 connections, 5 mappings entries, 1 source)\n"
    )
    assert main(["validate", str(config), "--format", "json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)["files"]
    assert entry["kind"] == "config" and entry["ok"] is True
    assert (entry["connections"], entry["mappings"], entry["sources"]) == (["dg", "fenix"], 5, ["shopify"])

    (retailer / "demo.env").write_text(
        (retailer / "demo.env").read_text().replace("ACME_FENIX_API_KEY=", "UNUSED_KEY=")
    )
    assert main(["validate", str(config)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and (
        ": error: connections.fenix.auth.api_key: environment variable ACME_FENIX_API_KEY is not set" in err
    )
    assert err.startswith(f"{config}:")

    assert main(["validate", str(retailer), "--format", "json"]) == 0  # the directory: no config in it
    assert "config" not in {entry["kind"] for entry in json.loads(capsys.readouterr().out)["files"]}
    assert main(["validate", "--skip-other-yaml", str(config)]) == 0
    assert capsys.readouterr().out == ""


@pytest.fixture
def acme_config(retailer: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The acme example's runtime config (a Shopify webhook source among its parts), with its env file."""
    for name in ("config.yaml", "demo.env"):
        shutil.copy(ROOT / "examples" / "acme_outfitters" / name, retailer / name)
    monkeypatch.setenv("ACME_SANDBOX_URL", "http://127.0.0.1:9")
    assert "    secret: ${ACME_SHOPIFY_WEBHOOK_SECRET}\n" in (retailer / "config.yaml").read_text()
    return retailer / "config.yaml"


def _line_of(text: str, part: str) -> int:
    return 1 + text[: text.index(part)].count("\n")


def test_a_webhook_secret_reference_without_its_brace_is_refused_and_never_shown(
    acme_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Read as text, ${ACME_SHOPIFY_WEBHOOK_SECRET would be the secret: every real webhook refused, and one
    signed with that text accepted. It is a located error naming the key, never the text."""
    written = acme_config.read_text()
    line = _line_of(written, "${ACME_SHOPIFY_WEBHOOK_SECRET}")
    acme_config.write_text(written.replace("${ACME_SHOPIFY_WEBHOOK_SECRET}", "${ACME_SHOPIFY_WEBHOOK_SECRET"))
    assert main(["validate", str(acme_config)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"{acme_config}:{line}:13: error: sources.shopify.secret: a reference '${{' has no closing '}}'\n"
        "  hint: a reference is ${VAR} or ${file:/path}; $$ is a literal $ (the value is not shown: it may be a "
        "secret)\n"
    )
    assert main(["validate", str(acme_config), "--format", "json"]) == 2
    [problem] = json.loads(capsys.readouterr().out)["files"][0]["problems"]
    assert problem["location"] == {"file": str(acme_config), "line": line, "column": 13}


@pytest.mark.parametrize(
    ("base_url", "refusal"),
    [
        (
            "http://${ACME_FENIX_USERNAME}:${ACME_FENIX_PASSWORD}@127.0.0.1:9",
            "credentials in the URL (user:password@host) are refused",
        ),
        (
            "http://127.0.0.1:9/v1?api_key=${ACME_FENIX_API_KEY}",
            "a query string or fragment (?..., #...) is refused: route paths are appended to the base URL",
        ),
        (
            "http://127.0.0.1:9/v1#${ACME_FENIX_API_KEY}",
            "a query string or fragment (?..., #...) is refused: route paths are appended to the base URL",
        ),
    ],
    ids=["userinfo", "query", "fragment"],
)
def test_a_base_url_that_would_carry_a_credential_is_refused_without_showing_it(
    acme_config: Path, capsys: pytest.CaptureFixture[str], base_url: str, refusal: str
) -> None:
    """A key in a base URL's query (or userinfo) would be journaled, printed by --dry-run and dead-letters
    with every URL, and the route path would land after it: refused at load, naming the key, not the value."""
    written = acme_config.read_text()
    line = _line_of(written, "base_url: ${ACME_SANDBOX_URL}")
    acme_config.write_text(written.replace("base_url: ${ACME_SANDBOX_URL}", f'base_url: "{base_url}"', 1))
    assert main(["validate", str(acme_config)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"{acme_config}:{line}:15: error: connections.fenix.base_url: {refusal}"), err
    assert "demo-api-key" not in err and "demo-pass" not in err


_AFTERSHIP_TARGETS = "      fulfillment: {enabled: false}\n"
_SHOPIFY_SOURCE = "    secret: ${ACME_SHOPIFY_WEBHOOK_SECRET}\n"


@pytest.mark.parametrize(
    ("after", "added", "key", "column"),
    [
        (
            _AFTERSHIP_TARGETS,
            "      delivered:\n        path: /flows/{action_id}?api_key=${ACME_DG_API_KEY}\n",
            "mappings[4].targets.delivered.path",
            15,
        ),
        (
            _SHOPIFY_SOURCE,
            "    enrich:\n      connection: fenix\n      fetch:\n"
            "        order: /orders/{payload.id}?include=lines&key=${ACME_FENIX_API_KEY}\n",
            "sources.shopify.enrich.fetch.order",
            16,
        ),
        (
            "      store_name: ${ACME_FENIX_STORE_NAME}\n",
            '      login_path: "/login#${ACME_FENIX_API_KEY}"\n',
            "connections.fenix.auth.login_path",
            19,
        ),
    ],
    ids=["route-path", "enrich-fetch", "login-path"],
)
def test_a_reference_in_a_paths_query_string_is_refused_without_showing_it(
    acme_config: Path, capsys: pytest.CaptureFixture[str], after: str, added: str, key: str, column: int
) -> None:
    """Only auth fields and sensitive headers are secrets: a key filled into a path's query string was
    journaled and printed with every URL (--dry-run, dead letters, reasons). Refused at load, as a query in
    base_url is, naming the key and where to put the key instead, never the value."""
    written = acme_config.read_text().replace(after, after + added, 1)
    acme_config.write_text(written)
    line = _line_of(written, added.splitlines()[-1])
    for command in (["validate", str(acme_config)], ["run", str(acme_config), "--input", "-", "--dry-run"]):
        assert main(command) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert err == (
            f"{acme_config}:{line}:{column}: error: {key}: a ${{...}} reference in the query string is refused: "
            "the URL is stored and printed with every request (--dry-run, dead letters, reasons, logs), the "
            "value in it too\n"
            "  hint: send a key with the connection's auth (scheme: basic, as WooCommerce's consumer key and "
            "secret; or scheme: api_key with a header) or its headers, as ${VAR} references; a query without "
            "references (?include=products) is fine\n"
        )


def test_a_query_without_references_and_a_reference_in_the_path_are_kept(
    acme_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plain query (?include=products), a literal $$, a reference before the '?', and a JMESPath filter's
    '?' inside a placeholder are no reference in a query string."""
    acme_config.write_text(
        acme_config.read_text().replace(
            _SHOPIFY_SOURCE,
            _SHOPIFY_SOURCE + "    enrich:\n      connection: fenix\n      fetch:\n"
            "        order: /stores/${ACME_FENIX_STORE_NAME}/orders/{payload.id}?include=products&price=$${x}\n"
            "        lines: \"/orders/{payload.line_items[?sku == 'a'] | [0].id}/${ACME_FENIX_STORE_NAME}\"\n",
            1,
        )
    )
    assert main(["validate", str(acme_config)]) == 0, capsys.readouterr().err


_ENRICH = "    enrich:\n      connection: fenix\n      fetch:\n        order: /orders/{payload.id}\n"


@pytest.mark.parametrize(
    ("given", "rule"),
    [("0", "must be at least 1"), ("65", "must be at most 64"), ("two", "must be an integer")],
)
def test_an_enrichment_concurrency_out_of_bounds_is_refused_where_it_is_written(
    acme_config: Path, capsys: pytest.CaptureFixture[str], given: str, rule: str
) -> None:
    """Webhooks of a source fetched at once: at least 1 (with 0, none would ever be fetched), at most 64 (each
    is held in memory with its documents until its turn)."""
    added = f"{_ENRICH}      concurrency: {given}\n"
    written = acme_config.read_text().replace(_SHOPIFY_SOURCE, _SHOPIFY_SOURCE + added, 1)
    acme_config.write_text(written)
    line = _line_of(written, f"concurrency: {given}")
    assert main(["validate", str(acme_config)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"{acme_config}:{line}:20: error: sources.shopify.enrich.concurrency: {rule}"), err


def test_an_enrichment_concurrency_reaches_the_services_settings(acme_config: Path) -> None:
    added = f"{_ENRICH}      concurrency: 12\n"
    acme_config.write_text(acme_config.read_text().replace(_SHOPIFY_SOURCE, _SHOPIFY_SOURCE + added, 1))
    config = load_config(acme_config)
    enrichment = serve_settings(config).sources["shopify"].enrich
    assert enrichment is not None and enrichment.concurrency == 12
    assert enrichments(config)["shopify"].concurrency == 12
    acme_config.write_text(acme_config.read_text().replace("      concurrency: 12\n", ""))
    assert enrichments(load_config(acme_config))["shopify"].concurrency == DEFAULT_ENRICH_CONCURRENCY


def test_a_webhook_secret_written_literally_validates_with_a_warning(
    acme_config: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """As an auth secret written in the file: it works, and validate's warning names the key and line, not the
    value (it is validate's own warning, as a mapping's lint findings are, not a log line beside them)."""
    written = acme_config.read_text()
    line = _line_of(written, "${ACME_SHOPIFY_WEBHOOK_SECRET}")
    acme_config.write_text(written.replace("${ACME_SHOPIFY_WEBHOOK_SECRET}", "shpss_written_in_the_file"))
    with caplog.at_level(logging.WARNING, logger="shipmap.connectors.config"):
        assert main(["validate", str(acme_config)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"ok {acme_config} ")
    assert err == (
        f"{acme_config}:{line}:13: warning: sources.shopify.secret is written literally in the config; use a "
        "${ENV_VAR} reference\n"
    )
    assert caplog.records == []
    assert "shpss_written_in_the_file" not in out + err + caplog.text


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (
            "shipmap: 1\nname: café\ntargets: {}\n".encode("latin-1"),
            "2:10: error: cannot read mapping: not UTF-8 text (byte 0xe9: invalid continuation byte); save it as UTF-8",
        ),
        (
            b"\x00\x01\xff\xfe",
            "1:3: error: cannot read mapping: not UTF-8 text (byte 0xff: invalid start byte); save it as UTF-8",
        ),
        (  # the column counts characters, as an editor does: ü is two bytes and one column
            "shipmap: 1\nname: ü ".encode() + "café\n".encode("latin-1"),
            "2:12: error: cannot read mapping: not UTF-8 text (byte 0xe9: invalid continuation byte); save it as UTF-8",
        ),
    ],
    ids=["latin-1", "binary", "after-a-two-byte-character"],
)
def test_a_mapping_that_is_not_utf8_is_located_at_its_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, error: str
) -> None:
    """Python's 'can't decode byte 0xe9 in position 20' at 1:1 left the user counting bytes. validate calls
    a file without 'shipmap: 1' (the binary) a file: it cannot tell it is a mapping; preview was given one."""
    mapping = tmp_path / "acme.yaml"
    mapping.write_bytes(content)
    told = error if content.startswith(b"shipmap: 1") else error.replace("read mapping:", "read file:")
    assert main(["validate", str(mapping)]) == 2
    assert capsys.readouterr().err == f"{mapping}:{told}\n"
    assert main(["preview", str(mapping), str(mapping)]) == 2
    assert capsys.readouterr().err == f"{mapping}:{error}\n"


def test_a_config_that_is_not_utf8_is_located_at_its_byte_and_called_a_config(
    acme_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """validate told it as a mapping ('cannot read mapping'), run said 'config file is not UTF-8 text' at 1:1,
    and dead-letters said 'cannot read config file' without a place."""
    written = acme_config.read_bytes()
    acme_config.write_bytes(written.replace(b"  dg:\n    api: dg", b"  dg:\n    api: dg # caf\xe9", 1))
    line = _line_of(written.decode(), "  dg:\n    api: dg") + 1
    error = (
        f"{acme_config}:{line}:18: error: cannot read config file: not UTF-8 text (byte 0xe9: invalid "
        "continuation byte); save it as UTF-8\n"
    )
    for command in (
        ["validate", str(acme_config)],
        ["run", str(acme_config), "--input", "-", "--dry-run"],
        ["dead-letters", str(acme_config)],
    ):
        assert main(command) == 2
        assert capsys.readouterr() == ("", error), command


def test_yaml_of_no_kind_that_is_not_utf8_is_called_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Neither a mapping (shipmap: 1) nor a config (connections:) can be told: it is named neutrally."""
    other = tmp_path / "ci.yml"
    other.write_bytes(b"on: push\nname: caf\xe9\n")
    assert main(["validate", str(other)]) == 2
    assert capsys.readouterr() == (
        "",
        f"{other}:2:10: error: cannot read file: not UTF-8 text (byte 0xe9: invalid continuation byte); save it "
        "as UTF-8\n",
    )


def test_an_env_file_that_does_not_read_is_located_at_its_bad_byte_or_line_never_quoted(
    acme_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A byte that is not UTF-8 (and a line that is not KEY=value) in the env file was reported at the config's
    env_file: line, which says nothing of where in the env file to look. It is now at that line and column of
    the env file, without the line's text (a password); a file too large is still at the env_file: line."""
    env = acme_config.parent / "demo.env"
    written = env.read_bytes()
    line = _line_of(written.decode(), "ACME_FENIX_PASSWORD=")
    column = len("ACME_FENIX_PASSWORD=hunt") + 1
    env.write_bytes(written.replace(b"ACME_FENIX_PASSWORD=", b"ACME_FENIX_PASSWORD=hunt\xe9r2-", 1))
    for command in (["validate", str(acme_config)], ["run", str(acme_config), "--input", "-", "--dry-run"]):
        assert main(command) == 2
        assert capsys.readouterr() == (
            "",
            f"{env}:{line}:{column}: error: cannot read env file: not UTF-8 text (byte 0xe9: invalid "
            "continuation byte); save it as UTF-8\n",
        ), command
    env.write_bytes(written + b'GOOD=1\nhunter2 is not a binding "\n')
    assert main(["validate", str(acme_config)]) == 2
    line = written.count(b"\n") + 2
    assert capsys.readouterr() == ("", f"{env}:{line}:1: error: env file: a line that is not KEY=value\n")
    env.write_bytes(b"#" * (1024 * 1024 + 1))
    assert main(["validate", str(acme_config)]) == 2
    line = _line_of(acme_config.read_text(), "env_file: demo.env")
    assert capsys.readouterr() == (
        "",
        f"{acme_config}:{line}:11: error: env_file: env file demo.env is larger than 1 MiB\n",
    )


@pytest.mark.parametrize(
    ("make", "key", "reason", "column"),
    [
        (lambda path: path.mkdir(), "env_file", "env_file is a directory, not a file", 11),
        (
            lambda path: path.symlink_to(path),
            "env_file",
            "env_file cannot be read: Too many levels of symbolic links",
            11,
        ),
        (lambda path: path.mkdir(), "mapping", "mapping file is a directory, not a file", 14),
        (
            lambda path: path.symlink_to(path),
            "mapping",
            "mapping file cannot be read: Too many levels of symbolic links",
            14,
        ),
    ],
    ids=["env-file-directory", "env-file-loop", "mapping-directory", "mapping-loop"],
)
def test_a_config_file_path_that_is_no_file_says_what_it_is(
    acme_config: Path,
    capsys: pytest.CaptureFixture[str],
    make: Callable[[Path], object],
    key: str,
    reason: str,
    column: int,
) -> None:
    """A directory was 'env_file does not exist'; a link that loops was an internal error (RuntimeError from
    Path.resolve(), exit 70) for both an env_file and a mappings entry."""
    written = acme_config.read_text()
    old = "env_file: demo.env" if key == "env_file" else "  - mapping: shopify/order_cancelled"
    new = "env_file: secrets.env" if key == "env_file" else "  - mapping: ./cancelled.yaml"
    make(acme_config.parent / new.split(": ")[1])
    acme_config.write_text(written.replace(old, new, 1))
    line = _line_of(written, old)
    for command in (["validate", str(acme_config)], ["run", str(acme_config), "--input", "-", "--dry-run"]):
        assert main(command) == 2
        assert capsys.readouterr() == ("", f"{acme_config}:{line}:{column}: error: {reason}\n"), command


def test_a_mappings_problems_are_listed_in_the_files_order_in_text_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unused lookup (line 9), a required field left out (its object's line) and a misspelt field (further
    down) come in the file's order, as a compiler lists them, though found by different checks."""
    text = (ROOT / "tests/fixtures/engine/shopify_order_min.yaml").read_text(encoding="utf-8")
    assert "      item_quantity: sum(line_items[].quantity)\n" in text and "vendor: vendor" in text
    lacking = tmp_path / "lacking.yaml"
    lacking.write_text(
        text.replace("      item_quantity: sum(line_items[].quantity)\n", "").replace(
            "vendor: vendor", "vendr: vendor"
        )
    )
    assert main(["validate", str(lacking)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[2].split(" ")[0] for line in lines] == [
        "lookups.unused_table",
        "order.item_quantity",
        "order.line_items[].vendr",
    ], lines
    places = [tuple(map(int, line.split(": ")[0].split(":")[-2:])) for line in lines]
    assert places == sorted(places) and len(set(places)) == 3, places
    assert main(["validate", str(lacking), "--format", "json"]) == 2
    [entry] = json.loads(capsys.readouterr().out)["files"]
    assert [problem["text"] for problem in entry["problems"]] == lines


def test_a_cases_file_reports_every_mistake_each_located_up_to_a_cap(
    retailer: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not only the first: each unknown key (a typo is one error, not also the key it misses), each case's
    mistake, a name used twice; in the file's order, in text and JSON."""
    cases = retailer / "order.cases.yaml"
    cases.write_text(
        "descripton: typo\n"  # 1
        "cases:\n"
        "  - name: a\n"
        "    sorce: {id: 1}\n"  # 4
        "    skipped: [order]\n"
        "  - name: b\n"
        "    source: {id: 2}\n"
        "    match: nearly\n"  # 8
        "    skipped: [order]\n"
        "  - name: a\n"  # 10
        "    source: {id: 3}\n"
        "    skipped: [order]\n"
    )
    assert main(["validate", str(cases)]) == 2
    err = capsys.readouterr().err
    heads = [line for line in err.splitlines() if ": error: " in line]
    assert heads == [
        f"{cases}:1:1: error: unknown key 'descripton' in the cases file",
        f"{cases}:4:5: error: unknown key 'sorce' in a case",
        f"{cases}:8:12: error: 'match' is partial or exact, or an object of target: partial|exact",
        f"{cases}:10:5: error: two cases are named 'a'",
    ], err
    assert "hint: did you mean 'source'?" in err and "needs a 'source'" not in err
    assert main(["validate", str(cases), "--format", "json"]) == 2
    [entry] = json.loads(capsys.readouterr().out)["files"]
    assert entry["ok"] is False
    located = [(p["location"]["line"], p["location"]["column"], p["type"]) for p in entry["problems"]]
    assert located == [
        (1, 1, "MappingStructureError"),
        (4, 5, "MappingStructureError"),
        (8, 12, "MappingStructureError"),
        (10, 5, "MappingStructureError"),
    ]

    # A file wrong throughout: the first 100 mistakes, not the whole file read out.
    cases.write_text("cases:\n" + "".join(f"  - name: c{n}\n    sorce: {{id: {n}}}\n" for n in range(150)))
    assert main(["validate", str(cases), "--format", "json"]) == 2
    [entry] = json.loads(capsys.readouterr().out)["files"]
    assert [p["location"]["line"] for p in entry["problems"]] == [3 + 2 * n for n in range(100)]
