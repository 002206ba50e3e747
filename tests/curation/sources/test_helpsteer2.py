import json
from pathlib import Path
from typing import Any

import pytest

from curation.cards import declared_features, source_cards
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
    # Rows pair by position (0-1, 2-3, ...); the last row has no partner.
    rows = [
        rated("Name a color.", "blue", 3, correctness=4),
        rated("Name a color.", "the color blue, obviously", 4, correctness=2),
        rated(MULTI_TURN, "Knock knock.", 2),
        rated(MULTI_TURN, "No.", "2"),
        rated("Unrated?", "a", None),
        rated("Unrated?", "b", "n/a"),
        rated("Alone?", "yes", 2),
    ]
    return write_jsonl(folder / "train.jsonl", rows)


MAIN_REJECTS = [("train.jsonl:4+2", "unparsable score"), ("train.jsonl:6", "incomplete pair")]


def test_main_file_pairs_rows_by_position_and_helpfulness(tmp_path: Path, run_ingest: RunIngest) -> None:
    result = run_ingest("helpsteer2", write_main(tmp_path / "hs2"))
    # 7 native lines: three pairs of rows and one row without a partner.
    assert result.summary.rows_read == 4
    better, tie = result.pairs
    assert [p["source_row"] for p in result.pairs] == ["train.jsonl:0+2", "train.jsonl:2+2"]
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
    assert [(r["source_row"], r["reason"]) for r in result.rejects] == MAIN_REJECTS
    assert [r["detail"] for r in result.rejects] == [
        "train.jsonl:4+2: 'helpfulness': [None, 'n/a']",
        "train.jsonl:6: the last row of its file has no partner",
    ]


def test_adjacent_pairs_of_one_prompt_stay_apart(tmp_path: Path, run_ingest: RunIngest) -> None:
    """Two pairs of the same prompt text in a row are two pairs (not a group of four, which would give six);
    partners whose prompts differ are both rejected, each naming the other."""
    rows = [
        rated("Same?", "a", 1),
        rated("Same?", "b", 3),
        rated("Same?", "c", 4),
        rated("Same?", "d", 0),
        rated("First?", "e", 2),
        rated("Second?", "f", 1),
    ]
    result = run_ingest("helpsteer2", write_jsonl(tmp_path / "train.jsonl", rows))
    assert [(p["source_row"], p["chosen"], p["rejected"], p["margin"]) for p in result.pairs] == [
        ("train.jsonl:0+2", "b", "a", 2.0),
        ("train.jsonl:2+2", "c", "d", 4.0),
    ]
    assert [(r["reason"], r["detail"]) for r in result.rejects] == [
        ("incomplete pair", "train.jsonl:4: its partner train.jsonl:5 has another prompt"),
        ("incomplete pair", "train.jsonl:5: its partner train.jsonl:4 has another prompt"),
    ]


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
    # Laid out as the Hub serves it: the repository's root reads train.jsonl, as `datasets` does
    main = run_ingest("helpsteer2", folder)
    assert {p["subset"] for p in main.pairs} == {"main"}
    assert [(r["source_row"], r["reason"]) for r in main.rejects] == MAIN_REJECTS
    result = run_ingest("helpsteer2", folder, data_dir="preference")
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


def test_unreadable_line_breaks_its_pair(tmp_path: Path, run_ingest: RunIngest) -> None:
    lines = [json.dumps(rated("P", "a", 1)), "{broken", json.dumps(rated("P", "b", 2))]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run_ingest("helpsteer2", path)
    assert [(r["source_row"], r["reason"], r["detail"]) for r in result.rejects] == [
        ("train.jsonl:0", "incomplete pair", "train.jsonl:0: its partner train.jsonl:1 is unreadable"),
        (
            "train.jsonl:1",
            "malformed json",
            "train.jsonl:1: column 2: Expecting property name enclosed in double quotes",
        ),
        ("train.jsonl:2", "incomplete pair", "train.jsonl:2: the last row of its file has no partner"),
    ]


def test_positions_restart_with_each_file(tmp_path: Path, run_ingest: RunIngest) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "train.jsonl").write_text("{broken\n" + json.dumps(rated("P", "x", 1)) + "\n", encoding="utf-8")
    write_jsonl(tmp_path / "b" / "train.jsonl", [rated("Q", "y", 2)])
    result = run_ingest("helpsteer2", tmp_path)
    assert not result.pairs
    assert [(r["reason"], r["detail"]) for r in result.rejects] == [
        ("malformed json", "a/train.jsonl:0: column 2: Expecting property name enclosed in double quotes"),
        ("incomplete pair", "a/train.jsonl:1: its partner a/train.jsonl:0 is unreadable"),
        ("incomplete pair", "b/train.jsonl:0: the last row of its file has no partner"),
    ]


def test_rows_as_the_hub_serves_them(hub_ingest: Any) -> None:
    """The main files as declared (config `default`): consecutive rows pair by position, also where two pairs
    share a prompt text; rows whose partner differs and an odd last row are rejected."""
    features = declared_features(source_cards()["helpsteer2"], "default")
    rows = [
        rated("Same?", "a", 1),
        rated("Same?", "b", 3),
        rated("Same?", "c", 4),
        rated("Same?", "d", 0),
        rated(MULTI_TURN, "Knock knock.", 2),
        rated(MULTI_TURN, "No.", 2),
        rated("First?", "e", 2),
        rated("Second?", "f", 1),
        rated("Alone?", "g", 3),
    ]
    # Rows read: each whole pair of lines is one row (3), each line of an incomplete pair one (3).
    for way, result in hub_ingest("helpsteer2", rows, features, rows_read=6).items():
        pairs = result.pairs
        assert [(p["chosen"], p["rejected"], p["margin"], p["tie"]) for p in pairs] == [
            ("b", "a", 2.0, False),
            ("c", "d", 4.0, False),
            ("Knock knock.", "No.", 0.0, True),
        ], way
        assert [p["source_row"].rsplit(":", 1)[1] for p in pairs] == ["0+2", "2+2", "4+2"], way
        assert (pairs[0]["chosen_score"], pairs[0]["rejected_score"], pairs[0]["subset"]) == (3.0, 1.0, "main"), way
        assert pairs[2]["prompt"][-1] == {"role": "user", "content": "Tell a joke."}, way
        assert [r["correctness"] for r in result.meta(1)["responses"]] == [3, 3], way
        assert [(r["source_row"].rsplit(":", 1)[1], r["reason"]) for r in result.rejects] == [
            ("6", "incomplete pair"),
            ("7", "incomplete pair"),
            ("8", "incomplete pair"),
        ], way


def test_preference_rows_as_the_hub_serves_them(hub_ingest: Any) -> None:
    """The preference file as declared (the `preference` entry of the card: the repository folder the Hub reads
    with `--data-dir preference`): a negative strength prefers response 1, the two lists of annotator
    preferences stay in meta as lists of records."""
    features = declared_features(source_cards()["helpsteer2"], "preference")
    similar = [{"statement": "@Response 1 is better.", "elaboration": "Clearer.", "strength": -2}]
    unprocessed = [{"strength": -2, "justification": "Clearer."}, {"strength": -100, "justification": "Neither."}]
    rows = [
        {**preference(-2), "three_most_similar_preferences": similar, "all_preferences_unprocessed": unprocessed},
        {**preference(3), "three_most_similar_preferences": [], "all_preferences_unprocessed": []},
        {**preference(0, MULTI_TURN), "three_most_similar_preferences": [], "all_preferences_unprocessed": []},
        {**preference(-4), "three_most_similar_preferences": [], "all_preferences_unprocessed": []},
    ]
    for way, result in hub_ingest("helpsteer2", rows, features).items():
        assert [(p["chosen"], p["rejected"], p["margin"], p["tie"]) for p in result.pairs] == [
            ("first", "second", 2.0, False),
            ("second", "first", 3.0, False),
            ("first", "second", 0.0, True),
        ], way
        assert {p["subset"] for p in result.pairs} == {"preference"}, way
        assert result.pairs[2]["prompt"][0] == {"role": "user", "content": "Hi"}, way
        meta = result.meta(0)
        assert meta["three_most_similar_preferences"] == similar, way
        assert meta["all_preferences_unprocessed"] == unprocessed, way
        assert (meta["split"], meta["_derived"]) == ("train", {"chosen_side": "response_1"}), way
        assert [r["reason"] for r in result.rejects] == ["score out of range"], way
