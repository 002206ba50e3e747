"""`trainer eval` end to end with tiny models on the real MM-RLHF-RewardBench rows (generated images)."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import HUB_COMMIT, FakeHub, write_benchmark_images
from trainer.cli import app
from trainer.config import FitConfig
from trainer.fit import fit
from trainer.published import comparison_rows
from trainer.reports import report_names


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
    if out is None:  # one run: its newest report, RUN/evals/<time>-<benchmarks>.json
        return json.loads((models[0] / report_names(models[0])[-1]).read_text())
    (report,) = out.glob("*.json")
    return json.loads(report.read_text())


def test_eval_scores_every_item_videos_included(shared_data: Path, tmp_path: Path, two_runs: tuple[Path, Path]) -> None:
    report = run_eval(shared_data, tmp_path, [two_runs[0]], None)
    entry = report["benchmarks"]["mm_rlhf_rewardbench"]
    items = entry["items"]
    assert len(items) == 170 == entry["items_total"]
    video = [i for i in items if i["group"] == "video"]
    assert len(video) == 25 and all(i["reward_chosen"] is not None for i in video)  # through the video input
    skipped = sum(entry["not_scored"].values())
    assert sum(i["reward_chosen"] is None for i in items) == skipped == 170 - entry["items_scored"]
    scores = entry["scores_over_all"]  # unscored items stay, counted wrong
    assert scores["video"] == round(100 * sum(i["correct"] for i in video) / 25, 2)
    assert scores["acc"] == round(100 * sum(i["correct"] for i in items) / 170, 2)
    # the length judge on the model's terms: an item the model did not score is wrong for the judge too
    judged = sum(i["length_judge_correct"] and i["not_scored"] is None for i in items)
    assert entry["length_judge"]["scores_over_all"]["acc"] == round(100 * judged / 170, 2) < 71.76
    rows = comparison_rows(report, "mm_rlhf_rewardbench", "run")
    assert {"run", "length-only judge (longer wins)"} == {r["model"] for r in rows if r["result"] != "published"}


def test_ensemble_averages_the_models_rewards(shared_data: Path, tmp_path: Path, two_runs: tuple[Path, Path]) -> None:
    bench = "mm_rlhf_rewardbench"
    # Every 20th item (9, one of them a video): the rule is the same for every item, and each costs forward passes.
    data = tmp_path / "data"
    rows = (shared_data / "mm-rlhf-rewardbench" / "mm_reward_bench.jsonl").read_text().splitlines()[::20]
    (data / "mm-rlhf-rewardbench").mkdir(parents=True)
    (data / "mm-rlhf-rewardbench" / "mm_reward_bench.jsonl").write_text("\n".join(rows) + "\n")
    (data / "vl-rewardbench").symlink_to(shared_data / "vl-rewardbench")  # write_benchmark_images reads it too
    a = run_eval(data, tmp_path, [two_runs[0]], tmp_path / "a")["benchmarks"][bench]["items"]
    b = run_eval(data, tmp_path, [two_runs[1]], tmp_path / "b")["benchmarks"][bench]["items"]
    both = run_eval(data, tmp_path, list(two_runs), tmp_path / "ab")["benchmarks"][bench]["items"]
    scored = [k for k, item in enumerate(both) if item["reward_chosen"] is not None]
    assert len(both) == len(rows) == 9 and sum(i["group"] == "video" for i in both) == 1
    assert len(scored) >= 8
    for k in scored:
        assert both[k]["reward_chosen"] == pytest.approx((a[k]["reward_chosen"] + b[k]["reward_chosen"]) / 2, abs=1e-6)
    assert a != b


def test_eval_errors_are_clear(tmp_path: Path, two_runs: tuple[Path, Path]) -> None:
    result = CliRunner().invoke(app, ["eval", "--model", str(two_runs[0]), "--bench", "nope=x"])
    assert result.exit_code == 1 and "unknown benchmark 'nope'" in result.output
    ensemble = ["--model", str(two_runs[0]), "--model", str(two_runs[1])]  # two runs: which one's folder?
    result = CliRunner().invoke(app, ["eval", *ensemble, "--bench", "rewardbench"])
    assert result.exit_code == 1 and "--out is required unless --model is one run folder" in result.output


def test_a_misspelled_benchmark_gets_the_close_name() -> None:
    from trainer.evaluate import BenchSpec

    with pytest.raises(
        ValueError, match="unknown benchmark 'vl_reward_bench'; did you mean 'vl_rewardbench'\\? known: "
    ):
        BenchSpec.parse("vl_reward_bench=x.jsonl", {})
    with pytest.raises(ValueError, match="unknown benchmark 'nope'; known: vl_rewardbench, "):
        BenchSpec.parse("nope", {})


def test_a_hub_benchmark_is_read_at_one_commit_that_the_report_names(
    two_runs: tuple[Path, Path], fake_hub: FakeHub
) -> None:
    """`--bench rewardbench` reads its Hub id at the commit its default branch names when the evaluation starts,
    and the report says which, beside the location."""
    fake_hub.rows = [{"prompt": f"{i}+{i}?", "chosen": str(2 * i), "rejected": str(2 * i + 1), "subset": "math-prm",
                      "id": i, "chosen_model": "a", "rejected_model": "b"} for i in range(4)]  # fmt: skip
    result = CliRunner().invoke(app, ["eval", "--bench", "rewardbench", "--model", str(two_runs[0])])
    assert result.exit_code == 0, result.output
    assert fake_hub.asked == [("allenai/reward-bench", HUB_COMMIT)]
    entry = json.loads((two_runs[0] / report_names(two_runs[0])[-1]).read_text())["benchmarks"]["rewardbench"]
    assert (entry["location"], entry["commit"], entry["items_total"]) == ("allenai/reward-bench", HUB_COMMIT, 4)


def test_a_scoring_option_outside_its_choices_is_refused(two_runs: tuple[Path, Path]) -> None:
    """It used to be scored with the official weights and recorded in the report as given."""
    for flag, value in (("--xstest-weights", "bogus"), ("--vl-grouping", "mine")):
        result = CliRunner().invoke(app, ["eval", "--bench", "rewardbench", "--model", str(two_runs[0]), flag, value])
        assert result.exit_code == 1 and f"{flag} {value!r}: expected" in result.output


def test_an_item_whose_answers_are_identical_is_not_scored(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    """Its two rewards differ by rounding only: counted as not scored, never as right or wrong."""
    rows = [{"prompt": f"{i}+{i}?", "chosen": str(2 * i), "rejected": str(2 * i + 1), "subset": "math-prm", "id": i}
            for i in range(3)] + [{"prompt": "Same?", "chosen": "Yes.", "rejected": "Yes.", "subset": "math-prm",
                                   "id": 3}]  # fmt: skip
    bench = tmp_path / "rewardbench.jsonl"
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(app, ["eval", "--bench", f"rewardbench={bench}", "--model", str(two_runs[0])])
    assert result.exit_code == 0, result.output
    entry = json.loads((two_runs[0] / report_names(two_runs[0])[-1]).read_text())["benchmarks"]["rewardbench"]
    assert (entry["items_scored"], entry["items_total"], entry["not_scored"]) == (3, 4, {"identical answers": 1})
