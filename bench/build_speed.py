"""Benchmark `curate build` against a `datasets` baseline and the DuckDB I/O floor, on planted synthetic data.

    python -m bench.build_speed --n 100000 1000000 --work /tmp/rm-bench

For each N it generates the synthetic collection (`bench.synthetic`: text and image pairs with planted exact,
near-duplicate and contaminated rows) and runs, each in its own process so peak RSS is its own, and each after
a pause of `SETTLE_SECONDS` so that none starts with memory the one before just freed (warm on a VM):

- (a)  `curate build` with every stage (near-duplicate prompts and images, decontamination included);
- (a') the same build with only the per-pair stages (ingest, validate, exact dedupe, filters, mix, shards);
- (b)  a straightforward baseline doing what (a') does with `datasets.map`/`filter`, Python hashing and a set;
- (c)  the I/O floor: DuckDB reading the same input and writing the same rows to parquet, no processing.

It prints pairs/s, peak RSS and the ratios, and the precision and recall of the near-duplicate and
decontamination stages of (a) against the planted truth.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

RUNS = ("a", "a_prime", "b", "c")
SETTLE_SECONDS = 5
LABELS = {"a": "(a) curate build, all stages", "a_prime": "(a') curate build, per-pair stages",
          "b": "(b) datasets map/filter baseline", "c": "(c) DuckDB read + write floor"}  # fmt: skip


def recipe(data: Path, full: bool) -> dict[str, Any]:
    ops: dict[str, Any] = {"validate": {}, "exact_dedupe": {}, "filters": {"drop_ties": True}}
    if full:
        ops |= {
            "near_dedupe": {"threshold": 0.7, "candidate_threshold": 0.5},
            "image_dedupe": {"max_distance": 4},
            "decontaminate": {"ngram": 8, "min_overlap": 0.5, "max_removal_rate": 0.5},
        }
    spec: dict[str, Any] = {
        "name": "bench-full" if full else "bench-per-pair",
        "seed": 0,
        "sources": {
            "text": {"adapter": "ultrafeedback_binarized", "path": str(data / "text")},
            "images": {"adapter": "rlaif_v", "path": str(data / "images")},
        },
        "ops": ops,
        "shards": {"rows_per_shard": 100_000},
    }
    if full:
        spec["benchmarks"] = {
            "rb": {"adapter": "rewardbench", "path": str(data / "benchmarks" / "text.jsonl")},
            "vl": {"adapter": "vl_rewardbench", "path": str(data / "benchmarks" / "vl" / "data.jsonl"),
                   "images_root": str(data / "benchmarks" / "vl" / "images")},
        }  # fmt: skip
    return spec


def run_build(data: Path, out: Path, full: bool) -> int:
    from curation.build import build
    from curation.recipe import load_recipe

    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(recipe(data, full)))
    cache = out.with_name(out.name + ".cache")  # empty: every signal computed, as a first build computes them
    shutil.rmtree(cache, ignore_errors=True)
    return build(load_recipe(path), out, cache=cache)["rows_in_shards"]


def run_baseline(data: Path, out: Path) -> int:
    """What (a') does, written the obvious way with `datasets`."""
    import hashlib
    import io
    import re
    import unicodedata

    import datasets
    from PIL import Image

    datasets.disable_progress_bars()
    datasets.disable_caching()  # a fair baseline recomputes, as a first run would
    space = re.compile(r"[ \t\r\f\v]+")

    def norm(text: str) -> str:
        text = space.sub(" ", unicodedata.normalize("NFC", text))
        return re.sub(r"\n{3,}", "\n\n", re.sub(r" ?\n ?", "\n", text)).strip()

    seen: set[str] = set()
    kept = 0
    for name, prompt_key in (("text", "prompt"), ("images", "question")):
        files = sorted(str(p) for p in (data / name).glob("*.parquet"))
        ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(out / "hf-cache"))

        def prepare(row: dict[str, Any], prompt_key: str = prompt_key) -> dict[str, Any]:
            prompt, chosen, rejected = norm(row[prompt_key]), norm(row["chosen"]), norm(row["rejected"])
            image_sha = ""
            if "image" in row:
                data_bytes = row["image"]["bytes"]
                with Image.open(io.BytesIO(data_bytes)) as image:
                    image.load()
                image_sha = hashlib.sha256(data_bytes).hexdigest()
            key = json.dumps([prompt, image_sha, chosen, rejected])
            scores = row.get("metadata") or {}
            tie = scores.get("score_chosen") is not None and scores["score_chosen"] == scores.get("score_rejected")
            pair_id = hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
            return {"prompt_n": prompt, "chosen": chosen, "rejected": rejected, "pair_id": pair_id, "tie": tie}

        ds = ds.map(prepare, remove_columns=[c for c in ds.column_names if c in ("image",)])
        ds = ds.filter(lambda r: bool(r["chosen"]) and bool(r["rejected"]))

        def first_seen(row: dict[str, Any]) -> bool:
            if row["pair_id"] in seen:
                return False
            seen.add(row["pair_id"])
            return True

        ds = ds.filter(first_seen)
        ds = ds.filter(lambda r: not r["tie"] and r["chosen"] != r["rejected"])
        ds = ds.map(lambda r: {"order": hashlib.md5(f"{r['pair_id']}:0".encode()).hexdigest()}).sort("order")
        ds.to_parquet(str(out / f"{name}.parquet"))
        kept += len(ds)
    return kept


def run_floor(data: Path, out: Path) -> int:
    import duckdb

    db = duckdb.connect()
    rows = 0
    for name in ("text", "images"):
        source = str(data / name / "*.parquet")
        db.execute(f"COPY (SELECT * FROM read_parquet('{source}')) TO '{out / name}.parquet' (FORMAT parquet)")
        rows += db.execute(f"SELECT count(*) FROM read_parquet('{source}')").fetchone()[0]
    return rows


def child(kind: str, data: Path, out: Path) -> None:
    """Run one measurement in this process and print its time and peak RSS as JSON."""
    if out.exists():
        shutil.rmtree(out)
    start = time.perf_counter()
    if kind in ("a", "a_prime"):
        rows = run_build(data, out, full=kind == "a")
    else:
        out.mkdir(parents=True)
        rows = run_baseline(data, out) if kind == "b" else run_floor(data, out)
    seconds = time.perf_counter() - start
    # The largest process's peak: this one's, or a worker process's where an ingest started any.
    rss_mib = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
    print(json.dumps({"seconds": seconds, "rows_out": rows, "peak_rss_mib": rss_mib}))


def quality(data: Path, build_dir: Path) -> dict[str, dict[str, float]]:
    """Precision and recall of near-duplicate and decontamination removals against the planted truth."""
    import polars as pl

    truth = pl.read_parquet(data / "truth.parquet").with_columns(source=pl.col("dataset"), source_row=pl.col("ref"))
    removed = pl.read_parquet(build_dir / "rejects" / "rejects.parquet")

    def score(stages: list[str], positives: list[str], allowed: list[str]) -> dict[str, float]:
        predicted = removed.filter(pl.col("stage").is_in(stages)).select("source", "source_row")
        planted = truth.filter(pl.col("kind").is_in(positives)).select("source", "source_row")
        fine = truth.filter(pl.col("kind").is_in(allowed)).select("source", "source_row")
        hits = planted.join(predicted, on=["source", "source_row"]).height
        correct = predicted.join(fine, on=["source", "source_row"]).height
        return {"planted": planted.height, "removed": predicted.height,
                "recall": hits / max(planted.height, 1), "precision": correct / max(predicted.height, 1)}  # fmt: skip

    return {
        # Edited copies of one benchmark item are near-duplicates of each other too: not a false positive.
        "near_dedupe (prompts)": score(["near_dedupe"], ["near_dup"], ["near_dup", "contaminated_text"]),
        "image_dedupe": score(["image_dedupe"], ["near_dup_image"], ["near_dup_image"]),
        # A contaminated row removed earlier as a near duplicate of another contaminated row is still caught.
        "decontaminate": score(
            ["decontaminate", "near_dedupe"],
            ["contaminated_text", "contaminated_image"],
            ["contaminated_text", "contaminated_image", "near_dup"],
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100_000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/rm-bench"))
    parser.add_argument("--child", choices=RUNS)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data, args.out)
        return
    from bench.synthetic import generate

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    for n in args.n:
        data = args.work / f"data-{n}"
        if not (data / "truth.parquet").exists():
            counts = generate(data, n, n_benchmark=max(1000, n // 40))
            print(f"generated {n} pairs: {json.dumps(counts)}")
        results = {}
        for kind in RUNS:
            # Every run starts from the same state: on a VM that returns freed memory to its host (this one does
            # after about 2 s), a run started at once would reuse the previous run's pages warm, and time less.
            time.sleep(SETTLE_SECONDS)
            out = args.work / f"out-{n}-{kind}"
            command = [
                sys.executable,
                "-m",
                "bench.build_speed",
                "--child",
                kind,
                "--data",
                str(data),
                "--out",
                str(out),
            ]
            done = subprocess.run(command, check=False, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{LABELS[kind]} failed for N={n}:\n{done.stderr[-4000:]}")
            results[kind] = json.loads(done.stdout.strip().splitlines()[-1])
        floor = results["c"]["seconds"]
        print(f"\n### N = {n:,}\n")
        print("| run | seconds | pairs/s | peak RSS (MiB) | / (c) |")
        print("|---|---|---|---|---|")
        for kind in RUNS:
            r = results[kind]
            print(f"| {LABELS[kind]} | {r['seconds']:.1f} | {n / r['seconds']:,.0f} | {r['peak_rss_mib']:,.0f} | "
                  f"{r['seconds'] / floor:.2f} |")  # fmt: skip
        print(f"\n(b)/(a') = {results['b']['seconds'] / results['a_prime']['seconds']:.2f}\n")
        for kind in ("a", "a_prime"):  # where the time goes: each stage's seconds from the build's manifest
            timings = json.loads((args.work / f"out-{n}-{kind}" / "manifest.json").read_text())["timings"]
            print(f"{LABELS[kind]} stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
        print()
        print("| stage (of (a)) | planted | removed | precision | recall |")
        print("|---|---|---|---|---|")
        for stage, q in quality(data, args.work / f"out-{n}-a").items():
            print(f"| {stage} | {q['planted']} | {q['removed']} | {q['precision']:.3f} | {q['recall']:.3f} |")


if __name__ == "__main__":
    main()
