from pathlib import Path
from typing import Any

from curation.cards import declared_features, source_cards
from tests.conftest import RunIngest, write_jsonl


def turn(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def test_multi_turn_prompt_is_split_from_the_answers(tmp_path: Path, run_ingest: RunIngest) -> None:
    history = [turn("user", "Hi"), turn("assistant", "Hello."), turn("user", "2+2?")]
    row = {
        "chosen": [*history, turn("assistant", "4")],
        "rejected": [*history, turn("assistant", "5")],
        "source": "magpie_ultra",
        "extra_note": "kept",
    }
    result = run_ingest("skywork_preference", write_jsonl(tmp_path / "sky.jsonl", [row]))
    [pair] = result.pairs
    assert pair["prompt"] == history
    assert (pair["chosen"], pair["rejected"]) == ("4", "5")
    assert (pair["subset"], pair["modality"], pair["tie"], pair["margin"]) == ("magpie_ultra", "text", False, None)
    assert pair["license"] == "Skywork Community License (unverified for data)"
    assert result.meta(0) == {"extra_note": "kept"}


def test_broken_rows_are_rejected(tmp_path: Path, run_ingest: RunIngest) -> None:
    ask = [turn("user", "Q")]
    rows = [
        {"chosen": [*ask, turn("assistant", "a")], "rejected": None, "source": "x"},
        {"chosen": [turn("user", "Q1"), turn("assistant", "a")], "rejected": [*ask, turn("assistant", "b")]},
        {"chosen": [turn("assistant", "a")], "rejected": [turn("assistant", "b")]},
        {"chosen": [*ask, turn("assistant", "a")], "rejected": [*ask, {"from": "gpt", "value": "b"}]},
    ]
    result = run_ingest("skywork_preference", write_jsonl(tmp_path / "sky.jsonl", rows))
    assert [(r["source_row"], r["reason"]) for r in result.rejects] == [
        ("sky.jsonl:0", "missing field"),
        ("sky.jsonl:1", "prompt differs between sides"),
        ("sky.jsonl:2", "no user turn"),
    ]
    assert result.rejects[0]["detail"] == "sky.jsonl:0: 'rejected': expected a message list"
    # LLaVA-style {from, value} turns are read as well.
    assert [(p["chosen"], p["rejected"], p["subset"]) for p in result.pairs] == [("a", "b", None)]


def test_rows_as_the_hub_serves_them(hub_ingest: Any) -> None:
    """The published features (v0.2): message lists of {content, role}; the shared turns are the prompt."""
    features = declared_features(source_cards()["skywork_preference"])
    system, ask = turn("system", "Answer briefly."), turn("user", "2+2?")
    rows: list[dict[str, Any]] = [
        {"chosen": [system, ask, turn("assistant", "4")], "rejected": [system, ask, turn("assistant", "5")]},
        {"chosen": [ask, turn("assistant", "4")], "rejected": [turn("user", "3+3?"), turn("assistant", "6")]},
    ]
    rows[0]["source"], rows[1]["source"] = "helpsteer2", "offsetbias"
    for way, result in hub_ingest("skywork_preference", rows, features).items():
        [pair] = result.pairs
        assert pair["prompt"] == [system, ask], way
        assert (pair["chosen"], pair["rejected"], pair["subset"], pair["margin"]) == ("4", "5", "helpsteer2", None), way
        assert result.meta(0) == {}, way
        assert [r["reason"] for r in result.rejects] == ["prompt differs between sides"], way
