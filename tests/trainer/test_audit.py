"""`trainer audit` on the demo build with the tiny model: every pair judged out of fold, by the model that did not
see it; answers cut to fit where needed; resumable per fold; the scores drive `rm_margin` in a rebuild."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curation.build_dir import BuildDir
from curation.errors import InputError
from tests.conftest import prompts_build
from trainer.audit import AUDIT_SCHEMA, FOLD_PLAN, _judge_fold, audit, fold_report, held_out, judge
from trainer.cli import app
from trainer.config import FitConfig
from trainer.data import PairData, fold_of
from trainer.evaluate import size_key
from trainer.model import RewardModel
from trainer.score import build_pairs

CONFIG = FitConfig(model="tiny", lr=2e-3, global_batch=8, micro_batch=4, max_steps=2, max_length=96, seed=1)


@pytest.fixture(scope="module")
def audited(demo_build: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("audit")
    build = root / "build"
    shutil.copytree(demo_build, build)
    report = audit(build, CONFIG, 2, root / "run")
    return build, root / "run", report


def test_every_pair_is_judged_by_the_model_that_did_not_train_on_it(audited: tuple[Path, Path, dict]) -> None:
    build, run, report = audited
    pairs = build_pairs(BuildDir.open(build)).to_pylist()
    scores = pq.read_table(run / "scores.parquet").to_pylist()
    prompt_of = {p["pair_id"]: p["prompt_id"] for p in pairs}
    assert [s["pair_id"] for s in scores] == [p["pair_id"] for p in pairs]  # one row per distinct pair
    assert all(s["fold"] == fold_of(prompt_of[s["pair_id"]], CONFIG.seed, 2) for s in scores)
    assert {s["fold"] for s in scores} == {0, 1}
    for k in (0, 1):
        # The fold's run trained on no pair of its fold...
        data = PairData.open([str(build)], CONFIG.seed, CONFIG.eval_fraction, folds=2, fold=k)
        assert all(fold_of(prompt_of[e.pair_id], CONFIG.seed, 2) != k for e in data.train + data.eval)
        assert json.loads((run / f"fold-{k}" / "data.json").read_text())["builds"][str(build)]["left_out"] > 0
        # ...and its model is the one whose rewards the fold's pairs carry.
        row = next(p for p in pairs if fold_of(p["prompt_id"], CONFIG.seed, 2) == k and not p["images"])
        (((chosen, rejected), _, _),) = judge(RewardModel.load(run / f"fold-{k}" / "model"), [row], {}, 96, 4)
        mine = next(s for s in scores if s["pair_id"] == row["pair_id"])
        assert (mine["reward_chosen"], mine["reward_rejected"]) == pytest.approx((chosen, rejected), abs=1e-5)
    # Every pair judged or counted: long answers are cut to fit (max_length 96), the rest say why not.
    assert report["scored"] + sum(report["not_scored"].values()) == len(pairs)
    assert report["truncated"] > 0 and any(s["truncated"] and s["margin"] is not None for s in scores)
    assert all((s["margin"] is None) == (s["not_scored"] is not None) for s in scores)
    assert all(s["probability"] is None or 0 < s["probability"] < 1 for s in scores)
    assert [f["fold"] for f in report["folds"]] == [0, 1] and all(f["held_out_pairs"] for f in report["folds"])
    assert Path(report["signal"]).parent == build / "signals"


def test_a_fold_is_left_out_of_every_extra_build_that_holds_its_pairs(demo_build: Path) -> None:
    # An extra training build that repeats the audited pairs (here: the build itself) must not teach a fold's model
    # the pairs it then judges.
    data = PairData.open([str(demo_build), str(demo_build)], CONFIG.seed, 0.0, folds=2, fold=0)
    prompt_of = {p["pair_id"]: p["prompt_id"] for p in build_pairs(BuildDir.open(demo_build)).to_pylist()}
    assert data.train and {e.build for e in data.train} == {0, 1}
    assert all(fold_of(prompt_of[e.pair_id], CONFIG.seed, 2) != 0 for e in data.train + data.eval)
    assert data.counts[str(demo_build)]["left_out"] > 0


def stop_at_fold_1(fold: int, what: str) -> None:
    """An audit interrupted as fold 1 begins (fold 0 trained and judged)."""
    if fold == 1:
        raise KeyboardInterrupt


def test_an_interrupted_audit_resumes_by_fold(demo_build: Path, tmp_path: Path, audited: tuple) -> None:
    build = tmp_path / "build"
    shutil.copytree(demo_build, build)

    with pytest.raises(KeyboardInterrupt):
        audit(build, CONFIG, 2, tmp_path / "run", on_fold=stop_at_fold_1)
    judged = (tmp_path / "run" / "fold-0" / "scores.parquet").stat().st_mtime_ns
    steps: list[tuple[int, str]] = []
    audit(build, CONFIG, 2, tmp_path / "run", on_fold=lambda fold, what: steps.append((fold, what)))
    assert steps == [(0, "kept"), (1, "train"), (1, "judge")]  # fold 0 was neither trained nor judged again
    assert (tmp_path / "run" / "fold-0" / "scores.parquet").stat().st_mtime_ns == judged
    assert pq.read_table(tmp_path / "run" / "scores.parquet") == pq.read_table(audited[1] / "scores.parquet")
    with pytest.raises(Exception, match=r"planned otherwise \(--folds 2 then, 3 now\); give its settings"):
        audit(build, CONFIG, 3, tmp_path / "run")
    with pytest.raises(Exception, match=rf"holds an audit planned otherwise \(lr {CONFIG.lr!r} then, 0.001 now\)"):
        audit(build, dataclasses.replace(CONFIG, lr=1e-3), 2, tmp_path / "run")


def test_an_audit_resumes_after_its_build_moved(demo_build: Path, tmp_path: Path, audited: tuple) -> None:
    """The plan knows the build by its pairs and shards: moved, it is the same build, and the folds judged and the
    fold models trained before are kept."""
    build = tmp_path / "build"
    shutil.copytree(demo_build, build)

    with pytest.raises(KeyboardInterrupt):
        audit(build, CONFIG, 2, tmp_path / "run", on_fold=stop_at_fold_1)
    moved = build.rename(tmp_path / "moved")
    (tmp_path / "run" / "fold-0" / "fold.json").unlink()  # fold 0 judged again, by the model it trained there
    steps: list[tuple[int, str]] = []
    report = audit(moved, CONFIG, 2, tmp_path / "run", on_fold=lambda fold, what: steps.append((fold, what)))
    assert steps == [(0, "judge"), (1, "train"), (1, "judge")]  # fold 0's model kept
    assert report["build"] == str(moved.resolve())
    assert pq.read_table(tmp_path / "run" / "scores.parquet") == pq.read_table(audited[1] / "scores.parquet")
    again: list[tuple[int, str]] = []
    audit(moved, CONFIG, 2, tmp_path / "run", on_fold=lambda fold, what: again.append((fold, what)))
    assert again == [(0, "kept"), (1, "kept")]  # both folds' models and scores kept


def test_an_audit_planned_before_a_setting_existed_still_resumes(audited: tuple, tmp_path: Path) -> None:
    build, run, report = audited
    resumed = tmp_path / "run"
    shutil.copytree(run, resumed)
    plan = json.loads((resumed / "plan.json").read_text())
    # As an earlier version wrote it: every setting it knew, without the ones added since (here: `attention`).
    older = {k: v for k, v in plan["config"].items() if k != "attention"}
    (resumed / "plan.json").write_text(json.dumps({**plan, "config": older}))
    older_digest = hashlib.sha256(json.dumps({**plan, "config": older}, sort_keys=True).encode()).hexdigest()
    for k in (0, 1):  # and its folds' scores carry the digest of that plan (and fold.json no scores digest)
        scores = pq.read_table(resumed / f"fold-{k}" / "scores.parquet")
        pq.write_table(
            scores.replace_schema_metadata({FOLD_PLAN: older_digest}), resumed / f"fold-{k}" / "scores.parquet"
        )
        marker = json.loads((resumed / f"fold-{k}" / "fold.json").read_text())
        (resumed / f"fold-{k}" / "fold.json").write_text(json.dumps({**marker, "scores_sha256": None}))
    steps: list[tuple[int, str]] = []
    report = audit(build, CONFIG, 2, resumed, on_fold=lambda fold, what: steps.append((fold, what)))
    assert steps == [(0, "kept"), (1, "kept")]  # nothing trained or judged again
    assert pq.read_table(resumed / "scores.parquet") == pq.read_table(run / "scores.parquet")
    assert json.loads((resumed / "plan.json").read_text())["config"] == older  # its own plan, and its own name
    assert Path(report["signal"]).name == f"rm_scores-audit-{older_digest[:12]}.parquet"
    # A stored setting that differs from this run's is a change, not a match.
    (resumed / "plan.json").write_text(json.dumps({**plan, "config": {**older, "max_length": 4096}}))
    with pytest.raises(Exception, match=r"holds an audit planned otherwise \(max_length 4096 then, "):
        audit(build, CONFIG, 2, resumed)
    # How the runs run (checkpoints, say) may change, as on `trainer fit --resume`.
    (resumed / "plan.json").write_text(json.dumps({**plan, "config": {**older, "save_every": 0}}))
    assert audit(build, CONFIG, 2, resumed)["folds"] == report["folds"]
    for name in ("scores.parquet", "fold.json"):  # fold 1 trained, not yet judged: its model judges it
        (resumed / "fold-1" / name).unlink()
    steps.clear()
    how = dataclasses.replace(CONFIG, save_every=7, log_every=3)
    assert audit(build, how, 2, resumed, on_fold=lambda f, what: steps.append((f, what)))["folds"] == report["folds"]
    assert steps == [(0, "kept"), (1, "judge")]
    # Folds of an earlier version, which fell by pair rather than by prompt, are not the same folds: no settings
    # resume them.
    (resumed / "plan.json").write_text(json.dumps({k: v for k, v in {**plan, "config": older}.items()
                                                   if k != "folds_by"}))  # fmt: skip
    with pytest.raises(InputError, match=r"holds an audit whose folds fell by pair_id \(they fall by prompt_id now\)"
                                         ": it cannot be resumed; choose another --out"):  # fmt: skip
        audit(build, CONFIG, 2, resumed)


def test_held_out_accuracy_is_pooled_with_its_interval() -> None:
    def fold(pairs: int, agreeing: int) -> dict:
        return {"held_out_pairs": pairs, "held_out_agreeing": agreeing, "held_out_accuracy": round(agreeing / pairs, 4)}

    near_chance = held_out([fold(500, 262), fold(500, 258)])  # 0.520 of 1,000: within chance
    assert (near_chance["pairs"], near_chance["agreeing"], near_chance["accuracy"]) == (1000, 520, 0.52)
    assert near_chance["interval_95"] == pytest.approx([0.489, 0.551], abs=1e-3) and not near_chance["beats_chance"]
    competent = held_out([fold(500, 378), fold(500, 377)])
    assert competent["interval_95"][0] > 0.7 and competent["beats_chance"]
    assert held_out([{"held_out_pairs": 0, "held_out_agreeing": 0, "held_out_accuracy": None}]) == {
        "pairs": 0,
        "agreeing": 0,
        "accuracy": None,
        "interval_95": None,
        "beats_chance": False,
    }


def test_cli_reports_each_fold(demo_build: Path, tmp_path: Path) -> None:
    build = tmp_path / "build"
    shutil.copytree(demo_build, build)
    args = ["audit", "--build", str(build), "--out", str(tmp_path / "run"), "--folds", "2", "--model", "tiny"]
    for setting in ("max_steps=1", "global_batch=8", "micro_batch=4", "max_length=96"):
        args += ["--set", setting]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "fold 0: held-out accuracy" in result.output and "fold 1: held-out accuracy" in result.output
    assert "pairs judged out of fold" in result.output and "rm_margin" in result.output
    # One step of the tiny model does not beat chance on held-out pairs: the user is told not to act on it.
    pooled = json.loads((tmp_path / "run" / "audit.json").read_text())["held_out"]
    assert not pooled["beats_chance"] and pooled["interval_95"][0] <= 0.5
    assert f"in {pooled['agreeing']} of {pooled['pairs']} scored pairs of the shards (95% interval" in result.output
    assert "warning: the fold models do not agree with the labels more often than chance" in result.output
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "resumed: " not in result.output
    assert (f"resumed: 2 of 2 folds judged by an earlier run of this audit in {tmp_path / 'run'} are kept, not "
            "trained or judged again (fold 0, 1)\n") in again.output  # fmt: skip
    result = CliRunner().invoke(app, [*args[:6], "1"])
    assert result.exit_code == 1 and "error: --folds 1: need at least 2" in result.output
    # An audit that fails before a fold did any work leaves no folder it created (its plan was written first)
    failing = [*args[:4], str(tmp_path / "failed"), *args[5:-2], "--set", "max_length=10"]  # no pair fits
    result = CliRunner().invoke(app, failing)
    assert result.exit_code == 1 and "error: " in result.output and not (tmp_path / "failed").exists()
    # Without --shards, the settings file's extra builds are the ones trained on.
    settings = tmp_path / "fit.yaml"
    settings.write_text(f"shards: [{tmp_path / 'no-such-build'}]\n")
    other = ["audit", "--build", str(build), "--out", str(tmp_path / "run-2"), "--model", "tiny"]
    result = CliRunner().invoke(app, [*other, "--settings", str(settings)])
    assert result.exit_code == 1 and "no-such-build: no such build folder" in result.output, result.output


def _relabel_fold(path: Path) -> None:
    """The fold's scores, the right pairs, labelled with another fold."""
    table = pq.read_table(path)
    index = table.schema.get_field_index("fold")
    pq.write_table(table.set_column(index, "fold", pa.array([0] * table.num_rows, pa.int32())), path)


def _judged_under_another_plan(path: Path) -> None:
    """The right pairs and fold, judged by an audit with other settings (its plan digest differs)."""
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({"rm_workbench.audit_plan": "0" * 64}), path)


def _nan_margins(path: Path) -> None:
    table = pq.read_table(path)
    index = table.schema.get_field_index("margin")
    pq.write_table(table.set_column(index, "margin", pa.array([float("nan")] * table.num_rows)), path)


def _flip_margins(path: Path) -> None:
    """Margins edited by hand: the same pairs, plan and schema, every margin finite, the signs reversed."""
    table = pq.read_table(path)
    index = table.schema.get_field_index("margin")
    pq.write_table(table.set_column(index, table.schema.field("margin"), pc.negate(table.column("margin"))), path)


@pytest.mark.parametrize(
    "damage",
    [
        lambda run: (run / "fold-1" / "scores.parquet").write_bytes(b"PAR1"),  # cut short by a crash
        lambda run: _flip_margins(run / "fold-1" / "scores.parquet"),
        lambda run: shutil.copyfile(run / "fold-0" / "scores.parquet", run / "fold-1" / "scores.parquet"),  # foreign
        lambda run: _relabel_fold(run / "fold-1" / "scores.parquet"),
        lambda run: _nan_margins(run / "fold-1" / "scores.parquet"),
        lambda run: _judged_under_another_plan(run / "fold-1" / "scores.parquet"),
        lambda run: (run / "fold-1" / "fold.json").unlink(),  # judged, not yet marked done
    ],
)
def test_a_damaged_judged_fold_is_judged_again(audited: tuple, tmp_path: Path, damage: Any) -> None:
    build, run, report = audited
    resumed = tmp_path / "run"
    shutil.copytree(run, resumed)
    damage(resumed)
    steps: list[tuple[int, str]] = []
    again = audit(build, CONFIG, 2, resumed, on_fold=lambda fold, what: steps.append((fold, what)))
    assert steps == [(0, "kept"), (1, "judge")]  # fold 1's model is kept; fold 0 untouched
    assert pq.read_table(resumed / "scores.parquet") == pq.read_table(run / "scores.parquet")
    assert again["folds"] == report["folds"] and again["scored"] == report["scored"]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{}",
        '{"fold": 1, "pairs": 23, "scored": 23, "truncated": 0, "not_scored": {}, "held_out_pairs": 1000, '
        '"held_out_agreeing": 900, "held_out_accuracy": 0.9}',  # counts that would claim a competent audit
    ],
)
def test_a_fold_report_is_counted_from_its_scores_never_read_back(audited: tuple, tmp_path: Path, text: str) -> None:
    build, run, report = audited
    resumed = tmp_path / "run"
    shutil.copytree(run, resumed)
    (resumed / "fold-1" / "fold.json").write_text(text)
    steps: list[tuple[int, str]] = []
    again = audit(build, CONFIG, 2, resumed, on_fold=lambda fold, what: steps.append((fold, what)))
    assert steps == [(0, "kept"), (1, "kept")]  # the scores are whole: nothing judged again
    assert again["folds"] == report["folds"] and again["held_out"] == report["held_out"]
    written = json.loads((resumed / "fold-1" / "fold.json").read_text())
    assert (
        written.pop("scores_sha256") == hashlib.sha256((resumed / "fold-1" / "scores.parquet").read_bytes()).hexdigest()
    )
    assert written == report["folds"][1]


def test_a_damaged_or_foreign_run_folder_is_refused_with_a_reason(audited: tuple, tmp_path: Path) -> None:
    build, run, _ = audited
    resumed = tmp_path / "run"
    shutil.copytree(run, resumed)
    for text in ("", "{not json", "[]", '{"config": null}'):
        (resumed / "plan.json").write_text(text)
        with pytest.raises(InputError, match="plan.json: not an audit plan"):
            audit(build, CONFIG, 2, resumed)
    (resumed / "plan.json").unlink()  # folds without the plan that says what they judged
    with pytest.raises(InputError, match="fold folders but no plan.json"):
        audit(build, CONFIG, 2, resumed)
    shutil.rmtree(resumed)
    shutil.copytree(run, resumed)
    (resumed / "fold-1" / "scores.parquet").unlink()
    (resumed / "fold-1" / "model" / "model.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(InputError, match="fold-1: a damaged model or checkpoint"):
        audit(build, CONFIG, 2, resumed)
    (resumed / "fold-1" / "model" / "model.safetensors").unlink()  # a file gone
    with pytest.raises(InputError, match="fold-1: a damaged model or checkpoint .*No such file"):
        audit(build, CONFIG, 2, resumed)
    # Another fold's model judging this fold would judge pairs it trained on.
    shutil.rmtree(resumed / "fold-1")
    shutil.copytree(run / "fold-0", resumed / "fold-1")
    (resumed / "fold-1" / "fold.json").unlink()
    with pytest.raises(InputError, match="fold-1: its model is not fold 1's of this audit"):
        audit(build, CONFIG, 2, resumed)
    shutil.rmtree(resumed / "fold-1")
    (resumed / "fold-1").symlink_to(resumed / "fold-0")
    with pytest.raises(InputError, match="fold-1: its model is not fold 1's of this audit"):
        audit(build, CONFIG, 2, resumed)
    assert pq.read_table(resumed / "fold-0" / "scores.parquet") == pq.read_table(run / "fold-0" / "scores.parquet")
    (resumed / "fold-1").unlink()
    (resumed / "fold-1").write_text("")
    with pytest.raises(InputError, match="fold-1: a file where fold 1's folder belongs"):
        audit(build, CONFIG, 2, resumed)
    shutil.rmtree(resumed)
    shutil.copytree(run, resumed)
    (resumed / "audit.json").unlink()
    (resumed / "audit.json").mkdir()
    with pytest.raises(InputError, match="audit.json: a folder where the audit writes a file"):
        audit(build, CONFIG, 2, resumed)


def test_a_build_rebuilt_in_place_is_not_resumed(audited: tuple, tmp_path: Path) -> None:
    # The same pair ids, other training pairs (a recipe that removes fewer): the fold models would be stale.
    build, _, _ = audited
    rebuilt = tmp_path / "build"
    shutil.copytree(build, rebuilt)
    audit(rebuilt, CONFIG, 2, tmp_path / "run")
    # rebuilt: the first shard's rows in another order, and the manifest naming the new shard's sha256
    import pyarrow as pa

    from curation.io import sha256_file

    shard = rebuilt / json.loads((rebuilt / "manifest.json").read_text())["shards"][0]["file"]
    table = pa.ipc.open_stream(shard.read_bytes()).read_all()
    reordered = table.take(list(reversed(range(table.num_rows))))
    with pa.OSFile(str(tmp_path / "shard.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(reordered)
    (tmp_path / "shard.arrow").replace(shard)
    manifest = json.loads((rebuilt / "manifest.json").read_text())
    manifest["shards"][0]["sha256"] = sha256_file(shard)
    (rebuilt / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=r"planned otherwise \(the shards the folds train on differ\); give its"):
        audit(rebuilt, CONFIG, 2, tmp_path / "run")


def test_an_audit_whose_prompts_all_fall_in_one_fold_is_refused(tmp_path: Path) -> None:
    prompts = set(build_pairs(BuildDir.open(prompts_build(tmp_path, 3, pairs_each=4))).column("prompt_id").to_pylist())
    seed = next(s for s in range(1000) if len({fold_of(p, s, 2) for p in prompts}) == 1)
    with pytest.raises(InputError, match=rf"the prompts of the build's shards all fall in fold \d with seed {seed}"):
        audit(tmp_path / "b", dataclasses.replace(CONFIG, seed=seed), 2, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_arguments_that_cannot_make_an_audit_are_refused(audited: tuple, tmp_path: Path) -> None:
    build, _, _ = audited
    prompts = len(set(build_pairs(BuildDir.open(build)).column("prompt_id").to_pylist()))
    with pytest.raises(InputError, match=f"--folds 1000: more folds than the build's {prompts} prompts"):
        audit(build, CONFIG, 1000, tmp_path / "run")
    with pytest.raises(InputError, match="inside the build"):
        audit(build, CONFIG, 2, build / "audit")
    (tmp_path / "a-file").write_text("")
    with pytest.raises(InputError, match="a file, not a folder"):
        audit(build, CONFIG, 2, tmp_path / "a-file")
    for spec in (str(build), f"{build}=2", str(build / "shards")):
        with pytest.raises(InputError, match="the audited build itself"):
            audit(build, dataclasses.replace(CONFIG, shards=[spec]), 2, tmp_path / "run")
    assert not (tmp_path / "run").exists() and not (build / "audit").exists()
    (tmp_path / "fit-run").mkdir()  # a fit run's folder (or any folder of other files) is not the audit's
    (tmp_path / "fit-run" / "metrics.jsonl").write_text("")
    with pytest.raises(InputError, match="holds other files, not an audit"):
        audit(build, CONFIG, 2, tmp_path / "fit-run")
    assert sorted(p.name for p in (tmp_path / "fit-run").iterdir()) == ["metrics.jsonl"]


def test_a_fold_the_hash_leaves_empty_has_no_model_and_no_pairs() -> None:
    table = _judge_fold(None, [], {}, 3, CONFIG)
    report = fold_report(table, 3, set())
    assert table.num_rows == 0 and table.schema == AUDIT_SCHEMA
    assert (report["fold"], report["pairs"], report["scored"], report["held_out_pairs"]) == (3, 0, 0, 0)


def test_a_non_finite_reward_is_not_a_score(audited: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    # A diverged model's NaN would be compared as a margin (and refused by rm_margin); it is a pair not judged.
    import torch

    build, run, _ = audited
    rows = [p for p in build_pairs(BuildDir.open(build)).to_pylist() if not p["images"]][:3]
    model = RewardModel.load(run / "fold-0" / "model")
    forward = RewardModel.forward

    def first_is_nan(self: RewardModel, **inputs: Any) -> torch.Tensor:
        out = forward(self, **inputs).clone()
        out[0] = float("nan")
        return out

    monkeypatch.setattr(RewardModel, "forward", first_is_nan)
    table = _judge_fold(model, rows, {}, 0, dataclasses.replace(CONFIG, micro_batch=4))
    report = fold_report(table, 0, set())
    # the micro-batch's first row: its shortest pair (pairs are batched by size)
    first = min(range(3), key=lambda k: (size_key(rows[k]), k))
    assert table.column("not_scored").to_pylist() == ["non-finite reward" if k == first else None for k in range(3)]
    assert table.column("margin").null_count == 1 and report["not_scored"] == {"non-finite reward": 1}


def test_ctrl_c_says_which_folds_are_kept(demo_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import trainer.audit

    build = tmp_path / "build"
    shutil.copytree(demo_build, build)
    real = trainer.audit._fold_model

    def interrupted_at(fold: int) -> Any:
        def fold_model(folder: Path, k: int, *args: Any) -> Any:
            if k == fold:
                raise KeyboardInterrupt
            return real(folder, k, *args)

        return fold_model

    def args(out: Path) -> list[str]:
        return ["audit", "--build", str(build), "--out", str(out), "--folds", "2", "--model", "tiny",
                "--set", "max_steps=1", "--set", "global_batch=8", "--set", "micro_batch=4"]  # fmt: skip

    monkeypatch.setattr(trainer.audit, "_fold_model", interrupted_at(1))
    result = CliRunner().invoke(app, args(tmp_path / "run"))
    kept = f"1 of 2 folds judged are kept in {tmp_path / 'run'} (fold-0); the same command continues from them"
    assert (result.exit_code, result.stderr) == (130, f"interrupted: {kept}\n")
    # Stopped in the first fold: its plan alone is not kept, nor the folder the audit created.
    monkeypatch.setattr(trainer.audit, "_fold_model", interrupted_at(0))
    result = CliRunner().invoke(app, args(tmp_path / "other"))
    assert (result.exit_code, result.stderr) == (130, "interrupted: stopped before any fold's work was kept\n")
    assert not (tmp_path / "other").exists()


def test_a_removed_pairs_prompt_is_left_out_of_the_extra_builds_too(tmp_path: Path) -> None:
    """The audit judges the removed pairs as well: their prompts' fold is left out of every build the fold's model
    trains on, even where the audited build's shards no longer hold the prompt."""
    from curation.build import build as make_build
    from curation.recipe import load_recipe
    from tests.conftest import write_jsonl

    def row(k: int, tie: bool) -> dict[str, Any]:
        return {"prompt": f"Question {k}?", "chosen": f"A good answer {k}.", "rejected": f"A bad one {k}.",
                "score_chosen": 5.0, "score_rejected": 5.0 if tie else 1.0}  # fmt: skip

    for name, rows in (("audited", [row(k, tie=k == 0) for k in range(12)]), ("extra", [row(0, tie=False)])):
        write_jsonl(tmp_path / f"{name}.jsonl", rows)
        source = f"uf: {{adapter: ultrafeedback_binarized, path: {name}.jsonl}}"
        ops = "filters: {drop_ties: true}"
        (tmp_path / f"{name}.yaml").write_text(f"name: {name}\nsources:\n  {source}\nops:\n  {ops}\n")
        make_build(load_recipe(tmp_path / f"{name}.yaml"), tmp_path / name)
    removed = BuildDir.open(tmp_path / "audited").removed_pairs(["prompt_id"])
    assert removed is not None and removed.num_rows == 1  # the tie: its prompt is in no shard of the audited build
    fold = fold_of(removed.column("prompt_id")[0].as_py(), CONFIG.seed, 2)
    data = PairData.open([str(tmp_path / "audited"), str(tmp_path / "extra")], CONFIG.seed, 0.0, folds=2, fold=fold)
    assert not [e for e in data.train if e.build == 1]  # the extra build's pair of that prompt is left out
    assert data.counts[str(tmp_path / "extra")]["left_out"] == 1
