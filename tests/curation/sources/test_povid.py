import hashlib
import json
from pathlib import Path
from typing import Any

from curation.cards import declared_features, source_cards
from tests.conftest import image_bytes, write_image


def row(rid: str, image: str, chosen: str, rejected: str, question: str = "<image>\nDescribe the image.") -> dict:
    return {
        "id": rid,
        "image": image,
        "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": chosen}],
        "rejected_conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": rejected}],
    }


def write_rows(tmp_path: Path) -> Path:
    # One image at the path the JSON names (minus "./"), one only under another folder (found by basename).
    write_image(tmp_path / "images" / "data" / "coco" / "COCO_train2014_000000000009.jpg", seed=9)
    write_image(tmp_path / "images" / "train2014" / "COCO_train2014_000000000025.jpg", seed=25)
    rows = [
        row(
            "9", "./data/coco/COCO_train2014_000000000009.jpg", "A giraffe eating leaves.", "A giraffe eating a banana."
        ),
        row("25", "./data/coco/COCO_train2014_000000000025.jpg", "Two plates of food.", "Three plates and a fork."),
        {
            **row("30", "./data/coco/COCO_train2014_000000000009.jpg", "x", "y"),
            "rejected_conversations": [
                {"from": "human", "value": "<image>\nSomething else."},
                {"from": "gpt", "value": "y"},
            ],
        },
        row("31", "./data/coco/COCO_train2014_000000000404.jpg", "x", "y"),
        row("32", "./data/coco/COCO_train2014_000000000009.jpg", "x", "y", question="<image>\n<image>\nTwo?"),
    ]
    path = tmp_path / "POVID_preference_data_for_VLLMs.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def jpeg_sha(seed: int) -> str:
    return hashlib.sha256(image_bytes(seed, fmt="JPEG")).hexdigest()


def test_pairs_prompt_images_and_rejects(tmp_path: Path, run_ingest) -> None:
    res = run_ingest("povid", write_rows(tmp_path), images_root=tmp_path / "images")
    first, second = res.pairs
    assert first["prompt"] == [{"role": "user", "content": "<image>\nDescribe the image."}]
    # chosen comes from `conversations`, rejected from `rejected_conversations`.
    assert (first["chosen"], first["rejected"]) == ("A giraffe eating leaves.", "A giraffe eating a banana.")
    assert (first["images"], first["modality"], first["tie"], first["margin"]) == ([jpeg_sha(9)], "image", False, None)
    assert second["images"] == [jpeg_sha(25)]
    assert (first["license"], res.meta(0)) == ("CC-BY-4.0", {"id": "9"})
    assert [(r["source_row"], r["reason"]) for r in res.rejects] == [
        ("POVID_preference_data_for_VLLMs.json:2", "prompt differs between sides"),
        ("POVID_preference_data_for_VLLMs.json:3", "image not found"),
        ("POVID_preference_data_for_VLLMs.json:4", "image placeholders mismatch"),
    ]


def test_by_basename_off_needs_the_exact_relative_path(tmp_path: Path, run_ingest) -> None:
    res = run_ingest("povid", write_rows(tmp_path), images_root=tmp_path / "images", options={"by_basename": "false"})
    assert [p["source_row"] for p in res.pairs] == ["POVID_preference_data_for_VLLMs.json:0"]
    assert res.rejects[0]["reason"] == "image not found"
    assert res.rejects[0]["source_row"] == "POVID_preference_data_for_VLLMs.json:1"


def test_rows_as_the_hub_serves_them(tmp_path: Path, hub_ingest: Any) -> None:
    """The card's declared features: two `list`s of {from, value} turns, `image` a COCO path string."""
    features = declared_features(source_cards()["povid"])
    write_image(tmp_path / "images" / "train2014" / "COCO_train2014_000000000009.jpg", seed=9)
    rows = [
        row(
            "9", "./data/coco/COCO_train2014_000000000009.jpg", "A giraffe eating leaves.", "A giraffe eating a banana."
        ),
        row("10", "./data/coco/COCO_train2014_000000000404.jpg", "x", "y"),
    ]
    for way, result in hub_ingest("povid", rows, features, images_root=tmp_path / "images").items():
        [pair] = result.pairs
        assert pair["prompt"] == [{"role": "user", "content": "<image>\nDescribe the image."}], way
        # chosen from `conversations`, rejected from `rejected_conversations`.
        assert (pair["chosen"], pair["rejected"]) == ("A giraffe eating leaves.", "A giraffe eating a banana."), way
        assert (pair["images"], pair["tie"], pair["margin"]) == ([jpeg_sha(9)], False, None), way
        assert json.loads(pair["meta"]) == {"id": "9"}, way
        assert [r["reason"] for r in result.rejects] == ["image not found"], way
