import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.cards import declared_features, source_cards
from curation.sources.rewardbench import SECTIONS
from tests.conftest import RunIngest, write_jsonl


def _row(index: int, subset: str | None, **over: object) -> dict:
    row = {
        "prompt": f"Question {index}?",
        "chosen": f"good {index}",
        "chosen_model": "gpt-4",
        "rejected": f"bad {index}",
        "rejected_model": "llama-2-7b",
        "subset": subset,
        "id": index,
    }
    return {**row, **over}


def test_sections_cover_the_23_scored_subsets(shared_data: Path) -> None:
    results = json.loads((shared_data / "rewardbench/GPM-Gemma-2B.json").read_text(encoding="utf-8"))
    scored = {k for k, v in results.items() if isinstance(v, float)}
    assert set(SECTIONS) == scored and len(scored) == 23
    assert Counter(SECTIONS.values()) == {"Chat": 5, "Chat Hard": 6, "Safety": 5, "Reasoning": 7}
    assert SECTIONS["math-prm"] == "Reasoning" and SECTIONS["hep-rust"] == "Reasoning"
    assert SECTIONS["xstest-should-respond"] == "Safety" and SECTIONS["mt-bench-hard"] == "Chat Hard"


def test_filtered_rows(tmp_path: Path, run_ingest: RunIngest) -> None:
    rows = [
        _row(0, "alpacaeval-easy"),
        _row(1, "llmbar-adver-GPTOut"),
        _row(2, "donotanswer"),
        _row(3, "hep-python"),
        _row(4, "anthropic_helpful"),
        _row(5, "math-prm", rejected=None),
    ]
    path = tmp_path / "filtered-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    result = run_ingest("rewardbench", path)

    pair = result.pairs[0]
    assert pair["prompt"] == [{"role": "user", "content": "Question 0?"}]
    assert (pair["chosen"], pair["rejected"]) == ("good 0", "bad 0")
    assert (pair["chosen_model"], pair["rejected_model"]) == ("gpt-4", "llama-2-7b")
    assert (pair["modality"], pair["tie"], pair["margin"]) == ("text", False, None)
    assert result.meta(0) == {"id": 0}
    assert [(p["subset"], p["category"]) for p in result.pairs] == [
        ("alpacaeval-easy", "Chat"),
        ("llmbar-adver-GPTOut", "Chat Hard"),
        ("donotanswer", "Safety"),
        ("hep-python", "Reasoning"),
        ("anthropic_helpful", None),
    ]
    assert [(r["reason"], r["detail"].split(": ", 1)[1]) for r in result.rejects] == [
        ("missing field", "'rejected' is null"),
    ]


def test_jsonl_without_subset_and_wrong_type(tmp_path: Path, run_ingest: RunIngest) -> None:
    row = _row(9, None)
    del row["subset"], row["chosen_model"]
    bad = _row(10, "math-prm", prompt=["not", "text"])
    result = run_ingest("rewardbench", write_jsonl(tmp_path / "rb.jsonl", [row, bad]))
    assert [(r["reason"], r["detail"]) for r in result.rejects] == [
        ("wrong type", "rb.jsonl:1: 'prompt': expected str, got list")
    ]
    pair = result.pairs[0]
    assert (pair["subset"], pair["category"], pair["chosen_model"], pair["rejected_model"]) == (
        None,
        None,
        None,
        "llama-2-7b",
    )


def test_rows_as_the_hub_serves_them(shared_data: Path, hub_ingest: Any) -> None:
    """The card's declared features (one flat config): a row per subset scored in a real results file, one subset
    outside the leaderboard table (kept, no category) and a row without `rejected` (rejected)."""
    features = declared_features(source_cards()["rewardbench"])
    results = json.loads((shared_data / "rewardbench/GPM-Gemma-2B.json").read_text(encoding="utf-8"))
    scored = sorted(k for k, v in results.items() if isinstance(v, float))
    rows = [_row(i, subset) for i, subset in enumerate([*scored, "anthropic_helpful"])]
    rows.append(_row(99, "math-prm", rejected=None))
    expected = {"alpacaeval-easy": "Chat", "mt-bench-hard": "Chat Hard", "donotanswer": "Safety", "hep-go": "Reasoning"}
    for way, result in hub_ingest("rewardbench", rows, features).items():
        pairs = result.pairs
        assert [p["subset"] for p in pairs] == [*scored, "anthropic_helpful"], way
        assert [(p["chosen"], p["rejected"]) for p in pairs[:2]] == [("good 0", "bad 0"), ("good 1", "bad 1")], way
        assert pairs[0]["prompt"] == [{"role": "user", "content": "Question 0?"}], way
        assert (pairs[0]["chosen_model"], pairs[0]["rejected_model"], pairs[0]["margin"]) == (
            "gpt-4",
            "llama-2-7b",
            None,
        ), way
        category = {p["subset"]: p["category"] for p in pairs}
        assert {s: category[s] for s in expected} == expected, way
        assert all(category[s] for s in scored) and category["anthropic_helpful"] is None, way
        assert result.meta(len(scored)) == {"id": len(scored)}, way  # `id` keeps its int64 type
        assert [(r["reason"], r["detail"].split(": ", 1)[1]) for r in result.rejects] == [
            ("missing field", "'rejected' is null")
        ], way
