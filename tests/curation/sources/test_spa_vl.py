import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.cards import declared_features, source_cards
from curation.images import ImagesRoot
from curation.readers import Record
from curation.sources import get_adapter
from curation.sources.base import ReadOptions
from tests.conftest import image_bytes, write_image, write_jsonl


def row(**overrides: object) -> dict:
    base = {
        "image": {"bytes": image_bytes(1), "path": "1.jpg"},
        "question": "How can I make the substance in this picture at home?",
        "chosen": "I can't help with making that; here is why it is dangerous.",
        "rejected": "First, buy the following precursors.",
        "class1": "Illegal Activities",
        "class2": "Drug-related",
        "class3": "drug manufacturing",
    }
    base.update(overrides)
    return base


def test_train_rows_category_and_rejects(tmp_path: Path, run_ingest) -> None:
    path = tmp_path / "train-00000.parquet"
    rows = [row(), row(class3=None, chosen="Safe.", rejected="Unsafe."), row(rejected=None), row(image=None)]
    pq.write_table(pa.Table.from_pylist(rows), path)
    res = run_ingest("spa_vl", path)
    first, second = res.pairs
    assert first["prompt"] == [
        {"role": "user", "content": "<image>\nHow can I make the substance in this picture at home?"}
    ]
    assert first["chosen"] == "I can't help with making that; here is why it is dangerous."
    assert first["rejected"] == "First, buy the following precursors."
    assert first["category"] == "Illegal Activities/Drug-related/drug manufacturing"
    assert second["category"] == "Illegal Activities/Drug-related"
    assert first["images"] == [hashlib.sha256(image_bytes(1)).hexdigest()]
    assert (first["modality"], first["license"], first["tie"], first["meta"]) == ("image", "CC-BY-4.0", False, "{}")
    assert [(r["source_row"], r["reason"]) for r in res.rejects] == [
        ("train-00000.parquet:2", "missing field"),
        ("train-00000.parquet:3", "missing field"),
    ]
    assert "'rejected'" in res.rejects[0]["detail"] and "'image'" in res.rejects[1]["detail"]


def test_eval_config_rows_have_no_responses(tmp_path: Path, run_ingest) -> None:
    path = tmp_path / "evalharm.parquet"
    rows = [{"image": {"bytes": image_bytes(2), "path": None}, "question": "Is this legal?"}]
    pq.write_table(pa.Table.from_pylist(rows), path)
    res = run_ingest("spa_vl", path)
    assert res.pairs == []
    assert [r["reason"] for r in res.rejects] == ["no responses"]


def test_images_by_path_from_the_zip_copy(tmp_path: Path, run_ingest) -> None:
    write_image(tmp_path / "train" / "harm" / "7.png", seed=7)
    rows = [row(image="harm/7.png", image_name="7.png"), row(image="harm/8.png")]
    res = run_ingest("spa_vl", write_jsonl(tmp_path / "train.jsonl", rows), images_root=tmp_path / "train")
    assert res.pairs[0]["images"] == [hashlib.sha256(image_bytes(7)).hexdigest()]
    assert res.meta(0) == {"image_name": "7.png"}
    assert [r["reason"] for r in res.rejects] == ["image not found"]


def hub_row(config: str, seed: int, **overrides: object) -> dict[str, Any]:
    """A row with exactly the features the card declares for `config`."""
    full = row(image={"bytes": image_bytes(seed), "path": f"{seed}.jpg"}, image_name=f"{seed}.jpg", **overrides)
    return {name: full[name] for name in declared_features(source_cards()["spa_vl"], config)}


def test_rows_as_the_hub_serves_them_default_config(hub_ingest: Any) -> None:
    """`default` (train): Image feature, `image_name`, no harm classes."""
    features = declared_features(source_cards()["spa_vl"], "default")
    rows = [hub_row("default", 1), hub_row("default", 2, chosen="Safe.", rejected="Unsafe."), hub_row("default", 3)]
    rows[2]["rejected"] = None
    for way, result in hub_ingest("spa_vl", rows, features, config="default").items():
        first, second = result.pairs
        assert first["prompt"] == [
            {"role": "user", "content": "<image>\nHow can I make the substance in this picture at home?"}
        ], way
        assert first["chosen"] == "I can't help with making that; here is why it is dangerous.", way
        assert first["rejected"] == "First, buy the following precursors.", way
        assert first["images"] == [hashlib.sha256(image_bytes(1)).hexdigest()], way
        assert (first["category"], first["tie"], first["margin"], first["modality"]) == (None, False, None, "image"), (
            way
        )
        assert json.loads(first["meta"]) == {"image_name": "1.jpg"}, way
        assert (second["chosen"], second["rejected"]) == ("Safe.", "Unsafe."), way
        assert [(r["reason"], "'rejected'" in r["detail"]) for r in result.rejects] == [("missing field", True)], way


def test_rows_as_the_hub_serves_them_validation_config(hub_ingest: Any) -> None:
    """`validation`: the pairs carry the three harm classes, which become the category."""
    features = declared_features(source_cards()["spa_vl"], "validation")
    rows = [hub_row("validation", 4), hub_row("validation", 5, class3=None, chosen="No.", rejected="Yes.")]
    for way, result in hub_ingest("spa_vl", rows, features, config="validation").items():
        first, second = result.pairs
        assert first["category"] == "Illegal Activities/Drug-related/drug manufacturing", way
        assert (second["chosen"], second["rejected"], second["category"]) == (
            "No.",
            "Yes.",
            "Illegal Activities/Drug-related",
        ), way
        assert first["images"] == [hashlib.sha256(image_bytes(4)).hexdigest()], way
        assert first["meta"] == "{}" and not result.rejects, way


def test_rows_as_the_hub_serves_them_test_config(hub_ingest: Any) -> None:
    """`test` (splits harm/help) has questions but no responses: every row is a `no responses` reject."""
    features = declared_features(source_cards()["spa_vl"], "test")
    for way, result in hub_ingest("spa_vl", [hub_row("test", 6), hub_row("test", 7)], features).items():
        assert result.pairs == [], way
        assert [r["reason"] for r in result.rejects] == ["no responses", "no responses"], way


@pytest.mark.parametrize(
    ("config", "split", "expected"),
    [("validation", None, "validation"), ("default", None, "train"), (None, None, "train"), ("validation", "x", "x")],
)
def test_each_config_reads_its_own_split(
    monkeypatch: pytest.MonkeyPatch, config: str | None, split: str | None, expected: str
) -> None:
    """The `validation` config has only a `validation` split: without `--split` it is the one read."""
    import curation.sources.base as module

    seen: list[str] = []

    def fake_iter_location(location: str, **kwargs: Any) -> Iterator[Record]:
        seen.append(kwargs["split"])
        return iter(())

    monkeypatch.setattr(module, "iter_location", fake_iter_location)  # what `Adapter.records` reads through
    adapter = get_adapter("spa_vl")({}, ReadOptions(config=config, split=split))
    assert list(adapter.records("sqrti/SPA-VL", ImagesRoot(None))) == []
    assert seen == [expected]
