"""Sources, images and the build folder in an object store (S3, served on this machine by moto; `file://`): the
same build as from local files, uploaded manifest last, and one `error:` line for what cannot be read or written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from curation.build import build, staging_folder
from curation.cli import app
from curation.errors import InputError
from curation.recipe import load_recipe
from curation.storage import download
from tests.conftest import build_files


def test_build_from_and_to_s3(s3: Any, s3_recipe: Path, demo_build: Path, tmp_path: Path) -> None:
    assert "s3://inputs/demo/native/mm_rlhf/media" in s3_recipe.read_text()
    s3.create_bucket(Bucket="builds")
    manifest = build(load_recipe(s3_recipe), "s3://builds/demo", stage=tmp_path / "stage")
    assert not staging_folder("s3://builds/demo", tmp_path / "stage").exists()  # uploaded, then removed here
    local = download("s3://builds/demo", tmp_path / "fetched")
    assert build_files(local) == build_files(demo_build)
    assert json.loads((local / "manifest.json").read_text()) == manifest
    inputs = manifest["inputs"]["mm_rlhf"]
    assert inputs["uri"] == "s3://inputs/demo/native/mm_rlhf/dpo_pairs.jsonl"
    assert list(inputs["files"]) == ["dpo_pairs.jsonl"] and inputs["files"]["dpo_pairs.jsonl"]["bytes"] > 0
    # The manifest is the last object written: a reader that finds it finds the rest. (LastModified has whole
    # seconds, so objects written in the manifest's second tie with it.)
    objects = s3.list_objects_v2(Bucket="builds", Prefix="demo/")["Contents"]
    (written_last,) = [o["LastModified"] for o in objects if o["Key"] == "demo/manifest.json"]
    assert all(o["LastModified"] <= written_last for o in objects)
    with pytest.raises(InputError, match="already holds a build"):
        build(load_recipe(s3_recipe), "s3://builds/demo", stage=tmp_path / "stage")


def test_a_failed_upload_leaves_nothing_under_the_uri(
    s3: Any, s3_recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.fs as pafs

    s3.create_bucket(Bucket="flaky")
    copy, calls = pafs.copy_files, []

    def failing_copy(*args: Any, **kwargs: Any) -> None:
        if args[1].startswith("flaky/"):  # the upload's copies, not the sources'
            calls.append(args[1])
        if len(calls) == 4:
            raise OSError("connection reset")
        copy(*args, **kwargs)

    monkeypatch.setattr(pafs, "copy_files", failing_copy)
    with pytest.raises(InputError, match=r"s3://flaky/demo: cannot write .*connection reset.*stays in"):
        build(load_recipe(s3_recipe), "s3://flaky/demo", stage=tmp_path / "stage")
    assert "Contents" not in s3.list_objects_v2(Bucket="flaky")  # the three files copied were deleted
    staged = staging_folder("s3://flaky/demo", tmp_path / "stage")
    assert (staged / "manifest.json").is_file()  # the finished build is kept to upload again
    assert staged != staging_folder("s3://other/demo", tmp_path / "stage")  # same name, another URI: its own folder
    s3.put_object(Bucket="flaky", Key="half/shards/train-00000-of-00003.arrow", Body=b"x")
    with pytest.raises(InputError, match="holds 1 files but no manifest.json"):
        build(load_recipe(s3_recipe), "s3://flaky/half", stage=tmp_path / "stage2")


@pytest.mark.parametrize(
    "uri", ["s3://AKIAFAKE:supersecret@inputs/demo", "s3://inputs/demo?access_key=AKIAFAKE&secret_key=supersecret"]
)
def test_credentials_in_a_uri_are_refused_and_never_shown(demo_recipe: Path, tmp_path: Path, uri: str) -> None:
    recipe = demo_recipe.with_name(f"secret-{tmp_path.name}.yaml")  # beside the demo recipe: its ../ paths
    recipe.write_text(demo_recipe.read_text().replace("../demo_data/native/hh_rlhf", uri))
    result = CliRunner().invoke(app, ["build", "--mix", str(recipe), "--out", str(tmp_path / "b")])
    assert result.exit_code == 1 and "holds credentials" in result.output and "supersecret" not in result.output
    result = CliRunner().invoke(app, ["build", "--mix", str(demo_recipe), "--out", uri])
    assert result.exit_code == 1 and "holds credentials" in result.output and "supersecret" not in result.output


def test_file_uris(demo_recipe: Path, demo_build: Path, tmp_path: Path) -> None:
    native = (demo_recipe.parent.parent / "demo_data" / "native").as_uri()
    recipe = tmp_path / "demo-file.yaml"
    recipe.write_text(demo_recipe.read_text().replace("../demo_data/native", native))
    out = (tmp_path / "out" / "demo").as_uri()
    build(load_recipe(recipe), out, stage=tmp_path / "stage")
    assert build_files(tmp_path / "out" / "demo") == build_files(demo_build)


def test_cli_errors_name_the_uri(s3: Any, s3_recipe: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    missing.write_text(s3_recipe.read_text().replace("s3://inputs/demo/native/hh_rlhf", "s3://inputs/nowhere"))
    result = CliRunner().invoke(app, ["build", "--mix", str(missing), "--out", str(tmp_path / "b")])
    assert result.exit_code == 1
    assert "error: s3://inputs/nowhere: no such file or folder" in result.output
    result = CliRunner().invoke(app, ["build", "--mix", str(s3_recipe), "--out", "s3://no-such-bucket/b"])
    assert result.exit_code == 1 and "error: s3://no-such-bucket/b" in result.output
    assert not (tmp_path / "b").exists()
