import hashlib
import json
from pathlib import Path

from curation.sources.multimodal_rewardbench import mmrb_category
from tests.conftest import RunIngest, write_image, write_jsonl

EXAMPLE = "multimodal-rewardbench/example.jsonl"


# Rows in the format of the benchmark's data file (checked against the authors' code: see the card). Texts, and
# IDs other than the two of outputs/example.jsonl, are made up after the ID prefixes its scripts test.
def _row(item_id: str, image: str, category: str | None, better: str = "Output1", **over: object) -> dict:
    row = {
        "ID": item_id,
        "Image": image,
        "Text": f"Question about {item_id}?",
        "Output1": f"first answer {item_id}",
        "Output2": f"second answer {item_id}",
        "Better": better,
        "Category": category,
    }
    return {**row, **over}


def test_category_rule() -> None:
    assert mmrb_category("pairs_occupation_12", "safety") == "safety/bias"
    assert mmrb_category("PAIRS_3", "safety") == "safety/bias"
    assert mmrb_category("vlguard_5", "safety") == "safety/toxicity"
    assert mmrb_category("mathvista_7", "reasoning") == "reasoning/math"
    assert mmrb_category("EMMA-Coding_3", "reasoning") == "reasoning/coding"
    assert mmrb_category("nocaps_1", "open_generation/correctness_task") == "open_generation/correctness_task"
    assert mmrb_category("x", None) is None


def test_all_data_rows(tmp_path: Path, shared_data: Path, run_ingest: RunIngest) -> None:
    # IDs, image paths and categories of the two real prediction rows, whose label B means Better = "Output2".
    example = [json.loads(line) for line in (shared_data / EXAMPLE).read_text(encoding="utf-8").splitlines()]
    assert [e["Label"] for e in example] == ["B", "B"]
    root = tmp_path / "data"
    rows = [_row(e["ID"], e["Image"], e["Meta"]["Category"], better="Output2") for e in example]
    rows += [
        _row("pairs_occupation_1", "images/pairs/1.jpg", "safety"),
        _row("hateful_memes_2", "images/hateful_memes/2.png", "safety"),  # an image its user obtained
        _row("mathvista_7", "images/mathvista/7.jpg", "reasoning"),
        _row("EMMA-Coding_3", "images/EMMA-Coding/3_0.png", "reasoning"),
        _row("RealworldQA_4", "images/RealworldQA/4.jpg", "vqa"),
        _row("MMBench_2", "images/MMBench/2.jpg", None),
        _row("nocaps_5", "images/nocaps/5.jpg", "knowledge", better="Tie"),
        _row("visitbench_9", "images/visitbench/9.jpg", "knowledge", Text=""),  # the release file, before the script
        _row("hateful_memes_1", "images/hateful_memes/1.png", "safety"),
        _row("nocaps_6", "images/nocaps/6.jpg", "knowledge", Output2=None),
        _row("nocaps_7", "images/nocaps/7.jpg", ["knowledge"]),
    ]
    for seed, row in enumerate(rows):
        if row["ID"] != "hateful_memes_1":  # not redistributed: the download script never fetches it
            write_image(root / row["Image"], seed=seed)
    (root / "all_data.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    result = run_ingest("multimodal_rewardbench", root / "all_data.json", images_root=root)

    first = result.pairs[0]
    assert (first["chosen"], first["rejected"]) == ("second answer nocaps_13062", "first answer nocaps_13062")
    assert first["prompt"] == [{"role": "user", "content": "<image>\nQuestion about nocaps_13062?"}]
    assert first["modality"] == "image"
    assert first["images"] == [hashlib.sha256((root / "images/nocaps/13062.jpg").read_bytes()).hexdigest()]
    assert result.meta(0) == {"ID": "nocaps_13062"}
    assert result.pairs[2]["chosen"] == "first answer pairs_occupation_1"
    assert [p["category"] for p in result.pairs] == [
        "open_generation/correctness_task",
        "open_generation/correctness_task",
        "safety/bias",
        "safety/toxicity",
        "reasoning/math",
        "reasoning/coding",
        "vqa",
    ]
    assert all(p["subset"] == p["category"] for p in result.pairs)
    assert [(r["source_row"], r["reason"], r["detail"].split(": ", 1)[1]) for r in result.rejects] == [
        ("all_data.json:7", "missing field", "'Category' is null"),  # an item with no scoring group is not guessed
        ("all_data.json:8", "undetermined preference", "'Better': 'Tie'"),
        ("all_data.json:9", "missing field", "'Text' is empty (filled by scripts/0_download_data.py)"),
        ("all_data.json:10", "image not found", "field 'Image': images/hateful_memes/1.png"),
        ("all_data.json:11", "missing field", "'Output2' is null"),
        ("all_data.json:12", "wrong type", "'Category': expected str, got list"),
    ]


def test_prediction_rows_are_not_benchmark_rows(shared_data: Path, run_ingest: RunIngest) -> None:
    # outputs/example.jsonl holds judge predictions (Label, output, Meta), not Output1/Output2: nothing to pair.
    result = run_ingest("multimodal_rewardbench", shared_data / EXAMPLE)
    assert not result.pairs
    assert [r["detail"].split(": ", 1)[1] for r in result.rejects] == ["'Text'", "'Text'"]


def test_jsonl_copy_and_missing_root(tmp_path: Path, run_ingest: RunIngest) -> None:
    path = write_jsonl(tmp_path / "mmrb.jsonl", [_row("nocaps_1", "images/nocaps/1.jpg", "vqa", better="Output2")])
    result = run_ingest("multimodal_rewardbench", path)
    assert [(r["reason"], r["detail"]) for r in result.rejects] == [
        (
            "image not found",
            "mmrb.jsonl:0: field 'Image': images/nocaps/1.jpg (no images root given: --images-root, "
            "or images_root in a recipe)",
        )
    ]
