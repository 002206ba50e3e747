"""`trainer eval` end to end with tiny models on the real MM-RLHF-RewardBench rows (generated images)."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import write_benchmark_images
from trainer.cli import app
from trainer.config import FitConfig
from trainer.fit import fit
from trainer.published import comparison_rows


@pytest.fixture(scope="module")
def two_runs(demo_build: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("eval-runs")
    for seed, name in ((0, "a"), (1, "b")):
        fit(FitConfig(model="tiny", shards=[str(demo_build)], seed=seed, lr=2e-3, global_batch=8, micro_batch=4,
                      eval_fraction=0.2, max_steps=2), root / name)  # fmt: skip
    return root / "a", root / "b"


def run_eval(shared_data: Path, tmp_path: Path, models: list[Path], out: Path | None) -> dict:
    write_benchmark_images(shared_data, tmp_path / "images")
    bench = shared_data / "mm-rlhf-rewardbench" / "mm_reward_bench.jsonl"
    args = [
        "eval",
        "--bench",
        f"mm_rlhf_rewardbench={bench}",
        "--images-root",
        f"mm_rlhf_rewardbench={tmp_path / 'images'}",
    ]
    for model in models:
        args += ["--model", str(model)]
    if out is not None:
        args += ["--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "length-only judge" in result.output and "BaseReward" in result.output
    return json.loads((out or models[0] / "eval.json").read_text())


def test_eval_scores_every_item_videos_included(shared_data: Path, tmp_path: Path, two_runs: tuple[Path, Path]) -> None:
    report = run_eval(shared_data, tmp_path, [two_runs[0]], None)  # one run: RUN/eval.json
    items = report["items"]["mm_rlhf_rewardbench"]
    assert len(items) == 170
    video = [i for i in items if i["group"] == "video"]
    assert len(video) == 25 and all(i["reward_chosen"] is not None for i in video)  # through the video input
    skipped = sum(report["skipped"]["mm_rlhf_rewardbench"].values())
    assert sum(i["reward_chosen"] is None for i in items) == skipped  # unscored items stay, counted wrong
    scores = report["benchmarks"]["mm_rlhf_rewardbench"]
    assert scores["video"] == round(100 * sum(i["correct"] for i in video) / 25, 2)
    assert scores["acc"] == round(100 * sum(i["correct"] for i in items) / 170, 2)
    assert report["length_judge"]["mm_rlhf_rewardbench"]["acc"] == 71.76  # the same items, judged by length
    rows = comparison_rows(report, "mm_rlhf_rewardbench", "run")
    assert [r["model"] for r in rows[:2]] == ["run", "length-only judge (longer wins)"]


def test_ensemble_averages_the_models_rewards(shared_data: Path, tmp_path: Path, two_runs: tuple[Path, Path]) -> None:
    a = run_eval(shared_data, tmp_path, [two_runs[0]], tmp_path / "a.json")["items"]["mm_rlhf_rewardbench"]
    b = run_eval(shared_data, tmp_path, [two_runs[1]], tmp_path / "b.json")["items"]["mm_rlhf_rewardbench"]
    both = run_eval(shared_data, tmp_path, list(two_runs), tmp_path / "ab.json")["items"]["mm_rlhf_rewardbench"]
    scored = [k for k, item in enumerate(both) if item["reward_chosen"] is not None]
    assert len(scored) >= 160
    for k in scored:
        assert both[k]["reward_chosen"] == pytest.approx((a[k]["reward_chosen"] + b[k]["reward_chosen"]) / 2, abs=1e-6)
    assert a != b


def test_eval_errors_are_clear(tmp_path: Path, two_runs: tuple[Path, Path]) -> None:
    result = CliRunner().invoke(app, ["eval", "--model", str(two_runs[0]), "--bench", "nope=x"])
    assert result.exit_code == 1 and "unknown benchmark 'nope'" in result.output
    result = CliRunner().invoke(app, ["eval", "--model", str(tmp_path), "--bench", "rewardbench"])
    assert result.exit_code != 0 and "--out" in result.output
