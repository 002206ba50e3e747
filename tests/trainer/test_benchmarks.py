"""Scoring rules on hand-made predictions, and the length-only judge on the real benchmark rows."""

import json
from pathlib import Path

import pytest

from tests.conftest import write_benchmark_images
from trainer.benchmarks import (
    Item,
    average_left_out,
    length_judge,
    mm_rlhf_rewardbench,
    multimodal_rewardbench,
    rewardbench,
    rewardbench_sections,
    vl_rewardbench,
)
from trainer.evaluate import BenchSpec, item_key, read_benchmark


def item(group: str | None, right: bool | None, key: str | None = None) -> Item:
    """right=True: chosen wins; False: rejected wins; None: a tie."""
    chosen = {True: 1.0, False: 0.0, None: 0.5}[right]
    return Item(f"{group}-{key}-{right}", group, key, chosen, 0.5 if right is None else 1.0 - chosen)


def test_ties_and_skipped_items_count_as_wrong() -> None:
    assert item("g", None).tie and not item("g", None).correct
    skipped = Item("x", "general", None, None, None)
    assert vl_rewardbench([item("general", True), skipped]) == {"overall": 50.0, "general": 50.0}


def test_a_benchmark_wide_average_needs_every_group() -> None:
    """Over fewer groups (or sections) than the benchmark has, a macro (or RewardBench overall) is not the
    benchmark's: it is left out, and the report says why, rather than set beside published results."""
    scores = vl_rewardbench([item("hallucination", True), item("hallucination", False)])
    assert scores == {"overall": 50.0, "hallucination": 50.0}
    assert average_left_out("vl_rewardbench", scores) == (
        "no macro score: it averages the 3 groups' accuracies, and these items are of 1 of them"
    )
    chat_only = rewardbench([item("alpacaeval-easy", True), item("llmbar-natural", False)])
    assert chat_only == {"Chat": 100.0, "Chat Hard": 0.0}
    assert average_left_out("rewardbench", chat_only) == (
        "no overall score: it averages the 4 sections' scores, and these items are of 2 of them"
    )
    every = [item(g, True) for g in ("general", "hallucination", "reasoning")]
    assert vl_rewardbench(every)["macro"] == 100.0 and not average_left_out("vl_rewardbench", vl_rewardbench(every))


def test_vl_rewardbench_overall_is_micro_and_macro_the_mean_of_groups() -> None:
    items = (
        [item("general", True)]
        + [item("hallucination", r) for r in (True, True, True, False)]
        + [item("reasoning", False)]
    )
    scores = vl_rewardbench(items)
    assert scores["overall"] == pytest.approx(100 * 4 / 6, abs=0.01)
    assert scores["general"] == 100.0 and scores["hallucination"] == 75.0 and scores["reasoning"] == 0.0
    assert scores["macro"] == pytest.approx((100 + 75 + 0) / 3, abs=0.01)


def test_mm_rlhf_acc_plus_needs_every_pair_of_a_prompt_right() -> None:
    items = [item("mcq", True, "a"), item("mcq", True, "a"), item("mcq", False, "b"), item("mcq", True, "b"),
             item("long", True, "c"), item("long", None, "d")]  # fmt: skip
    scores = mm_rlhf_rewardbench(items)
    assert scores["acc"] == pytest.approx(100 * 4 / 6, abs=0.01)
    assert scores["acc_plus"] == 50.0  # a and c
    assert scores["mcq"] == 75.0 and scores["mcq_plus"] == 50.0
    assert scores["long"] == 50.0 and scores["long_plus"] == 50.0


def test_multimodal_rewardbench_matches_the_example_predictions(shared_data: Path) -> None:
    rows = [
        json.loads(line) for line in (shared_data / "multimodal-rewardbench" / "example.jsonl").read_text().splitlines()
    ]
    items = []
    for row in rows:
        verdict = "A" if "[[A]]" in row["output"] else "B"  # the official parser looks for [[A]] first
        items.append(item(row["Meta"]["Category"], verdict == row["Label"]))
    assert multimodal_rewardbench(items) == {"overall": 50.0, "open_generation/correctness_task": 50.0}


def test_rewardbench_sections_reproduce_a_published_result(shared_data: Path) -> None:
    result = json.loads((shared_data / "rewardbench" / "GPM-Gemma-2B.json").read_text())
    accuracy = {k: v for k, v in result.items() if isinstance(v, float)}
    official = rewardbench_sections(accuracy)
    assert official == {"Chat": 78.49, "Chat Hard": 66.23, "Safety": 83.89, "Reasoning": 80.47, "overall": 77.27}
    true_sizes = rewardbench_sections(accuracy, "true_sizes")
    assert true_sizes["Safety"] == 84.32 and true_sizes["overall"] == 77.38


def test_rewardbench_weights_subsets_not_items() -> None:
    items = [item("alpacaeval-easy", True)] * 3 + [item("mt-bench-easy", False)]
    assert rewardbench(items)["Chat"] == pytest.approx(100 * 100 / 128, abs=0.01)  # weights 100 and 28


def _length_scores(shared_data: Path, tmp_path: Path, name: str, path: str, options: dict) -> dict[str, float]:
    write_benchmark_images(shared_data, tmp_path / "images")
    pairs = read_benchmark(BenchSpec(name, str(shared_data / path), str(tmp_path / "images"), options), tmp_path)
    assert not pairs.rejected_at_ingest
    items = [Item(r["pair_id"], r["subset"], item_key(name, r), None, None) for r in pairs.rows]
    judged = length_judge(items, [len(r["chosen"]) for r in pairs.rows], [len(r["rejected"]) for r in pairs.rows])
    return {"vl_rewardbench": vl_rewardbench, "mm_rlhf_rewardbench": mm_rlhf_rewardbench}[name](judged)


@pytest.mark.parametrize(
    ("grouping", "expected"),
    [
        ("official", {"general": 37.16, "hallucination": 40.32, "reasoning": 51.26, "overall": 42.64, "macro": 42.91}),
        ("r1_reward", {"general": 41.12, "hallucination": 38.17, "reasoning": 51.26, "overall": 42.64, "macro": 43.51}),
    ],
)
def test_length_judge_on_the_real_vl_rewardbench(
    shared_data: Path, tmp_path: Path, grouping: str, expected: dict
) -> None:
    scores = _length_scores(
        shared_data, tmp_path, "vl_rewardbench", "vl-rewardbench/data.jsonl", {"grouping": grouping}
    )
    assert scores == expected


def test_length_judge_on_the_real_mm_rlhf_rewardbench(shared_data: Path, tmp_path: Path) -> None:
    path = "mm-rlhf-rewardbench/mm_reward_bench.jsonl"
    scores = _length_scores(shared_data, tmp_path, "mm_rlhf_rewardbench", path, {})
    assert scores["acc"] == 71.76 and scores["acc_plus"] == 47.83
    assert {k: scores[k] for k in ("mcq", "long", "short", "safety", "video")} == {
        "mcq": 73.81, "long": 81.08, "short": 50.0, "safety": 65.62, "video": 92.0}  # fmt: skip
