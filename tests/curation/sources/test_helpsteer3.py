from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

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
        ("missing field", "hs3.jsonl:4: 'response2'"),
    ]
