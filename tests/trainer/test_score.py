"""`trainer score` on a small build, resumable, and its scores driving the rm_margin op in a rebuild."""

import json
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from curation.build import build
from curation.build_dir import BuildDir
from curation.recipe import load_recipe
from trainer.cli import app
from trainer.config import FitConfig
from trainer.fit import fit
from trainer.predict import load_reward_model
from trainer.score import build_pairs, score_build


@pytest.fixture(scope="module")
def tiny_run(demo_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("score") / "run"
    fit(FitConfig(model="tiny", shards=[str(demo_build)], lr=2e-3, global_batch=8, micro_batch=4, max_steps=2), run)
    return run


def stop_after(pairs: int) -> Callable[[int, int], None]:
    """A progress callback that interrupts the scoring at its pair `pairs + 1` (the next part's first pair)."""

    def progress(done: int, total: int) -> None:
        if done > pairs:
            raise KeyboardInterrupt

    return progress


def damage_in_place(path: Path) -> None:
    """Zero a block inside the file's data: its size and its footer stay as they were."""
    data = bytearray(path.read_bytes())
    data[16:80] = bytes(64)
    path.write_bytes(bytes(data))


def test_score_writes_one_row_per_distinct_pair_and_resumes(demo_build: Path, tmp_path: Path, tiny_run: Path) -> None:
    copy = tmp_path / "build"
    shutil.copytree(demo_build, copy)
    model = load_reward_model(tiny_run)
    with pytest.raises(KeyboardInterrupt):
        score_build(model, tiny_run / "model", copy, part_pairs=8, on_progress=stop_after(8))
    parts = next((copy / "signals").glob("rm_scores-*.partial"))
    assert sorted(p.name for p in parts.iterdir()) == ["part-00000.parquet", "plan.json"]
    first_part = (parts / "part-00000.parquet").stat().st_mtime_ns
    with pytest.raises(KeyboardInterrupt):  # another cut: the old parts no longer fit and are dropped
        score_build(model, tiny_run / "model", copy, part_pairs=5, on_progress=stop_after(5))
    assert (parts / "part-00000.parquet").stat().st_mtime_ns != first_part
    (parts / "plan.json").write_text("")  # its record cut short (a crash as it was written): started over, not stuck
    with pytest.raises(KeyboardInterrupt):
        score_build(model, tiny_run / "model", copy, part_pairs=5, on_progress=stop_after(5))
    assert json.loads((parts / "plan.json").read_text())
    with pytest.raises(KeyboardInterrupt):
        score_build(model, tiny_run / "model", copy, part_pairs=8, on_progress=stop_after(8))
    (parts / "part-00000.parquet").write_bytes(b"")  # emptied by a crash of the machine: scored again
    reused: list[int] = []
    resumed_file = score_build(model, tiny_run / "model", copy, part_pairs=8,
                               on_parts=lambda _folder, pairs, _of: reused.append(pairs))  # fmt: skip
    assert reused == [0]
    resumed = pq.read_table(resumed_file).to_pylist()
    assert not parts.exists()
    fresh_copy = tmp_path / "fresh"
    shutil.copytree(demo_build, fresh_copy)
    fresh = pq.read_table(score_build(model, tiny_run / "model", fresh_copy, part_pairs=8)).to_pylist()
    assert resumed == fresh

    pairs = build_pairs(BuildDir.open(copy)).to_pylist()
    assert [r["pair_id"] for r in resumed] == [p["pair_id"] for p in pairs]  # shards and removed pairs, once each
    by_id = {p["pair_id"]: p for p in pairs}
    scored = [r for r in resumed if r["margin"] is not None]  # a removed pair whose image was not kept: no score
    for row in scored:
        assert row["margin"] == pytest.approx(row["reward_chosen"] - row["reward_rejected"])
    assert {by_id[r["pair_id"]]["modality"] for r in scored} >= {"text", "image", "video"}
    assert len(scored) >= len(resumed) // 2
    assert all((r["margin"] is None) == (r["not_scored"] is not None) for r in resumed)  # every gap says why


def test_scores_damaged_in_place_are_scored_again(demo_build: Path, tmp_path: Path, tiny_run: Path) -> None:
    """A part or a finished file with a block zeroed (size and footer intact) fails its pages' checksums: it is
    scored again, not kept."""
    copy, fresh_copy = tmp_path / "build", tmp_path / "fresh"
    shutil.copytree(demo_build, copy)
    shutil.copytree(demo_build, fresh_copy)
    model = load_reward_model(tiny_run)
    fresh = pq.read_table(score_build(model, tiny_run / "model", fresh_copy, part_pairs=8)).to_pylist()
    with pytest.raises(KeyboardInterrupt):
        score_build(model, tiny_run / "model", copy, part_pairs=8, on_progress=stop_after(16))
    parts = next((copy / "signals").glob("rm_scores-*.partial"))
    damage_in_place(parts / "part-00000.parquet")
    reused: list[int] = []
    scores = score_build(model, tiny_run / "model", copy, part_pairs=8,
                         on_parts=lambda _folder, pairs, _of: reused.append(pairs))  # fmt: skip
    assert reused == [8]  # the second part's pairs only
    assert pq.read_table(scores).to_pylist() == fresh

    damage_in_place(scores)
    reused.clear()
    score_build(model, tiny_run / "model", copy, part_pairs=8, on_parts=lambda _f, pairs, _of: reused.append(pairs))
    assert reused == [0]  # not kept as "already scored": scored again from no part
    assert pq.read_table(scores).to_pylist() == fresh


def test_score_reports_progress_by_pair(demo_build: Path, tmp_path: Path, tiny_run: Path) -> None:
    copy = tmp_path / "build"
    shutil.copytree(demo_build, copy)
    calls: list[tuple[int, int]] = []
    score_build(load_reward_model(tiny_run), tiny_run / "model", copy, part_pairs=16,
                on_progress=lambda done, total: calls.append((done, total)))  # fmt: skip
    total = len(build_pairs(BuildDir.open(copy)))
    assert {t for _, t in calls} == {total} and calls[-1] == (total, total)
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(set(done)) > -(-total // 16)  # more steps than parts


def test_rewards_follow_their_pairs_whatever_the_order(
    demo_build: Path, tiny_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pairs are scored in micro-batches of like size (image count, then text length); each reward still lands on
    its own pair."""
    import trainer.evaluate
    from trainer.evaluate import BenchPairs, model_rewards, size_key

    opened = BuildDir.open(demo_build)
    images = opened.images()
    rows = [r for r in build_pairs(opened).to_pylist() if all(images.get(h) is not None for h in r["images"])]
    found = {h: images.get(h) for r in rows for h in r["images"]}
    model = load_reward_model(tiny_run)
    featurized: list[dict] = []
    featurize = trainer.evaluate.featurize
    monkeypatch.setattr(trainer.evaluate, "featurize", lambda m, r, *a: featurized.append(r) or featurize(m, r, *a))
    forward, _ = model_rewards(model, BenchPairs(rows, found), 4096, 4)
    sizes = [size_key(r) for r in featurized]
    assert sizes == sorted(sizes) and len({n for n, _ in sizes}) > 1 and len(set(sizes)) > len(sizes) // 2
    backward, _ = model_rewards(model, BenchPairs(rows[::-1], found), 4096, 4)
    one_by_one, _ = model_rewards(model, BenchPairs(rows, found), 4096, 1)
    assert sum(r is not None for r in forward) >= len(rows) // 2
    for a, b, c in zip(forward, backward[::-1], one_by_one, strict=True):
        assert (a is None) == (b is None) == (c is None)
        if a is not None:
            assert a == pytest.approx(b, abs=1e-5) and a == pytest.approx(c, abs=1e-5)


def test_cli_score_then_rm_margin_rebuild(demo_recipe: Path, tmp_path: Path, tiny_run: Path, demo_build: Path) -> None:
    copy = tmp_path / "build"
    shutil.copytree(demo_build, copy)
    result = CliRunner().invoke(app, ["score", "--model", str(tiny_run), "--build", str(copy)])
    assert result.exit_code == 0, result.output
    scores = next((copy / "signals").glob("rm_scores-*.parquet"))
    table = pq.read_table(scores).to_pylist()
    reasons = Counter(r["not_scored"] for r in table if r["margin"] is None)
    why = ", ".join(f"{reason}: {n}" for reason, n in sorted(reasons.items())) or "none"
    scored = len(table) - reasons.total()
    assert f"{scored} of {len(table)} pairs scored (the shards' and the removed ones); not scored: {why}\n" in (
        result.output
    )
    # Again: the file is kept, and the command says so (the same counts, read from it)
    written = scores.stat().st_mtime_ns
    again = CliRunner().invoke(app, ["score", "--model", str(tiny_run), "--build", str(copy)])
    assert again.exit_code == 0 and scores.stat().st_mtime_ns == written
    assert again.stdout.startswith(f"already scored: {scores} holds this model's scores of these {len(table)} pairs, "
                                   "scored the same way (not scored again; remove it to score again)\n")  # fmt: skip
    assert again.stdout.endswith(result.stdout)
    for other_way in (["--max-length", "64"], ["--micro-batch", "2"]):  # scored another way: again
        other = CliRunner().invoke(app, ["score", "--model", str(tiny_run), "--build", str(copy), *other_way])
        assert other.exit_code == 0 and not other.stdout.startswith("already scored")
        assert scores.stat().st_mtime_ns != written
        written = scores.stat().st_mtime_ns
    assert CliRunner().invoke(app, ["score", "--model", str(tiny_run), "--build", str(copy)]).exit_code == 0
    margins = sorted(r["margin"] for r in pq.read_table(scores).to_pylist() if r["margin"] is not None)
    threshold = margins[len(margins) // 3]  # about a third of the scored pairs count as reversed
    recipe = yaml.safe_load(demo_recipe.read_text())
    recipe["ops"]["rm_margin"] = {"scores": str(scores), "min_margin": threshold, "max_removal_rate": 1.0}
    path = demo_recipe.parent / "with_rm_margin.yaml"  # beside demo.yaml: its relative paths still resolve
    path.write_text(yaml.safe_dump(recipe))
    manifest = build(load_recipe(path), tmp_path / "rebuilt")
    removed = [r for r in pq.read_table(tmp_path / "rebuilt" / "rejects" / "rejects.parquet").to_pylist()
               if r["stage"] == "rm_margin"]  # fmt: skip
    assert removed and all(r["reason"] == "reward model reverses" for r in removed)
    assert all(s["balanced"] for s in manifest["sources"].values())
    # Built again over the build the scores are in: --replace would delete them with it, so it is refused
    from curation.errors import InputError

    with pytest.raises(InputError, match=r"rm_scores-.*parquet: the recipe reads it from inside .* which --replace"):
        build(load_recipe(path), copy, replace=True)
    assert scores.is_file()


def test_scores_go_into_the_builds_own_signals_folder_one_writer_at_a_time(
    demo_build: Path, tmp_path: Path, tiny_run: Path
) -> None:
    from curation.errors import InputError
    from curation.io import only_writer
    from trainer.score import model_digest

    copy = tmp_path / "build"
    shutil.copytree(demo_build, copy)
    model = load_reward_model(tiny_run)
    lock = copy / "signals" / f".rm_scores-{model_digest(tiny_run / 'model')}.lock"
    with only_writer(lock, "held"), pytest.raises(InputError, match="another `trainer score` of this model"):
        score_build(model, tiny_run / "model", copy)
    outside = tmp_path / "elsewhere"
    (copy / "signals").rename(outside)
    (copy / "signals").symlink_to(outside)
    with pytest.raises(InputError, match="a link; scores are written into the build's own signals folder only"):
        score_build(model, tiny_run / "model", copy)
    assert not list(outside.glob("rm_scores-*"))


def test_ctrl_c_says_how_many_pairs_scores_are_kept(
    demo_build: Path, tmp_path: Path, tiny_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainer.score

    copy = tmp_path / "build"
    shutil.copytree(demo_build, copy)
    write_part = trainer.score._write_part
    calls = iter(range(100))

    def interrupted_at_the_second_part(*args: object) -> None:
        if next(calls) == 1:
            raise KeyboardInterrupt
        write_part(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(trainer.score, "_write_part", interrupted_at_the_second_part)
    args = ["score", "--model", str(tiny_run), "--build", str(copy / "shards"), "--part-pairs", "8"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 130
    total = len(build_pairs(BuildDir.open(copy)))
    parts = next((copy / "signals").glob("rm_scores-*.parquet.partial"))
    assert result.stderr == (f"interrupted: 8 of {total} pairs' scores are kept in {parts}: the same command "
                             "continues from them\n")  # fmt: skip
    monkeypatch.setattr(trainer.score, "_write_part", write_part)
    resumed = CliRunner().invoke(app, args)
    assert resumed.exit_code == 0 and resumed.stdout.startswith(
        f"resumed: 8 of {total} pairs' scores taken from the parts an interrupted run finished (not scored again)\n"
    ), resumed.output
    for scores in (copy / "signals").glob("rm_scores-*"):
        scores.unlink()
    # interrupted at the first part: nothing kept, and nothing left in the build
    monkeypatch.setattr(trainer.score, "_write_part", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt()))
    result = CliRunner().invoke(app, args)
    assert (result.exit_code, result.stderr) == (130, "interrupted: no part of the scores was finished; nothing kept\n")
    assert not list((copy / "signals").glob("rm_scores-*"))


def test_a_build_whose_removed_pairs_are_missing_or_damaged_is_refused(demo_build: Path, tmp_path: Path) -> None:
    """`trainer score` and `trainer audit` judge the shards' pairs and the removed ones: a build that removed pairs
    but lacks their table, or holds it damaged, is an error naming the file, not fewer pairs scored as if all."""
    from curation.build_dir import BuildError
    from trainer.score import build_pairs

    build = tmp_path / "b"
    shutil.copytree(demo_build, build)
    removed = build / "rejects" / "removed_pairs.parquet"
    whole = removed.read_bytes()
    removed.write_bytes(whole[: len(whole) // 2])  # cut short: its footer gone
    with pytest.raises(BuildError, match=r"removed_pairs.parquet: damaged, not read .*though the build removed pairs"):
        build_pairs(BuildDir.open(build))
    removed.unlink()
    with pytest.raises(BuildError, match=r"b/rejects/removed_pairs.parquet: missing, though the build removed pairs"):
        build_pairs(BuildDir.open(build))
    shutil.rmtree(build)
    shutil.copytree(demo_build, build)
    shard = sorted((build / "shards").glob("*.arrow"))[0]
    data = bytearray(shard.read_bytes())
    data[-20] ^= 0x01  # a byte of the text changed, the rows as many: scores would be keyed by ids of other text
    shard.write_bytes(bytes(data))
    with pytest.raises(BuildError, match="shards edited since their build"):
        build_pairs(BuildDir.open(build))


def test_a_score_that_fails_on_a_damaged_build_leaves_nothing_in_it(demo_build: Path, tmp_path: Path) -> None:
    """The build's image table missing: one error line, and no `.partial` folder left in its signals."""
    build = tmp_path / "b"
    shutil.copytree(demo_build, build)
    (build / "images" / "images.parquet").unlink()
    before = sorted(p.name for p in (build / "signals").iterdir() if not p.name.startswith("."))
    run = tmp_path / "run"
    fit(FitConfig(model="tiny", shards=[str(demo_build)], global_batch=8, micro_batch=4, max_steps=1), run)
    result = CliRunner().invoke(app, ["score", "--model", str(run), "--build", str(build)])
    assert result.exit_code == 1 and "no images/images.parquet" in str(result.exception)  # `error:` from run_cli
    assert sorted(p.name for p in (build / "signals").iterdir() if not p.name.startswith(".")) == before  # its lock


def test_a_score_that_scores_no_pair_is_an_error_writing_nothing(
    demo_build: Path, tmp_path: Path, tiny_run: Path
) -> None:
    """Every pair too long (or every reward non-finite): no scores file whose every margin is null, but one error
    line with the reasons counted."""
    from curation.errors import InputError

    build = tmp_path / "b"
    shutil.copytree(demo_build, build)
    before = sorted(p.name for p in (build / "signals").iterdir())
    pairs = build_pairs(BuildDir.open(build)).num_rows
    with pytest.raises(InputError, match=f"none of the {pairs} pairs could be scored \\(longer than max_length: "
                                         f"{pairs}\\); no scores written"):  # fmt: skip
        score_build(load_reward_model(tiny_run), tiny_run / "model", build, max_length=2)
    assert sorted(p.name for p in (build / "signals").iterdir() if not p.name.startswith(".")) == before
