"""The pieces of `bench.noise_audit` that decide its numbers: the controlled set, the flips, ROC-AUC."""

from __future__ import annotations

from pathlib import Path

from bench.noise_audit import auroc, clip, relevance_rows, ultrafeedback_rows


def test_relevance_pairs_answer_their_prompt_or_another(shared_data: Path) -> None:
    path = shared_data / "ultrafeedback-binarized" / "label_flip_20.jsonl"
    rows, flipped = relevance_rows(path, 200, 0, 0.2)
    again, flipped_again = relevance_rows(path, 200, 0, 0.2)
    assert rows == again and flipped == flipped_again  # seeded: the same set every time
    assert 0.15 < len(flipped) / len(rows) < 0.25
    answers = {r["source_index"]: (r["rejected"] if r["source_index"] in flipped else r["chosen"]) for r in rows}
    for row in rows:
        own = answers[row["source_index"]]
        other = row["chosen"] if row["source_index"] in flipped else row["rejected"]
        assert other != own and other in answers.values()  # the rejected side answers another prompt
        assert len(row["prompt"]) <= 200 and len(own) <= 200


def test_real_flips_are_the_selected_untied_rows(shared_data: Path) -> None:
    noisy, flipped, held_out = ultrafeedback_rows(300)
    assert len(noisy) == 1000 and len(flipped) == 177  # 200 flipped, 23 of them ties
    assert all("metadata" not in row for row in noisy)  # no score gives a flip away
    assert len(held_out) == 200 - 25  # eval_clean without its 25 ties (its identical pair, row 43, is one)


def test_auroc_counts_ties_half() -> None:
    assert auroc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert auroc([0.1, 0.8, 0.9], [True, True, False]) == 0.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    assert auroc([0.3], [True]) is None
    assert clip("one two three", 9) == "one two" and clip("short", 9) == "short"
