"""A build over the real rows in ../shared/data: hh-rlhf and UltraFeedback as training sources, VL-RewardBench
and MM-RLHF-RewardBench (with generated images at their referenced paths) as decontamination targets."""

import gzip
import json
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from curation.build import build
from curation.recipe import load_recipe
from tests.conftest import real_rows_recipe, write_benchmark_images


def test_real_rows_build_funnel(shared_data: Path, tmp_path: Path) -> None:
    write_benchmark_images(shared_data, tmp_path / "images")
    recipe = real_rows_recipe(shared_data, tmp_path / "images")
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    manifest = build(load_recipe(tmp_path / "recipe.yaml"), tmp_path / "build")
    hh, uf = manifest["sources"]["hh"], manifest["sources"]["uf"]
    assert hh["balanced"] and uf["balanced"]
    assert (hh["rows_read"], uf["rows_read"]) == (2312, 1200)
    removed = pq.read_table(tmp_path / "build" / "rejects" / "rejects.parquet").to_pylist()
    by_stage = {}
    for r in removed:
        by_stage.setdefault((r["source"], r["stage"]), []).append(r)
    # validate: exactly the hh rows with an empty answer and the UltraFeedback rows with an empty side (row 33's
    # chosen answer is a lone zero-width space).
    assert sorted(r["source_row"] for r in by_stage[("hh", "validate")]) == [
        f"test.jsonl.gz:{i}" for i in (1103, 516, 86, 925)
    ]
    assert sorted((r["source_row"], r["reason"]) for r in by_stage[("uf", "validate")]) == [
        ("label_flip_20.jsonl:33", "empty chosen"),
        ("label_flip_20.jsonl:478", "empty rejected"),
        ("label_flip_20.jsonl:833", "empty chosen"),
    ]
    # filters: every remaining tie or identical pair, counted independently from the raw rows.
    expected = 0
    for name in ("eval_clean.jsonl", "label_flip_20.jsonl"):
        for i, line in enumerate((shared_data / "ultrafeedback-binarized" / name).read_text().splitlines()):
            row = json.loads(line)
            if name == "label_flip_20.jsonl" and i in (33, 478, 833):
                continue
            meta = row["metadata"]
            same = " ".join(row["chosen"].split()) == " ".join(row["rejected"].split())
            expected += same or meta["score_chosen"] == meta["score_rejected"]
    assert len(by_stage[("uf", "filters")]) == expected
    # Text-only training pairs never match an image benchmark item on text alone.
    assert ("hh", "decontaminate") not in by_stage and ("uf", "decontaminate") not in by_stage
    signals = list((tmp_path / "build" / "signals").glob("decontaminate-*.parquet"))
    assert len(signals) == 1
    with gzip.open(shared_data / "hh-rlhf" / "harmless-base" / "test.jsonl.gz") as handle:
        assert sum(1 for _ in handle) == hh["rows_read"]
    assert manifest["rows_in_shards"] == hh["kept"] + uf["kept"]
