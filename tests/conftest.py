"""Shared fixtures: the real rows in ../shared/data, generated images, and a one-call adapter runner."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.build import build
from curation.demo import write_demo
from curation.images import ImagesRoot
from curation.ingest import IngestSummary, ingest
from curation.recipe import load_recipe
from curation.sources import get_adapter
from curation.sources.base import ReadOptions

# Progress lines (`curation.progress`) are off in tests, so no test's captured output depends on how long it ran;
# the tests of those lines turn them on for themselves.
os.environ["RM_WORKBENCH_PROGRESS_EVERY"] = "0"
# Outputs are compared as plain text: a terminal forced by the environment (as some CI services do) is not one here.
for _forced in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
    os.environ.pop(_forced, None)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MIXES = Path(__file__).resolve().parents[1] / "mixes"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data; skipped with a reason where absent, a failure under CI."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{SHARED_DATA} is missing: CI must provide ../shared/data")
        pytest.skip(f"real data rows not available: {SHARED_DATA} does not exist")
    return SHARED_DATA


def image_bytes(seed: int = 0, size: tuple[int, int] = (32, 24), fmt: str = "PNG") -> bytes:
    """A small, distinct, decodable image (the seed changes its pixels, so its sha256)."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (32, 24)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), "PNG")
    path.write_bytes(image_bytes(seed, size, fmt))
    return path


def output_digests(out: Path) -> dict[str, str]:
    """sha256 of each file an ingest writes."""
    names = ("pairs.parquet", "images.parquet", "rejects.parquet")
    return {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in names}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def prompts_build(folder: Path, prompts: int, pairs_each: int = 1) -> Path:
    """`folder/b`: a text build of `prompts` prompts with `pairs_each` distinct pairs each."""
    rows = [{"prompt": f"Question {k}?", "chosen": f"A good answer {k}.{j}", "rejected": f"A bad one {k}.{j}"}
            for k in range(prompts) for j in range(pairs_each)]  # fmt: skip
    write_jsonl(folder / "uf.jsonl", rows)
    (folder / "r.yaml").write_text("name: r\nsources:\n  uf: {adapter: ultrafeedback_binarized, path: uf.jsonl}\n")
    build(load_recipe(folder / "r.yaml"), folder / "b")
    return folder / "b"


def write_benchmark_images(shared: Path, root: Path) -> None:
    """Generated images at the paths the real VL-RewardBench and MM-RLHF-RewardBench rows reference."""
    for n, line in enumerate((shared / "vl-rewardbench" / "data.jsonl").read_text().splitlines()):
        write_image(root / json.loads(line)["image"], seed=n, size=(8, 8))
    for n, line in enumerate((shared / "mm-rlhf-rewardbench" / "mm_reward_bench.jsonl").read_text().splitlines()):
        row = json.loads(line)
        if "video" in row:
            for k in range(2):
                write_image(root / row["video"] / f"{k:03d}.png", seed=10_000 + 10 * n + k, size=(8, 8))
        else:
            write_image(root / row["image"], seed=5_000 + n, size=(8, 8))


def real_rows_recipe(shared: Path, images: Path) -> dict[str, Any]:
    """A recipe over the real rows: hh-rlhf (one file) and UltraFeedback (a folder of two files) as training
    sources, VL-RewardBench and MM-RLHF-RewardBench (their images generated under `images` by
    `write_benchmark_images`) as decontamination targets. UltraFeedback's folder is made beside `images`, of links
    to the shared files under names that name no split (the shared folder's `eval_clean.jsonl` names a test split,
    and a folder is read as the Hub reads it)."""
    uf = images.parent / "ultrafeedback"
    uf.mkdir(parents=True, exist_ok=True)
    for name, link in (("eval_clean.jsonl", "clean.jsonl"), ("label_flip_20.jsonl", "label_flip_20.jsonl")):
        if not (uf / link).is_symlink():
            (uf / link).symlink_to(shared / "ultrafeedback-binarized" / name)
    return {
        "name": "real-rows",
        "seed": 0,
        "sources": {
            "hh": {"adapter": "hh_rlhf", "path": str(shared / "hh-rlhf" / "harmless-base" / "test.jsonl.gz")},
            "uf": {"adapter": "ultrafeedback_binarized", "path": str(uf)},
        },
        "benchmarks": {
            "vlrb": {
                "adapter": "vl_rewardbench",
                "path": str(shared / "vl-rewardbench" / "data.jsonl"),
                "images_root": str(images),
            },
            "mmrb": {
                "adapter": "mm_rlhf_rewardbench",
                "images_root": str(images),
                "path": str(shared / "mm-rlhf-rewardbench" / "mm_reward_bench.jsonl"),
            },
        },
        "ops": {"near_dedupe": {}, "decontaminate": {}, "filters": {"drop_ties": True, "drop_identical": True}},
    }


def build_digests(build_dir: Path) -> dict[str, str]:
    """sha256 of every file of a build; the manifest's without what depends on the run (timings, the engine and
    its tasks, which signals came from the cache)."""
    digests = {}
    for path in sorted(build_dir.rglob("*")):
        if path.is_file() and path.name != "manifest.json":
            digests[path.relative_to(build_dir).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest = json.loads((build_dir / "manifest.json").read_text())
    for key in ("timings", "signals_reused", "engine"):
        manifest.pop(key)
    digests["manifest"] = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    return digests


def build_files(build_dir: Path) -> dict[str, bytes]:
    """Every file of a build but its manifest (which names the inputs) and its card (which shows the recipe)."""
    skip = {"manifest.json", "README.md"}
    return {p.relative_to(build_dir).as_posix(): p.read_bytes() for p in sorted(build_dir.rglob("*"))
            if p.is_file() and p.name not in skip}  # fmt: skip


class IngestResult:
    def __init__(self, out: Path, summary: IngestSummary) -> None:
        self.out = out
        self.summary = summary
        self.pairs = pq.read_table(out / "pairs.parquet").to_pylist()
        self.rejects = pq.read_table(out / "rejects.parquet").to_pylist()
        self.images = pq.read_table(out / "images.parquet").to_pylist()

    def meta(self, i: int) -> dict[str, Any]:
        return json.loads(self.pairs[i]["meta"])


RunIngest = Callable[..., IngestResult]


@pytest.fixture
def run_ingest(tmp_path_factory: pytest.TempPathFactory) -> RunIngest:
    """run_ingest("key", path, images_root=None, options={}, split=None, limit=None, data_dir=None) -> IngestResult
    (accounting checked). The
    outputs go to a folder of their own: never inside an input folder (which ingest refuses)."""
    counter = iter(range(10_000))
    tmp_path = tmp_path_factory.mktemp("ingested")

    def run(
        key: str,
        path: str | Path,
        images_root: Path | None = None,
        options: dict[str, Any] | None = None,
        split: str | None = None,
        limit: int | None = None,
        data_dir: str | None = None,
    ) -> IngestResult:
        adapter = get_adapter(key)(options or {}, ReadOptions(split=split, data_dir=data_dir))
        out = tmp_path / f"ingest-{key}-{next(counter)}"
        summary = ingest(adapter, str(path), out, ImagesRoot(images_root), limit=limit)
        assert summary.balanced
        result = IngestResult(out, summary)
        assert len(result.pairs) == summary.pairs
        assert len(result.rejects) == summary.rows_rejected
        return result

    return run


@pytest.fixture(scope="session")
def demo_recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped `mixes/demo.yaml`, beside a freshly written demo collection (as `make demo` lays them out)."""
    root = tmp_path_factory.mktemp("demo")
    write_demo(root / "demo_data")
    (root / "mixes").mkdir()
    recipe = root / "mixes" / "demo.yaml"
    recipe.write_text((MIXES / "demo.yaml").read_text())
    return recipe


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory: pytest.TempPathFactory, demo_recipe: Path) -> Path:
    """`demo_recipe` built once for the session, to read: a test that changes a build copies it first."""
    out = tmp_path_factory.mktemp("demo-build") / "demo"
    build(load_recipe(demo_recipe), out)
    return out


HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class FakeHub:
    rows: list[dict[str, Any]]  # what every dataset holds
    asked: list[tuple[str, str | None]] = field(default_factory=list)  # (id, revision) of each `load_dataset`


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    """The Hub as `huggingface_hub` and `datasets` reach it, online: every branch is at HUB_COMMIT, every dataset
    `rows` (three UltraFeedback-binarized rows until a test sets others)."""
    import datasets
    import huggingface_hub
    from huggingface_hub import constants

    hub = FakeHub([{"prompt": f"Say {i}", "chosen": [{"role": "user", "content": f"Say {i}"},
                   {"role": "assistant", "content": "yes"}], "rejected": [{"role": "user", "content": f"Say {i}"},
                   {"role": "assistant", "content": "no"}], "score_chosen": 8.0, "score_rejected": 2.0}
                   for i in range(3)])  # fmt: skip

    def dataset_info(self: Any, repo_id: str, revision: str | None = None, timeout: float | None = None) -> Any:
        return SimpleNamespace(sha=HUB_COMMIT)

    def load_dataset(path: str, *args: Any, revision: str | None = None, **kwargs: Any) -> Any:
        hub.asked.append((path, revision))
        return datasets.Dataset.from_list(hub.rows).to_iterable_dataset()

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", dataset_info)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return hub


# -- rows as the Hugging Face Hub serves them ---------------------------------------------------------------------
HUB_WAYS = ("parquet, row by row", "parquet, columnar", "streaming", "arrow")


@pytest.fixture
def hub_ingest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., dict[str, IngestResult]]:
    """hub_ingest("key", rows, features, images_root=None, options={}) -> {way: IngestResult}.

    The rows are encoded with the declared `datasets.Features` (a `Sequence` of structs becomes a record of
    lists, images the `Image` feature's {bytes, path}, exactly as `datasets` stores them) and read every way the
    Hub serves them (`HUB_WAYS`): the parquet file `datasets` writes, ingested row by row and through the
    columnar path (the same path where the adapter has no SQL layout); the same folder through
    `datasets.load_dataset(..., streaming=True)`, which is the code path of a Hub id; and the Arrow file
    `save_to_disk` writes. Every way must give the same pairs (source rows aside) and rejects' reasons."""
    import datasets

    import curation.columnar
    import curation.readers

    counter = iter(range(10_000))

    def run(
        key: str,
        rows: list[dict[str, Any]],
        features: datasets.Features,
        images_root: Path | None = None,
        options: dict[str, Any] | None = None,
        config: str | None = None,
        rows_read: int | None = None,
    ) -> dict[str, IngestResult]:
        """`rows_read`: the rows the ingest counts, where a source joins several served rows into one."""
        root = tmp_path / f"hub-{key}-{next(counter)}"
        dataset = datasets.Dataset.from_list(rows, features=features)
        (root / "repo" / "data").mkdir(parents=True)
        dataset.to_parquet(str(root / "repo" / "data" / "train-00000-of-00001.parquet"))
        hub_file = get_adapter(key).info.hub_file
        if hub_file is not None and config is None:  # the file a Hub id reads instead of the parquet config
            dataset.to_json(str(root / "repo" / hub_file))
        if config is not None:  # the repo's card names the config, as a Hub dataset with configs does
            files = "  data_files:\n  - split: train\n    path: data/*.parquet\n"
            (root / "repo" / "README.md").write_text(f"---\nconfigs:\n- config_name: {config}\n{files}---\n")
        dataset.save_to_disk(str(root / "disk"))
        [arrow] = sorted((root / "disk").glob("*.arrow"))
        results = {}
        for way, location, columnar in (
            ("parquet, row by row", root / "repo" / "data", False),
            ("parquet, columnar", root / "repo" / "data", True),
            ("streaming", root / "repo", False),
            ("arrow", arrow, False),
        ):
            adapter = get_adapter(key)(options or {}, ReadOptions(config=config, split="train"))
            with monkeypatch.context() as patch:
                if way == "streaming":  # the folder stands for a Hub id: read through `datasets`
                    patch.setattr(curation.readers, "is_hub_id", lambda location: True)
                    patch.setattr(curation.columnar, "is_hub_id", lambda location: True)
                out = root / way.replace(", ", "-").replace(" ", "-")
                summary = ingest(adapter, str(location), out, ImagesRoot(images_root), columnar_path=columnar)
            assert summary.balanced
            result = results[way] = IngestResult(out, summary)
            assert len(result.pairs) == summary.pairs and len(result.rejects) == summary.rows_rejected, way
            assert summary.rows_read == (len(rows) if rows_read is None else rows_read), way  # all were read
        reference = results["parquet, row by row"]
        for way, result in results.items():
            assert _without_refs(result.pairs) == _without_refs(reference.pairs), way
            assert [r["reason"] for r in result.rejects] == [r["reason"] for r in reference.rejects], way
            assert sorted(i["sha256"] for i in result.images) == sorted(i["sha256"] for i in reference.images), way
        return results

    return run


def _without_refs(pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pairs without what names the file they came from (each way names it differently)."""
    return [{k: v for k, v in p.items() if k != "source_row"} for p in pairs]


# -- an object store -------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def s3() -> Any:
    """An S3 endpoint on this machine (moto's server), which pyarrow's S3 file system reaches through the standard
    `AWS_*` environment variables (set for the session: worker processes and a local Ray inherit them). Yields a
    boto3 client; buckets are created by the tests."""
    boto3 = pytest.importorskip("boto3", reason="moto[server] is not installed")
    server_module = pytest.importorskip("moto.server", reason="moto[server] is not installed")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = {k: os.environ.get(k) for k in S3_ENVIRONMENT}
    os.environ.update({**S3_ENVIRONMENT, "AWS_ENDPOINT_URL": f"http://{host}:{port}"})
    yield boto3.client("s3")
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


S3_ENVIRONMENT = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                  "AWS_ENDPOINT_URL": ""}  # fmt: skip


def upload_folder(client: Any, folder: Path, bucket: str, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")
