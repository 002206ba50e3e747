import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.cards import declared_features, source_cards
from curation.schema import canonical_text
from tests.conftest import image_bytes, write_image, write_jsonl

PIPELINE = (
    "rlaif-v-pipeline/autocheck_next34b_0--1_diverse_gen_llava15_0-50_rlaifv_full.spacy_divide.jsonl_pair_diff1.jsonl"
)


def sha(seed: int) -> str:
    return hashlib.sha256(image_bytes(seed)).hexdigest()


def released_row(**overrides: object) -> dict:
    row = {
        "ds_name": "RLAIF-V",
        "image": {"bytes": image_bytes(1), "path": "img1.png"},
        "question": "What is on the table?",
        "chosen": "Two laptops and scissors.",
        "rejected": "A cat sleeping on a keyboard.",
        "origin_dataset": "OK-VQA",
        "origin_split": json.dumps({"model": "OmniLMM-12B", "feedback_model": "OmniLMM-12B", "type": "qa"}),
        "idx": "17",
        "image_path": "OK-VQA/img1.png",
    }
    row.update(overrides)
    return row


def test_real_pipeline_file_with_images_by_basename(shared_data: Path, tmp_path: Path, run_ingest) -> None:
    path = shared_data / PIPELINE
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for i, row in enumerate(rows):
        write_image(tmp_path / "images" / "nested" / row["image_id"], seed=i)
    res = run_ingest("rlaif_v", path, images_root=tmp_path / "images")
    assert (res.summary.rows_read, len(res.pairs), res.rejects) == (34, 34, [])
    for row, pair in zip(rows, res.pairs, strict=True):
        scores = row["org_infos"]["scores"]
        assert (pair["chosen"], pair["rejected"]) == (canonical_text(row["chosen"]), canonical_text(row["rejected"]))
        assert pair["chosen_score"] == float(scores["chosen"]["score"])
        assert pair["rejected_score"] == float(scores["rejected"]["score"])
        assert pair["chosen_score"] > pair["rejected_score"]
        assert 0.010 <= pair["margin"] <= 0.168
        assert pair["prompt"] == [{"role": "user", "content": canonical_text("<image>\n" + row["question"])}]
        assert (pair["modality"], pair["binarization"], pair["tie"]) == ("image", "all_pairs", False)
    assert res.pairs[0]["images"] == [hashlib.sha256(image_bytes(0, fmt="JPEG")).hexdigest()]
    meta = res.meta(0)
    assert meta["image_id"] == "OK-VQA_OmniLMM-12B_OmniLMM-12B_0.jpg"
    assert meta["org_infos"]["scores"]["chosen"]["score"] == "0.5240278971818485"
    assert len(res.images) == 34


def test_released_parquet_rows(tmp_path: Path, run_ingest) -> None:
    write_image(tmp_path / "images" / "coco" / "img3.png", seed=3)
    rows = [
        released_row(),
        released_row(origin_split="{not json", chosen="Yes.", rejected="No."),
        # No embedded bytes: the file named by `image_path` is found by basename under --images-root.
        released_row(image=None, image_path="some/author/dir/img3.png", chosen="B", rejected="C"),
        released_row(image=None, image_path="missing.png"),
        released_row(rejected=None),
    ]
    path = tmp_path / "RLAIF-V-Dataset_000.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    res = run_ingest("rlaif_v", path, images_root=tmp_path / "images")
    first = res.pairs[0]
    assert first["prompt"] == [{"role": "user", "content": "<image>\nWhat is on the table?"}]
    assert (first["chosen"], first["rejected"]) == ("Two laptops and scissors.", "A cat sleeping on a keyboard.")
    assert first["images"] == [sha(1)] and first["modality"] == "image"
    assert (first["subset"], first["chosen_model"], first["rejected_model"]) == ("OK-VQA", "OmniLMM-12B", "OmniLMM-12B")
    assert (first["chosen_score"], first["margin"], first["tie"], first["binarization"]) == (None, None, False, None)
    assert first["license"] == "CC-BY-NC-4.0"
    assert res.meta(0) == {
        "ds_name": "RLAIF-V",
        "idx": "17",
        "image_path": "OK-VQA/img1.png",
        "origin_split": {"model": "OmniLMM-12B", "feedback_model": "OmniLMM-12B", "type": "qa"},
    }
    assert res.meta(1)["origin_split"] == "{not json"
    assert res.pairs[1]["chosen_model"] is None
    assert res.pairs[2]["images"] == [sha(3)]
    assert [(r["source_row"], r["reason"]) for r in res.rejects] == [
        ("RLAIF-V-Dataset_000.parquet:3", "image not found"),
        ("RLAIF-V-Dataset_000.parquet:4", "missing field"),
    ]
    assert "missing.png" in res.rejects[0]["detail"] and "'rejected'" in res.rejects[1]["detail"]


def test_pipeline_rows_string_scores_ties_and_missing_image(tmp_path: Path, run_ingest) -> None:
    write_image(tmp_path / "images" / "a.jpg", seed=1)

    def row(chosen_score: str, rejected_score: str, image: str = "a.jpg") -> dict:
        scores = {"chosen": {"score": chosen_score}, "rejected": {"score": rejected_score}}
        return {
            "image_id": image,
            "image_path": f"/root/autodl-tmp/imgs/{image}",
            "question_id": None,
            "question": "Is this a river?",
            "chosen": "No, it is a road.",
            "rejected": "Yes, a wide river.",
            "org_infos": {"reference": "", "origin_file": "", "scores": scores},
        }

    path = write_jsonl(
        tmp_path / "pairs.jsonl",
        [row(" 0.75 ", "0.5"), row("n/a", "0.5"), row("0.4", "0.4"), row("0.9", "0.1", image="gone.jpg")],
    )
    res = run_ingest("rlaif_v", path, images_root=tmp_path / "images")
    assert [(p["chosen_score"], p["rejected_score"], p["margin"], p["tie"]) for p in res.pairs] == [
        (0.75, 0.5, 0.25, False),
        (None, 0.5, None, False),  # unparsable score: the labelled pair is kept, the raw score stays in meta
        (0.4, 0.4, 0.0, True),
    ]
    assert res.meta(1)["org_infos"]["scores"]["chosen"]["score"] == "n/a"
    assert [r["reason"] for r in res.rejects] == ["image not found"]
    assert "/root/autodl-tmp/imgs/gone.jpg" in res.rejects[0]["detail"]


def test_trl_conversational_variant(tmp_path: Path, run_ingest) -> None:
    def turn(role: str, *parts: dict) -> dict:
        return {"role": role, "content": list(parts)}

    image_part = {"type": "image", "text": None}
    rows = [
        {
            "prompt": [turn("user", image_part, {"type": "text", "text": "Describe the image."})],
            "chosen": [turn("assistant", {"type": "text", "text": "A red square."})],
            "rejected": [turn("assistant", {"type": "text", "text": "A blue circle."})],
            "images": [{"bytes": image_bytes(5), "path": None}],
        },
        {
            "prompt": [turn("user", image_part, image_part, {"type": "text", "text": "Compare."})],
            "chosen": [turn("assistant", {"type": "text", "text": "Same."})],
            "rejected": [turn("assistant", {"type": "text", "text": "Different."})],
            "images": [{"bytes": image_bytes(5), "path": None}, {"bytes": image_bytes(6), "path": None}],
        },
        {
            "prompt": [turn("assistant", {"type": "text", "text": "Hi."})],
            "chosen": [turn("assistant", {"type": "text", "text": "x"})],
            "rejected": [turn("assistant", {"type": "text", "text": "y"})],
            "images": [],
        },
    ]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    res = run_ingest("rlaif_v", path)
    first, second = res.pairs
    assert first["prompt"] == [{"role": "user", "content": "<image>\nDescribe the image."}]
    assert (first["chosen"], first["rejected"], first["images"]) == ("A red square.", "A blue circle.", [sha(5)])
    assert second["prompt"][0]["content"] == "<image>\n<image>\nCompare."
    assert (second["images"], second["modality"]) == ([sha(5), sha(6)], "multi_image")
    assert first["meta"] == "{}"
    assert [r["reason"] for r in res.rejects] == ["no user turn"]


def test_rows_as_the_hub_serves_them(tmp_path: Path, hub_ingest: Any) -> None:
    """The card's declared features: `image` is the Image feature ({bytes, path}), `origin_split` a JSON string."""
    features = declared_features(source_cards()["rlaif_v"])
    write_image(tmp_path / "media" / "coco" / "img3.png", seed=3)
    rows = [
        released_row(),
        # No embedded bytes: `image_path` names the file, found by basename under the images root.
        released_row(image=None, image_path="author/dir/img3.png", chosen="A bus.", rejected="A tram.", idx="18"),
        released_row(rejected=None, idx="19"),
    ]
    for way, result in hub_ingest("rlaif_v", rows, features, images_root=tmp_path / "media").items():
        first, second = result.pairs
        assert first["prompt"] == [{"role": "user", "content": "<image>\nWhat is on the table?"}], way
        assert (first["chosen"], first["rejected"]) == ("Two laptops and scissors.", "A cat sleeping on a keyboard."), (
            way
        )
        assert (first["images"], first["subset"], first["chosen_model"]) == ([sha(1)], "OK-VQA", "OmniLMM-12B"), way
        assert (first["tie"], first["margin"]) == (False, None), way
        assert json.loads(first["meta"])["origin_split"]["type"] == "qa", way
        assert (second["chosen"], second["rejected"], second["images"]) == ("A bus.", "A tram.", [sha(3)]), way
        assert [r["reason"] for r in result.rejects] == ["missing field"], way
        assert "'rejected'" in result.rejects[0]["detail"], way
