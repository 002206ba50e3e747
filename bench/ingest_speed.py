"""Ingest speed of one source folder: one process vs a row-converting pool vs file partitions in workers.

    python -m bench.ingest_speed --path /tmp/rm-bench/data-1000000/text --adapter ultrafeedback_binarized

(`bench.build_speed` generates such a folder.) Each way runs in this process one after the other, on the same
input; the script prints seconds, rows/s and whether the three outputs are byte-identical.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import time
from pathlib import Path

from curation.images import ImagesRoot
from curation.ingest import convert_rows, ingest, write_outcomes
from curation.sources import get_adapter

OUTPUTS = ("pairs.parquet", "images.parquet", "rejects.parquet")


def digest(folder: Path) -> str:
    return hashlib.sha256(b"".join((folder / name).read_bytes() for name in OUTPUTS)).hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--path", required=True)
    parser.add_argument("--adapter", default="ultrafeedback_binarized")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/rm-ingest-speed"))
    args = parser.parse_args()
    adapter = get_adapter(args.adapter)()
    ways = {
        "one process": lambda out: write_outcomes(adapter.info.key, convert_rows(adapter, args.path), out),
        f"row pool, {args.workers} workers (baseline)": lambda out: write_outcomes(
            adapter.info.key, convert_rows(adapter, args.path, ImagesRoot(None), workers=args.workers), out
        ),
        f"file partitions, {args.workers} workers": lambda out: ingest(adapter, args.path, out, workers=args.workers),
    }
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; input {args.path}\n")
    print("| way | seconds | rows/s | output sha256 |")
    print("|---|---|---|---|")
    for k, (label, run) in enumerate(ways.items()):
        out = args.work / f"way{k}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        start = time.perf_counter()
        summary = run(out)
        seconds = time.perf_counter() - start
        print(f"| {label} | {seconds:.1f} | {summary.rows_read / seconds:,.0f} | {digest(out)} |")


if __name__ == "__main__":
    main()
