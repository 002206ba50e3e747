import json
from pathlib import Path
from typing import Any

import pytest

from curation.errors import InputError
from curation.sources import get_adapter
from tests.conftest import RunIngest, write_jsonl

MULTI_TURN = "Hi\n<extra_id_1>Assistant\nHello!\n<extra_id_1>User\nTell a joke."


def rated(prompt: str, response: str, helpfulness: Any, correctness: Any = 3) -> dict[str, Any]:
    return {
        "prompt": prompt,
        "response": response,
        "helpfulness": helpfulness,
        "correctness": correctness,
        "coherence": 4,
        "complexity": 1,
        "verbosity": 2,
    }


def preference(strength: Any, prompt: str = "Pick one.") -> dict[str, Any]:
    return {
        "split": "train",
        "prompt": prompt,
        "response_1": "first",
        "response_2": "second",
        "preference_strength": strength,
        "preference_statement": "@Response 1 is better.",
        "preference_elaboration": "Because.",
    }


def write_main(folder: Path) -> Path:
    rows = [
        rated("Name a color.", "blue", 3, correctness=4),
        rated("Name a color.", "the color blue, obviously", 4, correctness=2),
        rated("Alone?", "yes", 2),
        rated(MULTI_TURN, "Knock knock.", 2),
        rated(MULTI_TURN, "No.", "2"),
        rated("Unrated?", "a", None),
        rated("Unrated?", "b", "n/a"),
    ]
    return write_jsonl(folder / "train.jsonl", rows)


def test_main_file_pairs_consecutive_responses_by_helpfulness(tmp_path: Path, run_ingest: RunIngest) -> None:
    result = run_ingest("helpsteer2", write_main(tmp_path / "hs2"))
    # 7 native lines, 4 prompts: one record per prompt.
    assert result.summary.rows_read == 4
    better, tie = result.pairs
    assert [p["source_row"] for p in result.pairs] == ["train.jsonl:0+2", "train.jsonl:3+2"]
    assert better["prompt"] == [{"role": "user", "content": "Name a color."}]
    assert (better["chosen"], better["rejected"]) == ("the color blue, obviously", "blue")
    assert (better["chosen_score"], better["rejected_score"], better["margin"]) == (4.0, 3.0, 1.0)
    assert (better["subset"], better["binarization"], better["tie"], better["modality"]) == (
        "main",
        "all_pairs",
        False,
        "text",
    )
    assert tie["prompt"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Tell a joke."},
    ]
    assert (tie["chosen"], tie["rejected"], tie["tie"], tie["margin"]) == ("Knock knock.", "No.", True, 0.0)
    meta = result.meta(0)
    assert meta["_derived"] == {"attribute": "helpfulness", "chosen_index": 1, "rejected_index": 0}
    assert [r["correctness"] for r in meta["responses"]] == [4, 2]
    assert [(r["source_row"], r["reason"]) for r in result.rejects] == [
        ("train.jsonl:2+1", "single response"),
        ("train.jsonl:5+2", "unparsable score"),
    ]
    assert result.rejects[1]["detail"] == "train.jsonl:5+2: 'helpfulness': [None, 'n/a']"


def test_attribute_option(tmp_path: Path, run_ingest: RunIngest) -> None:
    result = run_ingest("helpsteer2", write_main(tmp_path / "hs2"), options={"attribute": "correctness"})
    assert (result.pairs[0]["chosen"], result.pairs[0]["margin"]) == ("blue", 2.0)
    with pytest.raises(InputError, match="attribute='helpful'"):
        get_adapter("helpsteer2")({"attribute": "helpful"})


def test_preference_file_sign_tie_and_option(tmp_path: Path, run_ingest: RunIngest) -> None:
    folder = tmp_path / "hs2"
    rows = [preference(-2), preference(3), preference(0), preference("x"), preference(5), preference(-1, MULTI_TURN)]
    write_jsonl(folder / "preference" / "preference.jsonl", rows)
    write_main(folder)
    result = run_ingest("helpsteer2", folder)
    pref = [p for p in result.pairs if p["subset"] == "preference"]
    assert [(p["chosen"], p["rejected"], p["margin"], p["tie"]) for p in pref] == [
        ("first", "second", 2.0, False),
        ("second", "first", 3.0, False),
        ("first", "second", 0.0, True),
        ("first", "second", 1.0, False),
    ]
    assert [p["source_row"] for p in pref] == [f"preference/preference.jsonl:{i}" for i in (0, 1, 2, 5)]
    assert pref[3]["prompt"][-1] == {"role": "user", "content": "Tell a joke."}
    assert (pref[0]["chosen_score"], pref[0]["binarization"], pref[0]["license"]) == (None, None, "CC-BY-4.0")
    meta = result.meta(0)
    assert meta == {
        "split": "train",
        "preference_statement": "@Response 1 is better.",
        "preference_elaboration": "Because.",
        "_derived": {"chosen_side": "response_1"},
    }
    assert [(r["source_row"], r["reason"]) for r in result.rejects] == [
        ("preference/preference.jsonl:3", "unparsable score"),
        ("preference/preference.jsonl:4", "score out of range"),
        ("train.jsonl:2+1", "single response"),
        ("train.jsonl:5+2", "unparsable score"),
    ]
    flipped = run_ingest("helpsteer2", folder / "preference", options={"negative_means": "response_2"})
    assert [(p["chosen"], p["tie"]) for p in flipped.pairs] == [
        ("second", False),
        ("first", False),
        ("first", True),
        ("second", False),
    ]


def test_prompt_ending_with_an_assistant_turn_is_rejected(tmp_path: Path, run_ingest: RunIngest) -> None:
    rows = [preference(1, "Hi\n<extra_id_1>Assistant\nHello!")]
    result = run_ingest("helpsteer2", write_jsonl(tmp_path / "preference.jsonl", rows))
    assert [r["reason"] for r in result.rejects] == ["no user turn"]


def test_unreadable_line_ends_a_group(tmp_path: Path, run_ingest: RunIngest) -> None:
    lines = [json.dumps(rated("P", "a", 1)), "{broken", json.dumps(rated("P", "b", 2))]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run_ingest("helpsteer2", path)
    assert [(r["source_row"], r["reason"]) for r in result.rejects] == [
        ("train.jsonl:0+1", "single response"),
        ("train.jsonl:1", "malformed json"),
        ("train.jsonl:2+1", "single response"),
    ]
