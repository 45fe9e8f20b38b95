"""Write a small partitioned NDJSON history of Shopify orders, with a few broken documents at known places.

Each partition is one file, ``part-NNNN.ndjson``, as an export job or a data lake would write it. The orders
are the real Shopify REST sample (tests/fixtures/real/shopify/) with the id, name and e-mail replaced. Four
lines are broken on purpose, so that the check has something to find:

- partition 1, line 5: not JSON (a truncated export line);
- partition 2, line 3: ``line_items`` is not a list (the mapping fails on a field);
- partition 2, line 9: no ``email`` (the payload breaks fenix.order, which requires it);
- partition 0, line 7: a total that is text (the mapping fails on a number).

    .venv/bin/python examples/history_dask/make_history.py OUT_DIR [--partitions 3] [--orders 12]
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "tests" / "fixtures" / "real" / "shopify" / "order_rest_get_with_fulfillment.json"
# (partition, line) -> what breaks there
BROKEN = {
    (1, 5): "not json",
    (2, 3): "line_items not a list",
    (2, 9): "no email",
    (0, 7): "text total",
}


def order(partition: int, line: int, base: dict[str, object]) -> str:
    document = copy.deepcopy(base)
    body = document["order"]
    assert isinstance(body, dict)
    number = partition * 1000 + line
    body["id"] = 5_100_000_000 + number
    body["name"] = f"#H{number}"
    body["email"] = f"customer{number}@example.com"
    broken = BROKEN.get((partition, line))
    if broken == "not json":
        return json.dumps(document)[:120]
    if broken == "line_items not a list":
        body["line_items"] = "see attachment"
    elif broken == "no email":
        del body["email"]
        body.pop("contact_email", None)
        customer = body.get("customer")
        if isinstance(customer, dict):
            customer.pop("email", None)
    elif broken == "text total":
        body["total_price"] = "one hundred"
    return json.dumps(document)


def write_history(folder: Path, partitions: int = 3, orders: int = 12) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    base = json.loads(SAMPLE.read_text(encoding="utf-8"))
    files = []
    for partition in range(partitions):
        path = folder / f"part-{partition:04d}.ndjson"
        lines = [order(partition, line, base) for line in range(1, orders + 1)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        files.append(path)
    return files


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    arguments.add_argument("out", type=Path)
    arguments.add_argument("--partitions", type=int, default=3)
    arguments.add_argument("--orders", type=int, default=12, help="orders per partition")
    args = arguments.parse_args()
    for path in write_history(args.out, args.partitions, args.orders):
        print(path)


if __name__ == "__main__":
    main()
