"""Every reader of a build opens it through `BuildDir`: a file whose real path leaves the build folder is refused
by each of them, with one error type; a build is found from its folder, its `shards/` or its manifest."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from curation.build import build
from curation.build_dir import BuildDir, BuildError
from curation.export import export_build
from curation.recipe import load_recipe


@pytest.fixture(scope="module")
def built(demo_recipe: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("built") / "demo"
    build(load_recipe(demo_recipe), out)
    return out


def _fit(path: Path) -> Any:
    from trainer.data import PairData

    return PairData.open([str(path)], seed=0, eval_fraction=0.2)


def _score(path: Path) -> Any:
    from trainer.score import build_pairs

    return build_pairs(BuildDir.open(path))


READERS: dict[str, Callable[[Path], Any]] = {
    "curate stats": lambda p: BuildDir.open(p).manifest,
    "curate show": lambda p: BuildDir.open(p).pairs(),
    "curate export": lambda p: export_build(p, p.parent / f"{p.name}-hub"),
    "trainer fit": _fit,
    "trainer score": _score,
    "trainer fit images": lambda p: _fit(p).builds[0].images,
}  # `trainer ablate` and `trainer export` read the manifest through `BuildDir.open`, as `curate stats` does


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("planted", ["manifest.json", "shards/train-00000-of-00003.arrow", "images/images.parquet"])
def test_a_file_leaving_the_build_is_refused_by_every_reader(
    built: Path, tmp_path: Path, reader: str, planted: str
) -> None:
    copy = tmp_path / "b"
    shutil.copytree(built, copy)
    outside = tmp_path / "outside" / Path(planted).name
    outside.parent.mkdir()
    shutil.move(copy / planted, outside)
    (copy / planted).symlink_to(outside)
    needs = {"manifest.json"} | ({"shards/train-00000-of-00003.arrow"} if reader != "curate stats" else set())
    needs |= {"images/images.parquet"} if reader in ("curate export", "trainer fit", "trainer fit images") else set()
    if planted not in needs:
        READERS[reader](copy)  # a file this reader does not read: it goes on
        return
    with pytest.raises(BuildError, match=f"{planted}: refused, its real path leaves the build folder"):
        READERS[reader](copy)


def test_a_build_is_found_from_its_folder_its_shards_or_its_manifest(built: Path) -> None:
    for location in (built, built / "shards", built / "manifest.json", str(built / "shards")):
        assert BuildDir.open(location).path == built.resolve()
    assert len(_fit(built / "shards").builds[0].table) == BuildDir.open(built).manifest["rows_in_shards"]
    with pytest.raises(BuildError, match="not a finished build"):
        BuildDir.open(built / "images")
    with pytest.raises(BuildError, match="no such build folder"):
        BuildDir.open(built.parent / "absent")


@pytest.mark.parametrize("damage", ["fewer rows", "cut short"])
def test_a_shard_that_is_not_the_manifests_is_refused(built: Path, tmp_path: Path, damage: str) -> None:
    """A shard swapped for a shorter valid one, or cut short, is named; nothing trains on it silently."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    copy = tmp_path / "demo"
    shutil.copytree(built, copy)
    shard = copy / "shards" / "train-00001-of-00003.arrow"
    table = ipc.open_stream(pa.BufferReader(shard.read_bytes())).read_all()  # in memory: the file is rewritten
    if damage == "fewer rows":
        with pa.OSFile(str(shard), "wb") as sink, ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table.slice(0, 2))
        match = rf"{shard}: 2 rows where the manifest lists {table.num_rows}"
    else:
        shard.write_bytes(shard.read_bytes()[:3000])
        match = rf"{shard}: a damaged shard"
    for reader in (lambda: BuildDir.open(copy).pairs(), lambda: _fit(copy)):
        with pytest.raises(BuildError, match=match):
            reader()
