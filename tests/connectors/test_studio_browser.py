"""shipmap studio in a real headless Chromium (Debian's chromium and chromium-driver, installed by
`make browser`, which `make test` runs first), driven by selenium. Each test saves a screenshot under the
test's temporary directory; set SHIPMAP_STUDIO_SCREENSHOTS to a folder to keep them (docs/studio.png is one)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait
from shipmap.connectors._cli._cases import load_suite
from shipmap.connectors._cli.test import run_case
from shipmap.connectors._studio import Studio
from shipmap.engine import MappingError, load_mapping, parse_mapping
from test_studio_support import make_workspace

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_SECONDS = 30  # a deadline for the page to show a result, not a measure of speed
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1500,950",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.fail(
            "Chromium is not installed: `make browser` installs Debian's chromium and chromium-driver"
        )
    profile = tempfile.mkdtemp(prefix="shipmap-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return make_workspace(tmp_path)


@pytest.fixture
def studio(workspace: Path) -> Iterator[Studio]:
    with Studio(workspace) as running:
        yield running


@pytest.fixture
def screenshot(browser: WebDriver, tmp_path: Path) -> Callable[[str], Path]:
    def save(name: str) -> Path:
        path = tmp_path / "screenshots" / f"{name}.png"
        path.parent.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(path)), path
        keep = os.environ.get("SHIPMAP_STUDIO_SCREENSHOTS")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(keep) / path.name)
        return path

    return save


def settled(browser: WebDriver) -> bool:
    """No edit waits for its evaluation, and the last one is shown: the page will not re-render by itself."""
    return bool(browser.execute_script("return document.body.dataset.pending === 'false'"))


def wait(browser: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    try:
        return WebDriverWait(browser, WAIT_SECONDS, poll_frequency=0.05).until(
            lambda b: settled(b) and condition(b)
        )
    except TimeoutException:
        status = browser.find_element(By.ID, "status").text
        raise AssertionError(f"the page never showed {what} (status: {status!r})") from None


def open_page(browser: WebDriver, studio: Studio, mapping: str, sample: str) -> None:
    browser.get(f"{studio.url}&mapping={mapping}&sample={sample}")
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#targets .target"), "a target")


def payload_text(browser: WebDriver, target: str) -> str:
    # One script, so a re-render between finding the element and reading it cannot leave a stale reference.
    text = browser.execute_script(
        "const found = document.querySelector(`.target[data-target='${arguments[0]}'] .payload`);"
        "return found ? found.textContent : '';",
        target,
    )
    return str(text)


def replace_in_editor(browser: WebDriver, old: str, new: str) -> None:
    """Select ``old`` in the editor's textarea and type ``new`` over it, key by key."""
    found = browser.execute_script(
        "const input = document.querySelector('#editor textarea');"
        "const at = input.value.indexOf(arguments[0]);"
        "if (at < 0) return false;"
        "input.focus(); input.setSelectionRange(at, at + arguments[0].length); return true;",
        old,
    )
    assert found, f"{old!r} is not in the editor"
    actions = ActionChains(browser)
    actions.send_keys(new if new else Keys.BACKSPACE)
    actions.send_keys(Keys.ESCAPE)  # close a completion popup, if typing opened one
    actions.perform()


def test_a_ready_mapping_and_a_sample_show_the_payload(
    browser: WebDriver, studio: Studio, workspace: Path, screenshot: Callable[[str], Path]
) -> None:
    open_page(browser, studio, "shopify/order.yaml", "shopify/samples/order.json")
    expected = load_mapping(workspace / "shopify" / "order.yaml").transform(
        __import__("json").loads(
            (workspace / "shopify" / "samples" / "order.json").read_text(encoding="utf-8")
        )
    )
    wait(
        browser, lambda b: f'"id": "{expected["order"]["id"]}"' in payload_text(b, "order"), "the order's id"
    )
    card = browser.find_element(By.CSS_SELECTOR, '.target[data-target="order"]')
    assert card.get_attribute("data-status") == "ok"
    assert f'"number": "{expected["order"]["number"]}"' in payload_text(browser, "order")
    card.find_element(By.CSS_SELECTOR, "details[data-key='order:request'] summary").click()
    request = card.find_element(By.CSS_SELECTOR, ".request").text
    assert request.startswith(f"POST http://127.0.0.1:8765/api/v1/orders/{expected['order']['id']}/created")
    assert "authToken: ***" in request
    assert int(browser.find_element(By.ID, "unread-count").text) > 0
    screenshot("ready_mapping")


def test_editing_a_fields_path_changes_the_payload(
    browser: WebDriver, studio: Studio, screenshot: Callable[[str], Path]
) -> None:
    open_page(browser, studio, "driftwood.yaml", "samples/order.json")
    wait(browser, lambda b: '"city": "Dallas"' in payload_text(b, "order"), "the city")
    replace_in_editor(browser, "city: shipping.city", "city: billing.email")
    wait(
        browser,
        lambda b: '"city": "rosa.delgado@example.com"' in payload_text(b, "order"),
        "the payload with the edited path",
    )
    assert browser.find_element(By.ID, "mapping-state").text == "● unsaved"
    screenshot("edited_path")


def test_an_error_is_marked_on_its_line_as_you_type(
    browser: WebDriver, studio: Studio, workspace: Path, screenshot: Callable[[str], Path]
) -> None:
    open_page(browser, studio, "driftwood.yaml", "samples/order.json")
    text = (workspace / "driftwood.yaml").read_text(encoding="utf-8")
    line = next(
        i for i, content in enumerate(text.splitlines(), 1) if "sum(line_items[].quantity)" in content
    )
    replace_in_editor(browser, "quantity)", "quantity")
    marked = f'#editor .gutter .number.marked.error[data-line="{line}"]'
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, marked), f"line {line} marked")
    assert browser.find_elements(By.CSS_SELECTOR, f'#editor .line.marked.error[data-line="{line}"]')
    with pytest.raises(MappingError) as raised:
        parse_mapping(text.replace("quantity)", "quantity", 1), file="driftwood.yaml")
    shown = browser.find_element(By.CSS_SELECTOR, "#diagnostics li.error pre").text
    assert shown.splitlines()[0] == raised.value.render().splitlines()[0]  # the CLI's words
    assert browser.find_elements(By.CSS_SELECTOR, "#targets .muted")  # the page still stands
    screenshot("error_marked")
    # Fixed again, the mark goes and the payload comes back.
    replace_in_editor(browser, 'quantity"', 'quantity)"')
    wait(browser, lambda b: not b.find_elements(By.CSS_SELECTOR, marked), "the mark cleared")
    wait(browser, lambda b: '"item_quantity": 3' in payload_text(b, "order"), "the payload again")


def test_save_as_case_writes_the_cases_file(
    browser: WebDriver, studio: Studio, workspace: Path, screenshot: Callable[[str], Path]
) -> None:
    open_page(browser, studio, "driftwood.yaml", "samples/order_completed.json")
    wait(browser, lambda b: '"fulfillment_status": "FULFILLED"' in payload_text(b, "order"), "the payload")
    browser.find_element(By.ID, "case-name").send_keys("completed, from the browser")
    browser.find_element(By.ID, "save-case").click()
    wait(
        browser,
        lambda b: "4 passed, 0 failed" in b.find_element(By.ID, "cases").text,
        "the cases run after saving",
    )
    cases = workspace / "driftwood.cases.yaml"
    assert "- name: completed, from the browser" in cases.read_text(encoding="utf-8")
    saved = load_suite(cases).cases[-1]
    assert saved.name == "completed, from the browser"
    assert run_case(load_mapping(workspace / "driftwood.yaml"), saved).ok
    screenshot("studio")


def test_completion_offers_the_kinds_target_fields_and_inserts_one(
    browser: WebDriver, studio: Studio, screenshot: Callable[[str], Path]
) -> None:
    open_page(browser, studio, "driftwood.yaml", "samples/order.json")
    assert browser.execute_script(
        "const input = document.querySelector('#editor textarea');"
        "const line = input.value.split('\\n').find(l => l.trim().startsWith('country_code: shipping.country'));"
        "const end = input.value.indexOf(line) + line.length;"
        "input.focus(); input.setSelectionRange(end, end); return true;"
    )
    ActionChains(browser).send_keys(Keys.ENTER, "province_c").perform()
    popup = "#editor .completions:not([hidden]) li"
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, popup), "the completion popup")
    items = browser.execute_script(
        f"return [...document.querySelectorAll('{popup}')].map(li => li.textContent)"
    )
    # shipping_address's own field in fenix.order, nothing else starts so; fields already mapped are left out.
    assert len(items) == 1 and items[0].startswith("province_code") and "fenix.order" in items[0]
    screenshot("completion")
    ActionChains(browser).send_keys(Keys.ENTER, "shipping.state", Keys.ESCAPE).perform()
    wait(
        browser, lambda b: '"province_code": "TX"' in payload_text(b, "order"), "the completed field's value"
    )
    text = browser.execute_script("return document.querySelector('#editor textarea').value")
    assert "\n        province_code: shipping.state\n" in text


def element_text(browser: WebDriver, selector: str) -> str:
    text = browser.execute_script(
        "const found = document.querySelector(arguments[0]); return found ? found.textContent : '';", selector
    )
    return str(text)


def paste_sample(browser: WebDriver, text: str) -> None:
    """Put ``text`` in the sample pane as a paste does (one input event), however large."""
    browser.execute_script(
        "const box = document.querySelector('#sample'); box.value = arguments[0];"
        "box.dispatchEvent(new Event('input'));",
        text,
    )


def test_a_huge_sample_says_so_where_the_result_goes_and_the_page_recovers(
    browser: WebDriver, studio: Studio, workspace: Path, screenshot: Callable[[str], Path]
) -> None:
    open_page(browser, studio, "driftwood.yaml", "samples/order.json")
    wait(browser, lambda b: '"city": "Dallas"' in payload_text(b, "order"), "the city")
    sample = (workspace / "samples" / "order.json").read_text(encoding="utf-8")
    paste_sample(browser, json.dumps({"id": 1, "note": "x" * (10 * 1024 * 1024)}))
    wait(browser, lambda b: element_text(b, "#not-evaluated"), "why the sample was not evaluated")
    assert element_text(browser, "#not-evaluated") == (
        "Not evaluated: the request is 10.0 MiB: the studio takes a mapping and a sample of up to 4 MiB each "
        "(8 MiB in all); map a few of the sample's documents"
    )
    # The last sample's payload is not left standing as if it were this one's.
    assert not browser.find_elements(By.CSS_SELECTOR, "#targets .target")
    screenshot("huge_sample")
    paste_sample(browser, sample.replace('"Dallas"', '"Austin"'))
    wait(browser, lambda b: '"city": "Austin"' in payload_text(b, "order"), "the payload again")
    assert not element_text(browser, "#not-evaluated")


def test_cases_that_cannot_run_clear_the_last_verdicts_and_say_why(
    browser: WebDriver, studio: Studio, screenshot: Callable[[str], Path]
) -> None:
    open_page(browser, studio, "driftwood.yaml", "samples/order.json")
    browser.find_element(By.ID, "run-cases").click()
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#cases .case"), "the cases' verdicts")
    # A request past the studio's 8 MiB: the server answers 413 and nothing is run.
    browser.execute_script(
        "const input = document.querySelector('#editor textarea');"
        "input.value = input.value + '#' + 'x'.repeat(10 * 1024 * 1024);"
    )
    browser.find_element(By.ID, "run-cases").click()
    wait(browser, lambda b: element_text(b, "#cases-not-run"), "why the cases were not run")
    said = element_text(browser, "#cases-not-run")
    assert said.startswith("Cases not run: the request is 10.0 MiB: the studio takes a mapping"), said
    assert not browser.find_elements(By.CSS_SELECTOR, "#cases .case, #cases .summary")
    assert browser.find_element(By.ID, "status").text == said.removeprefix("Cases not run: ")
    screenshot("cases_not_run")


def test_a_sample_that_is_not_utf8_is_located_picked_or_dropped(
    browser: WebDriver, studio: Studio, workspace: Path, screenshot: Callable[[str], Path]
) -> None:
    latin1 = b'{\r\n  "id": 7,\r\n  "city": "Montr\xe9al"\r\n}\r\n'
    (workspace / "samples" / "latin1.json").write_bytes(latin1)
    expected = (
        "samples/latin1.json:3:17: error: cannot read file: not UTF-8 text "
        "(byte 0xe9: invalid continuation byte); save it as UTF-8"
    )
    open_page(browser, studio, "driftwood.yaml", "samples/order.json")
    wait(browser, lambda b: '"city": "Dallas"' in payload_text(b, "order"), "the city")
    Select(browser.find_element(By.ID, "sample-file")).select_by_visible_text("samples/latin1.json")
    wait(browser, lambda b: element_text(b, "#sample-error") == expected, "the bad byte located")
    # Not the previous sample's payload under this file's name.
    assert not browser.find_elements(By.CSS_SELECTOR, "#targets .target")
    assert element_text(browser, "#targets") == "The sample cannot be read (see the sample pane)."
    assert browser.find_element(By.ID, "sample").get_attribute("value") == ""
    screenshot("sample_not_utf8")
    # Dropped, the same bytes are located the same way, not mapped with U+FFFD in their place.
    browser.execute_script(
        "const file = new File([new Uint8Array(arguments[0])], 'export.json');"
        "const data = new DataTransfer(); data.items.add(file);"
        "document.querySelector('#sample-pane').dispatchEvent("
        "  new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true}));",
        list(latin1),
    )
    wait(
        browser,
        lambda b: element_text(b, "#sample-error").startswith("export.json:3:17: error: cannot read file"),
        "the dropped file's bad byte located",
    )
    assert "(byte 0xe9)" in element_text(browser, "#sample-error")
    assert browser.find_element(By.ID, "status").text == "the sample cannot be read"
    assert browser.find_element(By.ID, "status").get_attribute("data-kind") == "error"
    assert not browser.find_elements(By.CSS_SELECTOR, "#targets .target")
    Select(browser.find_element(By.ID, "sample-file")).select_by_visible_text("samples/order.json")
    wait(browser, lambda b: '"city": "Dallas"' in payload_text(b, "order"), "the payload again")
    assert browser.find_element(By.ID, "sample-error").get_attribute("hidden")
    assert browser.find_element(By.ID, "status").text == "evaluated"
    # One document of several fails: the header says so, not a green "evaluated".
    good = (workspace / "samples" / "order.json").read_text(encoding="utf-8")
    bad = json.loads(good) | {"status": "weird"}
    paste_sample(browser, json.dumps(json.loads(good)) + "\n" + json.dumps(bad) + "\n")
    wait(
        browser,
        lambda b: not b.find_element(By.ID, "document").get_attribute("hidden"),
        "the document picker",
    )
    Select(browser.find_element(By.ID, "document")).select_by_index(1)
    wait(browser, lambda b: element_text(b, ".target[data-status='failed']"), "the failed target")
    assert browser.find_element(By.ID, "status").text == "evaluated: 1 target failed"
    assert browser.find_element(By.ID, "status").get_attribute("data-kind") == "error"
    assert 'source: status = "weird"' in element_text(browser, ".target[data-status='failed'] .error-box")


def test_a_fan_out_over_many_elements_shows_the_first_cards_and_where_mapping_stopped(
    browser: WebDriver, studio: Studio, workspace: Path
) -> None:
    (workspace / "fan.yaml").write_text(
        "shipmap: 1\nname: fan\ntargets:\n  cancel:\n    kind: fenix.order_cancel\n    each: orders\n"
        "    key: id\n    fields:\n      id: {path: id, type: id}\n      status: {literal: CANCELLED}\n"
        "      cancelled_at: {literal: '2024-11-14T10:00:00Z'}\n      cancel_reason: {literal: customer}\n",
        encoding="utf-8",
    )
    orders = {"orders": [{"id": number} for number in range(1, 5001)]}
    (workspace / "samples" / "many.json").write_text(json.dumps(orders), encoding="utf-8")
    open_page(browser, studio, "fan.yaml", "samples/many.json")
    wait(browser, lambda b: element_text(b, "#cut"), "where the mapping was cut")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#targets .target")) == 200
    assert element_text(browser, "#cut") == (
        "Cut after 200 cards: the answer was full, so the studio stopped mapping. It mapped 200 of the 5,000 "
        "elements of cancel. Whether the rest would make payloads or errors is not known, and the unread fields "
        "below are those of the part mapped (shipmap preview maps them all)."
    )
