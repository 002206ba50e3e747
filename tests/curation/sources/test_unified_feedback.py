from pathlib import Path
from typing import Any

from curation.cards import declared_features, source_cards
from curation.sources import get_adapter
from curation.sources.base import ReadOptions
from tests.conftest import RunIngest, write_jsonl

PROMPT = [{"role": "user", "content": "Summarize: the cat sat."}]


def uf(rating_a: Any, rating_b: Any, answer_b: str = "Dog.", **extra: Any) -> dict[str, Any]:
    return {
        "id": "uf-1",
        "conv_A": [*PROMPT, {"role": "assistant", "content": "A cat sat."}],
        "conv_B": [*PROMPT, {"role": "assistant", "content": answer_b}],
        "conv_A_rating": rating_a,
        "conv_B_rating": rating_b,
        "num_turns": 1,
        "source": "summarize_from_feedback",
        **extra,
    }


def test_higher_rating_is_chosen_and_equal_is_a_tie(tmp_path: Path, run_ingest: RunIngest) -> None:
    rows = [uf(1.0, 0.0), uf(2, "7.5"), uf(3.0, 3.0)]
    result = run_ingest("unified_feedback", write_jsonl(tmp_path / "uf.jsonl", rows))
    a_wins, b_wins, tie = result.pairs
    assert a_wins["prompt"] == PROMPT
    assert (a_wins["chosen"], a_wins["rejected"], a_wins["margin"]) == ("A cat sat.", "Dog.", 1.0)
    assert (b_wins["chosen"], b_wins["rejected"]) == ("Dog.", "A cat sat.")
    assert (b_wins["chosen_score"], b_wins["rejected_score"], b_wins["margin"]) == (7.5, 2.0, 5.5)
    assert (tie["chosen"], tie["tie"], tie["margin"]) == ("A cat sat.", True, 0.0)
    assert (a_wins["subset"], a_wins["modality"], a_wins["license"]) == ("summarize_from_feedback", "text", "MIT")
    assert result.meta(1) == {"id": "uf-1", "_derived": {"chosen_side": "conv_B"}}


def test_broken_rows_are_rejected(tmp_path: Path, run_ingest: RunIngest) -> None:
    other = [{"role": "user", "content": "Something else"}, {"role": "assistant", "content": "x"}]
    rows = [
        uf(1, None),
        uf(1, "N/A"),
        uf(1, 0, conv_B=other),
        uf(1, 0, conv_A=None),
    ]
    result = run_ingest("unified_feedback", write_jsonl(tmp_path / "uf.jsonl", rows))
    assert [(r["reason"], r["detail"]) for r in result.rejects] == [
        ("missing field", "uf.jsonl:0: 'conv_B_rating' is null"),
        ("unparsable score", "uf.jsonl:1: 'conv_B_rating': 'N/A'"),
        ("prompt differs between sides", "uf.jsonl:2: conv_A and conv_B do not share the turns before the answer"),
        ("missing field", "uf.jsonl:3: 'conv_A': expected a message list"),
    ]


def test_hub_config_defaults_to_all() -> None:
    adapter = get_adapter("unified_feedback")
    assert adapter().read.config == "all"
    assert adapter(read=ReadOptions(config="Nectar", split="val")).read == ReadOptions(config="Nectar", split="val")


def test_rows_as_the_hub_serves_them(hub_ingest: Any) -> None:
    """The published features of the Nectar config (float32 ratings, int32 turns), read as that config."""
    features = declared_features(source_cards()["unified_feedback"], "Nectar")
    other = [{"role": "user", "content": "Something else"}, {"role": "assistant", "content": "x"}]
    rows = [uf(1.5, 0.25, source="nectar"), uf(2.0, 7.25), uf(3.0, 3.0), uf(1.0, 0.0, conv_B=other)]
    for way, result in hub_ingest("unified_feedback", rows, features, config="Nectar").items():
        a_wins, b_wins, tie = result.pairs
        assert a_wins["prompt"] == PROMPT, way
        assert (a_wins["chosen"], a_wins["rejected"], a_wins["margin"]) == ("A cat sat.", "Dog.", 1.25), way
        assert (b_wins["chosen"], b_wins["chosen_score"], b_wins["rejected_score"]) == ("Dog.", 7.25, 2.0), way
        assert (tie["tie"], tie["margin"], tie["chosen"]) == (True, 0.0, "A cat sat."), way
        assert [p["subset"] for p in result.pairs] == ["nectar", "summarize_from_feedback", "summarize_from_feedback"]
        assert result.meta(1) == {"id": "uf-1", "_derived": {"chosen_side": "conv_B"}}, way
        assert [r["reason"] for r in result.rejects] == ["prompt differs between sides"], way
