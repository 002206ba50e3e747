"""Measure a rebuild whose change is only thresholds against a cold build of the same recipe.

    python -m bench.rebuild_speed --n 1000000 --work /tmp/rm-bench

On the collection of `bench.build_speed` (generated when absent) it runs, each in its own process after a settle
pause: (1) the all-stages recipe of `bench.build_speed`, cold, which fills a signal cache; (2) the same recipe
with `near_dedupe.threshold` and `decontaminate.min_overlap` changed, on that cache; (3) the changed recipe cold,
on an empty cache; (4) the per-pair build (a') for reference. It prints the times, the signals (2) reused and
whether the shards of (2) and (3) are byte-identical.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bench.build_speed import SETTLE_SECONDS, recipe

CHANGED = {"near_dedupe": {"threshold": 0.75}, "decontaminate": {"min_overlap": 0.6}}


def child(recipe_path: Path, out: Path, cache: Path) -> None:
    from curation.build import build
    from curation.recipe import load_recipe

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    manifest = build(load_recipe(recipe_path), out, cache=cache)
    shards = [s["sha256"] for s in manifest["shards"]]
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "reused": manifest["signals_reused"], "shards": shards,
                      "timings": manifest["timings"]}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/rm-bench"))
    parser.add_argument("--child", nargs=3, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    from bench.synthetic import generate

    data = args.work / f"data-{args.n}"
    if not (data / "truth.parquet").exists():
        generate(data, args.n, n_benchmark=max(1000, args.n // 40))
    work = args.work / f"rebuild-{args.n}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    full = recipe(data, full=True)
    changed = json.loads(json.dumps(full))
    for op, params in CHANGED.items():
        changed["ops"][op] |= params
    recipes = {"full": full, "changed": changed, "per_pair": recipe(data, full=False)}
    for name, spec in recipes.items():
        (work / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    runs = [
        ("(1) all stages, cold", "full", "cache"),
        ("(2) thresholds changed, warm cache", "changed", "cache"),
        ("(3) thresholds changed, cold", "changed", "empty-cache"),
        ("(4) per-pair stages (a'), cold", "per_pair", "empty-cache-2"),
    ]
    results = {}
    for label, name, cache in runs:
        time.sleep(SETTLE_SECONDS)
        command = [sys.executable, "-m", "bench.rebuild_speed", "--child", str(work / f"{name}.yaml"),
                   str(work / f"out-{len(results)}"), str(work / cache)]  # fmt: skip
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        results[label] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"machine: {platform.machine()}, Python {platform.python_version()}, N = {args.n:,}\n")
    print("| run | seconds | signals reused |\n|---|---|---|")
    for label, result in results.items():
        print(f"| {label} | {result['seconds']:.1f} | {', '.join(result['reused']) or '-'} |")
    warm, cold = results["(2) thresholds changed, warm cache"], results["(3) thresholds changed, cold"]
    print(f"\nshards of (2) and (3) byte-identical: {warm['shards'] == cold['shards']}")
    print("(2) stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in warm["timings"].items()))


if __name__ == "__main__":
    main()
