import json
import shutil
from pathlib import Path

from tests.conftest import RunIngest, image_bytes, write_image, write_jsonl

META = {
    "zeta_text": {"root": "", "annotation": "annotations/zeta.jsonl", "data_augment": False, "repeat_time": 1},
    "alpha_img": {"root": "images/alpha", "annotation": "annotations/alpha.jsonl", "repeat_time": 2, "length": 3},
    "mid_sub": {"root": "images/mid", "annotation": "annotations/mid.jsonl", "repeat_time": 0.5, "length": 12},
}
ALPHA = [
    {"id": "a-0", "image": "a.png", "question": "What colour?", "chosen": "Red.", "rejected": "Blue."},
    {
        "image": ["a.png", "sub/b.png"],
        "question": "Image-1: <image>\nImage-2: <image>\nWhich is larger?",
        "chosen": "The second.",
        "rejected": "The first.",
    },
    {"image": "gone.png", "question": "Q", "chosen": "c", "rejected": "r"},
]


def make_mmpr(base: Path) -> Path:
    folder = base / "MMPR"
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps(META), encoding="utf-8")
    write_jsonl(folder / "annotations" / "alpha.jsonl", ALPHA)
    write_jsonl(folder / "annotations" / "zeta.jsonl", [{"question": "2+2?", "chosen": "4", "rejected": "5"}])
    mid = [{"question": f"q{i}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(12)]
    write_jsonl(folder / "annotations" / "mid.jsonl", mid)
    write_image(folder / "images" / "alpha" / "a.png", seed=1)
    write_image(folder / "images" / "alpha" / "sub" / "b.png", seed=2)
    return folder


def test_meta_json_subsets_images_and_repeat_time(tmp_path: Path, run_ingest: RunIngest) -> None:
    folder = make_mmpr(tmp_path)
    result = run_ingest("mmpr", folder)
    s = result.summary
    assert (s.rows_read, s.pairs, s.rows_rejected) == (16, 8, 8)
    # Subsets in sorted order; refs locate the subset and its annotation file.
    assert [p["source_row"] for p in result.pairs[:2]] == ["alpha_img/alpha.jsonl:0", "alpha_img/alpha.jsonl:1"]
    single, multi = result.pairs[:2]
    assert (single["chosen"], single["rejected"], single["subset"]) == ("Red.", "Blue.", "alpha_img")
    assert single["prompt"] == [{"role": "user", "content": "<image>\nWhat colour?"}]
    assert single["modality"] == "image"
    assert json.loads(single["meta"]) == {"id": "a-0", "_derived": {"repeat_time": 2.0}}
    assert multi["modality"] == "multi_image"
    assert multi["prompt"][0]["content"] == "Image-1: <image>\nImage-2: <image>\nWhich is larger?"
    by_sha = {img["sha256"]: img["bytes"] for img in result.images}
    assert [by_sha[sha] for sha in multi["images"]] == [image_bytes(1), image_bytes(2)]
    # repeat_time > 1 is recorded, not applied.
    assert json.loads(multi["meta"]) == {"_derived": {"repeat_time": 2.0}}

    text = result.pairs[-1]
    assert (text["subset"], text["modality"], text["images"]) == ("zeta_text", "text", [])
    assert text["prompt"] == [{"role": "user", "content": "2+2?"}] and text["meta"] == "{}"

    # repeat_time 0.5: a content hash keeps a fixed subset; the others are accounted as rejects.
    kept = [p["chosen"] for p in result.pairs if p["subset"] == "mid_sub"]
    assert kept == ["c1", "c4", "c5", "c7", "c10"]
    reasons = [(r["source_row"], r["reason"]) for r in result.rejects]
    assert reasons[0] == ("alpha_img/alpha.jsonl:2", "image not found")
    assert reasons[1:] == [(f"mid_sub/mid.jsonl:{i}", "subsampled by repeat_time") for i in (0, 2, 3, 6, 8, 9, 11)]

    again = run_ingest("mmpr", folder / "meta.json")
    assert [p["pair_id"] for p in again.pairs] == [p["pair_id"] for p in result.pairs]


def test_images_root_overrides_the_meta_folder(tmp_path: Path, run_ingest: RunIngest) -> None:
    folder = make_mmpr(tmp_path)
    elsewhere = tmp_path / "unzipped"
    shutil.move(str(folder / "images"), str(elsewhere / "images"))
    result = run_ingest("mmpr", folder, images_root=elsewhere)
    assert [p["modality"] for p in result.pairs if p["subset"] == "alpha_img"] == ["image", "multi_image"]
    missing = run_ingest("mmpr", folder)
    assert [r["reason"] for r in missing.rejects].count("image not found") == 3


def test_plain_annotation_file(tmp_path: Path, run_ingest: RunIngest) -> None:
    folder = make_mmpr(tmp_path)
    result = run_ingest("mmpr", folder / "annotations" / "alpha.jsonl", images_root=folder / "images" / "alpha")
    assert [p["subset"] for p in result.pairs] == ["alpha", "alpha"]
    assert [p["chosen"] for p in result.pairs] == ["Red.", "The second."]
    assert [(r["source_row"], r["reason"]) for r in result.rejects] == [("alpha.jsonl:2", "image not found")]
    bad_row = {"image": ["a.png", 3], "question": "q", "chosen": "c", "rejected": "r"}
    bad = write_jsonl(tmp_path / "bad.jsonl", [bad_row])
    rejected = run_ingest("mmpr", bad, images_root=folder / "images" / "alpha")
    assert [(r["reason"], r["detail"]) for r in rejected.rejects] == [
        ("wrong type", "bad.jsonl:0: 'image[1]': expected a relative path, got 3")
    ]
