"""A build's manifest `inputs` hash the files a source's rows are read from, and a resumed build checks those (and
the images beside them) for changes: not the rest of a repository's snapshot, and never fewer."""

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml

from curation.build import _input_stamp, _local_inputs, build
from curation.recipe import SourceSpec, load_recipe
from tests.conftest import HUB_COMMIT, FakeHub
from tests.curation.sources.test_mmpr import make_mmpr

HUB_ID = "HuggingFaceH4/ultrafeedback_binarized"


def test_a_snapshot_folder_hashes_the_split_it_reads(demo_recipe: Path, tmp_path: Path) -> None:
    """Another split's file, an image archive, the card, the repository's attributes and metadata beside the rows
    went into no shard; a dangling link of the split is a reject, with nothing to hash."""
    root = tmp_path / "copy"
    shutil.copytree(demo_recipe.parent.parent, root)
    hh = root / "demo_data" / "native" / "hh_rlhf"
    (hh / "demo.jsonl.gz").rename(hh / "train.jsonl.gz")
    shutil.copy(hh / "train.jsonl.gz", hh / "test.jsonl.gz")
    (hh / "README.md").write_text("# a card\n")
    (hh / "dataset_info.json").write_text('{"description": "metadata, not rows"}\n')
    with zipfile.ZipFile(hh / "images.zip", "w") as archive:
        archive.writestr("a.png", b"not rows")
    (hh / ".gitattributes").write_text("*.zip filter=lfs\n")
    (hh / "train-extra.jsonl.gz").symlink_to(tmp_path / "gone.jsonl.gz")
    manifest = build(load_recipe(root / "mixes" / "demo.yaml"), tmp_path / "b")
    assert sorted(manifest["inputs"]["hh_rlhf"]["files"]) == ["train.jsonl.gz"]
    assert manifest["sources"]["hh_rlhf"]["rejects_at_ingest"]["unreadable file"] == 1


def test_mmpr_inputs_are_its_meta_file_and_annotations(tmp_path: Path) -> None:
    """Given `meta.json` itself, the annotation files it names are inputs too (they held every row); given its
    folder, its image archives are not. Its images, read beside `meta.json`, are checked on resume."""
    folder = make_mmpr(tmp_path)
    with zipfile.ZipFile(folder / "images.zip", "w") as archive:
        archive.writestr("x.png", b"images, not rows")
    recipe = {"name": "m", "sources": {"mmpr": {"path": str(folder / "meta.json")}}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    manifest = build(load_recipe(tmp_path / "r.yaml"), tmp_path / "b")
    assert sorted(manifest["inputs"]["mmpr"]["files"]) == [
        "annotations/alpha.jsonl", "annotations/mid.jsonl", "annotations/zeta.jsonl", "meta.json"]  # fmt: skip
    spec = SourceSpec("mmpr", "mmpr", str(folder))
    stamp = _input_stamp(spec, _local_inputs(spec))
    (folder / "annotations" / "zeta.jsonl").write_text(json.dumps({"question": "3+3?", "chosen": "6",
                                                                   "rejected": "7"}) + "\n")  # fmt: skip
    assert _input_stamp(spec, _local_inputs(spec)) != stamp
    stamp = _input_stamp(spec, _local_inputs(spec))
    shutil.copy(folder / "images" / "alpha" / "sub" / "b.png", folder / "images" / "alpha" / "a.png")
    assert _input_stamp(spec, _local_inputs(spec)) != stamp  # an image beside meta.json changed


def test_wildvision_bench_inputs_are_the_files_its_verdicts_read(shared_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "wv"
    shutil.copytree(shared_data / "wildvision-bench", folder)
    (folder / "README.md").write_text("# not rows\n")
    from curation.sources import get_adapter

    def names(verdicts: str) -> list[str]:
        files = get_adapter("wildvision_bench")({"verdicts": verdicts}).input_files(str(folder))
        return [p.relative_to(folder).as_posix() for p in files]

    answers = sorted(p.relative_to(folder).as_posix() for p in (folder / "model_answers").glob("*.jsonl"))
    judgements = sorted(p.relative_to(folder).as_posix() for p in (folder / "model_judgements").rglob("*.jsonl"))
    assert names("battles") == sorted([*answers, "vision_bench_battles.jsonl"])
    assert judgements and names("judgements") == sorted([*answers, *judgements])


def test_a_hub_source_is_read_at_the_commit_the_manifest_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_hub: FakeHub
) -> None:
    """A Hub id's branch is resolved to its commit once, before anything is read: every read asks for that
    commit and `inputs` records it, so a branch that moves later does not change what the build says it read.
    Offline, the read goes on unpinned and the manifest says so."""
    from huggingface_hub import constants

    recipe = {"name": "hub", "sources": {"uf": {"adapter": "ultrafeedback_binarized", "path": HUB_ID}}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    manifest = build(load_recipe(tmp_path / "r.yaml"), tmp_path / "online")
    assert fake_hub.asked == [(HUB_ID, HUB_COMMIT)]
    assert manifest["inputs"]["uf"] == {"hub_id": HUB_ID, "config": None, "split": None, "revision": None,
                                        "commit": HUB_COMMIT, "data_dir": None, "data_files": None}  # fmt: skip
    assert manifest["sources"]["uf"]["pairs_ingested"] == 3 and not manifest["warnings"]

    fake_hub.asked.clear()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    manifest = build(load_recipe(tmp_path / "r.yaml"), tmp_path / "offline")
    assert fake_hub.asked == [(HUB_ID, None)] and manifest["inputs"]["uf"]["commit"] is None
    assert manifest["warnings"] == [
        "source 'uf': read from the Hub without a resolved commit (offline, or the Hub was not reachable): `inputs` "
        "cannot name the commit read"
    ]


def test_curate_ingest_of_a_hub_id_says_the_commit_it_read(tmp_path: Path, fake_hub: FakeHub) -> None:
    from typer.testing import CliRunner

    from curation.cli import app

    args = ["ingest", "--source", "ultrafeedback_binarized", "--path", HUB_ID, "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert fake_hub.asked == [(HUB_ID, HUB_COMMIT)]
    assert f"note: read {HUB_ID} at commit {HUB_COMMIT}" in result.output
