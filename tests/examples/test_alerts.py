"""examples/deploy/alerts.yml: the alerting rules an operator loads into Prometheus, checked against what a
running ``shipmap serve`` exports and run through promtool.

A renamed metric or label would leave every user's alerts silent without an error anywhere, so each series the
rules name (in an expression or an annotation) and each input series of their promtool test
(tests/examples/alerts_test.yml) must be one the deploy example's service exports on /metrics, scraped over
HTTP after a delivered, a forged and an unsigned webhook. promtool (Debian's prometheus package, installed by
``make promtool``) checks the rules and runs that test: input series in, the alerts and their rendered text
out."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from markdown_support import heading_anchors
from prometheus_client.parser import text_string_to_metric_families
from shipmap.connectors import Sandbox
from test_deploy import DEPLOY, ORDER, REPO, SECRETS, installed, signed, the_units_service, wait_until

ALERTS = DEPLOY / "alerts.yml"
RULES_TEST = Path(__file__).with_name("alerts_test.yml")
PROMTOOL = Path("/usr/bin/promtool")
FROM_PROMETHEUS = {"up"}  # series Prometheus makes itself about a scrape, not the service's
SCRAPE_LABELS = {"job", "instance"}  # added by Prometheus to every series it scrapes
NAME = re.compile(r"\b(shipmap_\w+|up)\b(?:\s*\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
ANNOTATIONS = {"summary", "description", "runbook_url"}

Exported = list[tuple[str, dict[str, str]]]


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def rules_test() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(RULES_TEST.read_text())
    return loaded


def exported(metrics: str) -> Exported:
    """Every sample of a scrape, as (name, labels); a family's name (a histogram's) stands for its samples too."""
    found: Exported = []
    for family in text_string_to_metric_families(metrics):
        found.append((family.name, {}))
        found.extend((sample.name, dict(sample.labels)) for sample in family.samples)
    return found


def unexported_names(texts: list[str], scraped: Exported) -> list[str]:
    """The series named in ``texts`` (PromQL, annotations) that no scraped sample is: a name, or a name with a
    label matcher no sample of that name meets."""
    problems: list[str] = []
    for text in texts:
        for name, selector in NAME.findall(text):
            if name in FROM_PROMETHEUS:
                continue
            samples = [labels for sample, labels in scraped if sample == name]
            if not samples:
                problems.append(f"{name}: not exported")
            for label, operator, value in MATCHER.findall(selector):
                if label in SCRAPE_LABELS:
                    continue
                values = {labels[label] for labels in samples if label in labels}
                met = {
                    "=": value in values,
                    "=~": any(re.fullmatch(value, seen) for seen in values),
                }.get(operator, bool(values))  # != and !~: the label is there at all
                if not met:
                    problems.append(f'{name}{{{label}{operator}"{value}"}}: exported values {sorted(values)}')
    return problems


def unexported_series(series: list[str], scraped: Exported) -> list[str]:
    """The promtool test's input series that are not, labels and all, a sample the service exports."""
    problems: list[str] = []
    for text in series:
        name, selector = re.fullmatch(r"(\w+)\{(.*)\}", text).groups()  # type: ignore[union-attr]
        if name in FROM_PROMETHEUS:
            continue
        labels = {
            label: value for label, _op, value in MATCHER.findall(selector) if label not in SCRAPE_LABELS
        }
        if (name, labels) not in scraped:
            problems.append(text)
    return problems


def test_every_series_the_alerts_and_their_rules_test_name_is_one_a_running_service_exports(
    tmp_path: Path,
) -> None:
    with Sandbox() as sandbox, the_units_service(installed(tmp_path, sandbox.url), tmp_path) as running:
        body = json.dumps({**json.loads(ORDER), "id": 8_200_001}).encode()
        hook = f"{running.url}/hooks/shop"
        good = signed(body, "orders/create", "alerts-1", SECRETS["shopify_webhook_secret"])
        forged = signed(body, "orders/create", "alerts-2", "not-the-shops-secret")
        unsigned = {key: value for key, value in forged.items() if key != "X-Shopify-Hmac-Sha256"}
        with httpx.Client(timeout=10) as client:
            answers = [
                client.post(hook, content=body, headers=h).status_code for h in (good, forged, unsigned)
            ]
            assert answers == [200, 401, 401]
            wait_until(lambda: len(sandbox.requests(endpoint="fenix.orders")) == 1, "the order at Fenix")

            def scrape() -> Exported:
                answer = client.get(f"{running.url}/metrics")
                assert answer.status_code == 200, answer.text
                return exported(answer.text)

            # The inbox's gauges come with its first answer, the delivery counters once the run has counted.
            wait_until(
                lambda: {"shipmap_queue_depth", "shipmap_deliveries_total"} <= {name for name, _ in scrape()},
                "the inbox's gauges and the delivery counters on /metrics",
            )
            scraped = scrape()

    texts = [text for rule in rules() for text in [rule["expr"], *rule["annotations"].values()]]
    assert unexported_names(texts, scraped) == []
    inputs = [entry["series"] for test in rules_test()["tests"] for entry in test["input_series"]]
    assert unexported_series(inputs, scraped) == []

    # The checks can fail: a renamed metric, a label value the service never gives, a label it does not have.
    assert unexported_names(
        ['shipmap_breaker_states == 1 or shipmap_deliveries_total{outcome="dead_letter"} > 0'], scraped
    ) == [
        "shipmap_breaker_states: not exported",
        "shipmap_deliveries_total{outcome=\"dead_letter\"}: exported values ['dead', 'delivered', 'retried',"
        " 'skipped']",
    ]
    assert unexported_series(['shipmap_queue_stale{job="shipmap", source="shop"}'], scraped) == [
        'shipmap_queue_stale{job="shipmap", source="shop"}'
    ]


def runbook_problems(urls: list[str]) -> list[str]:
    """The runbook URLs (``docs/PAGE.md#ANCHOR``) whose page is not in the repository, or whose anchor is not
    one GitHub gives a heading of that page."""
    problems: list[str] = []
    for url in urls:
        page, _, anchor = url.partition("#")
        if not (REPO / page).is_file():
            problems.append(f"{url}: no file {page}")
        elif anchor not in heading_anchors((REPO / page).read_text(encoding="utf-8")):
            problems.append(f"{url}: no heading of {page} has the anchor #{anchor}")
    return problems


def test_every_runbook_link_leads_to_a_heading_of_the_docs() -> None:
    urls = [rule["annotations"]["runbook_url"] for rule in rules()]
    assert urls and runbook_problems(urls) == []

    # The check can fail: a heading renamed, a page moved, no anchor, a comment in a fenced block of commands.
    assert runbook_problems(
        [
            "docs/serve.md#operation",
            "docs/serving.md#operations",
            "docs/serve.md",
            "docs/deploy.md#useradd---system---home-varlibshipmap---shell-usrsbinnologin-shipmap",
        ]
    ) == [
        "docs/serve.md#operation: no heading of docs/serve.md has the anchor #operation",
        "docs/serving.md#operations: no file docs/serving.md",
        "docs/serve.md: no heading of docs/serve.md has the anchor #",
        "docs/deploy.md#useradd---system---home-varlibshipmap---shell-usrsbinnologin-shipmap: no heading of"
        " docs/deploy.md has the anchor #useradd---system---home-varlibshipmap---shell-usrsbinnologin-shipmap",
    ]
    # As GitHub numbers a repeated heading, and renders a link in a heading as its label.
    page = "# Day to day\n```sh\n# not a heading\n```\n## Day to day\n### [The `unit`](deploy.md), line by line #\n"
    assert heading_anchors(page) == ["day-to-day", "day-to-day-1", "the-unit-line-by-line"]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if not PROMTOOL.exists():
        pytest.fail("promtool is not installed: `make promtool` installs Debian's prometheus package")
    return subprocess.run(
        [str(PROMTOOL), *args], capture_output=True, text=True, timeout=120, check=False, cwd=REPO
    )


def test_promtool_accepts_the_rules_and_their_test_passes() -> None:
    checked = promtool("check", "rules", str(ALERTS.relative_to(REPO)))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout
    tested = promtool("test", "rules", str(RULES_TEST.relative_to(REPO)))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_each_alert_says_what_happened_and_where_to_read_more_is_tested_firing_and_is_documented() -> None:
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names)) and names
    for rule in rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert set(rule["annotations"]) == ANNOTATIONS, rule["alert"]
        page, _anchor = rule["annotations"]["runbook_url"].split("#")
        assert (REPO / page).is_file(), rule["alert"]
    fired = {
        case["alertname"]
        for test in rules_test()["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert fired == set(names)
    section = (REPO / "docs" / "serve.md").read_text().split("### Alerting rules", 1)[1].split("\n## ", 1)[0]
    assert [name for name in names if f"`{name}`" not in section] == []
