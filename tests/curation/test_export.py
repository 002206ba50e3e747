"""`curate export`: the Hub layout round-trips through `datasets`, TRL consumes it, licenses and tokens are safe."""

import hashlib
import json
from pathlib import Path

import datasets
import pytest
import yaml
from typer.testing import CliRunner

from curation.build import build
from curation.cli import app
from curation.io import read_shards
from curation.recipe import load_recipe
from tests.conftest import write_jsonl

TOKEN = "hf_PLANTEDfakeTOKENvalue0123456789"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, demo_recipe: Path) -> Path:
    out = tmp_path_factory.mktemp("export") / "demo"
    build(load_recipe(demo_recipe), out)
    return out


def export(build_dir: Path, local: Path, *extra: str) -> CliRunner:
    result = CliRunner().invoke(
        app, ["export", str(build_dir), "--repo", "me/prefs", "--local-dir", str(local), *extra]
    )
    return result


def load(local: Path, config: str, tmp_path: Path) -> datasets.Dataset:
    return datasets.load_dataset(str(local), config, split="train", cache_dir=str(tmp_path / "hf-cache"))


def test_round_trip_every_config_with_rows_images_and_columns(demo: Path, tmp_path: Path) -> None:
    result = export(demo, tmp_path / "hub", "--dry-run")
    assert result.exit_code == 0, result.output
    shards = read_shards(sorted((demo / "shards").glob("*.arrow"))).to_pylist()
    card = (tmp_path / "hub" / "README.md").read_text()
    configs = [c["config_name"] for c in yaml.safe_load(card.split("---")[1])["configs"]]
    assert configs == ["default", "hh_rlhf", "mm_rlhf", "rlaif_v", "ultrafeedback"]
    for config in configs:
        ds = load(tmp_path / "hub", config, tmp_path)
        expected = [r for r in shards if config == "default" or r["source"] == config]
        assert ds["pair_id"] == [r["pair_id"] for r in expected]
        assert ds["image_sha256"] == [r["images"] for r in expected]
        raw = ds.cast_column("images", datasets.Sequence(datasets.Image(decode=False)))
        for row in raw:
            assert [hashlib.sha256(i["bytes"]).hexdigest() for i in row["images"]] == row["image_sha256"]
        assert {"prompt", "chosen", "rejected", "images", "source", "meta", "score_margin"} <= set(ds.column_names)
        assert all(c[0]["role"] == "assistant" for c in ds["chosen"])
    assert any(len(r["images"]) for r in load(tmp_path / "hub", "rlaif_v", tmp_path))
    # the card's table of configs says what each holds and how many rows, and distinct pairs where they differ
    assert f"| `default` | the whole mixture | {len(shards)} rows: " in card
    images = len({sha for r in shards for sha in r["images"]})
    [summary] = [line for line in card.splitlines() if line.startswith("Preference pairs curated")]
    assert summary.endswith(f", {images} images.")  # what is published, not the build's removed pairs' images
    for config in configs[1:]:
        rows = [r["pair_id"] for r in shards if r["source"] == config]
        size = f"{len(rows)} rows" + ("" if len(set(rows)) == len(rows) else f": {len(set(rows))} distinct pairs, ")
        assert f"| `{config}` | the pairs of this source | {size}" in card
    for name in ("recipe.yaml", "manifest.json"):
        assert (tmp_path / "hub" / name).is_file()
    assert "## Build report" in card and "Decontamination" in card
    # the build report's headings sit under its own; the recipe's YAML comments in it stay comments
    report = card.split("## Build report")[1].split("\n## ")[0]
    assert "\n### Build `demo`" in report and "\n# " not in report.replace("```yaml\n# ", "")
    recipe = (demo / "manifest.json").read_text()
    first = json.loads(recipe)["recipe"]["text"].splitlines()[0]
    assert first.startswith("# ") and f"\n{first}\n" in report


def test_a_build_with_no_pair_is_not_exported(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "No answers.", "metadata": {}}])
    (tmp_path / "r.yaml").write_text("name: e\nsources:\n  uf: {adapter: ultrafeedback_binarized, path: rows.jsonl}\n")
    build(load_recipe(tmp_path / "r.yaml"), tmp_path / "empty")
    result = export(tmp_path / "empty", tmp_path / "hub", "--dry-run")
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and "the build has no pair in its shards; nothing to export" in (
        " ".join(result.output.split())
    )
    assert not (tmp_path / "hub").exists() and not (tmp_path / "hub.partial").exists()


def test_the_local_paths_published_with_the_recipe_are_said(tmp_path: Path) -> None:
    """The recipe and manifest travel as the build wrote them: absolute paths in them name this machine's folders,
    and the export says which (a path relative to the recipe names none)."""
    rows = [{"prompt": f"Q{k}?", "chosen": f"A{k}.", "rejected": f"B{k}."} for k in range(3)]
    data = write_jsonl(tmp_path / "data" / "uf.jsonl", rows)
    for name, path in (("absolute", data), ("relative", "data/uf.jsonl")):
        (tmp_path / f"{name}.yaml").write_text(
            f"name: {name}\nsources:\n  uf: {{adapter: ultrafeedback_binarized, path: {path}}}\n"
        )
        build(load_recipe(tmp_path / f"{name}.yaml"), tmp_path / name)
        result = export(tmp_path / name, tmp_path / f"{name}-hub", "--dry-run")
        assert result.exit_code == 0, result.output
        notes = [line for line in result.stderr.splitlines() if line.startswith("note: ")]
        expected = [f"note: recipe.yaml and manifest.json are published as the build wrote them, with the local "
                    f"paths they name: {data}"]  # fmt: skip
        assert notes == (expected if name == "absolute" else [])


def test_text_only_export_is_consumed_by_trl_reward_trainer(tmp_path: Path) -> None:
    trl = pytest.importorskip("trl")
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    from trainer.tiny import tiny_tokenizer

    rows = [{"prompt": f"Question {k}?", "chosen": f"A helpful answer {k}.", "rejected": "No.",
             "metadata": {"score_chosen": 8.0, "score_rejected": 2.0}} for k in range(8)]  # fmt: skip
    source = write_jsonl(tmp_path / "uf.jsonl", rows)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: text\nsources:\n  uf: {{adapter: ultrafeedback_binarized, path: {source}}}\n")
    build(load_recipe(recipe), tmp_path / "build")
    assert export(tmp_path / "build", tmp_path / "hub", "--dry-run").exit_code == 0
    ds = load(tmp_path / "hub", "default", tmp_path)
    tokenizer = tiny_tokenizer()
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id,
                         num_labels=1)  # fmt: skip
    args = trl.RewardConfig(output_dir=str(tmp_path / "trl"), report_to=[], max_steps=1, per_device_train_batch_size=2,
                            use_cpu=True, max_length=256)  # fmt: skip
    trainer = trl.RewardTrainer(model=Qwen2ForSequenceClassification(config), args=args, train_dataset=ds,
                                processing_class=tokenizer)  # fmt: skip
    assert {"chosen_ids", "rejected_ids"} <= set(trainer.train_dataset.column_names)
    assert trainer.train().training_loss > 0


def test_restrictive_licenses_refuse_a_permissive_claim() -> None:
    from curation.export import decide_license

    assert decide_license({"a": ["MIT"]}, None, False) == ("mit", False)
    assert decide_license({"a": ["MIT"], "b": ["CC-BY-NC-4.0"]}, None, False) == ("other", True)
    with pytest.raises(Exception, match="contradicts"):
        decide_license({"a": ["MIT"], "b": ["CC-BY-NC-4.0"]}, "mit", False)
    assert decide_license({"a": ["MIT"], "b": ["CC-BY-NC-4.0"]}, "mit", True) == ("mit", True)
    assert decide_license({"a": ["unknown"]}, "cc-by-nc-4.0", False) == ("cc-by-nc-4.0", True)


def test_cli_refuses_a_license_that_contradicts_the_demo_sources(demo: Path, tmp_path: Path) -> None:
    refused = export(demo, tmp_path / "a", "--dry-run", "--license", "mit")  # the demo holds CC-BY-NC-4.0 rows
    assert refused.exit_code == 1 and "--force-license" in refused.output
    forced = export(demo, tmp_path / "b", "--dry-run", "--license", "mit", "--force-license")
    assert forced.exit_code == 0
    assert "some sources are non-commercial" in (tmp_path / "b" / "README.md").read_text()


def test_dry_run_sends_nothing(demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a dry run must not call the Hub")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", refuse)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", refuse)
    result = export(demo, tmp_path / "hub", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "[dry run] would upload 9 files in one commit" in result.output
    # again into the same folder: refused, or replaced whole with --replace (never a folder that is not an export)
    again = export(demo, tmp_path / "hub", "--dry-run")
    assert again.exit_code == 1 and "pass --replace" in again.output
    (tmp_path / "hub" / "data" / "gone_source").mkdir()  # a config of a source the build no longer has
    replaced = export(demo, tmp_path / "hub", "--dry-run", "--replace")
    assert replaced.exit_code == 0, replaced.output
    assert not (tmp_path / "hub" / "data" / "gone_source").exists() and (tmp_path / "hub" / "manifest.json").is_file()
    # a clone of the Hub repo (its .git) or a file of the user's is never replaced
    (tmp_path / "hub" / ".git").mkdir()
    foreign = export(demo, tmp_path / "hub", "--dry-run", "--replace")
    assert foreign.exit_code == 1 and "holds what an export does not write (.git); not replaced" in foreign.output
    assert (tmp_path / "hub" / ".git").is_dir() and not (tmp_path / "hub.partial").exists()


def test_missing_token_is_a_clear_error(demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))  # no login store either
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    result = export(demo, tmp_path / "hub")
    assert result.exit_code == 1
    assert "no Hugging Face token" in result.output
    assert not (tmp_path / "hub").exists()  # asked first: no folder written that a rerun would have to clear


def test_the_token_never_appears_in_output_or_files(
    demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the upload fails without touching the network
    result = export(demo, tmp_path / "hub")
    assert result.exit_code == 1 and "upload to me/prefs failed" in result.output
    assert TOKEN not in result.output
    for path in (tmp_path / "hub").rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_a_folder_in_the_way_of_the_partial_export_is_refused_never_deleted(demo: Path, tmp_path: Path) -> None:
    """An export is written in LOCAL_DIR.partial first: a folder of that name it did not leave (a build, notes) is
    refused with its contents intact; one an interrupted export left (marked) is replaced."""
    import shutil

    from curation.ingest import PARTIAL_MARK

    theirs = tmp_path / "hub.partial"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    result = export(demo, tmp_path / "hub", "--dry-run")
    assert result.exit_code == 1 and "hub.partial: in the way of the export" in result.output
    assert (theirs / "notes.txt").read_text() == "mine" and not (tmp_path / "hub").exists()
    shutil.rmtree(theirs)
    theirs.mkdir()
    (theirs / PARTIAL_MARK).touch()  # left by an export that was killed
    (theirs / "half.parquet").write_text("x")
    assert export(demo, tmp_path / "hub", "--dry-run").exit_code == 0
    assert not theirs.exists() and not (tmp_path / "hub" / PARTIAL_MARK).exists()
    (tmp_path / "again.partial").mkdir()  # empty: made by an export killed before it was marked
    assert export(demo, tmp_path / "again", "--dry-run").exit_code == 0
    (tmp_path / "linked.partial").symlink_to(theirs.parent / "hub")  # an export never leaves a link: the user's
    result = export(demo, tmp_path / "linked", "--dry-run")
    assert result.exit_code == 1 and "linked.partial: in the way of the export" in result.output
    assert (tmp_path / "linked.partial").is_symlink() and (tmp_path / "hub" / "README.md").is_file()


def test_a_build_changed_since_it_was_built_is_not_exported(demo: Path, tmp_path: Path) -> None:
    """A shard rewritten with the same number of rows, or a manifest whose counts were edited: what the card and
    the content ids say would not be what is published."""
    import shutil

    import pyarrow as pa

    copy = tmp_path / "copy"
    shutil.copytree(demo, copy)
    shard = sorted((copy / "shards").glob("*.arrow"))[0]
    table = pa.ipc.open_stream(shard.read_bytes()).read_all()  # in memory: the file is replaced below
    chosen = table.column("chosen").to_pylist()
    edited = table.set_column(table.schema.get_field_index("chosen"), table.schema.field("chosen"),
                              pa.array(["edited", *chosen[1:]], pa.string()))  # fmt: skip
    with pa.OSFile(str(tmp_path / "edited.arrow"), "wb") as sink, pa.ipc.new_stream(sink, edited.schema) as writer:
        writer.write_table(edited)  # the same rows but one, as a hand edit would leave them
    (tmp_path / "edited.arrow").replace(shard)
    result = export(copy, tmp_path / "hub", "--dry-run")
    assert result.exit_code == 1 and "shards edited since their build" in result.output, result.output
    shutil.rmtree(copy)
    shutil.copytree(demo, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "rows_in_shards": 999}))
    result = export(copy, tmp_path / "hub", "--dry-run")
    assert result.exit_code == 1 and "`rows_in_shards` is 999, where the shards hold 43" in result.output
    assert not (tmp_path / "hub").exists() and not (tmp_path / "hub.partial").exists()


def test_export_of_the_current_folder_and_repo_ids_the_hub_refuses(
    demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    for repo in ("me/prefs.git", "me/pr\u00e9fs", "me--x/prefs"):
        result = CliRunner().invoke(app, ["export", str(demo), "--repo", repo, "--dry-run"])
        assert result.exit_code == 1 and "not a Hub repo id" in result.output, (repo, result.output)
    copy = tmp_path / "demo"
    shutil.copytree(demo, copy)
    monkeypatch.chdir(copy)
    result = CliRunner().invoke(app, ["export", ".", "--repo", "me/prefs", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "demo-hub" / "README.md").is_file()  # beside the build, named after it
