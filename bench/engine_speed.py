"""The same build on both engines: the embedded one (this machine's processes) and Ray, on the planted collection of
`bench.build_speed` (generated when absent), with a projection of a larger build on a cluster.

    python -m bench.engine_speed --n 1000000 --work /tmp/rm-bench [--address ADDR]

Each build runs in its own process after a settle pause, with every op (the recipe (a) of `bench.build_speed`) and
an empty signal cache. The Ray run starts a local Ray with this machine's cores (or joins `--address`); its start is
timed apart. The script checks that both builds wrote the same shards (sha256 of every shard), then prints each
stage's seconds side by side, the Ray tasks' count and seconds by kind, and a projection of `--project` pairs on a
cluster of `--cluster-cpus` task CPUs whose head node has `--head-cores` cores (see docs/distributed.md for the
model and what it leaves out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from bench.build_speed import SETTLE_SECONDS, recipe

ENGINES = ("embedded", "ray")
# The kinds of Ray task each stage runs; the rest of a stage runs on the driver (the head node).
TASK_STAGES = {
    "ingest": ("ingest_source", "ingest_file"),
    "near_dedupe": ("keys_task", "verify_task"),
    "image_dedupe": ("phash_batch",),
    "decontaminate": ("text_matches_task",),
    "write": ("write_shard",),
}


def child(engine_name: str, data: Path, out: Path, address: str | None) -> None:
    """One build in this process; prints its seconds, the engine's start, the manifest's timings and engine."""
    from curation.build import build
    from curation.engine import make_engine
    from curation.recipe import load_recipe

    shutil.rmtree(out, ignore_errors=True)
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(recipe(data, full=True)))
    cache = out.with_name(out.name + ".cache")
    shutil.rmtree(cache, ignore_errors=True)
    start = time.perf_counter()
    engine = make_engine(engine_name, address)
    started = time.perf_counter() - start
    manifest = build(load_recipe(path), out, cache=cache, engine=engine)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "seconds": seconds,
        "engine_start": started,
        "rows": manifest["rows_in_shards"],
        "pairs": sum(s["pairs_ingested"] for s in manifest["sources"].values()),
        "timings": manifest["timings"],
        "engine": manifest["engine"],
        "shards": [s["sha256"] for s in manifest["shards"]],
    }))  # fmt: skip


def project(ray_run: dict[str, Any], n: int, pairs: int, cluster_cpus: int, head_cores: int) -> list[str]:
    """Minutes of a `pairs` build on a cluster, from the Ray run at n pairs. Task work (CPU seconds, as measured)
    grows with the pairs and is spread over `cluster_cpus`. The driver's work (a stage's wall time less its
    tasks' share of this machine's CPUs) grows with the pairs too and runs on the head node: at this machine's
    speed (`local`: no gain from more cores, an upper bound) or sped up by the head's cores over these
    (`ideal`: a lower bound; DuckDB, Polars and the compiled loops use every core, the Python parts do not)."""
    scale = pairs / n
    tasks = ray_run["engine"]["tasks"]
    local_cpus = ray_run["engine"]["cpus"]
    lines, upper, lower = [], 0.0, 0.0
    for stage, wall in ray_run["timings"].items():
        if stage == "total_seconds":
            continue
        task_seconds = sum(tasks.get(kind, {}).get("seconds_total", 0.0) for kind in TASK_STAGES.get(stage, ()))
        driver = max(wall - task_seconds / local_cpus, 0.0)
        spread = task_seconds * scale / cluster_cpus
        high, low = spread + driver * scale, spread + driver * scale * local_cpus / head_cores
        upper, lower = upper + high, lower + low
        lines.append(f"| {stage} | {wall:.1f} | {task_seconds:.1f} | {driver:.1f} | {low / 60:.1f} - {high / 60:.1f} |")
    total = ray_run["timings"]["total_seconds"]
    lines.append(f"| **total** | {total:.1f} | | | **{lower / 60:.0f} - {upper / 60:.0f}** |")
    return lines


def graph_sizes(build_dir: Path) -> dict[str, int]:
    """Rows of the edge signals (candidate pairs kept with their similarity) that the driver clusters."""
    import pyarrow.parquet as pq

    signals = build_dir / "signals"
    return {op: pq.ParquetFile(path).metadata.num_rows
            for op in ("near_dedupe", "image_dedupe") for path in sorted(signals.glob(f"{op}-*"))}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/rm-bench"))
    parser.add_argument("--address", help="a Ray cluster to join (default: a local Ray on this machine's cores)")
    parser.add_argument("--project", type=int, default=100_000_000, help="pairs of the projected build")
    parser.add_argument("--cluster-cpus", type=int, default=256, help="task CPUs of the projected cluster")
    parser.add_argument("--head-cores", type=int, default=32, help="cores of the projected head node")
    parser.add_argument("--child", choices=ENGINES)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data, args.out, args.address)
        return
    from bench.synthetic import generate

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    data = args.work / f"data-{args.n}"
    if not (data / "truth.parquet").exists():
        generate(data, args.n, n_benchmark=max(1000, args.n // 40))
    runs = {}
    for engine in ENGINES:
        time.sleep(SETTLE_SECONDS)
        out = args.work / f"engine-{args.n}-{engine}"
        command = [sys.executable, "-m", "bench.engine_speed", "--child", engine, "--data", str(data), "--out",
                   str(out), *(["--address", args.address] if args.address and engine == "ray" else [])]  # fmt: skip
        done = subprocess.run(command, check=False, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"the {engine} build failed:\n{done.stderr[-4000:]}")
        runs[engine] = json.loads(done.stdout.strip().splitlines()[-1])
    same = runs["embedded"]["shards"] == runs["ray"]["shards"]
    print(f"\n### N = {args.n:,} pairs: shards identical on both engines: {same}\n")
    print("| stage | embedded (s) | ray (s) |")
    print("|---|---|---|")
    for stage, seconds in runs["embedded"]["timings"].items():
        print(f"| {stage} | {seconds:.1f} | {runs['ray']['timings'].get(stage, 0.0):.1f} |")
    print(f"| Ray start (before the build) | - | {runs['ray']['engine_start']:.1f} |")
    print("\n| Ray task | count | seconds (sum) | seconds (longest) | nodes |")
    print("|---|---|---|---|---|")
    for kind, t in runs["ray"]["engine"]["tasks"].items():
        print(f"| {kind} | {t['count']} | {t['seconds_total']:.1f} | {t['seconds_max']:.1f} | {t['nodes']} |")
    print(f"\n### Projection: {args.project:,} pairs, {args.cluster_cpus} task CPUs, a {args.head_cores}-core head\n")
    print("| stage | wall here (s) | task CPU-s here | driver s here | projected (min, ideal - local) |")
    print("|---|---|---|---|---|")
    for line in project(runs["ray"], runs["ray"]["pairs"], args.project, args.cluster_cpus, args.head_cores):
        print(line)
    edges = graph_sizes(args.work / f"engine-{args.n}-ray")
    print("\nEdges the driver clusters: " + ", ".join(f"{op} {rows:,}" for op, rows in edges.items())
          + f" (about {args.project / runs['ray']['pairs']:.0f}x as many at {args.project:,} pairs)")  # fmt: skip
    if not same:
        sys.exit("error: the engines wrote different shards")


if __name__ == "__main__":
    main()
