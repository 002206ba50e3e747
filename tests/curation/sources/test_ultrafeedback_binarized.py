import json
import re
from pathlib import Path
from typing import Any

from curation.cards import declared_features, source_cards
from curation.schema import canonical_text
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


def test_a_score_that_is_no_number_gives_no_margin_and_is_kept(tmp_path: Path, run_ingest: RunIngest) -> None:
    """An "N/A" score in a JSON copy of H4's layout: the pair has no margin and says why in `meta` (a number
    that parses is never kept there: it is the canonical score)."""
    row = {
        "prompt": "Name a prime.",
        "chosen": [{"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "7"}],
        "rejected": [{"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "8"}],
        "score_chosen": "N/A",
        "score_rejected": "2.5",
    }
    result = run_ingest("ultrafeedback_binarized", write_jsonl(tmp_path / "h4.jsonl", [row]))
    pair = result.pairs[0]
    assert (pair["chosen_score"], pair["rejected_score"], pair["margin"]) == (None, 2.5, None)
    assert result.meta(0) == {"score_chosen": "N/A"}
    row["score_chosen"] = 10**400  # an integer too large for a float: no margin either, and kept as it was
    result = run_ingest("ultrafeedback_binarized", write_jsonl(tmp_path / "big.jsonl", [row]))
    assert (result.pairs[0]["chosen_score"], result.pairs[0]["margin"]) == (None, None)
    assert result.meta(0) == {"score_chosen": 10**400}


def test_real_rows_clean_and_label_flip(shared_data: Path, run_ingest: RunIngest) -> None:
    clean = run_ingest("ultrafeedback_binarized", shared_data / UF / "eval_clean.jsonl")
    assert clean.summary.pairs == 200 and clean.summary.ties == 25
    assert [i for i, p in enumerate(clean.pairs) if p["chosen"] == p["rejected"]] == [43]
    # code keeps its indentation (every indented line was flattened to the left edge): row 14's Python among them
    lines = (shared_data / UF / "eval_clean.jsonl").read_text(encoding="utf-8").splitlines()
    indented = [i for i, line in enumerate(lines) if re.search(r"\n[ \t]+\S", json.loads(line)["chosen"])]
    assert len(indented) == 26 and 14 in indented
    assert [i for i, p in enumerate(clean.pairs) if re.search(r"\n[ \t]+\S", p["chosen"])] == indented
    assert "def is_plex_playing():\n    " in clean.pairs[14]["chosen"]

    noisy = run_ingest("ultrafeedback_binarized", shared_data / UF / "label_flip_20.jsonl")
    assert noisy.summary.pairs == 1000 and noisy.summary.ties == 111
    assert [i for i, p in enumerate(noisy.pairs) if p["chosen"] == p["rejected"]] == [306, 655, 910, 997]
    assert [i for i, p in enumerate(noisy.pairs) if not p["chosen"]] == [833]
    assert [i for i, p in enumerate(noisy.pairs) if not p["rejected"]] == [478]
    flipped = [json.loads(p["meta"])["metadata"]["noise"]["selected"] for p in noisy.pairs]
    negative = [p["margin"] < 0 for p in noisy.pairs]
    assert sum(flipped) == 200
    assert sum(n and f for n, f in zip(negative, flipped, strict=True)) == 177 and sum(negative) == 177


def h4_row(flat: dict[str, Any]) -> dict[str, Any]:
    """A flattened local row in H4's layout: the prompt repeated in both message lists, scores beside them."""
    ask = {"role": "user", "content": flat["prompt"]}
    chosen = [ask, {"role": "assistant", "content": flat["chosen"]}]
    return {
        "prompt": flat["prompt"],
        "prompt_id": f"uf-{flat['source_index']}",
        "chosen": chosen,
        "rejected": [ask, {"role": "assistant", "content": flat["rejected"]}],
        "messages": chosen,
        "score_chosen": flat["metadata"]["score_chosen"],
        "score_rejected": flat["metadata"]["score_rejected"],
    }


def test_rows_as_the_hub_serves_them(shared_data: Path, hub_ingest: Any) -> None:
    """Four real pairs (the fourth a tie) in H4's declared layout, and one whose sides differ before the answer;
    the columnar path (message lists) and the row path agree."""
    features = declared_features(source_cards()["ultrafeedback_binarized"])
    lines = (shared_data / UF / "eval_clean.jsonl").read_text(encoding="utf-8").splitlines()
    native = [json.loads(line) for line in lines[:4]]
    broken = h4_row(native[0]) | {
        "rejected": [{"role": "user", "content": "Other"}, {"role": "assistant", "content": "x"}]
    }
    for way, result in hub_ingest("ultrafeedback_binarized", [*map(h4_row, native), broken], features).items():
        assert len(result.pairs) == 4, way
        for flat, pair in zip(native, result.pairs, strict=True):
            assert pair["prompt"] == [{"role": "user", "content": canonical_text(flat["prompt"])}], way
            assert (pair["chosen"], pair["rejected"]) == (
                canonical_text(flat["chosen"]),
                canonical_text(flat["rejected"]),
            ), way
            scores = flat["metadata"]
            assert (pair["chosen_score"], pair["rejected_score"]) == (
                scores["score_chosen"],
                scores["score_rejected"],
            ), way
            assert pair["margin"] == scores["score_chosen"] - scores["score_rejected"], way
            assert pair["tie"] == (scores["score_chosen"] == scores["score_rejected"]), way
        assert [p["tie"] for p in result.pairs] == [False, False, False, True], way
        assert {p["binarization"] for p in result.pairs} == {"best_vs_random"}, way
        assert result.meta(0) == {"prompt_id": f"uf-{native[0]['source_index']}"}, way
        assert [r["reason"] for r in result.rejects] == ["prompt differs between sides"], way
