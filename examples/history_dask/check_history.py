"""Map and validate a partitioned NDJSON history on Dask, and report every document that fails, with its place.

The history is a directory of NDJSON files, one per partition (``part-*.ndjson``), as an export or a data lake
writes them. Each partition is one Dask task: the compiled mapping travels to the workers pickled (as its
YAML text, compiled once per worker), the task reads its file with shipmap's own reader (so a failure is
located at ``file:line``), maps and validates every document against its target kinds, writes the payloads
of the partition to ``OUT/part-*.ndjson`` when ``--out`` is given, and returns its counts and failures. The
scheduler is a ``distributed.LocalCluster`` of worker processes here; pass ``--scheduler tcp://host:8786``
to run the same code on a real cluster (the files must then be readable by every worker, e.g. on shared
storage; Spark would run ``check_partition`` the same way through ``mapPartitions`` or ``foreach``).

    .venv/bin/python examples/history_dask/check_history.py HISTORY_DIR [--mapping shopify/order]
        [--workers 2] [--out DIR] [--scheduler ADDRESS]

Prints one line per failing document and a summary; exits 0 when every document maps to valid payloads, 1
when any fails. Needs the ``dask`` extra: ``pip install 'shipmap[dask]'``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import dask.bag
from distributed import Client, LocalCluster
from shipmap.engine import (
    CompiledMapping,
    PayloadValidationError,
    ShipmapError,
    load_mapping,
    read_documents,
)


@dataclass(frozen=True)
class Failure:
    """One document that did not map to valid payloads: where it is, which target, and the located error."""

    origin: str  # file:line of the document in the history
    target: str | None  # None when the document itself could not be read
    error: str  # the error as shipmap renders it (mapping file:line:col, field, source path and value)


@dataclass
class PartitionReport:
    partition: str
    documents: int = 0
    payloads: int = 0
    failures: list[Failure] = field(default_factory=list)


def check_partition(path: str, mapping: CompiledMapping, out_dir: str | None) -> PartitionReport:
    """Map and validate every document of one partition file. Runs on a Dask worker; pure but for the
    optional output file."""
    report = PartitionReport(path)
    lines: list[str] = []
    for record in read_documents(path):
        report.documents += 1
        try:
            source = record.unwrap()
        except ShipmapError as error:
            report.failures.append(Failure(record.origin, None, error.render()))
            continue
        produced: dict[str, object] = {}
        for target in mapping.targets:
            try:
                payload = target.produce(source)
            except ShipmapError as error:
                report.failures.append(Failure(record.origin, target.name, error.render()))
                continue
            if payload is None:
                continue  # the target's `when` guard does not hold for this document
            problems = target.problems(payload)
            if problems:
                error = PayloadValidationError(target.name, target.kind.name, problems)
                report.failures.append(Failure(record.origin, target.name, error.render()))
                continue
            produced[target.name] = payload
        report.payloads += len(produced)
        if produced:
            lines.append(json.dumps({"origin": record.origin, "payloads": produced}, ensure_ascii=False))
    if out_dir is not None:
        out = Path(out_dir) / Path(path).name
        out.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return report


def check_history(
    history: Path, mapping: CompiledMapping, *, out_dir: Path | None = None
) -> list[PartitionReport]:
    """Every partition of ``history``, checked on the current Dask scheduler (the active Client's cluster)."""
    partitions = sorted(str(path) for path in history.glob("*.ndjson"))
    if not partitions:
        raise SystemExit(f"{history}: no *.ndjson partitions")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    bag = dask.bag.from_sequence(partitions, partition_size=1)
    reports: list[PartitionReport] = bag.map(
        check_partition, mapping=mapping, out_dir=str(out_dir) if out_dir else None
    ).compute()
    return reports


def main() -> int:
    arguments = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    arguments.add_argument("history", type=Path, help="a directory of NDJSON partitions (*.ndjson)")
    arguments.add_argument("--mapping", default="shopify/order", help="a mapping file or packaged mapping")
    arguments.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    arguments.add_argument("--out", type=Path, help="write each partition's payloads here")
    arguments.add_argument(
        "--scheduler", help="an existing Dask scheduler's address instead of a LocalCluster"
    )
    args = arguments.parse_args()
    try:
        mapping = load_mapping(args.mapping)  # compiled here first: a broken mapping fails before any task
    except ShipmapError as error:
        print(error.render(), file=sys.stderr)
        return error.exit_code
    if args.scheduler:
        with Client(args.scheduler):
            reports = check_history(args.history, mapping, out_dir=args.out)
    else:
        cluster = LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
        with cluster, Client(cluster):
            reports = check_history(args.history, mapping, out_dir=args.out)
    failures = [failure for report in reports for failure in report.failures]
    for failure in failures:
        where = f"{failure.origin}: {failure.target}" if failure.target else failure.origin
        print(f"FAIL {where}")
        print("\n".join(f"    {line}" for line in failure.error.splitlines()))
    documents = sum(report.documents for report in reports)
    payloads = sum(report.payloads for report in reports)
    print(
        f"{len(reports)} partitions, {documents} documents, {payloads} valid payloads, "
        f"{len(failures)} failing documents"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
