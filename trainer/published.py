"""Published reward-model results (BaseReward, arXiv 2509.16127, Tables 8-10 and Fig. 2 / Table 7), kept as the
project's own reference table so every evaluation can be printed beside them. Values in percent.

VL-RewardBench group columns of the R1-Reward, MM-RLHF-Reward and BaseReward rows follow another grouping than
the official one (case-sensitive id prefixes, as in R1-Reward's scripts): compare `overall` across rows.
"""

from __future__ import annotations

from typing import Any

from trainer.reports import counted

PUBLISHED: dict[str, dict[str, dict[str, float]]] = {
    "mm_rlhf_rewardbench": {
        "GPT-4o (2024-08-06)": {"acc": 58.23, "acc_plus": 26.01},
        "Claude-3.7-Sonnet": {"acc": 82.35, "acc_plus": 65.22},
        "MM-RLHF-Reward-7B": {"acc": 82.00, "acc_plus": 63.00},
        "R1-Reward-7B": {"acc": 80.59, "acc_plus": 54.35},
        "BaseReward (Qwen2.5-VL-7B)": {"acc": 91.76, "acc_plus": 80.43},
        "BaseReward (Ensemble)": {"acc": 92.94, "acc_plus": 80.43},
    },
    "vl_rewardbench": {
        "GPT-4o (08-06)": {"overall": 65.80, "macro": 62.40},
        "Claude-3.7-Sonnet": {"overall": 66.31, "macro": 66.53},
        "IXC-2.5-Reward-7B": {"overall": 65.80, "macro": 70.00},
        "R1-Reward-7B": {"overall": 71.92, "macro": 71.44},
        "BaseReward (Qwen2.5-VL-7B)": {"overall": 82.16, "macro": 80.85},
        "BaseReward (Ensemble)": {"overall": 84.41, "macro": 82.91},
    },
    "multimodal_rewardbench": {
        "GPT-4o": {"overall": 70.8},
        "Claude-3.7-Sonnet": {"overall": 71.9},
        "R1-Reward-7B": {"overall": 82.2},
        "BaseReward (Qwen2.5-VL-7B)": {"overall": 72.8},
        "BaseReward (Ensemble)": {"overall": 73.6},
    },
    "rewardbench": {
        "BaseReward (Qwen2.5-VL-7B, all 7 datasets)": {"overall": 81.8},
        "Qwen2.5-VL-7B alone (Table 7)": {"overall": 80.9},
        "Qwen3-8B text RM, same text data": {"overall": 87.4},
    },
}


# The items each benchmark's published results are over: the whole benchmark (Multimodal RewardBench's exact size
# is not stated beside them).
PUBLISHED_ITEMS: dict[str, int] = {"vl_rewardbench": 1250, "mm_rlhf_rewardbench": 170, "rewardbench": 2985}
LENGTH_JUDGE = "length-only judge (longer wins)"
OVER_SCORED = "over the scored items"
OVER_ALL = "over all items (not scored = wrong)"


def _measured_rows(entry: dict[str, Any], label: str) -> list[dict[str, object]]:
    """The run and the length-only judge, each over the scored items and, where some were not, over all."""
    scored, total = entry["items_scored"], entry["items_total"]
    rows: list[dict[str, object]] = []
    for model, scores in ((label, entry), (LENGTH_JUDGE, entry["length_judge"])):
        if scored == total:
            rows.append({"model": model, "result": "all items scored", "items": str(total),
                         **scores["scores_over_all"]})  # fmt: skip
        else:
            rows.append({"model": model, "result": OVER_SCORED, "items": f"{scored} of {total}",
                         **scores["scores_over_scored"]})  # fmt: skip
            rows.append({"model": model, "result": OVER_ALL, "items": str(total), **scores["scores_over_all"]})
    return rows


def comparison_rows(report: dict[str, Any], benchmark: str, label: str) -> list[dict[str, object]]:
    """A report's rows for one benchmark: the run and the length-only judge on the same items, each with the items
    its scores are over, then the published models, marked as such with their item count where known."""
    entry = report["benchmarks"][benchmark]
    if counted(entry):
        rows = _measured_rows(entry, label)
    else:  # a legacy eval.json: scores without item counts
        rows = [{"model": label, "result": "items not counted", "items": None, **entry}]
        if benchmark in report.get("length_judge", {}):
            rows.append({"model": LENGTH_JUDGE, "result": "items not counted", "items": None,
                         **report["length_judge"][benchmark]})  # fmt: skip
    # Every measured row's metrics: a group no item of which was scored is only in the "over all" row.
    metrics = [k for k in dict.fromkeys(k for row in rows for k in row) if k not in ("model", "result", "items")]
    items = PUBLISHED_ITEMS.get(benchmark)
    for model, published in PUBLISHED.get(benchmark, {}).items():
        rows.append({"model": model, "result": "published", "items": None if items is None else str(items),
                     **{k: published.get(k) for k in metrics}})  # fmt: skip
    return rows


def table_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The columns of a comparison table: every row's keys in first-seen order, without the per-category Acc+ (the
    report has every metric)."""
    return [c for c in dict.fromkeys(k for row in rows for k in row) if not c.endswith("_plus") or c == "acc_plus"]
