"""`trainer export`: the model repo loads back with identical rewards; its card carries mixture and evaluation."""

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from curation.errors import InputError
from curation.io import sha256_file
from tests.trainer.conftest import pair_images, pair_row
from trainer.cli import app
from trainer.config import FitConfig
from trainer.data import collate, featurize
from trainer.fit import fit
from trainer.model import SEAL, RewardModel, sealed


def test_model_export_loads_back_with_identical_rewards(demo_build: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    fit(FitConfig(model="tiny", shards=[str(demo_build)], lr=2e-3, global_batch=8, micro_batch=4, max_steps=2), run)
    report = {"benchmarks": {"vl_rewardbench": {"overall": 51.0, "macro": 50.5}},
              "length_judge": {"vl_rewardbench": {"overall": 42.64, "macro": 42.91}}}  # fmt: skip
    (run / "eval.json").write_text(json.dumps(report))
    result = CliRunner().invoke(app, ["export", str(run), "--repo", "me/tiny-rm", "--local-dir", str(tmp_path / "hub"),
                                      "--dataset-repo", "me/prefs", "--dry-run"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "[dry run] would create model repo me/tiny-rm" in result.output
    # as a Hub download lays it out: the repo's .gitattributes and the download's .cache beside the files
    (tmp_path / "hub" / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    (tmp_path / "hub" / ".cache" / "huggingface").mkdir(parents=True)
    (tmp_path / "hub" / ".cache" / "huggingface" / "model.safetensors.metadata").write_text("x")
    original, exported = RewardModel.load(run / "model").eval(), RewardModel.load(tmp_path / "hub").eval()
    shutil.rmtree(tmp_path / "hub" / ".cache")  # and no longer a download: the export may replace it below
    (tmp_path / "hub" / ".gitattributes").unlink()
    # as the Hub's cache holds it (`snapshot_download`): each file a link into the cache's blobs
    snapshot, blobs = tmp_path / "cache" / "snapshots" / "abc", tmp_path / "cache" / "blobs"
    blobs.mkdir(parents=True)
    (tmp_path / "cache" / "refs").mkdir()
    for file in (f for f in (tmp_path / "hub").rglob("*") if f.is_file()):
        name = file.relative_to(tmp_path / "hub")
        shutil.copyfile(file, blobs / sha256_file(file))
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).symlink_to(Path("../" * len(name.parts) + "../blobs") / sha256_file(file))
    cached = RewardModel.load(snapshot).eval()
    feature = featurize(original.backbone, pair_row("What is it?", "Noise.", "A cat.", images=1), pair_images(1), 512)
    batch = collate([feature], original.backbone.pad_token_id)
    with torch.no_grad():
        assert torch.equal(original(**batch.model_inputs()), exported(**batch.model_inputs()))
        assert torch.equal(original(**batch.model_inputs()), cached(**batch.model_inputs()))
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "datasets:\n- me/prefs" in card and "| demo | 1 | demo" in card
    # a source's rows and the distinct pairs they are: MM-RLHF's pairs are upsampled twice in the demo recipe
    assert (
        re.search(r"mm_rlhf \((\d+) rows: (\d+) pairs\)", card) and "sources (rows in shards: distinct pairs)" in card
    )
    assert "length-only judge" in card and "51.00" in card and "load_reward_model" in card
    # how far the run went and how its steps ran, as it recorded them; bf16 and compile marked where they did not apply
    data = json.loads((run / "data.json").read_text())
    assert data["draws_reached"] == 16 and "## Training run" in card
    assert (
        f"2 steps: 16 draws reached ({16 / data['train_draws']:.2f} of an epoch of {data['train_draws']} draws)" in card
    )
    if not torch.cuda.is_available():
        assert "- steps 1-2: cpu, 1 process, float32, layers not compiled" in card
        assert "\nbf16: true  # not applied: it applies on CUDA only (see Training run)\n" in card
        assert "\ncompile: true  # not applied: it applies on CUDA only (see Training run)\n" in card
    assert {"model.safetensors", "fit_config.yaml", "eval.json", "reward_model.json"} <= {
        p.name for p in (tmp_path / "hub").iterdir()}  # fmt: skip
    args = ["export", str(run), "--repo", "me/tiny-rm", "--local-dir", str(tmp_path / "hub"), "--dry-run"]
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 1 and "pass --replace" in again.output
    replaced = CliRunner().invoke(app, [*args, "--replace"])
    assert replaced.exit_code == 0, replaced.output
    assert "datasets:" not in (tmp_path / "hub" / "README.md").read_text()  # the new export's card, no dataset link
    # never into the run itself (its model/ would be replaced by the export), nor under a name the Hub refuses
    inside = CliRunner().invoke(app, [*args[:4], "--local-dir", str(run / "model"), "--dry-run", "--replace"])
    assert inside.exit_code == 1 and "inside" in inside.output and (run / "model" / "model.safetensors").is_file()
    assert not (run / "model" / "README.md").exists()
    bad = CliRunner().invoke(app, ["export", str(run), "--repo", "not a repo", "--local-dir", str(tmp_path / "h2")])
    assert bad.exit_code == 1 and "not a Hub repo id" in bad.output and not (tmp_path / "h2").exists()


def test_an_export_publishes_only_the_runs_own_safe_files(demo_build: Path, tmp_path: Path) -> None:
    """A link out of the run, a pickle (under its own name or a safetensors name), Python code, and a config that
    asks for custom code are each refused, naming the file; nothing is written."""
    import shutil

    run = tmp_path / "run"
    fit(FitConfig(model="tiny", shards=[str(demo_build)], lr=2e-3, global_batch=8, micro_batch=4, max_steps=1), run)
    (tmp_path / "secret.txt").write_text("not for the Hub\n")
    pickle_bytes = b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00N."  # `pickle.dumps(None)`, protocol 4
    model = run / "model"
    cases = {
        "notes.txt": lambda p: p.symlink_to(tmp_path / "secret.txt"),
        "pytorch_model.bin": lambda p: p.write_bytes(pickle_bytes),
        "backbone/modeling_evil.py": lambda p: p.write_text("import os\n"),
    }
    for name, make in cases.items():
        make(model / name)
        result = CliRunner().invoke(app, ["export", str(run), "--repo", "me/m", "--local-dir", str(tmp_path / "hub"),
                                          "--dry-run"], env={"COLUMNS": "250"})  # fmt: skip
        assert result.exit_code == 1 and str(model / name) in result.output, result.output
        assert not (tmp_path / "hub").exists() and not (tmp_path / "hub.partial").exists()
        (model / name).unlink()
    weights = model / "model.safetensors"
    shutil.copy(weights, tmp_path / "weights")
    weights.write_bytes(pickle_bytes)
    result = CliRunner().invoke(app, ["export", str(run), "--repo", "me/m", "--local-dir", str(tmp_path / "hub")])
    assert result.exit_code == 1 and "not a readable safetensors file" in result.output
    shutil.copy(tmp_path / "weights", weights)
    config = json.loads((model / "backbone" / "config.json").read_text())
    (model / "backbone" / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "evil.Model"}}))
    result = CliRunner().invoke(app, ["export", str(run), "--repo", "me/m", "--local-dir", str(tmp_path / "hub")])
    assert result.exit_code == 1 and "asks for custom code (auto_map)" in result.output


def test_the_card_says_how_each_stretch_of_a_run_ran() -> None:
    from trainer.export import _settings_lines
    from trainer.run_summary import ran_text

    cpu = {"device": "cpu", "processes": 1, "dtype": "float32", "compiled": False}
    gpu = {"device": "cuda (NVIDIA H100)", "processes": 8, "dtype": "bfloat16", "compiled": True}
    resumed = [{"steps": [0, 4], **cpu}, {"steps": [4, 10], **gpu}]
    assert [ran_text(s) for s in resumed] == ["steps 1-4: cpu, 1 process, float32, layers not compiled",
        "steps 5-10: cuda (NVIDIA H100), 8 processes, bf16 autocast (fp32 weights), layers compiled"]  # fmt: skip
    assert ran_text({"steps": [0, 1]}) == "step 1: how they ran was not recorded (a checkpoint from before it was)"
    config = {"bf16": True, "compile": False, "lr": 1.0}
    part = "bf16: true  # applied in part: it applies on CUDA only (see Training run)"
    assert _settings_lines(config, resumed) == [part, "compile: false", "lr: 1.0"]
    assert _settings_lines(config, [{"steps": [0, 4], **gpu}])[0] == "bf16: true"  # applied throughout
    assert _settings_lines(config, [])[0] == "bf16: true"  # a run from before it was recorded: nothing said


LINK_OUT = "(: leads out of the run| is a link leading out of the model folder)"  # export's words, or a load's


def test_an_export_refuses_a_model_that_would_not_load_as_trained(demo_build: Path, tmp_path: Path) -> None:
    """The spec unedited, exactly the files saved, each as saved (its recorded sha256), and weights holding
    exactly the tensors the configuration builds, floating-point (checked on the meta device, so also for a run
    saved before digests were recorded); nothing is written. A model that loads refuses the same edits."""
    import shutil

    run = tmp_path / "run"
    fit(FitConfig(model="tiny", shards=[str(demo_build)], global_batch=8, micro_batch=4, max_steps=1), run)
    model, kept = run / "model", tmp_path / "kept"
    shutil.copytree(model, kept)
    spec = json.loads((kept / "reward_model.json").read_text())
    assert {"model.safetensors", "backbone/config.json", "tokenizer.json"} <= set(spec["sha256"])
    weights = (kept / "model.safetensors").read_bytes()
    name = sorted(spec_name for spec_name in json.loads(weights[8 : 8 + int.from_bytes(weights[:8], "little")])
                  if spec_name.startswith("head."))[0]  # fmt: skip
    blanked = weights.replace(f'"{name}"'.encode(), b'"' + b" " * len(name) + b'"', 1)

    def no_digests() -> None:
        older = {k: v for k, v in spec.items() if k not in ("sha256", SEAL)} | {"format_version": 1}
        (model / "reward_model.json").write_text(json.dumps(older))

    def edit_spec(**changes: Any) -> None:  # re-sealed: an edit made to pass the spec's own check
        edited = {k: v for k, v in spec.items() if k != SEAL} | changes
        (model / "reward_model.json").write_text(json.dumps(sealed(edited)))

    def integer_weights() -> None:
        from safetensors.torch import load_file, save_file

        tensors = load_file(model / "model.safetensors")
        save_file({k: v.long() if k == name else v for k, v in tensors.items()}, model / "model.safetensors")
        no_digests()

    damages = {
        "no backbone config": (lambda: (model / "backbone" / "config.json").unlink(), "backbone/config.json: missing"),
        "a tensor renamed": (lambda: (model / "model.safetensors").write_bytes(blanked),
                             "model.safetensors: changed since it was saved"),
        "renamed, saved before digests": (lambda: (no_digests(), (model / "model.safetensors").write_bytes(blanked)),
                                          f"configuration builds \\('{name}' missing and 1 more"),
        "no config, saved before digests": (lambda: (no_digests(), (model / "backbone" / "config.json").unlink()),
                                            "not a readable reward model"),
        "a token file added": (lambda: (model / "added_tokens.json").write_text('{"<x>": 5000}'),
                               "added_tokens.json: added since it was saved"),
        "a checkpoint's state beside": (lambda: (model / "trainer_state.json").write_text("{}"),
                                        "trainer_state.json: added since it was saved"),
        "the head edited": (lambda: (model / "reward_model.json").write_text(json.dumps(
            {**spec, "head": {**spec["head"], "activation": "none"}})), "reward_model.json changed since it was saved"),
        "digests stripped": (lambda: (model / "reward_model.json").write_text(json.dumps(
            {k: v for k, v in spec.items() if k not in ("sha256", SEAL)})), "reward_model.json has no content_sha256"),
        "a digest of a file outside": (lambda: edit_spec(sha256={**spec["sha256"], "/etc/hostname": "0" * 64}),
                                       "its sha256 names '/etc/hostname', not a file inside the folder"),
        "a digest of the run's settings": (lambda: edit_spec(sha256={**spec["sha256"], "../config.yaml": "0" * 64}),
                                           "its sha256 names '../config.yaml', not a file inside the folder"),
        "integer weights, saved before digests": (integer_weights, f"'{name}' holds I64, not floating-point numbers"),
        "a link leading out": (lambda: (shutil.move(model / "tokenizer_config.json", tmp_path / "elsewhere.json"),
                                        (model / "tokenizer_config.json").symlink_to(tmp_path / "elsewhere.json")),
                               f"tokenizer_config.json{LINK_OUT}"),
        "digests emptied, resealed": (lambda: edit_spec(sha256={}), "reward_model.json has no file digests"),
        "a link leading out, saved before digests": (
            lambda: (no_digests(), shutil.move(model / "model.safetensors", tmp_path / "weights"),
                     (model / "model.safetensors").symlink_to(tmp_path / "weights")),
            f"model.safetensors{LINK_OUT}"),
    }  # fmt: skip
    for what, (damage, expected) in damages.items():
        shutil.rmtree(model)
        shutil.copytree(kept, model)
        damage()
        args = ["export", str(run), "--repo", "me/tiny-rm", "--local-dir", str(tmp_path / "hub"), "--dry-run"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1, (what, result.output)
        assert result.output.startswith("error: ") and result.output.count("\n") == 1, (what, result.output)
        assert re.search(expected, result.output), (what, result.output)
        assert not (tmp_path / "hub").exists() and not (tmp_path / "hub.partial").exists(), what
        if what in (
            "a token file added",
            "the head edited",
            "a digest of a file outside",
            "a link leading out",
            "a link leading out, saved before digests",
        ):
            with pytest.raises(InputError, match=expected):
                RewardModel.load(model)


def test_an_export_writes_only_its_own_folders(demo_build: Path, tmp_path: Path) -> None:
    """A `.partial` that is a link (an export never leaves one) is refused, never written through nor removed;
    `--replace` replaces an earlier export only (it has its card), never another run's model folder."""
    run, other = tmp_path / "run", tmp_path / "other"
    fit(FitConfig(model="tiny", shards=[str(demo_build)], global_batch=8, micro_batch=4, max_steps=1), run)
    (tmp_path / "victim").mkdir()
    (tmp_path / "hub.partial").symlink_to(tmp_path / "victim")
    # an editor's hidden copy beside the model: not the model's, never published
    (run / "model" / ".ipynb_checkpoints").mkdir()
    (run / "model" / ".ipynb_checkpoints" / "config-checkpoint.json").write_text("{}")
    args = ["export", str(run), "--repo", "me/tiny-rm", "--dry-run"]
    result = CliRunner().invoke(app, [*args, "--local-dir", str(tmp_path / "hub")])
    assert result.exit_code == 1 and "hub.partial: in the way of the export" in result.output
    assert (tmp_path / "hub.partial").is_symlink() and not any((tmp_path / "victim").iterdir())
    (tmp_path / "hub.partial").unlink()
    result = CliRunner().invoke(app, [*args, "--local-dir", str(tmp_path / "hub")])
    assert result.exit_code == 0, result.output
    assert not any((tmp_path / "victim").iterdir()) and not (tmp_path / "hub").is_symlink()
    assert not (tmp_path / "hub" / ".ipynb_checkpoints").exists() and "ipynb" not in result.output
    fit(FitConfig(model="tiny", shards=[str(demo_build)], global_batch=8, micro_batch=4, max_steps=1), other)
    before = sorted(p.name for p in (other / "model").iterdir())
    replaced = CliRunner().invoke(app, [*args, "--local-dir", str(other / "model"), "--replace"])
    assert replaced.exit_code == 1 and "holds no card (README.md), so no earlier export; not replaced" in (
        replaced.output
    )
    assert sorted(p.name for p in (other / "model").iterdir()) == before


def test_the_card_never_describes_a_build_rebuilt_since_the_run(demo_build: Path, tmp_path: Path) -> None:
    """The model records its builds' shard digests: a build rebuilt in place is not described as what it trained on."""
    import shutil

    build, run = tmp_path / "demo", tmp_path / "run"
    shutil.copytree(demo_build, build)
    fit(FitConfig(model="tiny", shards=[str(build)], global_batch=8, micro_batch=4, max_steps=1), run)
    manifest = json.loads((build / "manifest.json").read_text())
    manifest["shards"][0]["sha256"] = "0" * 64
    (build / "manifest.json").write_text(json.dumps(manifest))
    args = ["export", str(run), "--repo", "me/tiny-rm", "--local-dir", str(tmp_path / "hub"), "--dry-run"]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert "| demo | 1 | (rebuilt since this run: not its data) | |" in (tmp_path / "hub" / "README.md").read_text()
