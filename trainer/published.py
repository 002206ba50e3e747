"""Published reward-model results (BaseReward, arXiv 2509.16127, Tables 8-10 and Fig. 2 / Table 7), kept as the
project's own reference table so every evaluation can be printed beside them. Values in percent.

VL-RewardBench group columns of the R1-Reward, MM-RLHF-Reward and BaseReward rows follow another grouping than
the official one (case-sensitive id prefixes, as in R1-Reward's scripts): compare `overall` across rows.
"""

from __future__ import annotations

from typing import Any

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


def reference_rows(benchmark: str, results: dict[str, float], run_label: str) -> list[dict[str, object]]:
    """One row per model (the run first) with the metrics the run reports, for a side-by-side table."""
    rows: list[dict[str, object]] = [{"model": run_label, **results}]
    for model, metrics in PUBLISHED.get(benchmark, {}).items():
        rows.append({"model": model, **{k: metrics.get(k) for k in results}})
    return rows


def comparison_rows(report: dict[str, Any], benchmark: str, label: str) -> list[dict[str, object]]:
    """An `eval.json` report's rows for one benchmark: the run, the length-only judge on the same items (when the
    report has it), then the published models."""
    rows = reference_rows(benchmark, report["benchmarks"][benchmark], label)
    if benchmark in report.get("length_judge", {}):
        rows.insert(1, {"model": "length-only judge (longer wins)", **report["length_judge"][benchmark]})
    return rows
