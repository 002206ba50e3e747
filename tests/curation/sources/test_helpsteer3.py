from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.cards import declared_features, source_cards
from tests.conftest import RunIngest, write_jsonl

CONTEXT = [
    {"role": "user", "content": "Translate 'cat'."},
    {"role": "assistant", "content": "Into which language?"},
    {"role": "user", "content": "German."},
]


def hs3(overall: Any, domain: str = "multilingual", language: str = "german", **extra: Any) -> dict[str, Any]:
    return {
        "domain": domain,
        "language": language,
        "context": CONTEXT,
        "response1": "Katze",
        "response2": "Hund",
        "overall_preference": overall,
        "individual_preference": [{"score": overall, "reasoning": "r", "feedback1": "f1", "feedback2": "f2"}],
        **extra,
    }


def test_sign_orients_the_pair_and_zero_ties(tmp_path: Path, run_ingest: RunIngest) -> None:
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist([hs3(-3), hs3(2), hs3(0)]), path)
    result = run_ingest("helpsteer3", path)
    first = result.pairs[0]
    assert first["prompt"] == CONTEXT
    assert [(p["chosen"], p["rejected"], p["margin"], p["tie"]) for p in result.pairs] == [
        ("Katze", "Hund", 3.0, False),
        ("Hund", "Katze", 2.0, False),
        ("Katze", "Hund", 0.0, True),
    ]
    assert (first["subset"], first["language"], first["category"], first["modality"]) == (
        "multilingual",
        "german",
        None,
        "text",
    )
    assert result.meta(1) == {
        "individual_preference": [{"score": 2, "reasoning": "r", "feedback1": "f1", "feedback2": "f2"}],
        "_derived": {"chosen_side": "response2"},
    }
    flipped = run_ingest("helpsteer3", path, options={"negative_means": "response2"})
    assert [(p["chosen"], p["tie"]) for p in flipped.pairs] == [("Hund", False), ("Katze", False), ("Katze", True)]


def test_code_language_is_a_category_and_bad_rows_reject(tmp_path: Path, run_ingest: RunIngest) -> None:
    rows = [
        hs3(1, domain="code", language="python"),
        hs3("much better"),
        hs3(-4),
        {**hs3(1), "context": CONTEXT[:2]},
        {**hs3(1), "response2": None},
        {**hs3(1), "context": [{"from": "human", "value": "Hi"}]},
    ]
    result = run_ingest("helpsteer3", write_jsonl(tmp_path / "hs3.jsonl", rows))
    code, llava = result.pairs
    assert (code["subset"], code["category"], code["language"], code["chosen"]) == ("code", "python", None, "Hund")
    assert llava["prompt"] == [{"role": "user", "content": "Hi"}]
    assert [(r["reason"], r["detail"]) for r in result.rejects] == [
        ("unparsable score", "hs3.jsonl:1: 'overall_preference': 'much better'"),
        ("score out of range", "hs3.jsonl:2: 'overall_preference': -4.0 outside -3..3"),
        ("no user turn", "hs3.jsonl:3: the prompt does not end with a user turn before the answers"),
        ("missing field", "hs3.jsonl:4: 'response2' is null"),
    ]


def test_rows_as_the_hub_serves_them(hub_ingest: Any) -> None:
    """The preference config as declared: `context` and `individual_preference` are lists of records; a negative
    overall preference favours response1 (the card's convention), zero ties."""
    features = declared_features(source_cards()["helpsteer3"], "preference")
    annotators = [{"score": -1, "reasoning": "@Response 1 is slightly better."}, {"score": -3, "reasoning": "Much."}]
    rows = [
        {**hs3(-2), "individual_preference": annotators},
        {**hs3(3, domain="code", language="python"), "individual_preference": []},
        {**hs3(0, domain="general", language="english"), "individual_preference": []},
        {**hs3(1), "context": CONTEXT[:2], "individual_preference": []},
    ]
    for way, result in hub_ingest("helpsteer3", rows, features, config="preference").items():
        pairs = result.pairs
        assert [(p["chosen"], p["rejected"], p["margin"], p["tie"]) for p in pairs] == [
            ("Katze", "Hund", 2.0, False),
            ("Hund", "Katze", 3.0, False),
            ("Katze", "Hund", 0.0, True),
        ], way
        assert pairs[0]["prompt"] == CONTEXT, way
        assert [(p["subset"], p["language"], p["category"]) for p in pairs] == [
            ("multilingual", "german", None),
            ("code", None, "python"),
            ("general", "english", None),
        ], way
        assert result.meta(0) == {"individual_preference": annotators, "_derived": {"chosen_side": "response1"}}, way
        assert [r["reason"] for r in result.rejects] == ["no user turn"], way


def test_feedback_rows_are_not_pairs(hub_ingest: Any) -> None:
    """A feedback-config row (per-response feedback, no overall preference) is rejected, not guessed."""
    features = declared_features(source_cards()["helpsteer3"], "feedback")
    row = {k: v for k, v in hs3(1).items() if k not in ("overall_preference", "individual_preference")}
    row |= {"feedback1": ["The response is mostly helpful."], "feedback2": ["The response is not helpful."]}
    for way, result in hub_ingest("helpsteer3", [row], features, config="feedback").items():
        assert not result.pairs, way
        assert [(r["reason"], r["detail"].split(": ", 1)[1]) for r in result.rejects] == [
            ("missing field", "'overall_preference'")
        ], way
