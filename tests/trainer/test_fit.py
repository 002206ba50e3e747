import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import trainer.fit as fit_module
from curation.build_dir import BuildDir, BuildError
from curation.errors import InputError
from curation.io import sha256_file
from tests.conftest import write_image
from trainer.cli import app
from trainer.config import FitConfig, load_config
from trainer.data import SKIP_TOO_LONG
from trainer.fit import Trainer, TrainingError, fit
from trainer.model import RewardModel

ROOT = Path(__file__).resolve().parents[2]


def config(build: Path, **changes: object) -> FitConfig:
    settings = {"model": "tiny", "shards": [str(build)], "lr": 2e-3, "global_batch": 8, "micro_batch": 4,
                "eval_fraction": 0.2, "max_length": 512, "warmup_ratio": 0.0}  # fmt: skip
    return FitConfig(**{**settings, **changes})  # type: ignore[arg-type]


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_tiny_model_loss_falls_on_a_small_build(demo_build: Path, tmp_path: Path) -> None:
    last = fit(config(demo_build, epochs=4), tmp_path / "run")  # mean loss 0.68 in the first epoch, 0.3 last
    curve = losses(tmp_path / "run")
    per_epoch = len(curve) // 4
    assert sum(curve[-per_epoch:]) / per_epoch < sum(curve[:per_epoch]) / per_epoch - 0.1
    assert last["accuracy"] > 0.7
    assert {
        "eval/loss",
        "eval/accuracy",
        "rewards/chosen",
        "rewards/rejected",
        "margin",
        "lr",
        "pairs/s",
        "tokens/s",
    } <= set(last)
    report = json.loads((tmp_path / "run" / "data.json").read_text())
    assert report["skipped_train_draws"] == {} and report["skipped_eval"] == {}  # videos included
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_every_draw_is_trained_once_an_epoch(demo_build: Path, tmp_path: Path) -> None:
    """The last step of an epoch takes the draws left over, fewer than a global batch, rather than dropping them."""
    fit(config(demo_build, global_batch=6, micro_batch=3, epochs=2), tmp_path / "run")
    report = json.loads((tmp_path / "run" / "data.json").read_text())
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = -(-report["train_draws"] // 6)
    assert report["train_draws"] % 6 and len(records) == 2 * steps  # the demo's draws leave a partial batch
    assert sum(r["pairs"] for r in records[:steps]) == report["train_draws"] == sum(r["pairs"] for r in records[steps:])
    assert [r["epoch"] for r in records][steps - 1 :: steps] == [1.0, 2.0]
    assert report["draws_reached"] == 2 * report["train_draws"]


def test_resume_repeats_the_uninterrupted_run_exactly(
    demo_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = config(demo_build, epochs=2, save_every=2, eval_every=3, max_length=150)  # some pairs skipped
    fit(settings, tmp_path / "whole")

    real_step = Trainer._train_step

    def crash_at_step_4(self: Trainer, step: int, batches: list) -> dict[str, float]:
        if step == 4:
            raise KeyboardInterrupt  # killed after the checkpoint of step 4 was written
        return real_step(self, step, batches)

    monkeypatch.setattr(Trainer, "_train_step", crash_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        fit(settings, tmp_path / "resumed")
    monkeypatch.setattr(Trainer, "_train_step", real_step)
    assert (tmp_path / "resumed" / "checkpoints" / "step-000004").is_dir()
    with (tmp_path / "resumed" / "metrics.jsonl").open("ab") as log:
        log.write(b'{"step": 5, "loss": \xff\xfe\n{"step": 6')  # damaged bytes and a cut line past the checkpoint
    fit(settings, tmp_path / "resumed", resume=True)

    whole = (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()
    resumed = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    drop = ("pairs/s", "tokens/s")
    strip = lambda lines: [{k: v for k, v in json.loads(x).items() if k not in drop} for x in lines]  # noqa: E731
    assert strip(whole) == strip(resumed)
    a = load_file(str(tmp_path / "whole" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    reports = [json.loads((tmp_path / run / "data.json").read_text()) for run in ("whole", "resumed")]
    assert reports[0] == reports[1] and reports[0]["skipped_train_draws"][SKIP_TOO_LONG] > 0
    # how the steps ran: one stretch per start, each as it ran (on CPU: no bf16 autocast, nothing compiled)
    trained = [json.loads((tmp_path / run / "model" / "reward_model.json").read_text())["trained"]
               for run in ("whole", "resumed")]  # fmt: skip
    steps = reports[0]["steps"]
    assert [[stretch.pop("steps") for stretch in run] for run in trained] == [[[0, steps]], [[0, 4], [4, steps]]]
    if not torch.cuda.is_available():
        how = {"device": "cpu", "processes": 1, "dtype": "float32", "compiled": False}
        assert trained == [[how], [how, how]]
    # Resumed again at its end: nothing trained, and no stretch of no steps recorded.
    before = (tmp_path / "resumed" / "model" / "reward_model.json").read_text()
    fit(settings, tmp_path / "resumed", resume=True)
    again = json.loads((tmp_path / "resumed" / "model" / "reward_model.json").read_text())["trained"]
    assert again == json.loads(before)["trained"]


def _fit_interrupted_at_step(step: int, args: list[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """`trainer fit ARGS` with Ctrl-C pressed as step `step` (0-based) starts; the steps train normally after."""
    real_step = Trainer._train_step

    def interrupted(self: Trainer, at: int, batches: list) -> dict[str, float]:
        if at == step:
            raise KeyboardInterrupt
        return real_step(self, at, batches)

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_train_step", interrupted)
        return CliRunner().invoke(app, args)


def test_the_cli_says_where_a_resumed_run_picks_up_and_why_nothing_is_held_out(
    demo_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    args = ["fit", "--shards", str(demo_build), "--out", str(run), "--model", "tiny", "--global-batch", "8",
            "--micro-batch", "4", "--max-steps", "3", "--set", "save_every=1"]  # fmt: skip
    interrupted = _fit_interrupted_at_step(2, args, monkeypatch)
    assert interrupted.exit_code == 130
    assert interrupted.stderr.endswith(
        f"interrupted: {run} keeps its checkpoints up to step-000002: --resume continues from there\n"
    )
    # a checkpoint of an earlier version, whose epochs dropped their last partial step, is another step plan
    saved = _as_written_before_digests(run / "checkpoints" / "step-000002", "steps_per_epoch")
    older = CliRunner().invoke(app, [*args, "--resume"])
    assert older.exit_code == 1 and "changed settings: steps per epoch (5 in the checkpoint, 6 now)" in older.stderr
    saved()
    resumed = CliRunner().invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming {run} at step 2 of 3" in resumed.stderr
    # the default eval_fraction (0.02) holds none of the demo's prompts out: the summary says so
    prompts = len(set(BuildDir.open(demo_build).pairs(["prompt_id"]).column("prompt_id").to_pylist()))
    assert resumed.stdout.endswith(
        f"over 8 pairs; no held-out pairs: eval_fraction 0.02 of {prompts} distinct prompts held none out\n"
    ), resumed.stdout


def test_ctrl_c_before_the_first_checkpoint_keeps_nothing_and_says_so(
    demo_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    args = ["fit", "--shards", str(demo_build), "--out", str(run), "--model", "tiny", "--global-batch", "8",
            "--micro-batch", "4", "--max-steps", "2"]  # fmt: skip
    interrupted = _fit_interrupted_at_step(1, args, monkeypatch)
    assert interrupted.exit_code == 130
    assert interrupted.stderr.endswith(f"interrupted: no checkpoint was written in {run} yet (`--set save_every=N` "
                                       "writes one every N steps); running it again starts from step 0\n")  # fmt: skip
    assert not run.exists()  # the folder it created, gone
    resumed = CliRunner().invoke(app, [*args, "--resume"])  # nothing to resume: said, then a run from the start
    assert resumed.exit_code == 0, resumed.output
    assert f"note: --resume: {run} holds no checkpoint; training from step 0 of 2\n" in resumed.stderr


def test_non_finite_loss_stops_with_the_last_good_checkpoint_intact(
    demo_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_loss = fit_module.bradley_terry_loss
    calls = iter(range(1000))

    def poisoned(*args: object, **kwargs: object) -> torch.Tensor:
        loss = real_loss(*args, **kwargs)  # type: ignore[arg-type]
        return loss * float("nan") if next(calls) >= 4 else loss  # steps 1-2 fine (2 micro-batches each)

    monkeypatch.setattr(fit_module, "bradley_terry_loss", poisoned)
    with pytest.raises(TrainingError, match=r"non-finite loss at step 3.*step-000002"):
        fit(config(demo_build, epochs=2, save_every=1), tmp_path / "run")
    good = RewardModel.load(tmp_path / "run" / "checkpoints" / "step-000002")
    assert all(torch.isfinite(p).all() for p in good.parameters())
    assert not (tmp_path / "run" / "model").exists()


def test_config_errors_name_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "fit.yaml"
    path.write_text("lr: 1e-5\nlearning_rate: 3\n")
    with pytest.raises(Exception, match="learning_rate"):
        load_config(path, {})
    path.write_text("lr: fast\n")
    with pytest.raises(Exception, match="lr"):
        load_config(path, {})
    assert load_config(None, {"lr": "1e-5", "shards": "b"}).shards == ["b"]
    with pytest.raises(Exception, match="multiple"):
        FitConfig(global_batch=10, micro_batch=4).accumulation(world=1)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"seed": 2**64}, "seed must be in 0..4294967295"),
        ({"seed": -1}, "seed must be in 0..4294967295"),
        ({"warmup_ratio": 5}, r"warmup_ratio must be in \[0, 1\]"),
        ({"min_pixels": 100_000, "max_pixels": 50_000}, "min_pixels 100000 is above max_pixels 50000"),
        ({"min_pixels": 2_000_000_000}, "min_pixels 2000000000 is above the default max_pixels 1003520"),
        ({"max_pixels": 0}, "max_pixels must be >= 1"),
        ({"eval_max_pairs": 0}, "eval_max_pairs must be >= 1"),
        ({"keep_checkpoints": -1}, "keep_checkpoints must be >= 0, got -1"),
        ({"global_batch": 0}, "global_batch must be >= 1, got 0"),
        ({"save_every": -5}, "save_every must be >= 0, got -5"),
    ],
)
def test_settings_out_of_their_range_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        FitConfig(**settings)


def test_weights_that_would_fill_memory_are_refused_before_the_draws_are_made(demo_build: Path) -> None:
    from trainer.data import PairData

    with pytest.raises(InputError, match=rf"--shards {demo_build}=1e7: more than 50,000,000 training draws an epoch"):
        PairData.open([str(demo_build), f"{demo_build}=1e7"], seed=0, eval_fraction=0.0)
    with pytest.raises(InputError, match=rf"--shards {demo_build}=1e308: more than 50,000,000 training draws"):
        PairData.open([f"{demo_build}=1e308"], seed=0, eval_fraction=0.0)  # an infinite count, not an OverflowError


@pytest.fixture(scope="module")
def single_process_run(demo_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one-process run both two-process runs must match."""
    run = tmp_path_factory.mktemp("single") / "single"
    fit(config(demo_build, epochs=1, micro_batch=2, max_length=150), run)
    return run


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_process_gloo_run_matches_one_process(
    demo_build: Path, tmp_path: Path, strategy: str, single_process_run: Path
) -> None:
    """max_length 150 skips about half the demo pairs, so some micro-batches of a rank are empty while the other
    rank's are not (and ranks mix image and text pairs): the ranks must still run the same collectives."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with socket.socket() as probe:  # a free port: parallel test runs must not collide
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
               "-m", "trainer", "fit", "--shards", str(demo_build), "--out", str(tmp_path / "ddp"), "--model", "tiny",
               "--lr", "2e-3", "--global-batch", "8", "--micro-batch", "2", "--epochs", "1",
               "--set", "eval_fraction=0.2", "--set", "max_length=150", "--set", "warmup_ratio=0",
               "--set", f"strategy={strategy}"]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    single, ddp = losses(single_process_run), losses(tmp_path / "ddp")
    assert ddp == pytest.approx(single, rel=1e-4)  # every pair weighs the same whichever rank it lands on
    a = load_file(str(single_process_run / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "ddp" / "model" / "model.safetensors"))
    # The head's last bias has zero gradient under Bradley-Terry (it shifts both rewards), so Adam turns its
    # rounding noise into steps of about lr: it is compared by nothing but its presence.
    noise = "head.mlp.2.bias"
    assert noise in a and all(torch.allclose(a[k], b[k], atol=1e-4) for k in a if k != noise)
    assert (tmp_path / "ddp" / "model" / "model.safetensors").is_file()
    runs = (single_process_run, tmp_path / "ddp")
    skipped = [json.loads((run / "data.json").read_text())["skipped_train_draws"] for run in runs]
    assert skipped[0] == skipped[1] and skipped[0][SKIP_TOO_LONG] > 0  # counted over both ranks


def test_a_fit_written_to_a_log_says_which_step_it_is_at(
    demo_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RM_WORKBENCH_PROGRESS_EVERY", "0.01")
    args = ["fit", "--shards", str(demo_build), "--out", str(tmp_path / "run"), "--model", "tiny",
            "--global-batch", "8", "--micro-batch", "4"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert re.search(r"^progress: \d+m\d\ds: step \d+/\d+, loss \d\.\d{4}$", result.stderr, re.M), result.stderr
    assert result.stdout.startswith("done: ")  # the summary alone on stdout


def test_the_summary_counts_the_draws_training_skipped(demo_build: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["fit", "--shards", str(demo_build), "--out", str(run), "--model", "tiny", "--global-batch", "8",
            "--micro-batch", "4", "--set", "max_length=60"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((run / "data.json").read_text())
    skipped, draws = report["skipped_train_draws"][SKIP_TOO_LONG], report["train_draws"]
    assert 0 < skipped < draws and report["draws_reached"] == draws  # one whole epoch
    said = (f"; {draws} draws reached (1 epoch of {draws} draws), {skipped} of them ({round(100 * skipped / draws)}%) "
            f"skipped, never trained on: {skipped} {SKIP_TOO_LONG}\n")  # fmt: skip
    assert result.stdout.endswith(said), result.stdout
    assert f"warning: {round(100 * skipped / draws)}% of the draws this run reached were skipped" in result.stderr


def test_a_run_stopped_early_counts_its_skipped_draws_of_those_it_reached(demo_build: Path, tmp_path: Path) -> None:
    """With --max-steps the run reaches part of an epoch: the skipped draws are counted of the draws reached (2 steps
    of 8), not of the epoch's, and a share above a tenth is a warning saying why and what to change."""
    run = tmp_path / "run"
    args = ["fit", "--shards", str(demo_build), "--out", str(run), "--model", "tiny", "--global-batch", "8",
            "--micro-batch", "4", "--max-steps", "2", "--set", "max_length=60"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((run / "data.json").read_text())
    skipped, draws = report["skipped_train_draws"][SKIP_TOO_LONG], report["train_draws"]
    assert report["draws_reached"] == 16 and 16 * 0.1 < skipped < 16
    epochs = f"{16 / draws:.2f}"
    assert result.stdout.endswith(
        f"; 16 draws reached ({epochs} of an epoch of {draws} draws), {skipped} of them ({round(100 * skipped / 16)}%) "
        f"skipped, never trained on: {skipped} {SKIP_TOO_LONG}\n"
    ), result.stdout
    assert result.stderr.endswith(
        f"warning: {round(100 * skipped / 16)}% of the draws this run reached were skipped, never trained on "
        f"({skipped} of 16: {skipped} {SKIP_TOO_LONG}); raise max_length (--set max_length=N; this run: 60) or "
        "leave the longer pairs out of the build (filters: max_tokens)\n"
    ), result.stderr


def test_the_draws_reached_and_skipped_say_what_they_count() -> None:
    from trainer.run_summary import Reach

    early = Reach(2469, 480, {SKIP_TOO_LONG: 213})
    assert early.text() == (
        f"480 draws reached (0.19 of an epoch of 2,469 draws), 213 of them (44%) skipped, never trained on: 213 "
        f"{SKIP_TOO_LONG}"
    )
    assert Reach(43, 129, {}).text() == "129 draws reached (3 epochs of 43 draws), none skipped"
    assert Reach(43, 1, {}).text() == "1 draw reached (0.02 of an epoch of 43 draws), none skipped"
    assert (early.warning(2048) or "").startswith("44% of the draws this run reached were skipped")
    assert "--set max_length=N; this run: 2048" in (early.warning(2048) or "")
    assert Reach(43, 129, {}).epochs_text() == "3 epochs of 43 draws"
    assert Reach(40, 100, {}).epochs_text() == "2.5 epochs of 40 draws"
    assert Reach(40, 40, {}).epochs_text() == "1 epoch of 40 draws"
    assert Reach(100, 10, {SKIP_TOO_LONG: 1}).warning(8) is None  # a tenth exactly: no warning
    assert Reach(100, 10, {SKIP_TOO_LONG: 2}).warning(8) is not None
    # a data.json from before `draws_reached` was recorded: from its steps and the run's global batch
    old = {"train_draws": 43, "steps": 7, "skipped_train_draws": {SKIP_TOO_LONG: 5}}
    assert Reach.of(old, 8) == Reach(43, 43 + 8, {SKIP_TOO_LONG: 5})
    assert Reach.of({}) is None


def test_cli_fit_then_predict(demo_build: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    run = tmp_path / "run"
    args = ["fit", "--shards", str(demo_build), "--out", str(run), "--model", "tiny",
            "--global-batch", "8", "--micro-batch", "4", "--set", "eval_fraction=0.2"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    # what the summary counts: the last step's pairs and the held-out ones
    summary = re.fullmatch(
        rf"done: {run}: \d+ steps; last step loss [\d.]+, accuracy [\d.]+ over \d+ pairs; held "
        r"out: loss [\d.]+, accuracy [\d.]+ over (\d+) pairs of (\d+) held out\n",
        result.output,
    )
    assert summary and summary[1] == summary[2], result.output
    capped = runner.invoke(app, [*args[:4], str(tmp_path / "capped"), *args[5:], "--set", "eval_max_pairs=3"])
    held = int(summary[2])
    assert capped.output.endswith(
        f" over 3 pairs of {held} held out (not scored: {held - 3} beyond eval_max_pairs)\n"
    ), capped.output
    # a second run into the same folder would mix its metrics, events and reports with the first's
    metrics = (run / "metrics.jsonl").read_text()
    again = runner.invoke(app, args)
    assert (again.exit_code, again.output) == (
        1,
        f"error: --out {run}: holds a run already; --resume continues it, or choose another --out\n",
    )
    assert (run / "metrics.jsonl").read_text() == metrics
    finished = runner.invoke(app, [*args, "--resume"])
    assert (finished.exit_code, finished.output) == (
        0,
        f"done: {run}: nothing left to train (already at its last step: checkpoints/step-000005)\n",
    )
    assert (run / "metrics.jsonl").read_text() == metrics
    # a folder of other files is not a run folder, with --resume or without; hidden files alone do not count
    (tmp_path / "data" / "model").mkdir(parents=True)  # a user's config.yaml and model/, without a run's metrics
    (tmp_path / "data" / "config.yaml").write_text("mine: true\n")
    for extra in ([], ["--resume"]):
        other = runner.invoke(app, [*args[:4], str(tmp_path / "data"), *args[5:], *extra])
        assert (other.exit_code, other.output) == (
            1,
            f"error: --out {tmp_path / 'data'}: holds other files, not a run; choose a new or empty folder\n",
        )
    assert (tmp_path / "data" / "config.yaml").read_text() == "mine: true\n"
    # a run killed before its first step left its settings alone: neither a new run nor --resume refused the folder
    for extra in ([], ["--resume"]):
        killed = tmp_path / f"killed{len(extra)}"
        killed.mkdir()
        shutil.copy(run / "config.yaml", killed / "config.yaml")
        again = runner.invoke(app, [*args[:4], str(killed), *args[5:], *extra])
        assert again.exit_code == 0 and (killed / "model" / "model.safetensors").is_file(), again.output
    png = write_image(tmp_path / "x.png", seed=3, size=(64, 48))
    result = runner.invoke(app, ["predict", "--model", str(run), "--prompt", "What is this?", "--image", str(png),
                                 "--answer", "Noise.", "--answer", "A cat on a mat."])  # fmt: skip
    assert result.exit_code == 0, result.output
    header, *lines = result.output.strip().splitlines()
    assert header == "reward\tanswer (its first 60 characters)"
    wide = write_image(tmp_path / "wide.png", seed=3, size=(3000, 10))  # an aspect ratio the processor refuses
    refused = runner.invoke(app, ["predict", "--model", str(run), "--prompt", "What?", "--image", str(png),
                                  "--image", str(wide), "--answer", "A."])  # fmt: skip
    assert refused.exit_code == 1 and refused.output.startswith(
        "error: image 2 of 2: the backbone's image processor refuses it ("
    ), refused.output
    scores = [float(line.split("\t")[0]) for line in lines]
    assert len(scores) == 2 and scores[0] != scores[1]
    import trainer.predict

    with pytest.MonkeyPatch.context() as patch:  # a diverged model's reward: no score, said so
        patch.setattr(trainer.predict, "rewards", lambda *_: [float("nan"), 0.5])
        diverged = runner.invoke(app, ["predict", "--model", str(run), "--prompt", "Q?", "--answer", "A\tline\nbreak",
                                       "--answer", "B."])  # fmt: skip
    assert diverged.stdout.splitlines()[1:] == ["not finite (nan)\tA line break", "+0.5000\tB."], diverged.output
    assert "warning: the model gives a non-finite reward" in diverged.stderr
    missing = runner.invoke(app, ["predict", "--model", str(run), "--prompt", "Q?", "--image", str(tmp_path / "no.jpg"),
                                  "--answer", "A."])  # fmt: skip
    assert missing.output == f"error: {tmp_path / 'no.jpg'}: cannot read the image (No such file or directory)\n"
    bad = runner.invoke(app, ["fit", "--shards", str(tmp_path), "--out", str(tmp_path / "x"), "--model", "tiny"])
    assert bad.exit_code == 1 and "not a finished build" in bad.output


def test_data_workers_prepare_the_same_steps(demo_build: Path, tmp_path: Path) -> None:
    fit(config(demo_build, epochs=2), tmp_path / "inline")
    fit(config(demo_build, epochs=2, num_workers=2), tmp_path / "workers")
    drop = ("pairs/s", "tokens/s")
    read = lambda run: [{k: v for k, v in json.loads(x).items() if k not in drop}  # noqa: E731
                        for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]  # fmt: skip
    assert read("inline") == read("workers")


@pytest.mark.parametrize(("attention", "layout"), [("flex", "shared_prefix"), ("flex", "packed"), ("sdpa", "packed")])
def test_flex_attention_and_packed_rows_train_as_the_default_does(
    demo_build: Path, tmp_path: Path, attention: str, layout: str
) -> None:
    """`attention: flex` on CPU runs the block mask's rule densely in training and the kernel in evaluation;
    `layout: packed` moves tokens (the demo's micro-batches of 4 pairs fit one 8,192-token row each). Neither changes
    what is computed."""
    default = fit(config(demo_build, epochs=1), tmp_path / "default")
    other = fit(config(demo_build, epochs=1, attention=attention, layout=layout), tmp_path / "other")
    assert losses(tmp_path / "other") == pytest.approx(losses(tmp_path / "default"), rel=1e-4)
    assert other["eval/loss"] == pytest.approx(default["eval/loss"], rel=1e-4)
    assert other["eval/accuracy"] == default["eval/accuracy"]


def _killed_after_step_2(settings: FitConfig, run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`run` as a run killed after the checkpoint of step 2 left it."""
    real_step = Trainer._train_step

    def crash_at_step_2(self: Trainer, step: int, batches: list) -> dict[str, float]:
        if step == 2:
            raise KeyboardInterrupt
        return real_step(self, step, batches)

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_train_step", crash_at_step_2)
        with pytest.raises(KeyboardInterrupt):
            fit(settings, run)


def test_a_run_resumes_after_its_build_moved(demo_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A build is known by its shards' contents: a run resumes from the build's new folder, and refuses a build
    of other contents."""
    shutil.copytree(demo_build, tmp_path / "here")
    _killed_after_step_2(config(tmp_path / "here", max_steps=3, save_every=1), tmp_path / "run", monkeypatch)
    (tmp_path / "here").rename(tmp_path / "there")
    other = tmp_path / "other"
    shutil.copytree(tmp_path / "there", other)
    shard = other / "shards" / "train-00000-of-00003.arrow"  # another build's shards: other rows, other digest
    table = pa.ipc.open_stream(pa.BufferReader(shard.read_bytes())).read_all()
    with pa.OSFile(str(shard), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.slice(1))
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["shards"][0] |= {"sha256": sha256_file(shard), "rows": table.num_rows - 1}
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TrainingError, match="cannot resume with changed settings: shards"):
        fit(config(other, max_steps=3, save_every=1), tmp_path / "run", resume=True)
    fit(config(tmp_path / "there", max_steps=3, save_every=1), tmp_path / "run", resume=True)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [s for s in steps if s] == sorted(set(s for s in steps if s)) and max(steps) == 3


def test_a_resume_refuses_what_changes_the_learning_and_keeps_how_it_runs(
    demo_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resumed run is one run: a changed learning rate, length, head or loss is refused (a rebuilt build too,
    in the moved-build test); how it runs (checkpoints, kernels, workers) may change."""
    _killed_after_step_2(config(demo_build, max_steps=3, save_every=1), tmp_path / "run", monkeypatch)
    for change in ({"lr": 0.5}, {"max_length": 64}, {"use_margin": True}, {"head_activation": "tanh"}):
        with pytest.raises(TrainingError, match=f"cannot resume with changed settings: {next(iter(change))} "):
            fit(config(demo_build, max_steps=3, save_every=1, **change), tmp_path / "run", resume=True)
    with pytest.raises(TrainingError, match=r"changed settings: max_length \(\d+ in the checkpoint, 64 now\)"):
        fit(config(demo_build, max_steps=3, save_every=1, max_length=64), tmp_path / "run", resume=True)
    # A checkpoint from before the held-out split fell by prompt trained on another split.
    saved = _as_written_before_digests(tmp_path / "run" / "checkpoints" / "step-000002", "split_by")
    with pytest.raises(TrainingError, match=r"the held-out split \(by pair_id in the checkpoint, by prompt_id now\)"):
        fit(config(demo_build, max_steps=3, save_every=1), tmp_path / "run", resume=True)
    saved()
    fit(config(demo_build, max_steps=3, save_every=2, keep_checkpoints=0, layout="packed"), tmp_path / "run",
        resume=True)  # fmt: skip


def _as_written_before_digests(checkpoint: Path, drop: str) -> Callable[[], None]:
    """Make `checkpoint` one of an earlier version (format 1: no file digests, no seals), whose trainer_state.json
    lacked `drop`; returns what puts it back."""
    from trainer.model import SEAL

    files = {name: (checkpoint / name).read_text() for name in ("reward_model.json", "trainer_state.json")}
    spec, state = (json.loads(text) for text in files.values())
    spec = {k: v for k, v in spec.items() if k not in (SEAL, "sha256")} | {"format_version": 1}
    (checkpoint / "reward_model.json").write_text(json.dumps(spec))
    (checkpoint / "trainer_state.json").write_text(json.dumps({k: v for k, v in state.items()
                                                               if k not in (SEAL, "sha256", drop)}))  # fmt: skip
    return lambda: [(checkpoint / name).write_text(text) for name, text in files.items()] and None


def test_a_run_keeps_its_newest_checkpoints(demo_build: Path, tmp_path: Path) -> None:
    def kept(run: str) -> list[str]:
        return sorted(p.name for p in (tmp_path / run / "checkpoints").iterdir())

    fit(config(demo_build, max_steps=4, save_every=1), tmp_path / "newest")  # keep_checkpoints: 2
    assert kept("newest") == ["step-000003", "step-000004"]
    fit(config(demo_build, max_steps=4, save_every=1, keep_checkpoints=0), tmp_path / "every")
    assert kept("every") == [f"step-00000{k}" for k in range(1, 5)]


def test_no_trainable_pair_is_an_error_not_a_score(demo_build: Path, tmp_path: Path) -> None:
    """Every draw longer than max_length: no loss or accuracy is made up, no model or metrics are left."""
    with pytest.raises(TrainingError, match="no training pair could be trained on: .*longer than max_length: 16"):
        fit(config(demo_build, max_steps=2, max_length=8), tmp_path / "run")
    assert not [p.name for p in (tmp_path / "run").iterdir()]  # no model, no metrics: nothing left to mistake


def test_settings_and_folders_that_cannot_make_a_run_are_refused(demo_build: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["fit", "--shards", str(demo_build), "--model", "tiny", "--global-batch", "8", "--micro-batch", "4"]
    for setting, message in (("max_steps=0", "max_steps must be >= 1"), ("lr=nan", "lr='nan': expected a finite"),
                             ("lr=-1", "lr must be a finite number"), ("weight_decay=-1", "weight_decay must be"),
                             ("max_grad_norm=0", "max_grad_norm must be a finite number >= 0 (and > 0), got 0"),
                             ("head_layers=0", "head_layers and head_width must be >= 1"),
                             ("head_activation=bogus", "head_activation 'bogus': choose one of"),
                             ("max_length=0", "max_length must be >= 2")):  # fmt: skip
        result = runner.invoke(app, [*base, "--out", str(tmp_path / "x"), "--set", setting])
        assert result.exit_code == 1 and result.output.startswith("error: ") and message in result.output, setting
    for weight in ("abc", "nan", "inf", "-1"):
        result = runner.invoke(app, [*base[:2], f"{demo_build}={weight}", *base[3:], "--out", str(tmp_path / "x")])
        assert result.exit_code == 1 and "the weight" in result.output and "Traceback" not in result.output, weight
    nameless = runner.invoke(app, [*base[:2], "=1", *base[3:], "--out", str(tmp_path / "x")])
    assert (
        nameless.output == "error: --shards =1: no build folder before the =\n"
    )  # was "error: : not a finished build"
    inside = runner.invoke(app, [*base, "--out", str(demo_build / "run")])
    assert inside.exit_code == 1 and "inside the build" in inside.output
    assert not (demo_build / "run").exists()


def test_the_data_report_is_written_before_the_model(
    demo_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed between the two had its model in place and no record of what it trained on."""
    from trainer import fit as fitting

    seen: list[bool] = []
    write = fitting.Trainer._write_data_report

    def watched(self: fitting.Trainer) -> None:
        seen.append((self.out / "model").exists())
        write(self)

    monkeypatch.setattr(fitting.Trainer, "_write_data_report", watched)
    fit(FitConfig(model="tiny", shards=[str(demo_build)], global_batch=8, micro_batch=4, max_steps=1), tmp_path / "r")
    assert seen == [False] and (tmp_path / "r" / "data.json").is_file() and (tmp_path / "r" / "model").is_dir()


def test_a_run_folder_has_one_writer(demo_build: Path, tmp_path: Path) -> None:
    from curation.io import only_writer

    run = tmp_path / "run"
    run.mkdir()
    with only_writer(run / ".lock", "busy"):  # as a trainer that is writing it holds it
        result = CliRunner().invoke(app, ["fit", "--shards", str(demo_build), "--model", "tiny", "--out", str(run),
                                          "--global-batch", "8", "--micro-batch", "4"])  # fmt: skip
    assert (result.exit_code, result.output) == (1, f"error: --out {run}: another trainer is writing this run now\n")


def test_a_step_without_a_trained_pair_leaves_the_weights_alone(
    demo_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step whose draws were all skipped (too long) logs no loss and takes no optimizer step: weight decay and
    momentum would move the weights on no evidence."""
    real_step = torch.optim.AdamW.step
    stepped: list[int] = []

    def counting(self: torch.optim.AdamW, *args: object, **kwargs: object) -> object:
        stepped.append(1)
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", counting)
    fit(config(demo_build, global_batch=1, micro_batch=1, max_length=150, eval_fraction=0.0), tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    skipped = [r["step"] for r in records if r["loss"] is None]
    assert skipped and len(stepped) == len(records) - len(skipped)
    args = ["fit", "--shards", f"{demo_build}=0", "--model", "tiny", "--out", str(tmp_path / "z")]
    bad = CliRunner().invoke(app, args)
    assert bad.exit_code == 1 and "error: no training draws (" in bad.output and "weight 0)" in bad.output
    assert "audit" not in bad.output  # no audit is involved


def test_no_training_draws_names_the_audits_fold_for_a_fold_run_only(demo_build: Path, tmp_path: Path) -> None:
    unweighted = config(demo_build, shards=[f"{demo_build}=0"])
    with pytest.raises(TrainingError, match=r"held out, weight 0\)$"):
        Trainer(unweighted, tmp_path / "plain")
    with pytest.raises(TrainingError, match=r"held out, [1-9]\d* rows left out by the audit's fold, weight 0\)$"):
        Trainer(dataclasses.replace(unweighted, folds=2, fold=0), tmp_path / "fold")


def test_a_fit_that_fails_before_its_first_checkpoint_leaves_its_folder_as_it_was(
    demo_build: Path, tmp_path: Path
) -> None:
    """Nothing under the final --out after a failure: the retry in the same folder starts as in a new one."""
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("")  # the CLI's lock, kept
    failing = FitConfig(model="tiny", shards=[str(demo_build)], global_batch=8, micro_batch=4, max_steps=2,
                        max_length=10)  # fmt: skip
    with pytest.raises(TrainingError):
        fit(failing, out)
    assert sorted(p.name for p in out.iterdir()) == [".lock"]
    fit(dataclasses.replace(failing, max_length=512), out)
    assert (out / "model" / "reward_model.json").is_file()


# TensorBoard's writer thread must be closed before the folder goes: its write into a removed folder would be an
# exception in a thread, which this makes a failure.
@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_failed_fit_leaves_no_folder_it_created_and_keeps_one_it_was_given(demo_build: Path, tmp_path: Path) -> None:
    args = ["fit", "--shards", str(demo_build), "--model", "tiny", "--global-batch", "8", "--micro-batch", "4",
            "--max-steps", "2", "--set", "max_length=10"]  # fmt: skip  # every pair too long: no training draw
    new = tmp_path / "new"
    result = CliRunner().invoke(app, [*args, "--out", str(new)])
    assert result.exit_code == 1 and "error: " in result.stderr and not new.exists()
    given = tmp_path / "given"
    given.mkdir()
    result = CliRunner().invoke(app, [*args, "--out", str(given)])
    assert result.exit_code == 1 and given.is_dir()


def test_a_damaged_model_or_checkpoint_is_one_error_line_naming_it(demo_build: Path, tmp_path: Path) -> None:
    """A truncated or pickled weights file, a spec without its head, a config asking for custom code; a checkpoint
    cut short on resume: each is one line naming the folder, never a traceback or advice to run remote code."""
    import shutil

    out = tmp_path / "run"
    config = FitConfig(model="tiny", shards=[str(demo_build)], global_batch=8, micro_batch=4, max_steps=2, save_every=1)
    fit(config, out)
    model = tmp_path / "model"
    weights = (out / "model" / "model.safetensors").read_bytes()
    damages = {
        "cut": lambda: (model / "model.safetensors").write_bytes(weights[: len(weights) // 2]),
        "pickle": lambda: (model / "model.safetensors").write_bytes(b"\x80\x04N."),
        "no head": lambda: (model / "reward_model.json").write_text('{"backbone_source": "tiny"}'),
        "custom code": lambda: (model / "backbone" / "config.json").write_text(
            json.dumps({**json.loads((out / "model" / "backbone" / "config.json").read_text()),
                        "model_type": "evil", "auto_map": {"AutoModel": "evil.Model"}})),
    }  # fmt: skip
    for name, damage in damages.items():
        shutil.rmtree(model, ignore_errors=True)
        shutil.copytree(out / "model", model)
        damage()
        with pytest.raises(InputError, match=f"{model}: not (a readable reward model|the model as saved)") as failure:
            RewardModel.load(model)
        assert "\n" not in str(failure.value) and "trust_remote_code=True" not in str(failure.value), name
    checkpoint = max((out / "checkpoints").glob("step-*"))
    (checkpoint / "optimizer.safetensors").write_bytes(b"")
    shutil.rmtree(out / "model")
    with pytest.raises(TrainingError, match=f"{checkpoint}: a damaged checkpoint .*; remove it to resume"):
        fit(config, out, resume=True)


def test_resume_refuses_a_checkpoint_changed_in_place(demo_build: Path, tmp_path: Path) -> None:
    """A flipped byte among the weights still reads as safetensors: the sha256 recorded at saving catches it."""
    config = FitConfig(model="tiny", shards=[str(demo_build)], global_batch=8, micro_batch=4, max_steps=2, save_every=1)
    fit(config, tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / "model")
    checkpoint = max((tmp_path / "run" / "checkpoints").glob("step-*"))
    for name in ("model.safetensors", "optimizer.safetensors"):
        original = (checkpoint / name).read_bytes()
        flipped = bytearray(original)
        flipped[-1] ^= 0x40  # the last tensor's last byte
        (checkpoint / name).write_bytes(bytes(flipped))
        with pytest.raises(TrainingError, match=f"{checkpoint}: a damaged checkpoint \\({name}: changed since it was"):
            fit(config, tmp_path / "run", resume=True)
        (checkpoint / name).write_bytes(original)
    state = (checkpoint / "trainer_state.json").read_text()
    edits = {  # the step edited by hand; a list where the record was; a file added
        "trainer_state.json changed since it was saved": state.replace('"step": 2', '"step": 1'),
        "trainer_state.json is not the object": "[]",
    }
    for message, text in edits.items():
        (checkpoint / "trainer_state.json").write_text(text)
        with pytest.raises(TrainingError, match=f"a damaged checkpoint \\(ValueError: {message}"):
            fit(config, tmp_path / "run", resume=True)
    (checkpoint / "trainer_state.json").write_text(state)
    (checkpoint / "added_tokens.json").write_text("{}")
    with pytest.raises(TrainingError, match="a damaged checkpoint \\(added_tokens.json: added since it was saved"):
        fit(config, tmp_path / "run", resume=True)
    (checkpoint / "added_tokens.json").unlink()
    (checkpoint / "backbone" / "config.json").unlink()
    with pytest.raises(TrainingError, match="a damaged checkpoint \\(backbone/config.json: missing\\)"):
        fit(config, tmp_path / "run", resume=True)


def test_a_build_whose_shards_were_edited_in_place_is_refused(demo_build: Path, tmp_path: Path) -> None:
    """The manifest is unchanged, so its digests are what a run would record: the files themselves are hashed, by
    a new run and by a resumed one."""
    import pyarrow as pa

    build = tmp_path / "build"
    shutil.copytree(demo_build, build)
    config = FitConfig(model="tiny", shards=[str(build)], global_batch=8, micro_batch=4, max_steps=2, save_every=1)
    fit(config, tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / "model")
    shard = sorted((build / "shards").glob("*.arrow"))[0]
    # read into memory (a memory map of the file being rewritten would fault); an Arrow stream, as `datasets` writes
    table = pa.ipc.open_stream(pa.BufferReader(shard.read_bytes())).read_all()
    swapped = table.set_column(table.schema.get_field_index("chosen"), "chosen", table.column("rejected"))
    with pa.OSFile(str(shard), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(swapped.cast(table.schema))
    edited = f"shards edited since their build \\({shard}: not the manifest's sha256\\); build it again"
    with pytest.raises(BuildError, match=edited):
        fit(config, tmp_path / "run", resume=True)
    with pytest.raises(BuildError, match=edited):
        fit(config, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_the_summary_says_why_held_out_pairs_were_not_scored() -> None:
    from trainer.cli import fit_summary

    one = fit_summary({"step": 1, "loss": 0.5, "accuracy": 1.0, "pairs": 1, "eval/loss": 0.4, "eval/accuracy": 1.0,
                       "eval/pairs": 1})  # fmt: skip
    assert one == "1 step; last step loss 0.5000, accuracy 1.000 over 1 pair; held out: loss 0.4000, accuracy 1.000 " \
        "over 1 pair"  # fmt: skip

    last = {"step": 3, "loss": 0.5, "accuracy": 1.0, "pairs": 8, "eval/loss": 0.4, "eval/accuracy": 0.75,
            "eval/pairs": 54, "eval/held_out": 62}  # fmt: skip
    assert fit_summary(last, "", {"longer than max_length": 8}).endswith(
        "over 54 pairs of 62 held out (not scored: 8 longer than max_length)"
    )
    assert fit_summary({**last, "eval/pairs": 50}, "", {"longer than max_length": 8}).endswith(
        "over 50 pairs of 62 held out (not scored: 8 longer than max_length, 4 beyond eval_max_pairs)"
    )
    assert fit_summary({**last, "eval/pairs": 62}).endswith("over 62 pairs of 62 held out")


def test_ties_in_a_build_are_counted_and_said(tmp_path: Path) -> None:
    """A build kept its ties (`drop_ties: false`): the Bradley-Terry loss learns each as chosen over rejected as
    given, which the run said nowhere."""
    from curation.build import build
    from curation.recipe import load_recipe
    from tests.conftest import write_jsonl

    scores = [{"score_chosen": 5.0 if k % 4 else 3.0, "score_rejected": 3.0} for k in range(12)]  # every 4th a tie
    rows = [{"prompt": f"Q{k}?", "chosen": f"Yes {k}.", "rejected": f"No {k}.", "metadata": scores[k]}
            for k in range(12)]  # fmt: skip
    write_jsonl(tmp_path / "uf.jsonl", rows)
    (tmp_path / "r.yaml").write_text("name: t\nsources:\n  uf: {adapter: ultrafeedback_binarized, path: uf.jsonl}\n"
                                     "ops:\n  filters: {drop_ties: false}\n")  # fmt: skip
    build(load_recipe(tmp_path / "r.yaml"), tmp_path / "b")
    result = CliRunner().invoke(app, ["fit", "--shards", str(tmp_path / "b"), "--out", str(tmp_path / "run"),
                                      "--model", "tiny", "--global-batch", "4", "--micro-batch", "2",
                                      "--set", "max_steps=1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    counts = json.loads((tmp_path / "run" / "data.json").read_text())["builds"][str(tmp_path / "b")]
    assert (counts["ties"], counts["pairs"]) == (3, 12)
    assert f"note: {tmp_path / 'b'}: 3 of its 12 pairs are ties (tie = true), trained as chosen over rejected" in (
        result.output
    )
