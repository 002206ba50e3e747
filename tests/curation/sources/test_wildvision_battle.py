import hashlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.cards import declared_features, source_cards
from tests.conftest import RunIngest, image_bytes


def conversation(*turns: str) -> list[dict[str, str]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]


def battle(winner: str, a: list[str], b: list[str], seed: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "question_id": f"q{seed}",
        "model_a": "gpt-4v",
        "model_b": "llava-13b",
        "conversation_a": conversation(*a),
        "conversation_b": conversation(*b),
        "language": "English",
        "image": {"bytes": image_bytes(seed), "path": None},
        "turn": (len(a) + 1) // 2,
        "anony": True,
        "winner": winner,
        "tstamp": 1700000000 + seed,
        "judge": f"arena_user_{seed}",
        "domain": "OCR",
        **extra,
    }


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_winner_orientation_ties_and_mapped_fields(tmp_path: Path, run_ingest: RunIngest) -> None:
    rows = [
        battle("model_b", ["Read the sign.", "It says STOP?"], ["Read the sign.", "It says EXIT."], seed=1),
        battle("tie (bothbad)", ["What is it?", "A cat."], ["What is it?", "A dog."], seed=2),
        battle("model_a", ["Count.", "3"], ["Count.", "4"], seed=3, language="German"),
    ]
    result = run_ingest("wildvision_battle", write_parquet(tmp_path / "battle.parquet", rows))
    assert not result.rejects
    b_wins, tie, a_wins = result.pairs
    assert (b_wins["chosen"], b_wins["rejected"]) == ("It says EXIT.", "It says STOP?")
    assert (b_wins["chosen_model"], b_wins["rejected_model"], b_wins["tie"]) == ("llava-13b", "gpt-4v", False)
    assert b_wins["prompt"] == [{"role": "user", "content": "<image>\nRead the sign."}]
    assert (b_wins["modality"], b_wins["language"], b_wins["category"]) == ("image", "English", "OCR")
    assert result.meta(0) == {
        "question_id": "q1",
        "turn": 1,
        "anony": True,
        "winner": "model_b",
        "tstamp": 1700000001,
        "judge": "arena_user_1",
    }
    assert (tie["chosen"], tie["rejected"], tie["tie"], tie["chosen_model"]) == ("A cat.", "A dog.", True, "gpt-4v")
    assert result.meta(1)["winner"] == "tie (bothbad)"
    assert (a_wins["chosen"], a_wins["chosen_model"], a_wins["language"]) == ("3", "gpt-4v", "German")


def test_multi_turn_battles(tmp_path: Path, run_ingest: RunIngest) -> None:
    a = ["Describe.", "A street.", "More?", "Cars and people."]
    b = ["Describe.", "A road at night.", "Colours?", "Mostly blue."]
    path = write_parquet(tmp_path / "battle.parquet", [battle("model_a", a, b, seed=4)])
    default = run_ingest("wildvision_battle", path)
    assert [(r["reason"], r["detail"]) for r in default.rejects] == [
        ("multi-turn battle", "battle.parquet:0: turn 2: the vote judged whole conversations")
    ]
    first = run_ingest("wildvision_battle", path, options={"multi_turn": "first_turn"})
    pair = first.pairs[0]
    assert (pair["chosen"], pair["rejected"]) == ("A street.", "A road at night.")
    assert pair["prompt"] == [{"role": "user", "content": "<image>\nDescribe."}]
    meta = first.meta(0)
    assert meta["conversation_a"][3]["content"] == "Cars and people." and meta["_derived"] == {"first_turn_of": 2}


def test_rejects(tmp_path: Path, run_ingest: RunIngest) -> None:
    rows = [
        battle("", ["Q", "a"], ["Q", "b"], seed=1),
        battle("leftvote?", ["Q", "a"], ["Q", "b"], seed=2),
        battle("model_a", ["Q", "a"], ["Other Q", "b"], seed=3),
        battle("model_a", ["Q", "a"], ["Q"], seed=4),
        {**battle("model_b", ["Q", "a"], ["Q", "b"], seed=5), "image": {"bytes": None, "path": "lost.jpg"}},
    ]
    result = run_ingest("wildvision_battle", write_parquet(tmp_path / "battle.parquet", rows))
    assert [r["reason"] for r in result.rejects] == [
        "undetermined preference",
        "undetermined preference",
        "prompt differs between sides",
        "no final answer",
        "image not found",
    ]
    assert result.rejects[1]["detail"] == "battle.parquet:1: 'winner': 'leftvote?'"


def test_rows_as_the_hub_serves_them(hub_ingest: Any) -> None:
    """The card's (reconstructed) features: conversations are a `list` of {role, content} structs, served as lists
    of records; the image is the `Image` feature's {bytes, path}; no `domain` column, so no category."""
    features = declared_features(source_cards()["wildvision_battle"])
    rows = [
        battle("model_b", ["Read the sign.", "It says STOP?"], ["Read the sign.", "It says EXIT."], seed=1),
        battle("tie (bothbad)", ["What is it?", "A cat."], ["What is it?", "A dog."], seed=2),
        battle("model_a", ["Count.", "3"], ["Count.", "4"], seed=3, language="German"),
        battle("tie", ["Colour?", "Red."], ["Colour?", "Crimson."], seed=4),
        battle(
            "model_a", ["Describe.", "A street.", "More?", "Cars."], ["Describe.", "A road.", "More?", "Trees."], seed=5
        ),
        battle("leftvote?", ["Q", "a"], ["Q", "b"], seed=6),
    ]
    for row in rows:
        del row["domain"]  # not a declared feature
    for way, result in hub_ingest("wildvision_battle", rows, features).items():
        b_wins, bothbad, a_wins, tie = result.pairs
        assert (b_wins["chosen"], b_wins["rejected"]) == ("It says EXIT.", "It says STOP?"), way
        assert (b_wins["chosen_model"], b_wins["rejected_model"], b_wins["tie"]) == ("llava-13b", "gpt-4v", False), way
        assert b_wins["prompt"] == [{"role": "user", "content": "<image>\nRead the sign."}], way
        assert (b_wins["language"], b_wins["category"], b_wins["modality"]) == ("English", None, "image"), way
        assert b_wins["images"] == [hashlib.sha256(image_bytes(1)).hexdigest()], way
        assert (bothbad["chosen"], bothbad["tie"], bothbad["chosen_model"]) == ("A cat.", True, "gpt-4v"), way
        assert result.meta(1)["winner"] == "tie (bothbad)", way
        assert (a_wins["chosen"], a_wins["rejected"], a_wins["language"]) == ("3", "4", "German"), way
        assert (tie["chosen"], tie["rejected"], tie["tie"]) == ("Red.", "Crimson.", True), way
        assert [r["reason"] for r in result.rejects] == ["multi-turn battle", "undetermined preference"], way
