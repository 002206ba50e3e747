import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

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
