import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from curation.cards import declared_features, source_cards
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


def write_frames(folder: Path, seeds: list[int]) -> None:
    for k, seed in enumerate(seeds):
        write_image(folder / f"{k:03d}.png", seed=seed)


def test_video_rows_are_frames_never_text_pairs(tmp_path: Path, run_ingest: RunIngest) -> None:
    """A `video` (a frame folder or a list of frames, under the subset's root) is read as a video, as InternVL's
    loader reads it when the row has no image; what cannot be read as frames is a reject, not a text pair."""
    folder = tmp_path / "MMPR"
    folder.mkdir()
    meta = {"vid": {"root": "videos", "annotation": "annotations/vid.jsonl", "repeat_time": 1}}
    (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    write_frames(folder / "videos" / "v1", [11, 12, 13])
    write_image(folder / "videos" / "still.png", seed=14)
    rows = [
        {"video": "v1", "question": "<video>\nWhat happens?", "chosen": "It rolls.", "rejected": "It flies."},
        {"video": ["v1/000.png", "v1/002.png"], "question": "What changes?", "chosen": "Less.", "rejected": "More."},
        {"image": "still.png", "video": "v1", "question": "Q1", "chosen": "image", "rejected": "wins"},
        {"video": "", "question": "2+2?", "chosen": "4", "rejected": "5"},
        {"video": "v9.mp4", "question": "Q", "chosen": "c", "rejected": "r"},
        {"video": "v1", "clip": [0, 2], "question": "Q", "chosen": "c", "rejected": "r"},
        {"video": "absent", "question": "Q", "chosen": "c", "rejected": "r"},
        {"video": [], "question": "Q", "chosen": "c", "rejected": "r"},
    ]
    write_jsonl(folder / "annotations" / "vid.jsonl", rows)
    result = run_ingest("mmpr", folder)
    by_sha = {img["sha256"]: img["bytes"] for img in result.images}
    folder_video, frame_list, image, text = result.pairs
    assert (folder_video["modality"], folder_video["subset"]) == ("video", "vid")
    assert folder_video["prompt"] == [{"role": "user", "content": "<image>\n<image>\n<image>\nWhat happens?"}]
    assert [by_sha[s] for s in folder_video["images"]] == [image_bytes(11), image_bytes(12), image_bytes(13)]
    assert (folder_video["chosen"], folder_video["rejected"]) == ("It rolls.", "It flies.")
    assert frame_list["modality"] == "video" and frame_list["prompt"][0]["content"] == "<image>\n<image>\nWhat changes?"
    assert [by_sha[s] for s in frame_list["images"]] == [image_bytes(11), image_bytes(13)]
    # A non-empty image wins over a video, as in InternVL; the video path stays in meta.
    assert (image["modality"], [by_sha[s] for s in image["images"]]) == ("image", [image_bytes(14)])
    assert json.loads(image["meta"]) == {"video": "v1"}
    assert (text["modality"], text["images"], text["chosen"]) == ("text", [], "4")
    assert [(r["source_row"], r["reason"]) for r in result.rejects] == [
        ("vid/vid.jsonl:4", "video file not supported"),
        ("vid/vid.jsonl:5", "video clip not supported"),
        ("vid/vid.jsonl:6", "image not found"),
        ("vid/vid.jsonl:7", "image not found"),
    ]


# Each row layout of the annotation files, with exactly the card's declared features for it.
LAYOUT_ROWS: dict[str, list[dict[str, Any]]] = {
    "single_image": [
        {"image": "alpha/a.png", "question": "What colour?", "chosen": "Red.", "rejected": "Blue."},
        {"image": "alpha/gone.png", "question": "Q", "chosen": "c", "rejected": "r"},
    ],
    "multi_image": [
        {
            "image": ["alpha/a.png", "alpha/sub/b.png"],
            "question": "Image-1: <image>\nImage-2: <image>\nWhich is larger?",
            "chosen": "The second.",
            "rejected": "The first.",
        },
    ],
    "text_only": [{"question": "2+2?", "chosen": "4", "rejected": "5"}],
    "video_frames": [
        {"video": "clips/v1", "question": "<video>\nWhat happens?", "chosen": "It rolls.", "rejected": "It flies."},
        {"video": "clips/v2.mp4", "question": "Q", "chosen": "c", "rejected": "r"},
    ],
    "video_frame_list": [
        {"video": ["clips/v1/000.png", "clips/v1/002.png"], "question": "Q?", "chosen": "Less.", "rejected": "More."}
    ],
}
# (modality, prompt, chosen, rejected, image seeds) of the pair each layout's first row gives, and its rejects.
LAYOUT_PAIRS: dict[str, tuple[tuple[str, str, str, str, list[int]], list[str]]] = {
    "single_image": (("image", "<image>\nWhat colour?", "Red.", "Blue.", [1]), ["image not found"]),
    "multi_image": (
        ("multi_image", "Image-1: <image>\nImage-2: <image>\nWhich is larger?", "The second.", "The first.", [1, 2]),
        [],
    ),
    "text_only": (("text", "2+2?", "4", "5", []), []),
    "video_frames": (
        ("video", "<image>\n<image>\n<image>\nWhat happens?", "It rolls.", "It flies.", [11, 12, 13]),
        ["video file not supported"],
    ),
    "video_frame_list": (("video", "<image>\n<image>\nQ?", "Less.", "More.", [11, 13]), []),
}


@pytest.mark.parametrize("layout", sorted(LAYOUT_ROWS))
def test_rows_as_the_hub_serves_them(tmp_path: Path, hub_ingest: Any, layout: str) -> None:
    """A table of annotation rows (a parquet conversion, a Hub dataset) read every way `datasets` serves it: media
    under --images-root, no subset name (a table's subset is its config), the same pairs each way."""
    features = declared_features(source_cards()["mmpr"], layout)
    media = tmp_path / "media"
    write_image(media / "alpha" / "a.png", seed=1)
    write_image(media / "alpha" / "sub" / "b.png", seed=2)
    write_frames(media / "clips" / "v1", [11, 12, 13])
    (modality, prompt, chosen, rejected, seeds), rejects = LAYOUT_PAIRS[layout]
    for way, result in hub_ingest("mmpr", LAYOUT_ROWS[layout], features, images_root=media).items():
        [pair] = result.pairs
        assert (pair["modality"], pair["prompt"], pair["subset"]) == (
            modality,
            [{"role": "user", "content": prompt}],
            None,
        ), way
        assert (pair["chosen"], pair["rejected"], pair["tie"], pair["margin"]) == (chosen, rejected, False, None), way
        by_sha = {img["sha256"]: img["bytes"] for img in result.images}
        assert [by_sha[s] for s in pair["images"]] == [image_bytes(seed) for seed in seeds], way
        assert [r["reason"] for r in result.rejects] == rejects, way


@pytest.mark.parametrize("prefix", ["/mnt/petrelfs/share_data/MMPR/", "MMPR/"])
def test_meta_json_paths_written_elsewhere_are_read_by_their_tail(
    tmp_path: Path, run_ingest: RunIngest, prefix: str
) -> None:
    """Releases of `meta.json` name annotations and image roots by the authors' absolute cluster paths, or from
    the folder above `MMPR/`; the files beside `meta.json` are found by the paths' tails, images in a zip too."""
    folder = make_mmpr(tmp_path)
    moved = {name: {**spec, "annotation": prefix + spec["annotation"], "root": spec["root"] and prefix + spec["root"]}
             for name, spec in META.items()}  # fmt: skip
    (folder / "meta.json").write_text(json.dumps(moved), encoding="utf-8")
    reference = run_ingest("mmpr", make_mmpr(tmp_path / "reference"))
    result = run_ingest("mmpr", folder)
    assert [p["pair_id"] for p in result.pairs] == [p["pair_id"] for p in reference.pairs]
    assert result.summary.pairs == 8
    archive = shutil.make_archive(str(tmp_path / "images"), "zip", folder)  # images/alpha/... inside the zip
    shutil.rmtree(folder / "images")
    zipped = run_ingest("mmpr", folder, images_root=Path(archive))
    assert [p["pair_id"] for p in zipped.pairs] == [p["pair_id"] for p in reference.pairs]


def test_a_path_is_never_read_as_a_lone_name() -> None:
    """A tail of one part (`train` of `/mnt/x/MMPR/train`) could be any folder: only tails of two parts or more."""
    from curation.sources.mmpr import located

    assert located("/mnt/x/MMPR/train", lambda tail: tail == "train") == "/mnt/x/MMPR/train"
    assert located("/mnt/x/MMPR/images/train", lambda tail: tail == "images/train") == "images/train"
    assert located("x.jsonl", lambda tail: tail == "x.jsonl") == "x.jsonl"  # a name given as it is


def test_annotation_names_that_look_like_splits_are_read_all(tmp_path: Path, run_ingest: RunIngest) -> None:
    """meta.json names what is read: `chartqa_val_en.jsonl` is a subset's file, not a validation split of the
    folder (which would leave `okvqa_en.jsonl` unread, or refuse the folder's `train`)."""
    from curation.sources import get_adapter

    folder = tmp_path / "MMPR"
    meta = {name: {"root": "", "annotation": f"annotations/{name}.jsonl"} for name in ("chartqa_val_en", "okvqa_en")}
    for name in meta:
        write_jsonl(folder / "annotations" / f"{name}.jsonl", [{"question": name, "chosen": "a", "rejected": "b"}])
    (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    result = run_ingest("mmpr", folder)
    assert sorted(p["subset"] for p in result.pairs) == ["chartqa_val_en", "okvqa_en"]
    assert get_adapter("mmpr")().files_note(str(folder)) is None
