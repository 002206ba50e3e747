"""Every file the workbench opens is read by its real path: a build file whose real path leaves its build folder, or
a run file leaving the data root, is refused (never
read, reported by name), one that stays inside is followed."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from streamlit.testing.v1 import AppTest

from app.data import (
    DATA_ENV,
    AppError,
    Build,
    list_builds,
    list_evaluations,
    list_runs,
    read_evaluation,
    read_metrics,
)
from curation.schema import SCHEMA_VERSION
from tests.app.conftest import APP
from tests.conftest import image_bytes

MARK = "ROW FROM THE MARKED COPY"
OUTSIDE = "{}: refused, its real path leaves the data root (a symlink or '..')"
LEAVES = "{}: refused, its real path leaves the build folder (a symlink or '..')"


def _marked(src: Path, dst: Path, column: str, value: Any) -> Path:
    """A copy of parquet `src` with every value of `column` replaced, so its rows are recognizable wherever shown."""
    table = pq.read_table(src)
    index = table.schema.get_field_index(column)
    values = pa.array([value] * table.num_rows, table.schema.field(index).type)
    dst.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.set_column(index, column, values), dst)
    return dst


def _signals_of_first_pair(build: Build) -> list[Any]:
    pair = build.rows("SELECT pair_id, prompt_id FROM pairs ORDER BY pair_id LIMIT 1")[0]
    found = build.signals(pair["pair_id"], pair["prompt_id"])
    return [row.get("benchmark_prompt") for rows in found.values() for row in rows]


def _length_ratios(build: Build) -> list[Any]:
    path = build.signal_file("filters")
    if path is None:
        return []
    return [r["length_ratio"] for r in build.rows(f"SELECT length_ratio FROM {build.table(path)}")]


def _image_sizes(build: Build) -> list[Any]:
    shas = [r["sha256"] for r in build.rows("SELECT DISTINCT unnest(images) AS sha256 FROM pairs")]
    return [found[0].size for found in map(build.image, shas) if found is not None]


# (file in the build, column marked, its new value, what a page reads, what shows when the marked rows were read)
KINDS: list[tuple[str, str, Any, Callable[[Build], list[Any]], Any]] = [
    ("rejects/rejects.parquet", "reason", MARK, lambda b: [r["reason"] for r in b.removed_summary()], MARK),
    ("rejects/removed_pairs.parquet", "chosen", MARK, lambda b: [d["removed_chosen"] for d in b.duplicates()], MARK),
    ("images/images.parquet", "bytes", image_bytes(9, (7, 5)), _image_sizes, (7, 5)),
    ("dups/exact_dedupe.parquet", "method", MARK, lambda b: [d["method"] for d in b.duplicates()], MARK),
    ("signals/decontaminate-*.parquet", "benchmark_prompt", MARK, _signals_of_first_pair, MARK),
    ("signals/filters-*.parquet", "length_ratio", 999.0, _length_ratios, 999.0),
    ("contamination/contamination.parquet", "benchmark_prompt", MARK,
     lambda b: [r["benchmark_prompt"] for r in b.contamination()[0]], MARK),
]  # fmt: skip


@pytest.fixture
def root(data_root: Path, tmp_path: Path) -> Path:
    """A data root holding one copy of the demo build, `b`, beside a folder outside it."""
    shutil.copytree(data_root / "demo", tmp_path / "root" / "b")
    (tmp_path / "outside").mkdir()
    return tmp_path / "root"


@pytest.mark.parametrize("kind", KINDS, ids=[k[0] for k in KINDS])
def test_each_build_file_is_refused_when_its_real_path_leaves_the_root(root: Path, kind: tuple[Any, ...]) -> None:
    pattern, column, value, read, shown = kind
    [target] = (root / "b").glob(pattern)
    relative = target.relative_to(root / "b").as_posix()
    outside = _marked(target, root.parent / "outside" / target.name, column, value)
    beside = _marked(target, root / "elsewhere" / target.name, column, value)  # in the data root, not the build
    within = _marked(target, root / "b" / "elsewhere" / target.name, column, value)
    for away in (outside, beside):
        target.unlink()
        target.symlink_to(away)
        build = Build(root, "b")
        assert build.refused == {relative: LEAVES.format(f"b/{relative}")}
        assert shown not in read(build)
    target.unlink()
    target.symlink_to(within)  # a symlink that stays inside the build folder is followed
    build = Build(root, "b")
    assert build.refused == {}
    assert shown in read(build)


def test_a_symlinked_folder_and_a_symlink_loop_are_refused(root: Path) -> None:
    dups = root / "b" / "dups"
    shutil.move(dups, root.parent / "outside" / "dups")
    dups.symlink_to(root.parent / "outside" / "dups")
    (root / "b" / "signals" / "loop.parquet").symlink_to("loop.parquet")
    build = Build(root, "b")
    assert build.dups == {} and build.duplicates() == [] and "loop" not in build.signal_files
    assert build.refused["dups"] == LEAVES.format("b/dups")  # refused whole: its files are not listed
    assert build.refused["signals/loop.parquet"].startswith("b/signals/loop.parquet: refused, its real path cannot")


def test_the_manifest_and_shards_are_refused_outside_and_followed_inside(root: Path) -> None:
    manifest = root / "b" / "manifest.json"
    marked = json.loads(manifest.read_text())
    marked["recipe"]["text"] = f"name: {MARK}\n"
    for where in (root.parent / "outside", root / "b" / "elsewhere"):
        where.mkdir(exist_ok=True)
        (where / "manifest.json").write_text(json.dumps(marked))
    manifest.unlink()
    manifest.symlink_to(root.parent / "outside" / "manifest.json")
    with pytest.raises(AppError, match=r"b/manifest.json: refused, its real path leaves the build folder"):
        Build(root, "b")
    assert {e.name: e.status for e in list_builds(root)}["b"] == "refused: outside the data root"
    manifest.unlink()
    manifest.symlink_to(root / "b" / "elsewhere" / "manifest.json")
    assert Build(root, "b").manifest["recipe"]["text"] == f"name: {MARK}\n"

    shard = root / "b" / marked["shards"][0]["file"]
    shutil.move(shard, root.parent / "outside" / shard.name)
    shard.symlink_to(root.parent / "outside" / shard.name)
    with pytest.raises(AppError, match=f"b/{marked['shards'][0]['file']}: refused"):
        Build(root, "b")
    shutil.move(root.parent / "outside" / shard.name, root / "b" / "elsewhere" / shard.name)
    shard.unlink()
    shard.symlink_to(root / "b" / "elsewhere" / shard.name)
    assert Build(root, "b").rows("SELECT count(*) AS n FROM pairs")[0]["n"] == marked["rows_in_shards"]


def test_run_files_are_refused_outside_and_followed_inside(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    for folder, loss in ((outside, 99.0), (root / "elsewhere", 7.0), (root / "runs" / "a", 0.5)):
        folder.mkdir(parents=True)
        (folder / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": loss}) + "\n")
        (folder / "eval.json").write_text(json.dumps({"benchmarks": {"b": {"overall": loss}}}))
    (root / "runs" / "linked").symlink_to(outside, target_is_directory=True)
    (root / "runs" / "b").mkdir()
    (root / "runs" / "b" / "metrics.jsonl").symlink_to(outside / "metrics.jsonl")
    (root / "runs" / "c").mkdir()
    (root / "runs" / "c" / "metrics.jsonl").symlink_to(root / "elsewhere" / "metrics.jsonl")
    runs, refused = list_runs(root)
    assert [r.relative_to(root).as_posix() for r in runs] == ["elsewhere", "runs/a", "runs/c"]
    # the linked run folder is named, not silently left out
    assert refused == [OUTSIDE.format("runs/b/metrics.jsonl"), OUTSIDE.format("runs/linked")]
    assert read_metrics(root, root / "runs" / "c") == ([{"step": 1, "loss": 7.0}], [])
    (root / "runs" / "a" / "eval.json").unlink()
    (root / "runs" / "a" / "eval.json").symlink_to(outside / "eval.json")
    with pytest.raises(AppError, match="runs/a/eval.json: refused, its real path leaves the data root"):
        read_evaluation(root, root / "runs" / "a")
    (root / "runs" / "a" / "eval.json").unlink()
    (root / "runs" / "a" / "eval.json").symlink_to(root / "elsewhere" / "eval.json")
    assert read_evaluation(root, root / "runs" / "a") == {"benchmarks": {"b": {"overall": 7.0}}}
    with pytest.raises(AppError, match="runs/b/metrics.jsonl: refused"):
        read_metrics(root, root / "runs" / "b")  # named directly, still refused


def test_removed_page_names_the_refused_file_and_shows_the_rest(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rejects = root / "b" / "rejects" / "rejects.parquet"
    outside = _marked(rejects, root.parent / "outside" / "rejects.parquet", "reason", MARK)
    rejects.unlink()
    rejects.symlink_to(outside)
    monkeypatch.setenv(DATA_ENV, str(root))
    app = AppTest.from_file(str(APP / "pages" / "3_Removed.py"), default_timeout=60)
    app.run()
    assert not app.exception, app.exception
    assert [w.value for w in app.warning] == ["Some files were refused and are not shown:"]
    assert LEAVES.format("b/rejects/rejects.parquet") in [t.value for t in app.text]
    assert not app.info  # not "Nothing was removed": the rejects were refused, not empty
    assert all(MARK not in frame.value.to_string() for frame in app.dataframe)
    assert len(app.dataframe) == 2  # the duplicates and the contamination evidence are still shown
    assert len(app.dataframe[-1].value) == len(Build(root, "b").contamination()[0]) > 0


def test_runs_page_names_a_refused_evaluation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "root" / "run"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 0.5}) + "\n")
    (tmp_path / "eval.json").write_text(json.dumps({"benchmarks": {"vl_rewardbench": {"overall": 99.0}}}))
    (run / "eval.json").symlink_to(tmp_path / "eval.json")
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "root"))
    app = AppTest.from_file(str(APP / "pages" / "6_Runs.py"), default_timeout=60)
    app.run()
    assert not app.exception, app.exception
    assert [w.value for w in app.warning] == ["Some files were refused and are not shown:"]
    assert OUTSIDE.format("run/eval.json") in [t.value for t in app.text]
    assert not app.dataframe and len(app.get("vega_lite_chart")) == 1  # the loss curve is still drawn
    assert not any("Not evaluated yet" in m.value for m in app.markdown)  # refused, not absent


def test_an_evals_folder_leading_out_of_the_root_is_refused_unlisted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's `evals/` symlinked out of the data root is refused before it is listed: the page names the folder,
    never the files out there."""
    run = tmp_path / "root" / "run"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 0.5}) + "\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "SECRET_REPORT_NAME.json").write_text(json.dumps({"benchmarks": {}}))
    (run / "evals").symlink_to(outside, target_is_directory=True)
    assert list_evaluations(tmp_path / "root", run) == ([], [OUTSIDE.format("run/evals")])
    with pytest.raises(AppError, match="run/evals: refused"):
        read_evaluation(tmp_path / "root", run)
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "root"))
    app = AppTest.from_file(str(APP / "pages" / "6_Runs.py"), default_timeout=60)
    app.run()
    assert not app.exception, app.exception
    assert [w.value for w in app.warning] == ["Some files were refused and are not shown:"]
    assert [t.value for t in app.text] == [OUTSIDE.format("run/evals")]
    everything = [e.value for kind in ("text", "markdown", "caption", "warning") for e in app.get(kind)]
    assert not any("SECRET" in str(value) for value in everything)


def test_a_build_that_cannot_be_opened_is_listed_as_broken(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its manifest unreadable, of the wrong structure, or a shard it lists missing: named with why, not offered."""
    for name, manifest in (("bad", "{"), ("typed", '{"recipe": "r", "sources": {}, "shards": []}')):
        (root / name).mkdir()
        (root / name / "manifest.json").write_text(manifest)
    shutil.copytree(root / "b", root / "gone")
    next((root / "gone" / "shards").glob("*.arrow")).unlink()
    monkeypatch.setenv(DATA_ENV, str(root))
    app = AppTest.from_file(str(APP / "pages" / "1_Builds.py"), default_timeout=60)
    app.run()
    assert not app.exception, app.exception
    # listed in a collapsed expander, not a warning above every page (the chosen build is fine)
    assert not app.warning
    listing = app.expander[0]  # above the build picker
    assert listing.label == "3 of 4 builds not shown: unfinished, broken or refused"
    listed = app.text[0].value.splitlines()
    assert listed[0] == ("bad: broken: not a finished build (manifest.json cannot be read: Expecting property name "
                         "enclosed in double quotes: line 1 column 2 (char 1))")  # fmt: skip
    assert listed[1].startswith("gone: broken: no shards/") and "is this a complete `curate build` output?" in listed[1]
    damaged = "manifest.json is damaged (`recipe` is not a mapping with its `text`); build again"
    assert listed[2] == f"typed: broken: {damaged}"
    assert app.selectbox[0].options == ["b"]


def test_a_manifest_lacking_what_the_pages_read_is_broken(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A manifest without its row count, or a source without its mix or its count in the shards, is listed as
    broken with why: no page opens it to fail on the missing key."""
    manifest = json.loads((root / "b" / "manifest.json").read_text())
    first = next(iter(manifest["sources"]))
    damages = {
        "no-rows": lambda m: m.pop("rows_in_shards"),
        "no-mix": lambda m: [s.pop("mix") for s in m["sources"].values()],
        "no-target": lambda m: m["sources"][first]["mix"].pop("target"),
        "no-in-shards": lambda m: m["sources"][first].pop("in_shards"),
        "bad-removed": lambda m: m["sources"][first].update(removed={"filters": 3}),
        "bad-warnings": lambda m: m.update(warnings="not a list"),
        "recipe-unparsed": lambda m: m["recipe"].update(text="sources: [a"),
        "recipe-a-list": lambda m: m["recipe"].update(text="- a\n- b\n"),
        "newer": lambda m: m.update(schema_version=999),
    }
    for name, damage in damages.items():
        shutil.copytree(root / "b", root / name)
        damaged = json.loads(json.dumps(manifest))
        damage(damaged)
        (root / name / "manifest.json").write_text(json.dumps(damaged))
    mix = "`mix` is not a mapping with its available, target and upsampled_copies counts and its factor"
    why = {
        "no-rows": "`rows_in_shards` is not a count",
        "no-mix": f"source {first!r}: {mix}",
        "no-target": f"source {first!r}: {mix}",
        "no-in-shards": f"source {first!r}: `in_shards` is not a count",
        "bad-removed": f"source {first!r}: `removed` is not a mapping of counts by stage",
        "bad-warnings": "`warnings` is not a list of texts",
        "recipe-unparsed": "`recipe.text` is not a recipe (a YAML mapping)",
        "recipe-a-list": "`recipe.text` is not a recipe (a YAML mapping)",
        "newer": f"`schema_version` is 999, not one this rm-workbench reads (up to {SCHEMA_VERSION}: a newer one would "
        "read it)",
    }
    statuses = {e.name: e.status for e in list_builds(root)}
    assert statuses == {"b": "ready"} | {
        name: f"broken: manifest.json is damaged ({reason}); build again" for name, reason in why.items()
    }
    monkeypatch.setenv(DATA_ENV, str(root))
    for page in ("1_Builds.py", "5_Mixture.py"):
        app = AppTest.from_file(str(APP / "pages" / page), default_timeout=60)
        app.run()
        assert not app.exception, (page, app.exception)
        assert app.selectbox[0].options == ["b"]


def test_a_shard_named_by_an_absolute_path_is_named_cleanly(root: Path, tmp_path: Path) -> None:
    shutil.copytree(root / "b", root / "abs")
    manifest = json.loads((root / "abs" / "manifest.json").read_text())
    outside = tmp_path / "outside" / "shard.arrow"
    manifest["shards"][0]["file"] = str(outside)
    (root / "abs" / "manifest.json").write_text(json.dumps(manifest))
    status = {e.name: e.status for e in list_builds(root)}["abs"]
    assert status == f"broken: {LEAVES.format(outside)}"
    assert "//" not in status


def test_a_shard_cut_short_is_listed_as_broken_not_ready(root: Path) -> None:
    """Home said `ready`, and every page then failed to open the build."""
    shutil.copytree(root / "b", root / "cut")
    shard = sorted((root / "cut" / "shards").glob("*.arrow"))[1]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    status = {e.name: e.status for e in list_builds(root)}
    assert status["b"] == "ready" and status["cut"].startswith(f"broken: shards/{shard.name}: a damaged shard (")
    assert status["cut"].endswith("); build again")


def test_file_names_are_not_read_as_glob_patterns(root: Path) -> None:
    # DuckDB's read_parquet reads `[o]/...` as the pattern `o/...`: next to a refused symlink `o`, the outside
    # build's files would be read for the build `[o]`.
    outside = root.parent / "outside" / "b"
    shutil.copytree(root / "b", outside)
    _marked(outside / "rejects" / "rejects.parquet", outside / "rejects" / "rejects.parquet", "reason", MARK)
    (root / "b").rename(root / "[o]")
    (root / "o").symlink_to(outside)
    build = Build(root, "[o]")
    assert build.refused == {} and MARK not in [r["reason"] for r in build.removed_summary()]
    dups = root / "[o]" / "dups"
    _marked(dups / "exact_dedupe.parquet", outside / "dups" / "e.parquet", "method", MARK)
    (dups / "e.parquet").symlink_to(outside / "dups" / "e.parquet")  # refused
    shutil.copy(dups / "exact_dedupe.parquet", dups / "[e].parquet")  # inside: read as itself
    build = Build(root, "[o]")
    assert list(build.refused) == ["dups/e.parquet"]
    methods = [d["method"] for d in build.duplicates()]
    assert MARK not in methods and methods.count("exact") == 2  # exact_dedupe.parquet and its copy [e]


def test_damaged_files_of_a_build_are_named_not_tracebacks(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shard cut short stops the build with a message naming it; a damaged optional table is left out and named
    (the rest shows); image bytes that cannot be decoded, or would decode to too many pixels, are said as text."""
    import io

    from PIL import Image

    shutil.copytree(root / "b", root / "cut")
    shard = next((root / "cut" / "shards").glob("*.arrow"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(AppError, match=r"cut/shards/.*\.arrow: a damaged shard"):
        Build(root, "cut")
    (root / "b" / "rejects" / "rejects.parquet").write_bytes(b"not parquet at all")
    build = Build(root, "b")
    assert "damaged, not read" in build.refused["rejects/rejects.parquet"]
    assert build.removed_summary() == []
    images = pq.read_table(root / "b" / "images" / "images.parquet")
    bomb = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(bomb, "PNG")  # 100 million pixels in a few kilobytes
    damaged = [b"garbage", bomb.getvalue(), *images["bytes"].to_pylist()[2:]]
    pq.write_table(images.set_column(images.schema.get_field_index("bytes"), "bytes", pa.array(damaged)),
                   root / "b" / "images" / "images.parquet")  # fmt: skip
    build = Build(root, "b")
    garbage, big = (build.image(sha)[1] for sha in images["sha256"].to_pylist()[:2])  # type: ignore[index]
    assert garbage["error"].startswith("cannot be decoded") and big["error"] == "10000x10000 pixels, too many to show"
    monkeypatch.setenv(DATA_ENV, str(root))
    for page in ("1_Builds.py", "2_Pairs.py", "3_Removed.py"):
        app = AppTest.from_file(str(APP / "pages" / page), default_timeout=60)
        app.run()
        assert not app.exception, (page, app.exception)


def test_a_table_folder_leading_out_of_the_build_is_refused_unlisted(root: Path) -> None:
    """A `signals/` symlinked out of the build is refused whole: the names of the files out there are not shown."""
    outside = root.parent / "outside" / "names"
    shutil.copytree(root / "b" / "signals", outside)
    (outside / "SECRET_FILE_NAME.parquet").write_bytes(b"x")
    shutil.rmtree(root / "b" / "signals")
    (root / "b" / "signals").symlink_to(outside)
    build = Build(root, "b")
    assert build.signal_files == {}
    assert list(build.refused) == ["signals"] and "SECRET" not in " ".join(build.refused.values())
    assert build.refused["signals"] == LEAVES.format("b/signals")
