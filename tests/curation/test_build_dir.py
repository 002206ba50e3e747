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
    with pytest.raises(BuildError, match=r"absent: no such build folder \(`curate build --out` makes one\)$"):
        BuildDir.open(built.parent / "absent")


@pytest.mark.parametrize("damage", ["fewer rows", "cut short", "another schema", "a column of another type",
                                    "invalid UTF-8", "nulls", "nullable fields"])  # fmt: skip
def test_a_shard_that_is_not_the_manifests_is_refused(built: Path, tmp_path: Path, damage: str) -> None:
    """A shard swapped for a shorter valid one or one of another schema, cut short, or holding text that is not
    UTF-8, is named; nothing trains on it silently, and nothing stops with a traceback."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    copy = tmp_path / "demo"
    shutil.copytree(built, copy)
    shard = copy / "shards" / "train-00001-of-00003.arrow"
    table = ipc.open_stream(pa.BufferReader(shard.read_bytes())).read_all()  # in memory: the file is rewritten
    answers = table.column("chosen").combine_chunks()
    replaced = {
        "fewer rows": table.slice(0, 2),
        "another schema": table.drop_columns(["prompt"]),
        "a column of another type": table.set_column(0, "pair_id", pa.array(range(table.num_rows))),
        "nulls": table.set_column(table.schema.get_field_index("chosen"), "chosen",
                                  pa.array([None] * table.num_rows, pa.string())),
        # as pandas writes it back: every field nullable, no metadata
        "nullable fields": table.cast(pa.schema([f.with_nullable(True) for f in table.schema])),
        "invalid UTF-8": table.set_column(
            table.schema.get_field_index("chosen"), "chosen",
            pa.Array.from_buffers(pa.string(), len(answers), [None, answers.buffers()[1],
                                                               pa.py_buffer(b"\xff" * len(answers.buffers()[2]))]),
        ),
    }  # fmt: skip
    if damage in replaced:
        with pa.OSFile(str(shard), "wb") as sink, ipc.new_stream(sink, replaced[damage].schema) as writer:
            writer.write_table(replaced[damage])
    else:
        shard.write_bytes(shard.read_bytes()[:3000])
    match = {
        "fewer rows": rf"{shard}: 2 rows where the manifest lists {table.num_rows}",
        "another schema": rf"{shard}: not a shard of a build \(no column 'prompt'\)",
        "a column of another type": rf"{shard}: not a shard of a build \(column 'pair_id' is int64, not string\)",
        "nulls": rf"{shard}: not a shard of a build \(column 'chosen' holds nulls\)",
    }.get(damage, rf"{shard}: a damaged shard")
    if damage == "nullable fields":  # the same rows: read as the build's, but not the bytes a run would record
        assert BuildDir.open(copy).pairs() == BuildDir.open(built).pairs()
        with pytest.raises(BuildError, match=rf"shards edited since their build \({shard}: not the manifest's sha256"):
            _fit(copy)
        return
    for reader in (lambda: BuildDir.open(copy).pairs(check_text=True), lambda: _fit(copy), lambda: _score(copy)):
        with pytest.raises(BuildError, match=match):
            reader()


@pytest.mark.parametrize("damage", ["cut short", "another table", "a column of another type", "no statistics"])
def test_a_damaged_image_table_is_refused_naming_it(built: Path, tmp_path: Path, damage: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    copy = tmp_path / "demo"
    shutil.copytree(built, copy)
    images = copy / "images" / "images.parquet"
    table = pq.read_table(images)
    if damage == "cut short":
        images.write_bytes(images.read_bytes()[:-100])
    elif damage == "another table":
        pq.write_table(pa.table({"sha256": ["a"]}), images)
    elif damage == "a column of another type":
        pq.write_table(table.set_column(table.schema.get_field_index("sha256"), "sha256",
                                        pa.array(range(table.num_rows))), images)  # fmt: skip
    else:
        pq.write_table(table, images, write_statistics=False)
    export = tmp_path / "export"
    for reader in (lambda: BuildDir.open(copy).images(), lambda: _fit(copy), lambda: export_build(copy, export)):
        with pytest.raises(BuildError, match=rf"{images}: a damaged image table"):
            reader()
    assert not export.exists() and not export.with_name("export.partial").exists()  # nothing half-written
    from app.data import AppError
    from app.data import Build as WorkbenchBuild

    if damage == "cut short":  # its footer unreadable: refused and named on the pages, which go on without it
        assert "images/images.parquet" in WorkbenchBuild(copy.parent, copy.name).refused
    else:
        with pytest.raises(AppError, match="a damaged image table"):
            WorkbenchBuild(copy.parent, copy.name)


def test_no_command_writes_its_output_inside_a_build(demo_build: Path, demo_recipe: Path, tmp_path: Path) -> None:
    """A build folder holds only what its build wrote (its readers and `--replace` rely on it): a build, an
    ingest, a run, an audit or an ablation asked to write inside one, even one it does not read, is one error line
    naming that build, and nothing is written there."""
    from typer.testing import CliRunner

    from curation.cli import app as curate
    from trainer.cli import app as trainer

    other = tmp_path / "other"
    shutil.copytree(demo_build, other)
    before = sorted(p.relative_to(other).as_posix() for p in other.rglob("*"))
    hh = demo_recipe.parent.parent / "demo_data" / "native" / "hh_rlhf"
    commands = {
        "curate build": (curate, ["build", "--mix", str(demo_recipe), "--out", str(other / "shards" / "b")]),
        "curate ingest": (curate, ["ingest", "--source", "hh_rlhf", "--path", str(hh), "--out", str(other / "i")]),
        "trainer fit": (trainer, ["fit", "--shards", str(demo_build), "--model", "tiny", "--out", str(other / "r")]),
        "trainer audit": (trainer, ["audit", "--build", str(demo_build), "--model", "tiny", "--out", str(other / "a")]),
        "trainer ablate": (trainer, ["ablate", "--mix", str(demo_recipe), "--out", str(other / "x" / "y")]),
    }
    for command, (app, args) in commands.items():
        result = CliRunner().invoke(app, args)
        message = f"{result.output}{result.exception or ''}"
        assert result.exit_code == 1 and f"inside the build {other.resolve()}" in message, (command, message)
        assert sorted(p.relative_to(other).as_posix() for p in other.rglob("*")) == before, command
    itself = CliRunner().invoke(trainer, ["fit", "--shards", str(demo_build), "--model", "tiny", "--out", str(other)])
    assert itself.exit_code == 1 and f"--out {other} is the build {other.resolve()}; " in itself.output


def test_an_image_whose_bytes_are_not_its_sha256_is_refused(built: Path, tmp_path: Path) -> None:
    """The image table rewritten with each image's bytes under another's sha256: a run trained on it and recorded
    the same data as the build's (the manifest records the shards' digests, not the table's)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    copy = tmp_path / "demo"
    shutil.copytree(built, copy)
    images = copy / "images" / "images.parquet"
    table = pq.read_table(images)
    rotated = table.column("bytes").to_pylist()
    table = table.set_column(table.schema.get_field_index("bytes"), "bytes",
                             pa.array(rotated[1:] + rotated[:1], pa.binary()))  # fmt: skip
    pq.write_table(table, images, row_group_size=8)
    first = table.column("sha256")[0].as_py()
    with pytest.raises(BuildError, match=rf"{images}: image {first} holds other bytes than those of that sha256"):
        BuildDir.open(copy).images().read(first)
    data = _fit(copy)
    with pytest.raises(BuildError, match="holds other bytes"):
        for entry in data.train:
            for sha in data.row(entry)["images"]:
                data.image(entry, sha)
