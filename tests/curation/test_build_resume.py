"""Crash safety: a build killed with SIGKILL at several points, then resumed, equals an uninterrupted build."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from curation.build import build
from curation.recipe import load_recipe
from tests.conftest import build_digests

KILLER = """
import os, signal, sys
from pathlib import Path
from curation.build import build
from curation.recipe import load_recipe

def on_stage(name):
    if name == sys.argv[3]:
        os.kill(os.getpid(), signal.SIGKILL)

build(load_recipe(Path(sys.argv[1])), Path(sys.argv[2]), resume=True, on_stage=on_stage)
"""


@pytest.fixture(scope="module")
def reference(demo_build: Path) -> dict[str, str]:
    """The outputs of an uninterrupted build of the same recipe: every resumed build must equal it."""
    return build_digests(demo_build)


@pytest.mark.parametrize("kill_at", ["ingest mm_rlhf", "near_dedupe", "decontaminate", "write"])
def test_killed_build_resumes_to_identical_output(
    demo_recipe: Path, tmp_path: Path, kill_at: str, reference: dict[str, str]
) -> None:
    out = tmp_path / "killed"
    result = subprocess.run([sys.executable, "-c", KILLER, str(demo_recipe), str(out), kill_at], check=False)
    assert result.returncode == -9  # killed, not finished
    assert not out.exists()  # nothing is visible under the final name
    assert (tmp_path / "killed.partial").is_dir()
    build(load_recipe(demo_recipe), out, resume=True)
    assert build_digests(out) == reference
    assert not (tmp_path / "killed.partial").exists()


def test_resume_reuses_finished_ingests(demo_recipe: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from curation.cli import app

    out = tmp_path / "b"
    subprocess.run([sys.executable, "-c", KILLER, str(demo_recipe), str(out), "near_dedupe"], check=False)
    assert (tmp_path / "b.partial" / "work" / "ingest" / "hh_rlhf" / "done.json").is_file()
    seen: list[str] = []
    reused: list[str] = []
    build(load_recipe(demo_recipe), out, resume=True, on_stage=seen.append, on_reuse=reused.append)
    assert not any(s.startswith("ingest ") for s in seen)  # no source was read again
    # what the resumed build took from the interrupted one is said: each ingest, and the signals written before
    sources = ["hh_rlhf", "mm_rlhf", "rlaif_v", "ultrafeedback", "vl_rewardbench"]  # ingested side by side
    assert sorted(reused[:5]) == [f"ingest {s}" for s in sources]
    assert reused[5:] == ["validate signals", "exact_dedupe signals"]
    again = tmp_path / "c"
    subprocess.run([sys.executable, "-c", KILLER, str(demo_recipe), str(again), "validate"], check=False)
    said = CliRunner().invoke(app, ["build", "--mix", str(demo_recipe), "--out", str(again), "--resume"])
    assert said.exit_code == 0, said.output
    assert "resumed: taken from the interrupted build: ingest hh_rlhf, ingest mm_rlhf, ingest rlaif_v," in said.stdout


def test_a_work_file_cut_short_is_ingested_again(demo_recipe: Path, tmp_path: Path, reference: dict[str, str]) -> None:
    """Work files are not fsynced: after a crash of the machine one may be shorter than its `done.json` says,
    and the resumed build reads that source again (and equals an uninterrupted build)."""
    out = tmp_path / "b"
    subprocess.run([sys.executable, "-c", KILLER, str(demo_recipe), str(out), "validate"], check=False)
    pairs = tmp_path / "b.partial" / "work" / "ingest" / "hh_rlhf" / "pairs.arrow"
    pairs.write_bytes(pairs.read_bytes()[:-100])
    seen: list[str] = []
    build(load_recipe(demo_recipe), out, resume=True, on_stage=seen.append)
    assert "ingest hh_rlhf" in seen and "ingest mm_rlhf" not in seen  # only the damaged source is read again
    assert build_digests(out) == reference


def _zero_the_middle(path: Path) -> None:
    """A file damaged in place (a failing disk): its size and its ends kept, 64 bytes in the middle zeroed."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(data))


def test_work_files_damaged_in_place_are_made_again(
    demo_recipe: Path, tmp_path: Path, reference: dict[str, str]
) -> None:
    """A resumed build checks the sha256 of what it reuses, not only the size: an ingest's files and the signal
    tables damaged in place are made again, and the build equals an uninterrupted one."""
    out = tmp_path / "b"
    subprocess.run([sys.executable, "-c", KILLER, str(demo_recipe), str(out), "near_dedupe"], check=False)
    work = tmp_path / "b.partial" / "work"
    _zero_the_middle(work / "ingest" / "hh_rlhf" / "pairs.arrow")
    (signals,) = (tmp_path / "b.partial" / "signals").glob("exact_dedupe-*.parquet")
    _zero_the_middle(signals)
    seen: list[str] = []
    reused: list[str] = []
    build(load_recipe(demo_recipe), out, resume=True, on_stage=seen.append, on_reuse=reused.append)
    assert "ingest hh_rlhf" in seen and "ingest mm_rlhf" not in seen
    assert "ingest hh_rlhf" not in reused and "exact_dedupe signals" not in reused
    assert "validate signals" in reused
    assert build_digests(out) == reference


def test_existing_output_is_never_overwritten(demo_recipe: Path, tmp_path: Path) -> None:
    build(load_recipe(demo_recipe), tmp_path / "b")
    with pytest.raises(Exception, match="already exists"):
        build(load_recipe(demo_recipe), tmp_path / "b")


def test_a_partial_build_of_another_schema_version_starts_over(demo_recipe: Path, tmp_path: Path) -> None:
    """Ingests of an older schema (other ids or texts) are not reused: a build's rows come from one definition."""
    out = tmp_path / "b"
    subprocess.run([sys.executable, "-c", KILLER, str(demo_recipe), str(out), "validate"], check=False)
    state = tmp_path / "b.partial" / "work" / "state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "schema_version": 1}))
    seen: list[str] = []
    build(load_recipe(demo_recipe), out, resume=True, on_stage=seen.append)
    assert "ingest hh_rlhf" in seen  # read again


def test_a_resumed_build_rewrites_shards_whose_swaps_changed(
    demo_recipe: Path, demo_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shards written before an interruption are reused only for the same rows with the same content: a review
    that swaps a pair between the two runs (the recipe names the same reviews file) changes a shard's rows."""
    from curation import build as build_module
    from curation.io import read_shards
    from curation.reviews import Review, append_review

    target = read_shards(sorted((demo_build / "shards").glob("*.arrow"))).slice(0, 1).to_pylist()[0]
    reviews = tmp_path / "reviews.parquet"
    review = Review(target["pair_id"], target["source"], target["source_row"], "keep", "", "me", "demo")
    append_review(reviews, review)
    recipe = demo_recipe.with_name(f"reviewed-{tmp_path.name}.yaml")  # beside the demo recipe: its ../ paths
    recipe.write_text(
        demo_recipe.read_text().replace(
            "shards: {rows_per_shard: 20}", f"  human_review: {{reviews: {reviews}}}\nshards: {{rows_per_shard: 20}}"
        )
    )

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # after the shards, before the card

    with monkeypatch.context() as patch:
        patch.setattr(build_module, "write_card", interrupted)
        with pytest.raises(KeyboardInterrupt):
            build(load_recipe(recipe), tmp_path / "b", cache=tmp_path / "cache")
    assert list((tmp_path / "b.partial" / "work" / "shards").glob("*.json"))  # the shards were recorded
    append_review(reviews, Review(**{**review.__dict__, "action": "swap", "note": "reversed"}))
    build(load_recipe(recipe), tmp_path / "b", resume=True, cache=tmp_path / "cache")
    build(load_recipe(recipe), tmp_path / "fresh", cache=tmp_path / "cache")
    assert build_digests(tmp_path / "b") == build_digests(tmp_path / "fresh")
    swapped = [p for p in read_shards(sorted((tmp_path / "b" / "shards").glob("*.arrow"))).to_pylist()
               if p["source_row"] == target["source_row"] and p["source"] == target["source"]]  # fmt: skip
    assert swapped and swapped[0]["chosen"] == target["rejected"]


def _killed_copy(demo_recipe: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A copy of the demo's recipe and data, its build killed after `validate`: (recipe, build folder, the
    hh-rlhf source file)."""
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(demo_recipe.parent.parent, root)
    recipe = root / "mixes" / "demo.yaml"
    out = tmp_path / "b"
    subprocess.run([sys.executable, "-c", KILLER, str(recipe), str(out), "validate"], check=False)
    return recipe, out, root / "demo_data" / "native" / "hh_rlhf" / "demo.jsonl.gz"


def test_a_source_changed_before_the_resume_is_ingested_again(demo_recipe: Path, tmp_path: Path) -> None:
    """The manifest hashes the inputs as they are when the build ends: a source edited between the interruption
    and the resume is read again, so the shards hold what the manifest says was read."""
    import gzip

    recipe, out, source = _killed_copy(demo_recipe, tmp_path)
    added = {"chosen": "\n\nHuman: NEWROW what is two and two?\n\nAssistant: Four.",
             "rejected": "\n\nHuman: NEWROW what is two and two?\n\nAssistant: Five."}  # fmt: skip
    source.write_bytes(gzip.compress(gzip.decompress(source.read_bytes()) + (json.dumps(added) + "\n").encode()))
    seen: list[str] = []
    manifest = build(load_recipe(recipe), out, resume=True, on_stage=seen.append)
    assert "ingest hh_rlhf" in seen and "ingest mm_rlhf" not in seen  # only the changed source is read again
    fresh = build(load_recipe(recipe), tmp_path / "fresh")
    assert manifest["sources"]["hh_rlhf"]["rows_read"] == fresh["sources"]["hh_rlhf"]["rows_read"]
    assert build_digests(out) == build_digests(tmp_path / "fresh")


def test_a_source_whose_permissions_changed_before_the_resume_is_ingested_again(
    demo_recipe: Path, tmp_path: Path
) -> None:
    """A `chmod` (a file made readable after a build that could not read it) keeps the size and modification time:
    the change time tells it, and the source is read again."""
    import os

    recipe, out, source = _killed_copy(demo_recipe, tmp_path)
    before = source.stat()
    os.chmod(source, 0o600)
    assert (source.stat().st_size, source.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    seen: list[str] = []
    build(load_recipe(recipe), out, resume=True, on_stage=seen.append)
    assert "ingest hh_rlhf" in seen and "ingest mm_rlhf" not in seen


def test_an_image_changed_before_the_resume_is_read_again(demo_recipe: Path, tmp_path: Path) -> None:
    """An images root is an input too: an image replaced between the interruption and the resume is read again.
    The build's own folders are no input, even inside the images root: they change as it runs."""
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(demo_recipe.parent.parent, root)
    recipe = root / "mixes" / "demo.yaml"
    media = root / "demo_data" / "native" / "mm_rlhf" / "media"
    inside = media / "b"  # its cache folder, written after the ingest, lies in the images root too
    (media / "loop").symlink_to(".")  # a link loop in the root is walked once
    subprocess.run([sys.executable, "-c", KILLER, str(recipe), str(inside), "write"], check=False)
    seen: list[str] = []
    build(load_recipe(recipe), inside, resume=True, on_stage=seen.append)
    assert not any(s.startswith("ingest ") for s in seen)

    out = tmp_path / "b"
    subprocess.run([sys.executable, "-c", KILLER, str(recipe), str(out), "validate"], check=False)
    image, donor = sorted((media / "short").iterdir())[:2]
    image.write_bytes(donor.read_bytes())
    seen.clear()
    build(load_recipe(recipe), out, resume=True, on_stage=seen.append)
    assert "ingest mm_rlhf" in seen and "ingest hh_rlhf" not in seen
    build(load_recipe(recipe), tmp_path / "fresh")
    assert build_digests(out) == build_digests(tmp_path / "fresh")


def test_a_second_build_of_the_same_folder_is_refused_while_the_first_runs(demo_recipe: Path, tmp_path: Path) -> None:
    """It used to remove the first build's `.partial` folder under it; now it says the folder is being written."""
    from curation.errors import InputError

    out = tmp_path / "b"
    seen: list[str] = []

    def second_build(stage: str) -> None:
        if stage == "validate" and not seen:
            seen.append(stage)
            with pytest.raises(InputError, match="another build is writing it now"):
                build(load_recipe(demo_recipe), out)

    build(load_recipe(demo_recipe), out, on_stage=second_build)
    assert seen and (out / "manifest.json").is_file()  # the first build finished, whole
    build(load_recipe(demo_recipe), tmp_path / "c")  # and the lock does not outlive it: another folder builds
    with pytest.raises(InputError, match="already exists"):
        build(load_recipe(demo_recipe), out)  # and a finished one is refused for what it is
