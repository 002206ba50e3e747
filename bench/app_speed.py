"""Time to first render of the workbench's Pairs page and of a filtered query on a large build.

    python -m bench.app_speed --n 1000000 --work /tmp/rm-bench      # generate and build 1M synthetic pairs first
    python -m bench.app_speed --build /tmp/rm-bench/out-1000000-a    # or measure an existing build

In one process it measures: opening the build
(memory-mapping its shards), the first Pairs page query, a filtered query (source + substring search +
margin), and the whole Pairs page rendered by Streamlit's AppTest (first run, then a re-run with a filter);
beside them, a baseline that loads the shards into pandas and filters there.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc


def timed(label: str, results: list[tuple[str, float]], fn):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    value = fn()
    results.append((label, time.perf_counter() - start))
    return value


def make_build(n: int, work: Path) -> Path:
    """The synthetic collection of `bench.synthetic`, built with every stage (reused when it exists)."""
    from bench.build_speed import run_build
    from bench.synthetic import generate

    data, out = work / f"data-{n}", work / f"app-build-{n}"
    if not (data / "truth.parquet").exists():
        generate(data, n, n_benchmark=max(1000, n // 40))
    if not (out / "manifest.json").exists():
        run_build(data, out, full=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", type=Path, help="an existing build folder")
    parser.add_argument(
        "--n", type=int, default=1_000_000, help="pairs to generate and build when --build is not given"
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/rm-bench"))
    args = parser.parse_args()
    build_dir = (args.build or make_build(args.n, args.work)).resolve()
    root, name = build_dir.parent, build_dir.name
    os.environ["WORKBENCH_DATA"] = str(root)
    from streamlit.testing.v1 import AppTest

    from app.data import Build

    results: list[tuple[str, float]] = []
    build = timed("open build (memory-map shards)", results, lambda: Build(root, name))
    total = build.rows("SELECT count(*) AS n FROM pairs")[0]["n"]
    source = build.rows("SELECT source FROM pairs LIMIT 1")[0]["source"]
    timed("first Pairs query (page 0, 25 rows)", results, lambda: build.pairs())
    _, matched = timed(
        "filtered query (source + substring + margin >= 1)",
        results,
        lambda: build.pairs(sources=[source], search="the", min_margin=1.0, sort="longest chosen"),
    )
    page = AppTest.from_file(
        str(Path(__file__).resolve().parents[1] / "app" / "pages" / "2_Pairs.py"), default_timeout=120
    )
    page.query_params["build"] = name
    timed("Pairs page, first render (AppTest, cold)", results, page.run)
    assert not page.exception, page.exception
    timed("Pairs page, re-render with a source filter", results, lambda: page.multiselect[0].set_value([source]).run())

    def pandas_baseline() -> int:
        frames = [ipc.open_stream(pa.memory_map(str(build_dir / s["file"]))).read_all().to_pandas()
                  for s in build.manifest["shards"]]  # fmt: skip
        import pandas as pd

        df = pd.concat(frames)
        prompt = df.prompt.map(lambda turns: "\n".join(m["content"] for m in turns))
        text = df.chosen.str.contains("the", case=False, regex=False)
        text |= df.rejected.str.contains("the", case=False, regex=False) | prompt.str.contains("the", case=False)
        return int(((df.source == source) & (df.margin >= 1.0) & text).sum())

    app_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    baseline = timed("baseline: load shards into pandas, then filter", results, pandas_baseline)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"build: {build_dir} ({total:,} pairs); filtered query matched {matched:,} (pandas: {baseline:,})\n")
    print("| step | seconds |\n|---|---|")
    for label, seconds in results:
        print(f"| {label} | {seconds:.2f} |")
    total_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\npeak RSS: {app_rss:.2f} GiB before the baseline, {total_rss:.2f} GiB after it")


if __name__ == "__main__":
    main()
