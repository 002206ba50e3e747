import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.cards import declared_features, source_cards
from tests.conftest import image_bytes, write_image


def row(text: object, image: object = None, **overrides: object) -> dict:
    base = {
        "ds_name": "RLHF-V",
        "image": image if image is not None else {"bytes": image_bytes(1), "path": None},
        "text": text if isinstance(text, str) else json.dumps(text),
        "origin_dataset": "LLaVA-Instruct",
        "origin_split": json.dumps({"type": "detailed_description"}),
        "idx": 7,
        "image_path": "llava/000000001.jpg",
    }
    base.update(overrides)
    return base


def test_text_json_pairs_and_rejects(tmp_path: Path, run_ingest) -> None:
    write_image(tmp_path / "images" / "coco" / "000000002.png", seed=2)
    pair = {"question": "Describe the image.", "chosen": "A dog on grass.", "rejected": "A dog on a red sofa."}
    rows = [
        row({**pair, "annotator": "human-3"}),
        row(pair, image={"bytes": None, "path": "000000002.png"}, origin_split="plain-text split"),
        row('{"question": "Q", "chosen": "A"'),
        row({"question": "Q", "chosen": "A"}),
        row(["Q", "A", "B"]),
        row(pair, image={"bytes": None, "path": "absent.png"}),
        row('{"question": "Q", "chosen": "good", "chosen": "bad", "rejected": "B"}'),  # which chosen is meant?
    ]
    path = tmp_path / "RLHF-V-Dataset.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    res = run_ingest("rlhf_v", path, images_root=tmp_path / "images", options={})
    first, second = res.pairs
    # `chosen` is the corrected answer: swapping the sides would put the sofa hallucination first.
    assert (first["chosen"], first["rejected"]) == ("A dog on grass.", "A dog on a red sofa.")
    assert first["prompt"] == [{"role": "user", "content": "<image>\nDescribe the image."}]
    assert first["images"] == [hashlib.sha256(image_bytes(1)).hexdigest()]
    assert (first["modality"], first["subset"], first["margin"], first["tie"]) == (
        "image",
        "LLaVA-Instruct",
        None,
        False,
    )
    assert res.meta(0) == {
        "ds_name": "RLHF-V",
        "idx": 7,
        "image_path": "llava/000000001.jpg",
        "origin_split": {"type": "detailed_description"},
        "text_extra": {"annotator": "human-3"},
    }
    assert second["images"] == [hashlib.sha256(image_bytes(2)).hexdigest()]
    assert res.meta(1)["origin_split"] == "plain-text split" and "text_extra" not in res.meta(1)
    assert [(r["source_row"], r["reason"]) for r in res.rejects] == [
        ("RLHF-V-Dataset.parquet:2", "malformed json field"),
        ("RLHF-V-Dataset.parquet:3", "missing field"),
        ("RLHF-V-Dataset.parquet:4", "wrong type"),
        ("RLHF-V-Dataset.parquet:5", "image not found"),
        ("RLHF-V-Dataset.parquet:6", "malformed json field"),
    ]
    assert res.rejects[1]["detail"] == "RLHF-V-Dataset.parquet:3: 'text' JSON: 'rejected'"
    assert res.rejects[4]["detail"] == "RLHF-V-Dataset.parquet:6: 'text': key 'chosen' given twice in an object"


def test_rows_as_the_hub_serves_them(tmp_path: Path, hub_ingest: Any) -> None:
    """The card's declared features: `text` is a JSON string, `image` the Image feature, `idx` an int64."""
    features = declared_features(source_cards()["rlhf_v"])
    write_image(tmp_path / "media" / "llava" / "000000002.png", seed=2)
    pair = {"question": "Describe the image.", "chosen": "A dog on grass.", "rejected": "A dog on a red sofa."}
    rows = [
        row(pair),
        # No embedded image: `image_path` names the file, found by basename under the images root.
        {**row({**pair, "chosen": "Two dogs."}, idx=8), "image": None, "image_path": "author/dir/000000002.png"},
        row('{"question": "Q", "chosen": "A"', idx=9),
    ]
    for way, result in hub_ingest("rlhf_v", rows, features, images_root=tmp_path / "media").items():
        first, second = result.pairs
        # `chosen` is the human correction, `rejected` the original hallucinated answer.
        assert (first["chosen"], first["rejected"]) == ("A dog on grass.", "A dog on a red sofa."), way
        assert first["prompt"] == [{"role": "user", "content": "<image>\nDescribe the image."}], way
        assert first["images"] == [hashlib.sha256(image_bytes(1)).hexdigest()], way
        assert (first["subset"], first["tie"], first["margin"]) == ("LLaVA-Instruct", False, None), way
        assert json.loads(first["meta"])["idx"] == 7 and json.loads(first["meta"])["origin_split"] == {
            "type": "detailed_description"
        }, way
        assert (second["chosen"], second["images"]) == ("Two dogs.", [hashlib.sha256(image_bytes(2)).hexdigest()]), way
        assert [r["reason"] for r in result.rejects] == ["malformed json field"], way
