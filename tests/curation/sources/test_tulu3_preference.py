from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.cards import declared_features, source_cards
from tests.conftest import RunIngest, write_jsonl


def chat(prompt: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def row(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"if-{i}",
        "prompt": f"Write {i} words.",
        "chosen": chat(f"Write {i} words.", "good"),
        "rejected": chat(f"Write {i} words.", "bad"),
        "source": "tulu-3-IF-augmented",
        **extra,
    }


def test_parquet_rows_with_and_without_ratings(tmp_path: Path, run_ingest: RunIngest) -> None:
    rated = row(1, chosen_rating=4.5, rejected_rating=2.0, chosen_model="llama-70b", rejected_model="olmo-7b")
    unrated = row(2, chosen_rating=None, rejected_rating=None, chosen_model=None, rejected_model=None)
    path = tmp_path / "train-00000.parquet"
    pq.write_table(pa.Table.from_pylist([rated, unrated]), path)
    result = run_ingest("tulu3_preference", path)
    first, second = result.pairs
    assert first["prompt"] == [{"role": "user", "content": "Write 1 words."}]
    assert (first["chosen"], first["rejected"]) == ("good", "bad")
    assert (first["chosen_score"], first["rejected_score"], first["margin"], first["tie"]) == (4.5, 2.0, 2.5, False)
    assert (first["chosen_model"], first["rejected_model"]) == ("llama-70b", "olmo-7b")
    assert (first["subset"], first["binarization"], first["license"]) == (
        "tulu-3-IF-augmented",
        "best_vs_random",
        "ODC-BY-1.0",
    )
    assert (second["chosen_score"], second["margin"], second["binarization"]) == (None, None, None)
    assert result.meta(0) == {"id": "if-1"}
    assert {p["modality"] for p in result.pairs} == {"text"}


def test_equal_ratings_tie_and_garbled_ratings_reject(tmp_path: Path, run_ingest: RunIngest) -> None:
    rows = [
        row(1, chosen_rating="3", rejected_rating=3),
        row(2, chosen_rating="N/A", rejected_rating=1),
        row(3, rejected=chat("Other prompt", "bad")),
    ]
    result = run_ingest("tulu3_preference", write_jsonl(tmp_path / "mix.jsonl", rows))
    [tie] = result.pairs
    assert (tie["tie"], tie["margin"], tie["chosen"]) == (True, 0.0, "good")
    assert [(r["source_row"], r["reason"], r["detail"]) for r in result.rejects] == [
        ("mix.jsonl:1", "unparsable score", "mix.jsonl:1: 'chosen_rating': 'N/A'"),
        (
            "mix.jsonl:2",
            "prompt differs between sides",
            "mix.jsonl:2: chosen and rejected do not share the turns before the answer",
        ),
    ]


def test_rows_as_the_hub_serves_them(hub_ingest: Any) -> None:
    """The declared features (no rating or model columns): the pair has no scores; the columnar path and the
    row path agree, rejects included."""
    features = declared_features(source_cards()["tulu3_preference"])
    system = {"role": "system", "content": "Follow the format."}
    multi = [system, *chat("Write 2 words.", "ok"), {"role": "user", "content": "Now 3."}]
    rows = [
        row(1),
        row(2, chosen=[*multi, {"role": "assistant", "content": "one two three"}],
            rejected=[*multi, {"role": "assistant", "content": "one two"}]),
        row(3, rejected=chat("Other prompt", "bad")),
        row(4, chosen=[{"role": "user", "content": "Write 4 words."}], rejected=[{"role": "user", "content": "x"}]),
    ]  # fmt: skip
    for way, result in hub_ingest("tulu3_preference", rows, features).items():
        first, second = result.pairs
        assert first["prompt"] == [{"role": "user", "content": "Write 1 words."}], way
        assert (first["chosen"], first["rejected"], first["subset"]) == ("good", "bad", "tulu-3-IF-augmented"), way
        assert second["prompt"] == multi, way
        assert (second["chosen"], second["rejected"]) == ("one two three", "one two"), way
        assert (first["chosen_score"], first["margin"], first["tie"], first["binarization"]) == (
            None,
            None,
            False,
            None,
        ), way
        assert result.meta(1) == {"id": "if-2"}, way
        assert [r["reason"] for r in result.rejects] == ["prompt differs between sides", "no final answer"], way
