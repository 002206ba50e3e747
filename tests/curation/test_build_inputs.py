"""A build's manifest `inputs` hash the files a source's rows are read from, and a resumed build checks those (and
the images beside them) for changes: not the rest of a repository's snapshot, and never fewer."""

import json
import shutil
import zipfile
from pathlib import Path

import yaml

from curation.build import _input_stamp, build
from curation.recipe import SourceSpec, load_recipe
from tests.curation.sources.test_mmpr import make_mmpr


def test_a_snapshot_folder_hashes_the_split_it_reads(demo_recipe: Path, tmp_path: Path) -> None:
    """An image archive, the card and the repository's attributes beside the rows went into no shard."""
    root = tmp_path / "copy"
    shutil.copytree(demo_recipe.parent.parent, root)
    hh = root / "demo_data" / "native" / "hh_rlhf"
    before = sorted(p.relative_to(hh).as_posix() for p in hh.rglob("*") if p.is_file())
    (hh / "README.md").write_text("# a card\n")
    with zipfile.ZipFile(hh / "images.zip", "w") as archive:
        archive.writestr("a.png", b"not rows")
    (hh / ".gitattributes").write_text("*.zip filter=lfs\n")
    manifest = build(load_recipe(root / "mixes" / "demo.yaml"), tmp_path / "b")
    assert sorted(manifest["inputs"]["hh_rlhf"]["files"]) == before


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
    stamp = _input_stamp(spec)
    (folder / "annotations" / "zeta.jsonl").write_text(json.dumps({"question": "3+3?", "chosen": "6",
                                                                   "rejected": "7"}) + "\n")  # fmt: skip
    assert _input_stamp(spec) != stamp
    stamp = _input_stamp(spec)
    shutil.copy(folder / "images" / "alpha" / "sub" / "b.png", folder / "images" / "alpha" / "a.png")
    assert _input_stamp(spec) != stamp  # an image beside meta.json changed


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
