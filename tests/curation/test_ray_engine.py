"""`curate build --engine ray` on a local Ray (2 CPUs, no dashboard): the same bytes as the embedded engine on the
demo recipe and on the real rows, also when a worker is killed mid-task."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from curation import build as build_module
from curation.build import build
from curation.engine import RayEngine
from curation.errors import ClusterError
from curation.failure import describe
from curation.recipe import load_recipe
from curation.shards import WorkTake
from curation.sources.ultrafeedback_binarized import UltrafeedbackBinarized
from tests.conftest import build_digests, build_files, real_rows_recipe, write_benchmark_images

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'rm-workbench[distributed]')")


@pytest.fixture(scope="module")
def engine(s3: Any) -> Any:
    # Started after the object store, so the workers inherit its settings (`AWS_*`) as a cluster's nodes would.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    # The test adapters below travel to the workers by value (the workers do not import the tests).
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield RayEngine()
    ray.shutdown()


def test_demo_recipe_same_bytes(engine: RayEngine, demo_recipe: Path, demo_build: Path, tmp_path: Path) -> None:
    manifest = build(load_recipe(demo_recipe), tmp_path / "ray", engine=engine)
    assert manifest["engine"]["name"] == "ray" and manifest["engine"]["cpus"] == 2
    # Single-file sources are a task each; the images were hashed and the shards written in tasks.
    tasks = manifest["engine"]["tasks"]
    assert tasks["ingest_source"]["count"] == 4 + 1  # the recipe's sources and its benchmark
    assert tasks["write_shard"]["count"] == 3 and tasks["phash_batch"]["count"] >= 1
    assert json.loads((demo_build / "manifest.json").read_text())["engine"] == {"name": "embedded"}
    assert build_digests(tmp_path / "ray") == build_digests(demo_build)
    assert len([k for k in build_digests(demo_build) if k.startswith("shards/")]) == 3


@pytest.fixture(scope="module")
def real_recipe(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real rows: hh-rlhf (one file: one task), UltraFeedback's folder of two files (one task per file, merged
    in file order), and two image benchmarks to decontaminate against."""
    root = tmp_path_factory.mktemp("real")
    write_benchmark_images(shared_data, root / "images")
    recipe = real_rows_recipe(shared_data, root / "images")
    recipe["seed"] = 3
    recipe["ops"]["exact_dedupe"] = {"max_pairs_per_prompt": 2}
    recipe["shards"] = {"rows_per_shard": 500}
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def real_embedded(real_recipe: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("real-embedded") / "build"
    build(load_recipe(real_recipe), out)
    return build_digests(out)


def test_real_rows_same_bytes(
    engine: RayEngine, real_recipe: Path, real_embedded: dict[str, str], tmp_path: Path
) -> None:
    manifest = build(load_recipe(real_recipe), tmp_path / "ray", engine=engine)
    assert all(source["balanced"] for source in manifest["sources"].values())
    assert build_digests(tmp_path / "ray") == real_embedded
    assert len([k for k in real_embedded if k.startswith("shards/")]) >= 3


def test_planted_collection_same_bytes(engine: RayEngine, tmp_path: Path) -> None:
    """The benchmark's synthetic collection (several parquet files per source, through the columnar layouts: one
    task per file), with every op: near-duplicate prompts and images, decontamination against two benchmarks."""
    from bench.build_speed import recipe
    from bench.synthetic import generate

    generate(tmp_path / "data", 3000, seed=5, rows_per_file=700)
    spec = recipe(tmp_path / "data", full=True) | {"shards": {"rows_per_shard": 1000}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(spec))
    embedded = build(load_recipe(tmp_path / "recipe.yaml"), tmp_path / "embedded" / "build")
    manifest = build(load_recipe(tmp_path / "recipe.yaml"), tmp_path / "ray" / "build", engine=engine)
    assert build_digests(tmp_path / "ray" / "build") == build_digests(tmp_path / "embedded" / "build")
    files = len(list((tmp_path / "data" / "text").glob("*.parquet")))
    assert files >= 3 and manifest["engine"]["tasks"]["ingest_file"]["count"] == files  # a task per text file
    removed = {stage for source in embedded["sources"].values() for stage in source["removed"]}
    assert {"exact_dedupe", "near_dedupe", "image_dedupe", "decontaminate"} <= removed


def kill_once(marker: Path) -> None:
    """Kill this process the first time (a marker file remembers): a worker dying mid-task, which Ray reruns."""
    if not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)


class KillOnce(UltrafeedbackBinarized):
    """Dies at its first row of `label_flip_20.jsonl` (an ingest task of one file)."""

    marker = Path()

    def convert(self, row: dict[str, Any], ctx: Any) -> Any:
        if ctx.ref.startswith("label_flip_20.jsonl"):
            kill_once(self.marker)
        return super().convert(row, ctx)


class KillingTake(WorkTake):
    """Dies in the middle of writing the second shard (a shard task)."""

    marker = Path()

    def __call__(self, keys: Any, batch_rows: int) -> Any:
        for n, batch in enumerate(super().__call__(keys, batch_rows)):
            if n == 0 and keys[0] == self.second_shard_first_key:
                kill_once(self.marker)
            yield batch


def test_killed_workers_same_bytes(
    engine: RayEngine,
    real_recipe: Path,
    real_embedded: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    KillOnce.marker, KillingTake.marker = tmp_path / "killed-ingest", tmp_path / "killed-shard"
    real = build_module._adapter

    def adapter(spec: Any) -> Any:
        made = real(spec)
        return KillOnce(spec.options, made.read) if spec.adapter == "ultrafeedback_binarized" else made

    def take(paths: Any, names: Any, swapped: Any) -> KillingTake:
        made = KillingTake(paths, names, swapped)
        made.second_shard_first_key = None  # set once the shard order is known (below)
        return made

    real_jobs = build_module.shard_jobs

    def jobs(take: Any, keys: Any, folder: Path, rows: int, *args: Any) -> Any:
        take.second_shard_first_key = keys[rows]
        return real_jobs(take, keys, folder, rows, *args)

    monkeypatch.setattr(build_module, "_adapter", adapter)
    monkeypatch.setattr(build_module, "WorkTake", take)
    monkeypatch.setattr(build_module, "shard_jobs", jobs)
    build(load_recipe(real_recipe), tmp_path / "ray", engine=engine)
    assert KillOnce.marker.exists() and KillingTake.marker.exists()  # a worker did die in each kind of task
    assert build_digests(tmp_path / "ray") == real_embedded


class KillAlways(UltrafeedbackBinarized):
    def convert(self, row: dict[str, Any], ctx: Any) -> Any:
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_task_that_always_dies_is_one_error_line(
    engine: RayEngine, real_recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = build_module._adapter
    dying = lambda spec: KillAlways(spec.options) if spec.adapter == "ultrafeedback_binarized" else real(spec)  # noqa: E731
    monkeypatch.setattr(build_module, "_adapter", dying)
    with pytest.raises(ClusterError, match=r"Ray could not run task ingest_file after 3 retries") as failure:
        build(load_recipe(real_recipe), tmp_path / "ray", engine=engine)
    assert describe(failure.value) == str(failure.value) and "\n" not in str(failure.value)
    assert not (tmp_path / "ray").exists()


def test_sources_in_s3_read_by_the_tasks(engine: RayEngine, s3_recipe: Path, demo_build: Path, tmp_path: Path) -> None:
    """Each source at an s3:// URI is one task, which copies it from the store on its node and ingests it."""
    manifest = build(load_recipe(s3_recipe), tmp_path / "ray", engine=engine)
    assert manifest["engine"]["tasks"]["ingest_source"]["count"] == 5
    assert build_files(tmp_path / "ray") == build_files(demo_build)


def test_embedded_build_needs_no_ray(demo_recipe: Path, tmp_path: Path) -> None:
    script = (
        "import sys; from pathlib import Path; from curation.build import build; "
        "from curation.recipe import load_recipe; "
        f"build(load_recipe(Path({str(demo_recipe)!r})), Path({str(tmp_path / 'b')!r})); "
        "assert 'ray' not in sys.modules, 'the embedded engine imported ray'"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
