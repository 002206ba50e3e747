"""Ingest speed of one source folder: one process vs a row-converting pool vs `ingest` as a build runs it.

    python -m bench.ingest_speed --path /tmp/rm-bench/data-1000000/text --adapter ultrafeedback_binarized
    python -m bench.ingest_speed --path /tmp/rm-bench/data-1000000/text --as-messages 200000
    python -m bench.ingest_speed --path /tmp/rm-bench/data-1000000/images --adapter rlaif_v

(`bench.build_speed` generates such a folder; `--as-messages N` first rewrites N of its rows as Tulu-3 chat
message lists and reads them with `tulu3_preference`.) Each way runs in this process one after the other, on
the same input; the script prints seconds, rows/s and a digest of the outputs (equal: the same pairs and rejects,
byte for byte, and the same images). `ingest` takes the columnar path for layouts DuckDB converts, file
partitions for folders of several files, else the pool.
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
    """The pairs' and rejects' bytes and the images' rows (the columnar ingest may store them in another order)."""
    import pyarrow.parquet as pq

    files = hashlib.sha256(b"".join((folder / name).read_bytes() for name in OUTPUTS if name != "images.parquet"))
    for batch in pq.read_table(folder / "images.parquet").sort_by("sha256").to_batches(max_chunksize=1000):
        for row in batch.to_pylist():
            files.update(repr(sorted(row.items())).encode())
    return files.hexdigest()[:16]


def as_messages(path: Path, rows: int, work: Path) -> Path:
    """Flattened prompt/chosen/rejected rows as Tulu-3's layout: each side the conversation up to its answer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["prompt", "chosen", "rejected"]).slice(0, rows).to_pylist()

    def side(row: dict, answer: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row[answer]}]

    out = work / "messages" / "train.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    messages = {"chosen": [side(r, "chosen") for r in table], "rejected": [side(r, "rejected") for r in table],
                "chosen_rating": [5.0] * len(table), "rejected_rating": [2.0] * len(table)}  # fmt: skip
    pq.write_table(pa.table(messages), out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--path", required=True)
    parser.add_argument("--adapter", default="ultrafeedback_binarized")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/rm-ingest-speed"))
    parser.add_argument("--as-messages", type=int, metavar="N", help="rewrite N rows as Tulu-3 message lists first")
    args = parser.parse_args()
    if args.as_messages:
        args.path, args.adapter = str(as_messages(Path(args.path), args.as_messages, args.work)), "tulu3_preference"
    adapter = get_adapter(args.adapter)()
    ways = {
        "one process": lambda out: write_outcomes(adapter.info.key, convert_rows(adapter, args.path), out),
        f"row pool, {args.workers} workers (baseline)": lambda out: write_outcomes(
            adapter.info.key, convert_rows(adapter, args.path, ImagesRoot(None), workers=args.workers), out
        ),
        f"`ingest`, {args.workers} workers": lambda out: ingest(adapter, args.path, out, workers=args.workers),
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
