from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

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
