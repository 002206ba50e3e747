import hashlib
from pathlib import Path

from curation.cards import declared_features, source_cards
from curation.sources.omnialign_v_dpo import task_of
from tests.conftest import image_bytes, write_image, write_jsonl


def sha(seed: int) -> str:
    return hashlib.sha256(image_bytes(seed)).hexdigest()


def row(image: object, prompt: str = "Explain the historical context of this painting.", **extra: object) -> dict:
    return {"image": image, "prompt": prompt, "chosen": "A long curated answer.", "rejected": "A short guess.", **extra}


def test_task_files_become_category(tmp_path: Path, run_ingest) -> None:
    images = tmp_path / "images"
    write_image(images / "knowledge" / "k1.png", seed=1)
    write_image(images / "chart" / "c1.png", seed=2)
    write_image(images / "chart" / "c2.png", seed=3)
    data = tmp_path / "OmniAlign-V-DPO"
    write_jsonl(data / "knowledge.jsonl", [row("knowledge/k1.png", id="k-1"), row("knowledge/missing.png")])
    write_jsonl(
        data / "chart.jsonl",
        [
            row("chart/c1.png", prompt="<image>\nSummarize the chart."),
            row(["chart/c1.png", "chart/c2.png"], prompt="Compare the two charts."),
            row([]),
            {"prompt": "No image.", "chosen": "a", "rejected": "b"},
        ],
    )
    res = run_ingest("omnialign_v_dpo", data, images_root=images)
    chart, multi, knowledge = res.pairs  # files are read in sorted order
    assert knowledge["prompt"] == [
        {"role": "user", "content": "<image>\nExplain the historical context of this painting."}
    ]
    assert (knowledge["chosen"], knowledge["rejected"]) == ("A long curated answer.", "A short guess.")
    assert (knowledge["category"], knowledge["subset"], knowledge["images"]) == ("knowledge", "knowledge", [sha(1)])
    assert (knowledge["modality"], knowledge["license"], knowledge["tie"]) == ("image", "unknown", False)
    assert res.meta(2) == {"id": "k-1"}
    assert chart["prompt"] == [{"role": "user", "content": "<image>\nSummarize the chart."}]
    assert (chart["category"], chart["source_row"]) == ("chart", "chart.jsonl:0")
    assert multi["prompt"][0]["content"] == "<image>\n<image>\nCompare the two charts."
    assert (multi["images"], multi["modality"]) == ([sha(2), sha(3)], "multi_image")
    assert [(r["source_row"], r["reason"]) for r in res.rejects] == [
        ("chart.jsonl:2", "missing field"),
        ("chart.jsonl:3", "missing field"),
        ("knowledge.jsonl:1", "image not found"),
    ]


def test_by_basename_option(tmp_path: Path, run_ingest) -> None:
    write_image(tmp_path / "images" / "poster" / "sub" / "p1.png", seed=4)
    path = write_jsonl(tmp_path / "poster.jsonl", [row("poster/p1.png")])
    strict = run_ingest("omnialign_v_dpo", path, images_root=tmp_path / "images")
    assert [r["reason"] for r in strict.rejects] == ["image not found"]
    loose = run_ingest("omnialign_v_dpo", path, images_root=tmp_path / "images", options={"by_basename": "true"})
    assert (loose.pairs[0]["images"], loose.pairs[0]["category"]) == ([sha(4)], "poster")


def test_task_of_names_only_the_six_task_files() -> None:
    assert [task_of(ref) for ref in ("chart/chart.jsonl:3", "ins_follow.jsonl:0", "knowledge.json.gz:2")] == [
        "chart", "ins_follow", "knowledge"
    ]  # fmt: skip
    assert [task_of(ref) for ref in ("train:3", "train-00000-of-00001.parquet:0", "data-00000-of-00001.arrow:1")] == [
        None, None, None
    ]  # fmt: skip


def test_rows_as_the_hub_serves_them(tmp_path: Path, hub_ingest) -> None:
    """The card's (reconstructed) features: four strings, `image` a path under the images root. Whichever way the
    Hub serves them, the rows name no task file, so subset and category stay empty in every way."""
    features = declared_features(source_cards()["omnialign_v_dpo"])
    write_image(tmp_path / "images" / "chart" / "c1.png", seed=2)
    rows = [
        row("chart/c1.png", prompt="<image>\nSummarize the chart."),
        row("chart/c1.png"),
        row("chart/missing.png"),
        row("chart/c1.png", chosen=None),
    ]
    for way, result in hub_ingest("omnialign_v_dpo", rows, features, images_root=tmp_path / "images").items():
        placed, added = result.pairs
        assert placed["prompt"] == [{"role": "user", "content": "<image>\nSummarize the chart."}], way
        assert added["prompt"] == [
            {"role": "user", "content": "<image>\nExplain the historical context of this painting."}
        ], way
        assert (placed["chosen"], placed["rejected"]) == ("A long curated answer.", "A short guess."), way
        assert placed["images"] == added["images"] == [sha(2)], way
        assert {(p["subset"], p["category"]) for p in result.pairs} == {(None, None)}, way
        assert [r["reason"] for r in result.rejects] == ["image not found", "missing field"], way
