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
from curation.sources.vl_rewardbench import vl_rewardbench_group
from tests.conftest import RunIngest, image_bytes, write_image, write_jsonl

VL = "vl-rewardbench/data.jsonl"
DESCRIBE = "Describe this image in detail."


@pytest.fixture(scope="module")
def vl_images(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """An images root with a tiny distinct image at every path the converted file references."""
    root = tmp_path_factory.mktemp("vl_images")
    for line in (shared_data / VL).read_text(encoding="utf-8").splitlines():
        rel = json.loads(line)["image"]
        write_image(root / rel, seed=int(rel.rsplit("_", 1)[1].split(".")[0]), size=(8, 8))
    return root


def test_group_function_both_groupings() -> None:
    assert vl_rewardbench_group("RLAIF-V-14") == "hallucination"
    assert vl_rewardbench_group("RLAIF-V-14", "r1_reward") == "general"
    assert vl_rewardbench_group("RLHF-V-31", "r1_reward") == "general"
    assert vl_rewardbench_group("hallucination_pair-1003", "r1_reward") == "hallucination"
    assert vl_rewardbench_group("svit-complex_reasoning-876") == "general"
    assert vl_rewardbench_group("mmmu_pro_test_Math_3", "r1_reward") == "reasoning"
    assert vl_rewardbench_group("mathverse_1294") == "reasoning"
    assert vl_rewardbench_group("somethingelse-1", "r1_reward") == "general"
    assert vl_rewardbench_group("somethingelse-1") == "general"  # as cal.py counts a source it does not list


def test_real_file_all_rows_and_groupings(shared_data: Path, vl_images: Path, run_ingest: RunIngest) -> None:
    official = run_ingest("vl_rewardbench", shared_data / VL, images_root=vl_images)
    assert official.summary.pairs == 1250 and official.summary.rows_rejected == 0
    assert Counter(p["category"] for p in official.pairs) == {"general": 183, "hallucination": 749, "reasoning": 318}
    assert all(p["subset"] == p["category"] for p in official.pairs)
    assert sum(p["prompt"][-1]["content"] == f"<image>\n{DESCRIBE}" for p in official.pairs) == 410
    assert all(len(p["prompt"]) == 1 and p["prompt"][0]["role"] == "user" for p in official.pairs)
    assert all(p["prompt"][0]["content"].count("<image>") == 1 for p in official.pairs)
    assert {p["modality"] for p in official.pairs} == {"image"}
    assert official.summary.images == 1250 and official.summary.ties == 0
    first = json.loads((shared_data / VL).read_text(encoding="utf-8").splitlines()[0])
    assert official.pairs[0]["chosen"] == canonical_text(first["chosen"])
    assert official.pairs[0]["rejected"] == canonical_text(first["rejected"])
    assert official.meta(0) == {
        "id": "hallucination_pair-1003",
        "image": "vl_reward/img/image_0.jpg",
        "chosen_reason": "",
        "rejected_reason": "",
    }

    r1 = run_ingest("vl_rewardbench", shared_data / VL, images_root=vl_images, options={"grouping": "r1_reward"})
    assert Counter(p["category"] for p in r1.pairs) == {"general": 484, "hallucination": 448, "reasoning": 318}
    assert [p["pair_id"] for p in r1.pairs] == [p["pair_id"] for p in official.pairs]


def test_missing_image_is_rejected(tmp_path: Path, shared_data: Path, run_ingest: RunIngest) -> None:
    rows = [json.loads(line) for line in (shared_data / VL).read_text(encoding="utf-8").splitlines()[:2]]
    write_image(tmp_path / "root" / rows[0]["image"], seed=0, size=(8, 8))
    result = run_ingest("vl_rewardbench", write_jsonl(tmp_path / "two.jsonl", rows), images_root=tmp_path / "root")
    assert len(result.pairs) == 1
    assert [(r["reason"], r["detail"]) for r in result.rejects] == [
        ("image not found", "two.jsonl:1: field 'image': vl_reward/img/image_1.jpg")
    ]


def _native(**over: object) -> dict:
    row = {
        "id": "RLHF-V-31",
        "query": "What is on the table?",
        "response": ["A red apple.", "A green pear."],
        "image": {"bytes": image_bytes(3), "path": "rlhf_v_31.png"},
        "human_ranking": [1, 0],
        "models": ["model-x", "model-y"],
        "judge": "human",
        "rationale": "The fruit is a pear.",
        "query_source": "rlhf-v",
        "meta": "{}",
        "human_error_analysis": ["hallucination"],
        "ground_truth": "",
    }
    return {**row, **over}


def test_native_parquet_layout(tmp_path: Path, run_ingest: RunIngest) -> None:
    rows = [
        _native(),  # [1, 0]: response[1] is chosen
        _native(id="mathverse_7", human_ranking=[0, 1]),
        _native(id="wildvision-battle-13", human_ranking=[0, 0]),
        _native(id="unknown-source-1"),
        _native(human_ranking=[0]),
        _native(response=["only one"]),
        _native(image=None),
    ]
    path = tmp_path / "test-00000.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    result = run_ingest("vl_rewardbench", path)

    swapped, straight, tie, unknown = result.pairs
    assert (swapped["chosen"], swapped["rejected"]) == ("A green pear.", "A red apple.")
    assert (swapped["chosen_model"], swapped["rejected_model"]) == ("model-y", "model-x")
    assert (swapped["subset"], swapped["category"], swapped["tie"]) == ("hallucination", "hallucination", False)
    assert swapped["prompt"] == [{"role": "user", "content": "<image>\nWhat is on the table?"}]
    assert swapped["modality"] == "image" and len(swapped["images"]) == 1
    assert (straight["chosen"], straight["chosen_model"], straight["category"]) == (
        "A red apple.",
        "model-x",
        "reasoning",
    )
    assert (tie["tie"], tie["chosen"], tie["category"]) == (True, "A red apple.", "general")
    assert (unknown["subset"], unknown["category"]) == ("general", "general")  # as cal.py counts it
    meta = result.meta(0)
    assert meta["image"] == {"bytes": f"<{len(image_bytes(3))} bytes>", "path": "rlhf_v_31.png"}
    assert {k: meta[k] for k in ("id", "judge", "query_source", "human_error_analysis")} == {
        "id": "RLHF-V-31",
        "judge": "human",
        "query_source": "rlhf-v",
        "human_error_analysis": ["hallucination"],
    }
    assert not {"query", "response", "human_ranking", "models"} & set(meta)
    assert [(r["reason"], r["detail"].split(": ", 1)[1]) for r in result.rejects] == [
        ("undetermined preference", "'human_ranking': [0]"),
        ("wrong type", "'response': expected 2 strings, got 1 items"),
        ("missing field", "field 'image': no image (NoneType)"),
    ]
    assert len(result.images) == 1  # one image shared by all pairs, stored once


def test_rows_as_the_hub_serves_them(shared_data: Path, hub_ingest: Any) -> None:
    """The card's declared features (main revision): `response`/`human_ranking`/`models` are sequences, `image`
    the `Image` feature. The text comes from one real converted row per id prefix, laid out as the Hub stores it:
    the chosen answer first in even rows, second (ranking [1, 0]) in odd ones."""
    features = declared_features(source_cards()["vl_rewardbench"])
    lines = (shared_data / VL).read_text(encoding="utf-8").splitlines()
    prefixes = ("hallucination_pair", "RLAIF", "RLHF", "wildvision", "mathverse", "mmmu")
    real = [next(r for r in map(json.loads, lines) if r["id"].startswith(prefix)) for prefix in prefixes]

    def hub_row(k: int, row: dict[str, Any], **over: Any) -> dict[str, Any]:
        first = k % 2 == 0
        answers = [row["chosen"], row["rejected"]]
        return {
            "id": row["id"], "query": row["prompt"], "response": answers if first else answers[::-1],
            "image": {"bytes": image_bytes(k), "path": f"{row['id']}.jpg"},
            "human_ranking": [0, 1] if first else [1, 0], "models": [f"first-{k}", f"second-{k}"],
            "judge": "human", "rationale": "", "query_source": "x", "ground_truth": "", **over,
        }  # fmt: skip

    rows = [hub_row(k, row) for k, row in enumerate(real)]
    rows += [
        hub_row(6, real[0], human_ranking=[0, 0]),  # equal ranks: a tie, first response as chosen
        hub_row(7, real[1], human_ranking=[0]),
        hub_row(8, real[2], response=[real[2]["chosen"]]),
    ]
    for way, result in hub_ingest("vl_rewardbench", rows, features).items():
        pairs = result.pairs
        assert len(pairs) == 7, way
        for k, (pair, row) in enumerate(zip(pairs, real, strict=False)):
            expected = (canonical_text(row["chosen"]), canonical_text(row["rejected"]))
            assert (pair["chosen"], pair["rejected"]) == expected, way
            expected_models = (f"first-{k}", f"second-{k}") if k % 2 == 0 else (f"second-{k}", f"first-{k}")
            assert (pair["chosen_model"], pair["rejected_model"]) == expected_models, way
            group = vl_rewardbench_group(row["id"])
            assert (pair["subset"], pair["category"], pair["tie"]) == (group, group, False), way
            assert pair["prompt"] == [{"role": "user", "content": canonical_text("<image>\n" + row["prompt"])}], way
            assert pair["images"] == [hashlib.sha256(image_bytes(k)).hexdigest()], way
        tie = pairs[6]
        assert (tie["tie"], tie["chosen"], tie["chosen_model"]) == (True, canonical_text(real[0]["chosen"]), "first-6")
        assert [p["category"] for p in pairs[:6]] == [
            "hallucination", "hallucination", "hallucination", "general", "reasoning", "reasoning"
        ], way  # fmt: skip
        assert [r["reason"] for r in result.rejects] == ["undetermined preference", "wrong type"], way
        assert len(result.images) == 7, way
