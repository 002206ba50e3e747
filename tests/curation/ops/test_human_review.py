"""human_review: curators' reviews applied in the next build (drop, swap as a fix, keep)."""

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.io import read_shards, sha256_file
from curation.ops.context import pair_tables
from curation.ops.human_review import outcome_text
from curation.reviews import Review, append_review, latest, read_reviews, reviews_path
from tests.curation.ops.conftest import BuildRows, run_op_on_rows, uf

ROWS = [{"prompt": f"Question {k}?", "chosen": f"good {k}", "rejected": f"bad {k}", "chosen_score": 9.0,
         "rejected_score": 2.0, "chosen_model": "m-good", "rejected_model": "m-bad"} for k in range(4)]  # fmt: skip


def _review(path: Path, pair_id: str, action: str, note: str = "", row: str = "s.jsonl:0") -> None:
    append_review(path, Review(pair_id, "s", row, action, note, reviewer="ana", build="b0"))


def test_reviews_are_appended_and_the_latest_counts(tmp_path: Path) -> None:
    path = reviews_path(tmp_path, "b0")
    _review(path, "p1", "drop", "off-topic")
    _review(path, "p2", "keep")
    _review(path, "p1", "swap", "labels reversed")
    table = read_reviews(path)
    assert table.num_rows == 3 and all(r for r in table.column("reviewed_at").to_pylist())
    assert [(r["pair_id"], r["action"]) for r in latest(table)] == [("p1", "swap"), ("p2", "keep")]
    assert not list(path.parent.glob("*.partial*"))
    with pytest.raises(Exception, match="review action 'burn'"):
        _review(path, "p3", "burn")
    with pytest.raises(Exception, match="not a build name"):
        reviews_path(tmp_path, "../etc")


def test_drop_swap_and_keep_through_the_ops_context(tmp_path: Path) -> None:
    pairs, _ = pair_tables(ROWS)
    ids = pairs["pair_id"].to_pylist()
    path = tmp_path / "reviews.parquet"
    _review(path, ids[0], "drop", "the answer is off-topic")
    _review(path, ids[1], "swap", "rejected is better")
    _review(path, ids[2], "keep")
    _review(path, ids[3], "drop")  # removed by an earlier stage before this one runs
    _review(path, "f" * 32, "drop")  # a pair of another build
    run = run_op_on_rows(tmp_path / "b", "human_review", ROWS, {"reviews": (str(path),)}, removed_before=(3,))
    removed = run.removed()
    assert removed[0][0] == "dropped by review" and removed[0][1].startswith("by ana at ")
    assert removed[0][1].endswith(": the answer is off-topic") and set(removed) == {0, 3}
    assert run.ctx.rows("SELECT row_key, stage, reason FROM swapped") == [(1, "human_review", "swapped by review")]
    outcomes = {r["pair_id"]: r["outcome"] for r in run.evidence("flags/human_review.parquet")}
    assert outcomes == {ids[0]: "applied", ids[1]: "applied", ids[2]: "applied",
                        ids[3]: "not applied: removed by an earlier stage",
                        "f" * 32: "not applied: not among this build's pairs"}  # fmt: skip
    said = ("human_review: 2 of 5 reviews not applied (not among this build's pairs: 1; removed by an earlier stage: "
            "1); flags/human_review.parquet lists each")  # fmt: skip
    assert run.decision.warnings == [said]
    assert outcome_text(tmp_path / "b" / "flags" / "human_review.parquet") == (
        "human_review: 3 of 5 reviews applied (keep 1, drop 1, swap 1); flags/human_review.parquet lists each"
    )


def test_a_rebuild_applies_the_reviews(build_rows: BuildRows, tmp_path: Path) -> None:
    rows = [uf(f"prompt {k}", f"good answer {k}", f"bad answer {k}") for k in range(4)]
    first = build_rows({"uf": ("ultrafeedback_binarized", rows)})
    shards = {p["source_row"]: p for p in read_shards(sorted((first.root / "shards").glob("*.arrow"))).to_pylist()}
    path = tmp_path / "reviews" / "first.parquet"
    append_review(path, Review(shards["uf.jsonl:1"]["pair_id"], "uf", "uf.jsonl:1", "drop", "", "ana", "first"))
    append_review(path, Review(shards["uf.jsonl:2"]["pair_id"], "uf", "uf.jsonl:2", "swap", "", "ana", "first"))
    second = build_rows({"uf": ("ultrafeedback_binarized", rows)}, ops={"human_review": {"reviews": str(path)}})
    out = {p["source_row"]: p for p in read_shards(sorted((second.root / "shards").glob("*.arrow"))).to_pylist()}
    assert sorted(out) == ["uf.jsonl:0", "uf.jsonl:2", "uf.jsonl:3"]
    swapped, before = out["uf.jsonl:2"], shards["uf.jsonl:2"]
    assert (swapped["chosen"], swapped["rejected"]) == (before["rejected"], before["chosen"])
    assert (swapped["chosen_score"], swapped["rejected_score"]) == (before["rejected_score"], before["chosen_score"])
    assert swapped["margin"] == -before["margin"] and swapped["pair_id"] != before["pair_id"]
    assert json.loads(swapped["meta"])["_review"] == {"swapped": True, "pair_id_before": before["pair_id"]}
    assert out["uf.jsonl:0"] == shards["uf.jsonl:0"]  # untouched pairs are the same rows
    source = second.manifest["sources"]["uf"]
    assert source["removed"]["human_review"] == {"dropped by review": 1}
    assert source["swapped"] == {"human_review": {"swapped by review": 1}} and source["balanced"]
    assert [r["reason"] for r in second.removed("human_review")] == ["dropped by review"]
    assert pq.read_table(second.root / "flags" / "human_review.parquet").num_rows == 2
    assert outcome_text(second.root / "flags" / "human_review.parquet") == (
        "human_review: 2 of 2 reviews applied (keep 0, drop 1, swap 1); flags/human_review.parquet lists each"
    )  # what `curate build` prints after its funnel
    assert second.manifest["op_inputs"]["human_review"] == [{"path": str(path), "sha256": sha256_file(path)}]
    # The swapped pair's per-pair signals are found under its old id.
    import duckdb

    from curation.build_dir import BuildDir
    from curation.lookup import pair_record, resolve

    record = pair_record(BuildDir.open(second.root), duckdb.connect(), swapped["pair_id"])
    assert {stem.split("-v")[0] for stem in record.signals} >= {"validate", "filters", "human_review"}
    # and `curate show` finds it by the id it had before the swap (the one the review names)
    assert resolve(BuildDir.open(second.root), before["pair_id"][:8]) == swapped["pair_id"]


def test_a_keep_undoes_a_reward_models_swap_and_a_swap_agrees_with_it(build_rows: BuildRows, tmp_path: Path) -> None:
    """`rm_margin` swaps the pairs a model reverses; a person's review of such a pair, made as its source gives it,
    decides: a keep puts it back, a swap leaves the model's fix (the label swapped once)."""
    rows = [uf(f"prompt {k}", f"good answer {k}", f"bad answer {k}") for k in range(4)]
    first = build_rows({"uf": ("ultrafeedback_binarized", rows)})
    shards = {p["source_row"]: p for p in read_shards(sorted((first.root / "shards").glob("*.arrow"))).to_pylist()}
    ids = [shards[f"uf.jsonl:{k}"]["pair_id"] for k in range(4)]
    scores = tmp_path / "scores.parquet"
    margins = [2.0, -3.0, -3.0, 1.0]  # the model reverses pairs 1 and 2
    pq.write_table(pa.table({"pair_id": ids, "reward_chosen": margins, "reward_rejected": [0.0] * 4,
                             "margin": margins}), scores)  # fmt: skip
    path = tmp_path / "reviews" / "first.parquet"
    append_review(path, Review(ids[1], "uf", "uf.jsonl:1", "keep", "the model is wrong", "ana", "first"))
    append_review(path, Review(ids[2], "uf", "uf.jsonl:2", "swap", "", "ana", "first"))
    rm_margin = {"scores": str(scores), "action": "swap", "max_removal_rate": 1.0}
    second = build_rows({"uf": ("ultrafeedback_binarized", rows)},
                        ops={"rm_margin": rm_margin, "human_review": {"reviews": str(path)}})  # fmt: skip
    out = {p["source_row"]: p for p in read_shards(sorted((second.root / "shards").glob("*.arrow"))).to_pylist()}
    assert out["uf.jsonl:1"] == shards["uf.jsonl:1"]  # as its source gives it: the model's swap undone
    assert out["uf.jsonl:2"]["chosen"] == shards["uf.jsonl:2"]["rejected"]  # swapped once
    assert second.manifest["sources"]["uf"]["swapped"] == {"rm_margin": {"reward model reverses": 1}}
    outcomes = {r["pair_id"]: r["outcome"] for r in pq.read_table(second.root / "flags" / "human_review.parquet")
                .to_pylist()}  # fmt: skip
    assert outcomes == {ids[1]: "applied: the swap by rm_margin undone", ids[2]: "applied"}


def test_curate_reviews_lists_and_exports(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from curation.cli import app

    path = reviews_path(tmp_path, "demo")
    _review(path, "a" * 32, "drop", "[bold]not markup[/]")
    _review(path, "a" * 32, "swap")
    result = CliRunner().invoke(app, ["reviews", str(tmp_path), "--export", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 0, result.output
    assert "2 reviews written, 1 pair reviewed (latest: keep 0, drop 0, swap 1)" in result.output
    assert f'ops: {{human_review: {{reviews: "{path}"}}}}' in result.output
    assert "apply them all" not in result.output  # one file: its own line says it
    # reviews of a build made with those reviews go to its own file: one line applies both (a pair's newest review
    # wins, whichever file holds it)
    second = reviews_path(tmp_path, "demo-reviewed")
    _review(second, "b" * 32, "drop")
    both = CliRunner().invoke(app, ["reviews", str(tmp_path)])
    assert f'apply them all in one build: ops: {{human_review: {{reviews: ["{second}", "{path}"]}}}}' in (
        " ".join(both.output.split()).replace("/ ", "/")
    )
    second.unlink()
    onto_itself = CliRunner().invoke(app, ["reviews", str(tmp_path), "--export", str(path)])
    assert onto_itself.exit_code == 1 and "append-only" in onto_itself.output
    exported = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["action"] for r in exported] == ["swap"]
    every = CliRunner().invoke(app, ["reviews", str(tmp_path), "--all", "--json"])
    assert [r["note"] for r in json.loads(every.output)] == ["[bold]not markup[/]", ""]
    missing = CliRunner().invoke(app, ["reviews", str(tmp_path), "--build", "other"])
    assert missing.exit_code == 1
    assert f"error: no build 'other' under {tmp_path} (and no reviews of one)" in missing.output
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text("{}")  # a build without reviews yet
    unreviewed = CliRunner().invoke(app, ["reviews", str(tmp_path), "--build", "other"])
    assert unreviewed.exit_code == 1 and "error: no reviews under" in unreviewed.output


def test_a_swap_that_would_duplicate_a_live_pair_removes_it(tmp_path: Path) -> None:
    rows = [{"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."},
            {"prompt": "Capital of France?", "chosen": "Lyon.", "rejected": "Paris."}]  # fmt: skip
    pairs, _ = pair_tables(rows)
    path = tmp_path / "reviews.parquet"
    _review(path, pairs["pair_id"][1].as_py(), "swap", "reversed", row="s.jsonl:1")
    run = run_op_on_rows(tmp_path / "b", "human_review", rows, {"reviews": (str(path),)})
    assert run.removed()[1][0] == "duplicate once swapped"
    assert run.removed()[1][1].startswith("swapped, it is s s.jsonl:0, by ana at ")
    assert run.ctx.rows("SELECT count(*) FROM swapped") == [(0,)]


def test_reviews_files_with_unknown_actions_or_other_types_are_refused(tmp_path: Path) -> None:
    from curation.errors import InputError
    from curation.reviews import REVIEW_SCHEMA

    row = {name: "x" for name in REVIEW_SCHEMA.names} | {"action": "DROP"}
    pq.write_table(pa.Table.from_pylist([row], schema=REVIEW_SCHEMA), tmp_path / "bad.parquet")
    with pytest.raises(InputError, match=r"review 0 has action 'DROP'"):
        read_reviews(tmp_path / "bad.parquet")
    pq.write_table(pa.table({**{n: ["x"] for n in REVIEW_SCHEMA.names}, "pair_id": [7]}), tmp_path / "int.parquet")
    with pytest.raises(InputError, match="column pair_id is not text"):
        read_reviews(tmp_path / "int.parquet")


def test_a_later_reviews_file_wins(tmp_path: Path) -> None:
    pairs, _ = pair_tables(ROWS)
    first, second = tmp_path / "round1.parquet", tmp_path / "round2.parquet"
    _review(first, pairs["pair_id"][0].as_py(), "drop")
    _review(first, pairs["pair_id"][1].as_py(), "drop")
    _review(second, pairs["pair_id"][0].as_py(), "keep", "on a second look, fine")
    run = run_op_on_rows(tmp_path / "b", "human_review", ROWS, {"reviews": (str(first), str(second))})
    assert list(run.removed()) == [1]


def test_a_pairs_newest_review_wins_whichever_file_holds_it(tmp_path: Path) -> None:
    """Files listed B then A: B's swap of pair 0 (at t2) beats A's older keep (t1), though A is listed last; A's
    drop of pair 1 (t3) is the newest of pair 1. Within one file the last review written wins, whatever its clock
    said (it is appended under a lock); a time without its offset, or out of range in UTC, is refused."""
    from curation.errors import InputError
    from curation.reviews import REVIEW_SCHEMA

    pairs, _ = pair_tables(ROWS)
    ids = pairs["pair_id"].to_pylist()

    def written(path: Path, reviews: list[tuple[str, str, str]]) -> Path:
        rows = [{"pair_id": pid, "source": "s", "source_row": f"s.jsonl:{ids.index(pid)}", "action": action,
                 "note": "", "reviewer": "ana", "reviewed_at": at, "build": "b0", "queue": "pairs"}
                for pid, action, at in reviews]  # fmt: skip
        pq.write_table(pa.Table.from_pylist(rows, schema=REVIEW_SCHEMA), path)
        return path

    second = written(tmp_path / "b.parquet", [(ids[0], "swap", "2026-01-02T00:00:00+00:00")])
    first = written(tmp_path / "a.parquet", [(ids[0], "keep", "2026-01-01T00:00:00+00:00"),
                                             (ids[1], "drop", "2026-01-03T00:00:00+00:00")])  # fmt: skip
    run = run_op_on_rows(tmp_path / "b", "human_review", ROWS, {"reviews": (str(second), str(first))})
    assert list(run.removed()) == [1]
    assert run.ctx.rows("SELECT count(*) FROM swapped") == [(1,)]
    clock_behind = written(tmp_path / "c.parquet", [(ids[0], "keep", "2026-01-05T02:00:00+00:00"),
                                                    (ids[0], "drop", "2026-01-04T23:00:00-02:00")])  # fmt: skip
    assert [r["action"] for r in latest(read_reviews(clock_behind))] == ["drop"]  # written last: applies
    run = run_op_on_rows(tmp_path / "b2", "human_review", ROWS, {"reviews": (str(clock_behind),)})
    assert list(run.removed()) == [0]
    for name, at in (("d", "2026-01-05 00:00:00"), ("e", "0001-01-01T00:00:00+01:00")):
        bad = written(tmp_path / f"{name}.parquet", [(ids[0], "drop", at)])
        with pytest.raises(InputError, match=re.escape(f"{name}.parquet: review 0 has reviewed_at '{at}', not an ISO")):
            read_reviews(bad)


def test_curate_reviews_reads_an_empty_reviews_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from curation.cli import app
    from curation.reviews import REVIEW_SCHEMA

    (tmp_path / "reviews").mkdir()
    pq.write_table(REVIEW_SCHEMA.empty_table(), tmp_path / "reviews" / "empty.parquet")
    _review(reviews_path(tmp_path, "demo"), "a" * 32, "drop")
    result = CliRunner().invoke(app, ["reviews", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "empty.parquet: 0 reviews written, 0 pairs reviewed" in " ".join(result.output.split())


def test_a_reviews_path_that_is_empty_or_a_folder_says_so(tmp_path: Path) -> None:
    from curation.ops.human_review import HumanReviewParams

    with pytest.raises(ValueError, match="^reviews: an empty path$"):
        HumanReviewParams(reviews=("",)).check()
    with pytest.raises(ValueError, match="is a folder; give the reviews file in it"):
        HumanReviewParams(reviews=(str(tmp_path),)).check()
