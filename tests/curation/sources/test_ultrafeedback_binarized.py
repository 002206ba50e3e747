import json
from pathlib import Path

from tests.conftest import RunIngest, write_jsonl

UF = "ultrafeedback-binarized"


def test_h4_message_lists(tmp_path: Path, run_ingest: RunIngest) -> None:
    row = {
        "prompt": "Name a prime.",
        "prompt_id": "abc",
        "chosen": [{"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "7"}],
        "rejected": [{"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "8"}],
        "messages": [],
        "score_chosen": 9.0,
        "score_rejected": "2.5",
    }
    other_prompt = {**row, "rejected": [{"role": "user", "content": "Other"}, {"role": "assistant", "content": "8"}]}
    result = run_ingest("ultrafeedback_binarized", write_jsonl(tmp_path / "h4.jsonl", [row, other_prompt]))
    pair = result.pairs[0]
    assert pair["prompt"] == [{"role": "user", "content": "Name a prime."}]
    assert (pair["chosen"], pair["rejected"], pair["margin"]) == ("7", "8", 6.5)
    assert pair["binarization"] == "best_vs_random"
    assert result.meta(0) == {"prompt_id": "abc"}
    assert [r["reason"] for r in result.rejects] == ["prompt differs between sides"]


def test_real_rows_clean_and_label_flip(shared_data: Path, run_ingest: RunIngest) -> None:
    clean = run_ingest("ultrafeedback_binarized", shared_data / UF / "eval_clean.jsonl")
    assert clean.summary.pairs == 200 and clean.summary.ties == 25
    assert [i for i, p in enumerate(clean.pairs) if p["chosen"] == p["rejected"]] == [43]

    noisy = run_ingest("ultrafeedback_binarized", shared_data / UF / "label_flip_20.jsonl")
    assert noisy.summary.pairs == 1000 and noisy.summary.ties == 111
    assert [i for i, p in enumerate(noisy.pairs) if p["chosen"] == p["rejected"]] == [306, 655, 910, 997]
    assert [i for i, p in enumerate(noisy.pairs) if not p["chosen"]] == [833]
    assert [i for i, p in enumerate(noisy.pairs) if not p["rejected"]] == [478]
    flipped = [json.loads(p["meta"])["metadata"]["noise"]["selected"] for p in noisy.pairs]
    negative = [p["margin"] < 0 for p in noisy.pairs]
    assert sum(flipped) == 200
    assert sum(n and f for n, f in zip(negative, flipped, strict=True)) == 177 and sum(negative) == 177
