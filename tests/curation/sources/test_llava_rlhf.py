import hashlib
import json
from pathlib import Path
from typing import Any

from curation.cards import declared_features, source_cards
from tests.conftest import image_bytes, write_image

PLACEHOLDER = {"from": "gpt", "value": ""}
MULTI_TURN = [
    {"from": "human", "value": "<image>\nWhat is in the picture?"},
    {"from": "gpt", "value": "A man on a beach."},
    {"from": "human", "value": "What is he holding?"},
    PLACEHOLDER,
]


def row(rid: str, preference: object, turns: list | None = None, **overrides: object) -> dict:
    base = {
        "id": rid,
        "image": "COCO_train2014_000000000042.jpg",
        "conversations": turns or [{"from": "human", "value": "<image>\nWhat is the man holding?"}, PLACEHOLDER],
        "output_1": {"from": "gpt", "value": "He holds an umbrella."},
        "output_2": {"from": "gpt", "value": "He holds a surfboard."},
        "preference": preference,
        "hallucination": False,
    }
    base.update(overrides)
    return base


def test_orientation_multi_turn_and_rejects(tmp_path: Path, run_ingest) -> None:
    write_image(tmp_path / "coco" / "train2014" / "COCO_train2014_000000000042.jpg", seed=42)
    rows = [
        row("a", 2),
        row("b", 1),
        row("c", "2", turns=MULTI_TURN),
        row("d", 1, turns=[[{"from": "human", "value": "<image>\nWrapped?"}, PLACEHOLDER]]),
        {
            key: value
            for key, value in row("e", 1, turns=[{"from": "human", "value": "No image here."}]).items()
            if key != "image"
        },
        row("f", 3),
        row("g", 1, image="COCO_train2014_000000000999.jpg"),
        row("h", 1, output_2=None),
        row("i", 1, turns=[{"from": "gpt", "value": "Hello."}, PLACEHOLDER]),
    ]
    path = tmp_path / "llava_7b_v1_preference.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    res = run_ingest("llava_rlhf", path, images_root=tmp_path / "coco")
    a, b, c, d, e = res.pairs
    # preference 2 => output_2 is chosen; preference 1 => output_1.
    assert (a["chosen"], a["rejected"]) == ("He holds a surfboard.", "He holds an umbrella.")
    assert (b["chosen"], b["rejected"]) == ("He holds an umbrella.", "He holds a surfboard.")
    assert a["prompt"] == [{"role": "user", "content": "<image>\nWhat is the man holding?"}]
    assert a["images"] == [hashlib.sha256(image_bytes(42, fmt="JPEG")).hexdigest()]
    assert (a["modality"], a["tie"], a["margin"], a["license"]) == ("image", False, None, "Apache-2.0")
    assert c["prompt"] == [
        {"role": "user", "content": "<image>\nWhat is in the picture?"},
        {"role": "assistant", "content": "A man on a beach."},
        {"role": "user", "content": "What is he holding?"},
    ]
    assert c["chosen"] == "He holds a surfboard."
    assert d["prompt"] == [{"role": "user", "content": "<image>\nWrapped?"}]
    assert (e["images"], e["modality"]) == ([], "text")
    assert res.meta(0) == {"id": "a", "hallucination": False}
    assert [(r["source_row"].split(":")[1], r["reason"]) for r in res.rejects] == [
        ("5", "undetermined preference"),
        ("6", "image not found"),
        ("7", "missing field"),
        ("8", "no user turn"),
    ]
    assert "'preference': 3" in res.rejects[0]["detail"] and "'output_2'" in res.rejects[2]["detail"]


def test_by_basename_off(tmp_path: Path, run_ingest) -> None:
    write_image(tmp_path / "coco" / "train2014" / "COCO_train2014_000000000042.jpg", seed=42)
    path = tmp_path / "prefs.json"
    path.write_text(json.dumps([row("a", 1)]), encoding="utf-8")
    res = run_ingest("llava_rlhf", path, images_root=tmp_path / "coco", options={"by_basename": False})
    assert (res.pairs, [r["reason"] for r in res.rejects]) == ([], ["image not found"])


def test_rows_as_the_hub_serves_them(tmp_path: Path, hub_ingest: Any) -> None:
    """The card's declared features, as `load_dataset("json")` serves the file: a row without an image has a null
    `image`, which is text-only (as the absent key is); a prompt that names an image it lacks is still rejected."""
    features = declared_features(source_cards()["llava_rlhf"])
    write_image(tmp_path / "coco" / "train2014" / "COCO_train2014_000000000042.jpg", seed=42)
    rows = [
        row("a", 2),
        row("b", 1, turns=MULTI_TURN),
        row("c", 1, turns=[{"from": "human", "value": "No image here."}, PLACEHOLDER], image=None),
        row("d", 1, image=None),  # the human turn holds `<image>`: a lost image, not a text-only row
        row("e", 3),
    ]
    for way, result in hub_ingest("llava_rlhf", rows, features, images_root=tmp_path / "coco").items():
        a, b, c = result.pairs
        # preference 2 => output_2 is chosen; preference 1 => output_1.
        assert (a["chosen"], a["rejected"]) == ("He holds a surfboard.", "He holds an umbrella."), way
        assert a["prompt"] == [{"role": "user", "content": "<image>\nWhat is the man holding?"}], way
        assert a["images"] == [hashlib.sha256(image_bytes(42, fmt="JPEG")).hexdigest()], way
        assert (a["tie"], a["margin"]) == (False, None), way
        assert json.loads(a["meta"]) == {"id": "a", "hallucination": False}, way
        assert (b["chosen"], [m["role"] for m in b["prompt"]]) == (
            "He holds an umbrella.",
            ["user", "assistant", "user"],
        ), way
        assert (c["images"], c["modality"], c["prompt"][0]["content"]) == ([], "text", "No image here."), way
        assert [r["reason"] for r in result.rejects] == ["image placeholders mismatch", "undetermined preference"], way
