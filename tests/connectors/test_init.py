"""`shipmap init` on the real sample payloads: the files, the suggestions, the TODOs, and that it all loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from shipmap.connectors import Runtime, load_config
from shipmap.connectors._cli import main
from shipmap.connectors._scaffold import Scaffold, ScaffoldError, plan_scaffold, write_scaffold
from shipmap.engine import TransformError, load_mapping

REPO = Path(__file__).resolve().parents[2]
REAL = REPO / "tests" / "fixtures" / "real"
SHOPIFY_ORDER = REAL / "shopify" / "order_rest_get_with_fulfillment.json"
SHIPSTATION = REAL / "shipstation" / "shipments_list_ship_notify_resource.json"
AFTERSHIP = REAL / "aftership" / "tracking_get_response.json"
FULFILLMENT = REAL / "shopify" / "fulfillments_create_webhook.json"


def suggestions(scaffold: Scaffold) -> dict[str, tuple[str | None, object]]:
    return {s.field: (s.source, s.sample) for s in scaffold.suggestions}


def fill(mapping: Path, replacements: dict[str, str]) -> None:
    """Replace each TODO line of a field (`name: {path: TODO ...`) the way a person would."""
    text = mapping.read_text()
    for field, value in replacements.items():
        text, count = re.subn(
            rf"^(\s*){re.escape(field)}: \{{path: TODO, required: true\}}.*$",
            rf"\g<1>{field}: {value}",
            text,
            count=1,
            flags=re.M,
        )
        assert count == 1, field
    mapping.write_text(text)


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_shopify_order_suggestions(cwd: Path) -> None:
    scaffold = plan_scaffold(SHOPIFY_ORDER, name="acme", kinds=["fenix.order"])
    found = suggestions(scaffold)
    # The REST response wraps the order: every path reads from inside it.
    assert '    from: order   # the sample wraps the document: {"order": …}' in scaffold.files[0].text
    assert found["order.id"] == ("id", 450789469)
    assert found["order.number"] == ("name", "#1001")  # Shopify's order name, not its `number` counter
    assert found["order.item_quantity"] == ("sum(line_items[].quantity)", 3)
    assert found["order.created_at"] == ("created_at", "2008-01-10T11:00:00-05:00")
    assert found["order.customer.email"] == ("customer.email", "bob.norman@hostmail.com")
    assert found["order.shipping_address.zip"] == ("shipping_address.zip", "40202")
    assert found["order.billing_address.city"] == ("billing_address.city", "Louisville")
    assert found["order.shipping_info.title"] == ("shipping_lines[0].title", "Free Shipping")
    assert found["order.line_items"] == ("line_items", 3)
    assert found["order.line_items[].sku"] == ("sku", "IPOD2008GREEN")
    assert found["order.line_items[].price.value"] == ("price", "199.00")
    assert found["order.line_items[].price.currency"] == ("$parent.currency", "USD")
    assert found["order.line_items[].weight.units"] == ("a literal", "grms")  # Shopify's grams
    # The status is a literal (the sample has no order status); required fields nothing matched are TODOs.
    assert found["order.status"] == ("a literal", "OPEN")
    assert [t.field for t in scaffold.todos] == [
        "lookups.fulfillment_status",
        "order.total_weight.units",
        "order.line_items[].image_url",
    ]
    text = scaffold.mapping_path.name and scaffold.files[0].text
    lines = text.splitlines()
    units = next(t for t in scaffold.todos if t.field == "order.total_weight.units")
    assert lines[units.line - 1].strip().startswith("units: {path: TODO, required: true}   # TODO")


def test_init_writes_files_that_load_and_fail_loudly_until_filled(
    cwd: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["init", str(SHOPIFY_ORDER), "--name", "acme", "--kind", "fenix.order", "--kind", "dg.execution"]
    )
    out = capsys.readouterr().out
    assert code == 0
    folder = cwd / "acme"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        ".env.example",
        ".gitignore",
        "acme.cases.yaml",
        "acme.yaml",
        "config.yaml",
        "samples/order_rest_get_with_fulfillment.json",
        "schema/mapping.schema.json",  # what the mapping's yaml-language-server modeline points to
    ]
    assert (folder / "samples" / SHOPIFY_ORDER.name).read_bytes() == SHOPIFY_ORDER.read_bytes()
    assert "created acme/acme.yaml" in out
    assert "6 TODOs" in out
    assert "acme/acme.yaml:166  shipment.action_id" in out  # line 1 is the editor modeline
    assert "next: fill the TODOs, then" in out
    assert "shipmap test acme/acme.yaml" in out

    # It loads, and validate (structure only) is clean: the TODOs are mapped, to a path that finds nothing.
    mapping = load_mapping(folder / "acme.yaml")
    assert [(t.name, t.kind.name) for t in mapping.targets] == [
        ("order", "fenix.order"),
        ("shipment", "dg.execution"),
    ]
    assert [p for p in mapping.lint() if p.severity == "error"] == []
    assert main(["validate", str(folder / "acme.yaml")]) == 0
    # ... and fails loudly on the sample, naming the first TODO.
    source = yaml.safe_load(SHOPIFY_ORDER.read_text())
    with pytest.raises(TransformError) as failure:
        mapping.transform(source)
    assert failure.value.field == "order.total_weight.units"
    assert failure.value.line == 36  # line 1 is the editor modeline
    assert "#   36: order.total_weight.units" in (folder / "acme.yaml").read_text()
    capsys.readouterr()
    assert main(["test", str(folder / "acme.yaml")]) == 1
    assert "0 passed, 1 failed" in capsys.readouterr().out

    # The DG ids come from the sample's keys; external_id is built from them.
    text = (folder / "acme.yaml").read_text()
    assert 'external_id: "{{ this.order_number }}-{{ this.id }}"' in text

    # Filled in, the generated test case passes with the values it seeded from the sample.
    (folder / "acme.yaml").write_text(text.replace("map: {null: TODO}", "map: {null: NOT_FILLED}"))
    # An order's tracking sits in one of its fulfillments: which one is the mapping author's call.
    fill(
        folder / "acme.yaml",
        {
            "units": "{literal: grms}",
            "image_url": '{literal: ""}',
            "action_id": "{literal: flow-123}",
            "tracking_number": '"fulfillments[0].tracking_number"',
            "carrier_code": "{literal: ups}",
        },
    )
    assert main(["test", str(folder / "acme.yaml")]) == 0
    out = capsys.readouterr().out
    assert "PASS  the sample order_rest_get_with_fulfillment.json" in out
    cases = yaml.safe_load((folder / "acme.cases.yaml").read_text())
    assert cases["cases"][0]["expect"]["order"]["id"] == "450789469"
    assert cases["cases"][0]["expect"]["order"]["line_items"] == [
        {"sku": "IPOD2008GREEN", "quantity": 1},
        {"sku": "IPOD2008RED", "quantity": 1},
        {"sku": "IPOD2008BLACK", "quantity": 1},
    ]

    # The config loads with the example env file's values and plans the sandbox routes.
    env = dict(
        line.split("=", 1)
        for line in (folder / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert env["FENIX_BASE_URL"] == "http://127.0.0.1:8765"
    config = load_config(folder / "config.yaml", environ=env)
    runtime = Runtime(config)
    planned = list(runtime.plan([source]))
    assert [(e.action, e.url) for e in planned] == [
        ("send", "http://127.0.0.1:8765/api/v1/orders/450789469/created"),
        ("send", "http://127.0.0.1:8765/execution"),
    ]
    config_text = (folder / "config.yaml").read_text()
    assert "${FENIX_PASSWORD}" in config_text and "demo-pass" not in config_text


def test_refuses_to_overwrite_without_force(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["init", str(FULFILLMENT), "--name", "shop", "--kind", "fenix.fulfillment"]
    assert main(args) == 0
    mapping = cwd / "shop" / "shop.yaml"
    mapping.write_text(mapping.read_text() + "# my edits\n")
    capsys.readouterr()
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "not overwriting shop/shop.yaml" in error
    assert "--force" in error
    assert mapping.read_text().endswith("# my edits\n")
    assert main([*args, "--force"]) == 0
    assert not mapping.read_text().endswith("# my edits\n")


def test_shipstation_list_selects_one_shipment(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scaffold = plan_scaffold(
        SHIPSTATION, name="ss", kinds=["fenix.fulfillment", "dg.execution"], directory="ss"
    )
    assert scaffold.select == "shipments[0]"
    found = suggestions(scaffold)
    assert found["fulfillment.id"] == ("shipmentId", 33974374)
    assert found["fulfillment.order_id"] == ("orderId", 43945660)
    assert found["fulfillment.shipment_info.tracking_number"] == ("trackingNumber", "9400111899561704681189")
    assert found["fulfillment.shipment_info.tracking_company"] == ("carrierCode", "stamps_com")
    assert found["fulfillment.shipment_info.shipping_service"] == ("serviceCode", "usps_first_class_mail")
    assert found["fulfillment.shipment_info.shipcost.value"] == ("shipmentCost", 1.93)
    assert found["fulfillment.created_at"] == ("createDate", "2014-10-03T06:51:33.6270000")
    assert found["fulfillment.line_items"] == ("shipmentItems", 1)
    assert found["fulfillment.line_items[].title"] == ("name", "Potato Kitten -")
    assert found["fulfillment.line_items[].price.value"] == ("unitPrice", 1)
    assert found["shipment.inputs.shipment_data.carrier_code"] == ("carrierCode", "stamps_com")
    assert [t.field for t in scaffold.todos] == ["shipment.action_id"]
    text = scaffold.files[0].text
    # ShipStation times have no offset: the mapping says to set the zone.
    assert "timezone: UTC   # the sample has datetimes without an offset" in text
    assert "this mapping maps ONE element" in text

    write_scaffold(scaffold)
    cases = yaml.safe_load((cwd / "ss" / "ss.cases.yaml").read_text())
    assert cases["cases"][0]["select"] == "shipments[0]"
    assert cases["cases"][0]["expect"]["fulfillment"]["id"] == "33974374"
    fill(cwd / "ss" / "ss.yaml", {"action_id": "{literal: flow-ship}"})
    # imageUrl is null in the sample, and Fenix requires image_url: the suggestion says so, a default fixes it.
    text = (cwd / "ss" / "ss.yaml").read_text()
    null_image = "image_url: {path: imageUrl, required: true}   # <- null in the sample: add a default if"
    assert null_image in text
    (cwd / "ss" / "ss.yaml").write_text(
        text.replace(
            "image_url: {path: imageUrl, required: true}", 'image_url: {path: imageUrl, default: ""}'
        )
    )
    assert main(["test", "ss/ss.yaml"]) == 0
    assert "1 passed, 0 failed" in capsys.readouterr().out


def test_aftership_unwraps_the_tracking_and_marks_missing_items(cwd: Path) -> None:
    scaffold = plan_scaffold(AFTERSHIP, name="as", kinds=["dg.execution"])
    found = suggestions(scaffold)
    text = scaffold.files[0].text
    assert '    from: data.tracking   # the sample wraps the document: {"data": {"tracking": …}}' in text
    assert found["shipment.inputs.shipment_data.tracking_number"] == ("tracking_number", "111111111111")
    assert found["shipment.inputs.shipment_data.carrier_code"] == ("slug", "fedex")
    assert found["shipment.inputs.shipment_data.shipment_id"] == ("id", "5b7658cec7c33c0e007de3c5")
    # AfterShip knows no items: the array and its required fields are TODOs, never an invented value.
    assert [t.field for t in scaffold.todos] == [
        "shipment.action_id",
        "shipment.inputs.shipment_data.items",
        "shipment.inputs.shipment_data.items[].sku",
        "shipment.inputs.shipment_data.items[].quantity",
    ]
    assert "          items:   # TODO: the source array of these items\n            each: TODO\n" in text


def test_bad_arguments(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ScaffoldError, match=r"unknown kind 'fenix\.orders'"):
        plan_scaffold(SHOPIFY_ORDER, name="x", kinds=["fenix.orders"])
    with pytest.raises(ScaffoldError, match="not an IANA time zone"):
        plan_scaffold(SHOPIFY_ORDER, name="x", kinds=["fenix.order"], timezone="EST5")
    with pytest.raises(ScaffoldError, match="--name"):
        plan_scaffold(SHOPIFY_ORDER, name="../x", kinds=["fenix.order"])
    not_json = cwd / "notes.json"
    not_json.write_text("{not json")
    assert main(["init", str(not_json), "--name", "x", "--kind", "fenix.order"]) == 2
    assert capsys.readouterr().err == (
        f"{not_json}:1:2: error: cannot read the sample: not JSON: Expecting property name enclosed in double "
        "quotes, column 2\n"
    )
    with pytest.raises(SystemExit) as exited:
        main(["init", str(SHOPIFY_ORDER), "--name", "x", "--kind", "fenix.nope"])
    assert exited.value.code == 2
    assert not (cwd / "x").exists()


@pytest.mark.parametrize(
    ("sample", "directory", "error"),
    [
        (
            b"\xff\xfe{}",
            None,
            "sample.json:1:1: error: cannot read the sample: not UTF-8 text (invalid start byte)",
        ),
        (
            b'{"id": 1, "total": NaN}',
            None,
            "sample.json:1:20: error: cannot read the sample: not strict JSON: NaN is not a JSON number (strict "
            "JSON has only finite numbers), column 20",
        ),
        (
            b"[" * 100_000 + b"]" * 100_000,
            None,
            "sample.json:1:1: error: cannot read the sample: JSON nested too deeply to read",
        ),
        (
            b'{"id": 1}',
            "sample.json",
            "error: cannot write sample.json/x.yaml: a file stands where a folder of that path should be\n"
            "  hint: choose another --dir",
        ),
    ],
    ids=["not-utf-8", "nan", "nested-too-deeply", "dir-is-a-file"],
)
def test_a_sample_or_dir_that_does_not_do_is_a_located_error(
    cwd: Path, capsys: pytest.CaptureFixture[str], sample: bytes, directory: str | None, error: str
) -> None:
    """As preview names a bad input (file:line:col), never a Python message, and never an internal error."""
    (cwd / "sample.json").write_bytes(sample)
    args = ["init", "sample.json", "--name", "x", "--kind", "fenix.order"]
    assert main([*args, "--dir", directory] if directory else args) == 2
    assert capsys.readouterr().err == error + "\n"
    assert not (cwd / "x").exists()


def test_an_ndjson_sample_is_kept_whole_and_its_case_selects_the_first(
    cwd: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = cwd / "events.ndjson"
    events.write_text(FULFILLMENT.read_text().replace("\n", "") + "\n" + '{"id": 2}\n')
    assert main(["init", str(events), "--name", "shop", "--kind", "dg.execution"]) == 0
    sample = cwd / "shop" / "samples" / "events.json"
    kept = yaml.safe_load(sample.read_text())
    assert [e["id"] for e in kept] == [123456, 2]
    assert kept[0]["tracking_number"] == "1z827wk74630"
    cases = yaml.safe_load((cwd / "shop" / "shop.cases.yaml").read_text())
    assert cases["cases"][0]["source"] == "samples/events.json"
    assert cases["cases"][0]["select"] == "[0]"
    fill(cwd / "shop" / "shop.yaml", {"action_id": "{literal: flow-1}"})
    capsys.readouterr()
    assert main(["test", "shop/shop.yaml"]) == 0, capsys.readouterr().out


def test_a_sample_list_of_one_element_says_1_element(tmp_path: Path) -> None:
    sample = tmp_path / "orders.json"
    sample.write_text("[" + SHOPIFY_ORDER.read_text() + "]")
    scaffold = plan_scaffold(sample, name="acme", kinds=["fenix.order"], directory=tmp_path / "acme")
    mapping = scaffold.files[0].text
    assert "# The sample is a list (the top level, 1 element): this mapping maps ONE element." in mapping
