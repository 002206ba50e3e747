import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.cards import declared_features, source_cards
from curation.schema import canonical_text
from tests.conftest import RunIngest, image_bytes, write_image, write_jsonl

MM = "mm-rlhf-rewardbench/mm_reward_bench.jsonl"
FRAMES = ("frame_1.jpg", "frame_10.jpg", "frame_2.jpg")  # name order, not numeric order


def _rows(shared_data: Path) -> list[dict]:
    return [json.loads(line) for line in (shared_data / MM).read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def mm_images(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """Every referenced image file, and three frames in every referenced video folder."""
    root = tmp_path_factory.mktemp("mm_images")
    paths = sorted({r.get("image") or r["video"] for r in _rows(shared_data)})
    for seed, rel in enumerate(paths):
        if rel.startswith("video/"):
            for i, name in enumerate(FRAMES):
                write_image(root / rel / name, seed=1000 + 10 * seed + i, size=(8, 8))
        else:
            write_image(root / rel, seed=seed, size=(8, 8))
    return root


def test_real_file_all_rows(shared_data: Path, mm_images: Path, run_ingest: RunIngest) -> None:
    result = run_ingest("mm_rlhf_rewardbench", shared_data / MM, images_root=mm_images)
    assert result.summary.pairs == 170 and result.summary.rows_rejected == 0
    assert Counter(p["category"] for p in result.pairs) == {
        "mcq": 42,
        "long": 37,
        "short": 34,
        "safety": 32,
        "video": 25,
    }
    assert all(p["subset"] == p["category"] for p in result.pairs)
    assert Counter(p["modality"] for p in result.pairs) == {"image": 145, "video": 25}
    assert len({result.meta(i)["id"] for i in range(170)}) == 46
    for pair in result.pairs:
        n = len(pair["images"])
        assert n == (3 if pair["modality"] == "video" else 1)
        assert pair["prompt"][-1]["role"] == "user" and pair["prompt"][-1]["content"].count("<image>") == n

    first = _rows(shared_data)[0]
    assert result.pairs[0]["chosen"] == canonical_text(first["chosen"])
    assert result.pairs[0]["rejected"] == canonical_text(first["rejected"])
    assert result.pairs[0]["prompt"] == [{"role": "user", "content": canonical_text("<image>\n" + first["prompt"])}]
    assert result.meta(0) == {
        "id": "073712_6205145",
        "image": "mcq/073712.png",
        "chosen_reason": first["chosen_reason"],
        "rejected_reason": first["rejected_reason"],
    }

    video_index = next(i for i, p in enumerate(result.pairs) if p["modality"] == "video")
    folder = mm_images / result.meta(video_index)["video"]
    expected = [hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in FRAMES]
    assert result.pairs[video_index]["images"] == expected
    assert result.pairs[video_index]["category"] == "video"


def test_fixture_rows_and_rejects(tmp_path: Path, run_ingest: RunIngest) -> None:
    root = tmp_path / "images"
    write_image(root / "short/001.png", seed=1)
    write_image(root / "video/abc/0001.png", seed=2)
    base = {"id": "q1", "prompt": "What is shown?", "chosen": "A cat.", "rejected": "A dog.", "chosen_reason": "r"}
    rows = [
        {**base, "image": "short/001.png"},
        {**base, "video": "video/abc"},
        {**base, "image": "other/001.png"},
        {**base, "video": "video/missing"},
        {**base, "image": "short/001.png", "video": "video/abc"},
        {**base},
        {**base, "image": "short/001.png", "chosen": None},
    ]
    write_image(root / "other/001.png", seed=3)
    result = run_ingest("mm_rlhf_rewardbench", write_jsonl(tmp_path / "bench.jsonl", rows), images_root=root)
    image, video, other = result.pairs
    assert (image["chosen"], image["rejected"], image["category"], image["modality"]) == (
        "A cat.",
        "A dog.",
        "short",
        "image",
    )
    assert (video["category"], video["modality"], len(video["images"])) == ("video", "video", 1)
    assert video["prompt"] == [{"role": "user", "content": "<image>\nWhat is shown?"}]
    assert (other["subset"], other["category"]) == (None, None)
    assert [(r["reason"], r["detail"].split(": ", 1)[1]) for r in result.rejects] == [
        ("image not found", "field 'video': video/missing"),
        ("ambiguous media", "both 'image' (short/001.png) and 'video' ('video/abc')"),
        ("missing field", "'image' or 'video'"),
        ("missing field", "'chosen' is null"),
    ]


def test_image_struct_from_parquet(tmp_path: Path, run_ingest: RunIngest) -> None:
    row = {
        "id": "s1",
        "image": {"bytes": image_bytes(5), "path": "safety/009.png"},
        "prompt": "Is this safe?",
        "chosen": "No.",
        "rejected": "Yes.",
    }
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist([row]), path)
    result = run_ingest("mm_rlhf_rewardbench", path)
    pair = result.pairs[0]
    assert (pair["category"], pair["modality"]) == ("safety", "image")
    assert pair["images"] == [hashlib.sha256(image_bytes(5)).hexdigest()]
    assert result.meta(0)["image"] == {"bytes": f"<{len(image_bytes(5))} bytes>", "path": "safety/009.png"}


def test_rows_as_the_hub_serves_them(shared_data: Path, mm_images: Path, hub_ingest: Any) -> None:
    """The card's (reconstructed) features: every column a string, `image` or `video` null in the rows that use the
    other. The rows are the real file's first id (an mcq ranking of 4 pairs) and first video row."""
    features = declared_features(source_cards()["mm_rlhf_rewardbench"])
    real = _rows(shared_data)
    picked = [r for r in real if r["id"] == real[0]["id"]] + [next(r for r in real if "video" in r)]
    rows = [{name: row.get(name) for name in features} for row in picked]
    rows.append({**rows[0], "image": None})
    for way, result in hub_ingest("mm_rlhf_rewardbench", rows, features, images_root=mm_images).items():
        *mcq, video = result.pairs
        assert len(mcq) == 4, way
        for pair, row in zip(mcq, picked[:4], strict=True):
            assert (pair["chosen"], pair["rejected"]) == (
                canonical_text(row["chosen"]),
                canonical_text(row["rejected"]),
            )
            assert (pair["subset"], pair["category"], pair["modality"]) == ("mcq", "mcq", "image"), way
            assert pair["prompt"] == [{"role": "user", "content": canonical_text("<image>\n" + row["prompt"])}], way
        assert {p["images"][0] for p in mcq} == {
            hashlib.sha256((mm_images / "mcq/073712.png").read_bytes()).hexdigest()
        }
        folder = mm_images / picked[-1]["video"]
        assert video["images"] == [hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in FRAMES], way
        assert (video["category"], video["modality"], video["chosen"]) == (
            "video", "video", canonical_text(picked[-1]["chosen"])
        ), way  # fmt: skip
        assert (
            result.meta(0)["id"] == "073712_6205145" and result.meta(0)["chosen_reason"] == picked[0]["chosen_reason"]
        )
        assert [(r["reason"], r["detail"].split(": ", 1)[1]) for r in result.rejects] == [
            ("missing field", "'image' or 'video'")
        ], way
