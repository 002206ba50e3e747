import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.build_card import funnel_rows
from curation.io import read_shards
from curation.ops.base import GuardStop
from curation.recipe import RecipeError, load_recipe
from tests.curation.ops.conftest import BuildRows, run_op_on_rows, uf

ROWS = [uf(f"prompt {k}", f"good answer {k}", f"bad answer {k}") for k in range(6)]


def scores_for(built_root: Path, margins: list[float | None], path: Path) -> Path:
    """A `trainer score`-shaped table: the k-th pair (by source row) gets margins[k]."""
    pairs = sorted(
        read_shards(sorted((built_root / "shards").glob("*.arrow"))).to_pylist(), key=lambda p: p["source_row"]
    )
    rows = [{"pair_id": p["pair_id"], "reward_chosen": m, "reward_rejected": None if m is None else 0.0, "margin": m}
            for p, m in zip(pairs, margins, strict=True)]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def scores_of(rows: list[dict], margins: list[float | None], path: Path) -> Path:
    """A `trainer score`-shaped table for inline rows (`pair_tables`): the k-th row gets margins[k]."""
    from curation.ops.context import pair_tables

    pairs, _ = pair_tables(rows)
    columns = {"pair_id": pairs["pair_id"], "reward_chosen": margins, "reward_rejected": [0.0] * len(rows),
               "margin": pa.array(margins, pa.float64())}  # fmt: skip
    pq.write_table(pa.table(columns), path)
    return path


def test_reversed_pairs_are_dropped_and_a_threshold_change_only_re_decides(
    build_rows: BuildRows, tmp_path: Path
) -> None:
    plain = build_rows({"uf": ("ultrafeedback_binarized", ROWS)})
    scores = scores_for(plain.root, [2.0, -0.5, -1.5, -3.0, 0.1, None], tmp_path / "scores.parquet")
    ops = {"rm_margin": {"scores": str(scores), "max_removal_rate": 0.5}}
    built = build_rows({"uf": ("ultrafeedback_binarized", ROWS)}, ops=ops)
    removed = {r["source_row"]: r for r in built.removed("rm_margin")}
    assert set(removed) == {"uf.jsonl:2", "uf.jsonl:3"}  # margins -1.5 and -3.0 < -1.0; no score: kept
    assert removed["uf.jsonl:3"]["reason"] == "reward model reverses" and "-3.0" in removed["uf.jsonl:3"]["detail"]
    assert built.manifest["rows_in_shards"] == 4
    signals = list((built.root / "signals").glob("rm_margin-*.parquet"))
    assert len(signals) == 1
    stricter = build_rows({"uf": ("ultrafeedback_binarized", ROWS)},
                          ops={"rm_margin": {**ops["rm_margin"], "min_margin": 0.0}})  # fmt: skip
    assert {r["source_row"] for r in stricter.removed("rm_margin")} == {"uf.jsonl:1", "uf.jsonl:2", "uf.jsonl:3"}
    assert [p.name for p in (stricter.root / "signals").glob("rm_margin-*.parquet")] == [signals[0].name]
    # The guard's default: a model that would remove more than 30% of a source stops the build, naming it.
    stopped = (r"rm_margin stopped the build: uf would lose 2 of 6 pairs \(33.3%\), above max_removal_rate 0.3; the "
               r"evidence is in its signal, .*/signals/rm_margin-v1-\*.parquet; to act anyway, raise rm_margin's "
               r"max_removal_rate in the recipe \(1.0: no guard\)")  # fmt: skip
    with pytest.raises(GuardStop, match=stopped):
        build_rows({"uf": ("ultrafeedback_binarized", ROWS)}, ops={"rm_margin": {"scores": str(scores)}})


def test_flag_keeps_pairs_and_lists_them(build_rows: BuildRows, tmp_path: Path) -> None:
    plain = build_rows({"uf": ("ultrafeedback_binarized", ROWS)})
    scores = scores_for(plain.root, [2.0, -0.5, -1.5, -3.0, 0.1, None], tmp_path / "scores.parquet")
    built = build_rows({"uf": ("ultrafeedback_binarized", ROWS)},
                       ops={"rm_margin": {"scores": str(scores), "action": "flag"}})  # fmt: skip
    assert built.removed("rm_margin") == [] and built.manifest["rows_in_shards"] == 6
    assert sorted(r["source_row"] for r in built.table("flags/rm_margin.parquet")) == ["uf.jsonl:2", "uf.jsonl:3"]
    # the count is in the manifest and its funnel, beside the kept pairs it is part of
    assert built.manifest["sources"]["uf"]["flagged"] == {"rm_margin": {"reward model reverses": 2}}
    assert ("uf", "rm_margin: reward model reverses (flagged, of the kept pairs)", 2) in funnel_rows(built.manifest)
    # a flagged pair a later stage removes counts as removed only: the review drops uf.jsonl:3
    from curation.reviews import Review, append_review

    shards = {r["source_row"]: r["pair_id"] for r in read_shards(sorted((built.root / "shards").glob("*.arrow")))
              .to_pylist()}  # fmt: skip
    reviews = tmp_path / "reviews.parquet"
    append_review(reviews, Review(shards["uf.jsonl:3"], "uf", "uf.jsonl:3", "drop", "", "ana", built.root.name))
    reviewed = build_rows({"uf": ("ultrafeedback_binarized", ROWS)},
                          ops={"rm_margin": {"scores": str(scores), "action": "flag"},
                               "human_review": {"reviews": str(reviews)}})  # fmt: skip
    source = reviewed.manifest["sources"]["uf"]
    assert source["flagged"] == {"rm_margin": {"reward model reverses": 1}} and source["kept"] == 5
    assert source["removed"]["human_review"] == {"dropped by review": 1}


def test_recipe_needs_an_existing_scores_file(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\nsources:\n  a: {{adapter: hh_rlhf, path: {tmp_path}}}\n"
                      f"ops:\n  rm_margin: {{scores: {tmp_path / 'missing.parquet'}}}\n")  # fmt: skip
    with pytest.raises(RecipeError, match="trainer score"):
        load_recipe(recipe)


GOOD = {"pair_id": ["a", "b"], "reward_chosen": [1.0, 0.0], "reward_rejected": [0.0, 2.0], "margin": [1.0, -2.0]}


def test_the_scores_path_is_relative_to_the_recipe_as_sources_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mixes" / "scores").mkdir(parents=True)
    pq.write_table(pa.table(GOOD), tmp_path / "mixes" / "scores" / "s.parquet")
    recipe = tmp_path / "mixes" / "r.yaml"
    recipe.write_text(f"name: r\nsources:\n  a: {{adapter: hh_rlhf, path: {tmp_path}}}\n"
                      "ops:\n  rm_margin: {scores: scores/s.parquet}\n")  # fmt: skip
    monkeypatch.chdir(tmp_path)  # not the recipe's folder: the path still resolves against the recipe's
    assert load_recipe(recipe).ops["rm_margin"].scores == str(tmp_path / "mixes" / "scores" / "s.parquet")
    recipe.write_text(recipe.read_text().replace("scores/s.parquet", "mixes/scores/s.parquet"))
    with pytest.raises(RecipeError, match=rf"mixes/mixes/scores/s.parquet does not exist.*resolve against {tmp_path}"):
        load_recipe(recipe)
    recipe.write_text(recipe.read_text().replace("mixes/scores/s.parquet", "s3://bucket/s.parquet"))
    with pytest.raises(RecipeError, match="s3://bucket/s.parquet: an object store's URI; this op reads a local file"):
        load_recipe(recipe)


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({k: v for k, v in GOOD.items() if k != "pair_id"}, "has no column pair_id"),
        ({k: v for k, v in GOOD.items() if k != "margin"}, "has no column margin"),
        ({**GOOD, "margin": ["1.0", "-2.0"]}, "column margin is string, not number"),
        ({**GOOD, "pair_id": [1, 2]}, "column pair_id is int64, not text"),
        ({**GOOD, "pair_id": ["a", None]}, "1 rows have no pair_id"),
        ({**GOOD, "pair_id": ["a", "a"]}, "1 pair ids appear more than once"),
        ({**GOOD, "margin": [float("-inf"), float("nan")]}, "2 margins are NaN or infinite"),
    ],
)
def test_a_scores_file_not_as_the_trainer_writes_it_is_refused(tmp_path: Path, columns: dict, message: str) -> None:
    pq.write_table(pa.table(columns), tmp_path / "scores.parquet")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\nsources:\n  a: {{adapter: hh_rlhf, path: {tmp_path}}}\n"
                      f"ops:\n  rm_margin: {{scores: {tmp_path / 'scores.parquet'}}}\n")  # fmt: skip
    with pytest.raises(RecipeError, match=message):
        load_recipe(recipe)
    (tmp_path / "scores.parquet").write_bytes(b"PAR1 not parquet")
    with pytest.raises(RecipeError, match="not a parquet file"):
        load_recipe(recipe)
    (tmp_path / "scores.parquet").unlink()
    (tmp_path / "scores.parquet").mkdir()
    with pytest.raises(RecipeError, match="scores.parquet is not a file"):
        load_recipe(recipe)


def test_a_scores_file_damaged_in_place_is_refused(tmp_path: Path) -> None:
    """Scores are written with a checksum per page: bytes changed in place (size and footer intact) are an error,
    not scores of pairs that do not exist."""
    scores = tmp_path / "scores.parquet"
    pq.write_table(
        pa.table({**GOOD, "pair_id": [f"{k:064x}" for k in range(2)]}),
        scores,
        compression="none",
        write_page_checksum=True,
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\nsources:\n  a: {{adapter: hh_rlhf, path: {tmp_path}}}\n"
                      f"ops:\n  rm_margin: {{scores: {scores}}}\n")  # fmt: skip
    load_recipe(recipe)
    data = bytearray(scores.read_bytes())
    at = data.index(f"{1:064x}".encode())  # inside a page's values: without checksums, read as another pair id
    data[at : at + 8] = b"deadbeef"
    scores.write_bytes(bytes(data))
    with pytest.raises(RecipeError, match="cannot be read whole"):
        load_recipe(recipe)


def test_the_scores_are_read_by_exact_path_and_column(tmp_path: Path) -> None:
    """What DuckDB's read_parquet would read otherwise: a `margin=5` folder as a column, a glob matching other
    files, a column MARGIN for margin; and a file of null margins scores nothing."""
    from curation.errors import InputError
    from curation.ops.context import pair_tables

    rows = [{"prompt": f"prompt {k}", "chosen": f"good {k}", "rejected": f"bad {k}"} for k in range(3)]
    pairs, _ = pair_tables(rows)
    margins = [-2.0, 0.5, -3.0]
    table = pa.table({"MARGIN": [-100.0] * 3, "pair_id": pairs["pair_id"], "reward_chosen": margins,
                      "reward_rejected": [0.0] * 3, "margin": margins})  # fmt: skip
    (tmp_path / "margin=5").mkdir()
    for path in (tmp_path / "margin=5" / "scores.parquet", tmp_path / "glob*.parquet"):
        pq.write_table(table, path)
        pq.write_table(pa.table({"pair_id": ["x"]}), tmp_path / "globZ.parquet")
        params = {"scores": str(path), "max_removal_rate": 1.0}
        result = run_op_on_rows(tmp_path / path.parent.name, "rm_margin", rows, params)
        assert sorted(result.removed()) == [0, 2], path
        assert [s["margin"] for s in result.signals] == margins
    null = tmp_path / "null.parquet"
    pq.write_table(table.set_column(4, "margin", pa.array([None] * 3, pa.float64())), null)
    with pytest.raises(InputError, match="none of the 3 live pairs has a score"):
        run_op_on_rows(tmp_path / "null", "rm_margin", rows, {"scores": str(null)})


def test_scores_that_match_no_live_pair_stop_the_build(tmp_path: Path) -> None:
    from curation.errors import InputError

    rows = [{"prompt": f"prompt {k}", "chosen": f"good {k}", "rejected": f"bad {k}"} for k in range(3)]
    pq.write_table(pa.table(GOOD), tmp_path / "scores.parquet")  # another build's pair ids
    with pytest.raises(InputError, match="none of the 3 live pairs has a score in .* another build"):
        run_op_on_rows(tmp_path / "b", "rm_margin", rows, {"scores": str(tmp_path / "scores.parquet")})


def test_drop_and_flag_through_the_ops_context(tmp_path: Path) -> None:

    rows = [{"prompt": f"prompt {k}", "chosen": f"good {k}", "rejected": f"bad {k}"} for k in range(4)]
    margins = [2.0, -1.5, None, -0.5]
    scores_of(rows, margins, tmp_path / "scores.parquet")
    params = {"scores": str(tmp_path / "scores.parquet")}
    dropped = run_op_on_rows(tmp_path / "drop", "rm_margin", rows, params)
    assert dropped.removed() == {1: ("reward model reverses", "margin -1.5 < -1.0")}
    assert [s["margin"] for s in dropped.signals] == margins  # a pair without a score has no margin, and stays
    assert dropped.decision.warnings == [  # and the build says how many the model judged
        f"rm_margin: 3 of 4 live pairs have a margin in {tmp_path / 'scores.parquet'}; those without one (1) are "
        "kept as they are, judged by no model (not in the file, or not scorable there)"
    ]
    flagged = run_op_on_rows(tmp_path / "flag", "rm_margin", rows, {**params, "action": "flag"})
    assert flagged.removed() == {}
    assert [(f["source_row"], f["margin"]) for f in flagged.evidence("flags/rm_margin.parquet")] == [
        ("s.jsonl:1", -1.5)
    ]


def test_noise_rate_selects_as_many_reversals_as_each_source_is_estimated_to_hold(tmp_path: Path) -> None:
    """Probabilities: 8 pairs at 0.9, then margins -3, -0.5, -2.5 (p 0.047, 0.378, 0.076): their mean, the
    threshold, is 0.700. Agreed: the 8 (p >= 0.700); reversed: the two with 1 - p >= 0.700 (-0.5 is reversed, not
    confidently). Estimated rate 2 / 10 = 0.2 of 11 scored: 2 selected (round(2.2)), the lowest margins."""

    rows = [{"prompt": f"prompt {k}", "chosen": f"good {k}", "rejected": f"bad {k}"} for k in range(12)]
    p_agree = 0.9
    agree = float(np.log(p_agree / (1 - p_agree)))
    margins = [agree] * 8 + [-3.0, -0.5, -2.5, None]
    scores_of(rows, margins, tmp_path / "scores.parquet")
    params = {"scores": str(tmp_path / "scores.parquet"), "select": "noise_rate"}
    dropped = run_op_on_rows(tmp_path / "drop", "rm_margin", rows, params)
    assert sorted(dropped.removed()) == [8, 10]
    assert "among the 2 most reversed of 11 (estimated noise rate 0.2)" in dropped.removed()[8][1]
    (estimate,) = dropped.evidence("flags/rm_margin_estimate.parquet")
    assert (estimate["pairs_scored"], estimate["reversed"], estimate["agreed"], estimate["selected"]) == (11, 2, 8, 2)
    probabilities = [p_agree] * 8 + [1 / (1 + np.exp(m)) for m in (3.0, 0.5, 2.5)]
    assert estimate["confidence"] == pytest.approx(np.mean(probabilities))
    flagged = run_op_on_rows(tmp_path / "flag", "rm_margin", rows, {**params, "action": "flag"})
    assert [f["source_row"] for f in flagged.evidence("flags/rm_margin.parquet")] == ["s.jsonl:8", "s.jsonl:10"]


def test_swap_fixes_the_label_unless_the_swapped_pair_exists(tmp_path: Path) -> None:
    rows = [{"prompt": "q", "chosen": "good", "rejected": "bad"}, {"prompt": "q", "chosen": "bad", "rejected": "good"},
            {"prompt": "r", "chosen": "worse", "rejected": "better"}]  # fmt: skip
    margins = [3.0, -2.0, -4.0]  # rows 1 and 2 reversed; row 1 swapped is row 0
    scores_of(rows, margins, tmp_path / "scores.parquet")
    params = {"scores": str(tmp_path / "scores.parquet"), "action": "swap", "max_removal_rate": 1.0}
    result = run_op_on_rows(tmp_path / "swap", "rm_margin", rows, params)
    assert result.removed() == {1: ("duplicate once swapped", "swapped, it is s s.jsonl:0; margin -2.0 < -1.0")}
    swapped = result.ctx.rows("SELECT row_key, stage, reason, detail FROM swapped")
    assert [(stage, reason, detail) for _, stage, reason, detail in swapped] == [
        ("rm_margin", "reward model reverses", "margin -4.0 < -1.0")
    ]


def test_noise_rate_swap_decides_once_and_never_selects_an_agreed_pair(tmp_path: Path) -> None:
    """Probabilities: rows 0, 1, 4, 5 at 0.999; row 2 (row 0 reversed) at 0.001, row 3 at 0.002; rows 6, 7 at 0.6
    and 0.605. Threshold: their mean, 0.65; 4 agreed, 2 reversed, rate 1/3 of 8 = round(2.67) = 3, but only 2 pairs
    are below 0.5, so 2 are selected (row 6, at 0.6, the model agrees with). Row 2 swapped is row 0: removed; row 3
    swapped. The removal must not change what was selected (the estimate stays that of the 8 pairs)."""

    rows = [{"prompt": f"prompt {k}", "chosen": f"good {k}", "rejected": f"bad {k}"} for k in range(8)]
    rows[2] = {"prompt": "prompt 0", "chosen": "bad 0", "rejected": "good 0"}
    margins = [float(np.log(p / (1 - p))) for p in (0.999, 0.999, 0.001, 0.002, 0.999, 0.999, 0.6, 0.605)]
    scores_of(rows, margins, tmp_path / "scores.parquet")
    params = {"scores": str(tmp_path / "scores.parquet"), "select": "noise_rate", "action": "swap"}
    result = run_op_on_rows(tmp_path / "swap", "rm_margin", rows, params)
    (estimate,) = result.evidence("flags/rm_margin_estimate.parquet")
    assert (estimate["pairs_scored"], estimate["reversed"], estimate["agreed"], estimate["selected"]) == (8, 2, 4, 2)
    assert list(result.removed()) == [2] and result.removed()[2][0] == "duplicate once swapped"
    swapped = result.ctx.rows("SELECT row_key, detail FROM swapped")
    assert [key for key, _ in swapped] == [3]
    assert "among the 2 most reversed of 8" in swapped[0][1]
    flagged = run_op_on_rows(tmp_path / "flag", "rm_margin", rows, {**params, "action": "flag"})
    assert [f["source_row"] for f in flagged.evidence("flags/rm_margin.parquet")] == ["s.jsonl:2", "s.jsonl:3"]


def test_a_pair_and_its_mirror_both_reversed_are_left_as_they_are(tmp_path: Path) -> None:
    """Rows 0 and 1 are mirrors (the same answers, the other way round), judged by different fold models that reverse
    both: swapping both would give the same two pairs, so neither is swapped nor removed; both are listed. Row 2,
    reversed with its mirror row 3 not reversed, is removed as before; row 4 is swapped."""

    rows = [{"prompt": "q", "chosen": "good", "rejected": "bad"}, {"prompt": "q", "chosen": "bad", "rejected": "good"},
            {"prompt": "r", "chosen": "worse", "rejected": "better"},
            {"prompt": "r", "chosen": "better", "rejected": "worse"},
            {"prompt": "s", "chosen": "wrong", "rejected": "right"}]  # fmt: skip
    margins = [-2.0, -3.0, -4.0, 2.0, -5.0]
    scores_of(rows, margins, tmp_path / "scores.parquet")
    params = {"scores": str(tmp_path / "scores.parquet"), "action": "swap", "max_removal_rate": 1.0}
    result = run_op_on_rows(tmp_path / "swap", "rm_margin", rows, params)
    assert result.removed() == {2: ("duplicate once swapped", "swapped, it is s s.jsonl:3; margin -4.0 < -1.0")}
    assert [key for (key,) in result.ctx.rows("SELECT row_key FROM swapped")] == [4]
    listed = result.evidence("flags/rm_margin.parquet")
    assert [(f["source_row"], f["detail"]) for f in listed] == [
        ("s.jsonl:0", "left as is: its mirror s s.jsonl:1 is reversed too; margin -2.0 < -1.0"),
        ("s.jsonl:1", "left as is: its mirror s s.jsonl:0 is reversed too; margin -3.0 < -1.0"),
    ]
    assert result.ctx.rows("SELECT count(*) FROM live_pairs") == [(4,)]
    assert result.flagged == [("s", "left as is: its mirror is reversed too", 2)]


def test_acting_on_an_audit_no_better_than_chance_is_a_warning(tmp_path: Path) -> None:
    from curation.ops.context import pair_tables
    from curation.ops.rm_margin import AUDIT_METADATA

    rows = [{"prompt": f"prompt {k}", "chosen": f"good {k}", "rejected": f"bad {k}"} for k in range(3)]
    pairs, _ = pair_tables(rows)
    scores = pa.table({"pair_id": pairs["pair_id"], "reward_chosen": [1.0, -2.0, 0.5],
                       "reward_rejected": [0.0] * 3, "margin": [1.0, -2.0, 0.5]})  # fmt: skip
    chance = {"pairs": 43, "agreeing": 14, "accuracy": 0.3256, "interval_95": [0.2036, 0.4774], "beats_chance": False}
    warnings = {}
    for name, verdict in (("chance", chance), ("competent", {**chance, "beats_chance": True}), ("score", None)):
        path = tmp_path / f"{name}.parquet"
        metadata = {AUDIT_METADATA: json.dumps({"held_out": verdict})} if verdict else None
        pq.write_table(scores.replace_schema_metadata(metadata), path)
        result = run_op_on_rows(tmp_path / name, "rm_margin", rows, {"scores": str(path), "action": "flag"})
        warnings[name] = result.decision.warnings
    assert warnings["chance"] == [
        f"rm_margin: the audit behind {tmp_path / 'chance.parquet'} does not beat chance on held-out pairs "
        "(accuracy 0.326, 14 of 43; 95% interval 0.204-0.477): the pairs it selects are no evidence of wrong labels"
    ]
    assert warnings["competent"] == [] and warnings["score"] == []  # a competent audit; `trainer score`'s file
    none_held_out = {"held_out": {**chance, "pairs": 0, "agreeing": 0, "accuracy": None, "interval_95": None}}
    path = tmp_path / "none-held-out.parquet"
    pq.write_table(scores.replace_schema_metadata({AUDIT_METADATA: json.dumps(none_held_out)}), path)
    result = run_op_on_rows(tmp_path / "none", "rm_margin", rows, {"scores": str(path), "action": "flag"})
    assert result.decision.warnings == [
        f"rm_margin: the audit behind {path} had no held-out pairs: whether its models beat chance is unknown"
    ]
    for name, text in (("not-json", "{"), ("no-verdict", "{}"), ("odd-verdict", '{"held_out": {"pairs": "x"}}')):
        path = tmp_path / f"{name}.parquet"
        pq.write_table(scores.replace_schema_metadata({AUDIT_METADATA: text}), path)
        result = run_op_on_rows(tmp_path / name, "rm_margin", rows, {"scores": str(path), "action": "flag"})
        assert result.decision.warnings == [
            f"rm_margin: the audit verdict in {path}'s metadata is unreadable: "
            "whether its models beat chance is unknown"
        ], name
