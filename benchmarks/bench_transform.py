"""Transform: the ready Shopify order mapping against hand-written Python, jq, JSONata and glom.

Every tool implements mappings/shopify/order.yaml (see benchmarks/transform/). Before anything is timed, each
one's output is asserted identical (JSON with sorted keys) to the hand-written one and to shipmap's, on the
real Shopify samples and on the derived partial-cancel samples. Then all tools are timed in this one process,
interleaved round by round, on each real sample.

The comparison with the other tools is on shipmap's transform *without* validation (``target.produce``),
because none of them validates; ``mapping.transform`` (with the fenix.order schema check) is reported too, and
so is the reference closure tree that the generated code stands in for (the same payload, see
docs/mapping-language.md, "How a mapping runs").

    .venv/bin/python benchmarks/bench_transform.py [--rounds 40] [--quick] [--json FILE]
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _bench
from _bench import BENCH, DERIVED_SHOPIFY, ORDER_FIXTURES, ORDER_MAPPING, REAL_SHOPIFY, canonical, table, us

HAND = "hand-written Python"
PRODUCE = "shipmap (no validation)"
REFERENCE = "shipmap reference closure tree (no validation)"
VALIDATED = "shipmap transform (validated)"
JQ = "jq"
JSONATA = "jsonata-python"
GLOM = "glom"
TOOLS = (HAND, PRODUCE, REFERENCE, VALIDATED, JQ, JSONATA, GLOM)
COMPARED = (JQ, JSONATA, GLOM)  # the other tools; compared with PRODUCE (none of them validates)
TARGET_VS_HAND = 2.0  # shipmap without validation, and (issue 18) with it


def build_tools(mapping_path: Path = ORDER_MAPPING) -> dict[str, Callable[[Any], Any]]:
    """Each tool as a function from a parsed source document to the fenix.order payload, compiled once."""
    import jq
    import jsonata
    from shipmap.engine import load_mapping

    mapping = load_mapping(mapping_path)
    target = mapping.target("order")
    transform = mapping.transform
    program = jq.compile((BENCH / "transform" / "order.jq").read_text(encoding="utf-8"))
    expression = jsonata.Jsonata((BENCH / "transform" / "order.jsonata").read_text(encoding="utf-8"))
    from transform import glom_spec, hand

    return {
        HAND: hand.shopify_order,
        PRODUCE: target.produce,
        REFERENCE: target._reference,  # what runs without the generated code (engine/_codegen.py)
        VALIDATED: lambda document: transform(document)["order"],
        JQ: lambda document: program.input_value(document).first(),
        JSONATA: expression.evaluate,
        GLOM: glom_spec.shopify_order,
    }


def build_text_tools(tools: dict[str, Callable[[Any], Any]]) -> dict[str, Callable[[str], Any]]:
    """The same tools fed one NDJSON line of text, as a backfill reads them: json.loads first, except for jq,
    which parses the text itself (its Python binding otherwise serialises the dict to text first)."""
    import jq

    program = jq.compile((BENCH / "transform" / "order.jq").read_text(encoding="utf-8"))
    loads = json.loads
    text_tools: dict[str, Callable[[str], Any]] = {}
    for name, tool in tools.items():
        if name == JQ:
            text_tools[name] = lambda line: program.input_text(line).first()
        else:
            text_tools[name] = lambda line, tool=tool: tool(loads(line))  # type: ignore[misc]
    return text_tools


def equivalence_documents() -> dict[str, Any]:
    names = [REAL_SHOPIFY / name for name in ORDER_FIXTURES]
    names += sorted(DERIVED_SHOPIFY.glob("order*.json"))
    return {
        f"{path.parent.parent.name}/{path.parent.name}/{path.name}": _bench.load_json(path) for path in names
    }


def check_identical(tools: dict[str, Callable[[Any], Any]], documents: dict[str, Any]) -> list[str]:
    """Every tool's payload equals the hand-written one on every document; returns the lines of the check."""
    lines = []
    for label, document in documents.items():
        expected = canonical(tools[HAND](document))
        for name, tool in tools.items():
            got = canonical(tool(document))
            if got != expected:
                raise SystemExit(
                    f"FAIL: {name} differs from the hand-written payload on {label}:\n"
                    f"  hand-written: {expected[:2000]}\n  {name}: {got[:2000]}"
                )
        lines.append(f"- {label}: {len(tools)} tools, identical payloads ({len(expected):,} bytes of JSON)")
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    arguments = _bench.parser(__doc__.splitlines()[0])
    arguments.add_argument(
        "--rounds", type=int, default=40, help="interleaved rounds per sample (default 40)"
    )
    args = arguments.parse_args(argv)
    rounds = 8 if args.quick else args.rounds

    tools = build_tools()
    _bench.heading("Transform: shipmap against hand-written Python, jq, JSONata and glom")
    print(
        f"mapping: {ORDER_MAPPING.relative_to(_bench.REPO)}; {rounds} interleaved rounds of ~20 ms per tool"
    )
    print("output check (JSON, sorted keys; before timing):")
    print("\n".join(check_identical(tools, equivalence_documents())))

    results: dict[str, Any] = {"rounds": rounds, "samples": {}, "text": {}}
    for fixture in ORDER_FIXTURES:
        document = _bench.load_json(REAL_SHOPIFY / fixture)
        cases = {name: (lambda tool=tool, document=document: tool(document)) for name, tool in tools.items()}
        timings = _bench.interleaved(cases, rounds=rounds)
        results["samples"][fixture] = {name: timing.__dict__ for name, timing in timings.items()}
        _print_sample(fixture, timings)

    # Mean over the samples, then the same from NDJSON text (what a backfill actually reads).
    _print_mean(results["samples"])
    text_tools = build_text_tools(tools)
    for fixture in ORDER_FIXTURES:
        line = json.dumps(_bench.load_json(REAL_SHOPIFY / fixture), separators=(",", ":"))
        cases = {name: (lambda tool=tool, line=line: tool(line)) for name, tool in text_tools.items()}
        timings = _bench.interleaved(cases, rounds=max(4, rounds // 2))
        results["text"][fixture] = {name: timing.__dict__ for name, timing in timings.items()}
    _print_text(results["text"])
    results["summary"] = summarise(results["samples"])
    _print_verdict(results["summary"])
    _bench.write_json(args.json, results)
    return results


def _medians(samples: dict[str, Any]) -> dict[str, float]:
    """Per tool, the mean over the samples of its median ns per order."""
    import statistics

    tools = next(iter(samples.values())).keys()
    return {
        name: statistics.fmean(statistics.median(samples[fixture][name]["per_op_ns"]) for fixture in samples)
        for name in tools
    }


def summarise(samples: dict[str, Any]) -> dict[str, Any]:
    import statistics

    medians = _medians(samples)
    hand = medians[HAND]
    produce = medians[PRODUCE]
    bests = {
        name: statistics.fmean(min(samples[fixture][name]["per_op_ns"]) for fixture in samples)
        for name in medians
    }
    return {
        "us_per_order": {name: value / 1000 for name, value in medians.items()},
        "vs_hand": {name: value / hand for name, value in medians.items()},
        "shipmap_speedup": {name: medians[name] / produce for name in COMPARED},
        "target_vs_hand_met": produce / hand <= TARGET_VS_HAND,
        "validated_vs_hand_met": medians[VALIDATED] / hand <= TARGET_VS_HAND,
        "faster_than_every_other_tool": all(medians[name] > produce for name in COMPARED),
        # Each tool's fastest round (load from elsewhere only ever adds time): steadier on a busy machine.
        "best_vs_hand": {name: value / bests[HAND] for name, value in bests.items()},
    }


def _rows(timings: dict[str, Any], hand_ns: float, produce_ns: float) -> list[list[Any]]:
    import statistics

    rows = []
    for name, timing in timings.items():
        values = timing["per_op_ns"] if isinstance(timing, dict) else timing.per_op_ns
        median = statistics.median(values)
        versus = f"{median / produce_ns:.1f}x slower" if name in COMPARED else ""
        rows.append(
            [
                name,
                us(median),
                us(min(values)),
                f"{1e9 / median:,.0f}",
                f"{median / hand_ns:.2f}",
                versus,
            ]
        )
    return rows


_HEADERS = [
    "tool",
    "µs/order (median)",
    "µs/order (min)",
    "orders/s",
    "× hand-written",
    "than shipmap (no validation)",
]


def _print_sample(fixture: str, timings: dict[str, _bench.Timing]) -> None:
    hand = timings[HAND].median_ns
    produce = timings[PRODUCE].median_ns
    noise = max(timing.spread() for timing in timings.values())
    print(f"\n### {fixture} (parsed dict in, payload out; worst IQR/median {noise:.0%})\n")
    print(table(_HEADERS, _rows({k: v.__dict__ for k, v in timings.items()}, hand, produce)))


def _print_mean(samples: dict[str, Any]) -> None:
    medians = _medians(samples)
    print("\n### Both samples (mean of the per-sample medians)\n")
    rows = []
    for name, value in medians.items():
        versus = f"{value / medians[PRODUCE]:.1f}x slower" if name in COMPARED else ""
        rows.append([name, us(value), "", f"{1e9 / value:,.0f}", f"{value / medians[HAND]:.2f}", versus])
    print(table(_HEADERS, rows))


def _print_text(text: dict[str, Any]) -> None:
    medians = _medians(text)
    print(
        "\n### From NDJSON text (json.loads + transform; jq parses the text itself), mean of both samples\n"
    )
    rows = []
    for name, value in medians.items():
        versus = f"{value / medians[PRODUCE]:.1f}x slower" if name in COMPARED else ""
        rows.append([name, us(value), "", f"{1e9 / value:,.0f}", f"{value / medians[HAND]:.2f}", versus])
    print(table(_HEADERS, rows))


def _print_verdict(summary: dict[str, Any]) -> None:
    for name, met, label in (
        (PRODUCE, summary["target_vs_hand_met"], "shipmap (no validation)"),
        (VALIDATED, summary["validated_vs_hand_met"], "shipmap transform, validated"),
    ):
        print(
            f"\ntarget: {label} within {TARGET_VS_HAND:.0f}x of hand-written Python: "
            f"{summary['vs_hand'][name]:.2f}x (fastest rounds: {summary['best_vs_hand'][name]:.2f}x),"
            f" {'MET' if met else 'NOT MET'}"
        )
    slowest = min(summary["shipmap_speedup"].values())
    print(
        "target: faster than every other tool: "
        f"{'MET' if summary['faster_than_every_other_tool'] else 'NOT MET'} "
        f"(the closest is {slowest:.1f}x slower than shipmap)"
    )


if __name__ == "__main__":
    main()
