"""Every page under streamlit's AppTest, on a small build made here; confinement and text rendering."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from itertools import pairwise
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.data import AppError, Build, diff_builds, inside, list_builds
from curation.build import build_lock
from curation.export import export_build
from curation.io import only_writer
from tests.app.conftest import HOSTILE, run_page, shown


def test_home_lists_builds(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = run_page("Home.py", data_root, monkeypatch)
    table = app.dataframe[0].value
    assert list(table["build"]) == ["demo", "half.partial", "hostile"]
    stopped = "stopped: curate build ... --resume continues it"  # no build holds its lock
    assert list(table["status"]) == ["ready", stopped, "ready"]
    with only_writer(build_lock(data_root / "half"), "busy"):  # a build writing it now
        assert [b.status for b in list_builds(data_root) if b.name == "half.partial"] == ["in progress"]
    assert [b.status for b in list_builds(data_root) if b.name == "half.partial"] == [stopped]
    lock = build_lock(data_root / "half")
    lock.unlink()
    os.mkfifo(lock)  # a pipe under the lock's name: no lock, and opening it must not block the page
    try:
        assert [b.status for b in list_builds(data_root) if b.name == "half.partial"] == [stopped]
    finally:
        lock.unlink()


def test_builds_page_shows_funnel_and_recipe(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = run_page("pages/1_Builds.py", data_root, monkeypatch)
    build = Build(data_root, "demo")
    manifest = build.manifest
    # the images the shards use, each once: the images table also keeps the removed duplicates' as evidence
    used = build.rows("SELECT count(DISTINCT h) AS n FROM (SELECT unnest(images) AS h FROM pairs)")[0]["n"]
    distinct = build.rows("SELECT count(DISTINCT pair_id) AS n FROM pairs")[0]["n"]
    assert used < manifest["images"] and distinct < manifest["rows_in_shards"]  # the demo has both
    assert [m.value for m in app.metric] == [str(manifest["rows_in_shards"]), "3", str(used)]
    assert (
        f"{manifest['rows_in_shards']} rows in 3 shard(s): {distinct} distinct pairs (the mix's upsampled copies are "
        f"rows too), {used} images ({manifest['images']} stored with the removed pairs' evidence)"
    ) in [c.value for c in app.caption]
    funnel = app.dataframe[0].value
    assert "decontaminate: contaminated: vl_rewardbench" in set(funnel["step"])
    assert "name: demo" in app.code[0].value
    # the builds not offered, in a collapsed expander that says how many: not a warning above every page
    hidden = app.expander[0]  # above the build picker
    assert hidden.label == "1 of 3 builds not shown: unfinished, broken or refused"
    assert any("half.partial: stopped" in t.value for t in hidden.text)
    assert not app.warning


def test_pairs_page_filters_and_inspects(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = run_page("pages/2_Pairs.py", data_root, monkeypatch)
    assert any(c.value.startswith("43 rows of the shards match") and "page 1 of 2 shows rows 1-25." in c.value
               for c in app.caption)  # fmt: skip
    assert "none given" in set(app.dataframe[0].value["category"])  # as the Bias page says it, never None
    assert app.dataframe[0].value["category"].notna().all()
    app.number_input[0].set_value(2).run()  # the second page: its rows are numbered in the whole list
    assert any("page 2 of 2 shows rows 26-43." in c.value for c in app.caption)
    assert any(c.value == "26 of 43" for c in app.caption)
    app.number_input[0].set_value(1).run()
    app.multiselect[1].set_value(["video"]).run()
    assert any(c.value.startswith("2 rows of the shards match") for c in app.caption)  # the video pair, twice
    assert [r for r in app.dataframe[0].value["copies"]] == [2, 2]
    assert len(app.get("image")) == 3  # its three frames, decoded only now
    shown = [html.unescape(re.sub("<[^>]+>", "", e.proto.body)) for e in app.get("html")]  # marks taken out
    assert any("zooms in" in text for text in shown)
    assert any(c.value == "1 of 2" for c in app.caption)
    app.button(key="pairs-at-next").click().run()
    assert any(c.value == "2 of 2" for c in app.caption) and app.button(key="pairs-at-next").disabled
    app.multiselect[1].set_value([]).run()
    shown = [t.value for t in app.text if " · pair " in t.value]
    app.button(key="pairs-at-back").click().run()  # back to the first of all pairs: another pair
    assert any(c.value.startswith("1 of ") for c in app.caption)
    assert [t.value for t in app.text if " · pair " in t.value] != shown
    from tests.app.conftest import shown as shown_text

    linked = run_page("pages/2_Pairs.py", data_root, monkeypatch, source="uf", modality="video")  # a mistyped link
    assert [shown_text(w.value) for w in linked.warning] == [
        "Not in this build's shards, so not a filter: source=uf (from the URL)."
    ]
    assert linked.multiselect[1].value == ["video"]


def test_dataset_text_is_rendered_as_text(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = run_page("pages/2_Pairs.py", data_root, monkeypatch, build="hostile")
    bodies = [e.proto.body for e in app.get("html")]
    # The answers are escaped before their differences are marked: the markup shows as text, never runs.
    assert any(html.escape(HOSTILE) in body for body in bodies)
    assert all("<script>" not in body and "<a " not in body for body in bodies)
    assert all(HOSTILE not in m.value for m in app.markdown)


def test_removed_bias_mixture_runs_pages(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    removed = run_page("pages/3_Removed.py", data_root, monkeypatch)
    reasons = set(removed.dataframe[0].value["reason"])
    assert {"exact duplicate", "near-duplicate image", "contaminated: vl_rewardbench", "tie"} <= reasons
    contamination = removed.dataframe[-1].value
    contaminated = contamination[contamination["action"] == "removed"]  # beside text-only matches, recorded only
    assert len(contaminated) == 4  # the four contaminated pairs, each with the benchmark prompt it matched
    assert set(contamination["benchmark_prompt"]) == {"Describe this image in detail."}
    # The exact duplicate beside its survivor (which decontamination removed later: still shown).
    astronaut = "A portrait of an astronaut in a white spacesuit in front of an American flag."
    assert [t.value for t in removed.text].count(astronaut) == 2
    bias = run_page("pages/4_Bias.py", data_root, monkeypatch)
    assert set(bias.dataframe[0].value["source"]) == {"hh_rlhf", "mm_rlhf", "rlaif_v", "ultrafeedback"}
    labels = {k: v.get("label") for k, v in json.loads(bias.dataframe[0].proto.columns).items()}
    assert labels["chosen_longer_pct"] == "chosen longer %"  # words, not column names
    categories = bias.dataframe[1].value
    assert "none given" in set(categories["category"]) and categories["category"].notna().all()
    near = [m.value for m in bias.markdown if "at Jaccard >= 0.8" in m.value]
    measured = pq.read_metadata(Build(data_root, "demo").signal_file("near_dedupe")).num_rows  # every pair measured
    assert near and near[0].startswith(f"1 of the {measured} measured prompt pairs is a near duplicate")
    said = [shown(c.value) for c in bias.caption]  # hh-rlhf, the first source, has transcripts, no scores: said so
    assert "No label margin chart: no pair of hh_rlhf in the shards has a label margin." in said, said
    next(s for s in bias.selectbox if s.label == "source").set_value("ultrafeedback").run()
    assert not any("No label margin chart" in shown(c.value) for c in bias.caption)
    specs = [json.loads(c.proto.spec) for c in bias.get("vega_lite_chart")]
    axes = [(s["encoding"]["x"]["title"], s["encoding"]["x"]["type"], s["encoding"]["y"]["title"]) for s in specs]
    assert axes == [("answer length (characters)", "quantitative", "answers"),  # bars from bin start to end
                    ("label margin", "ordinal", "rows"),  # one value, 8: one bar labelled by it
                    ("chosen score", "quantitative", "rows")]  # fmt: skip
    lengths = specs[0]["encoding"]  # chosen and rejected side by side in each bin, neither hiding the other
    assert (lengths["x"]["field"], lengths["x2"]["field"], lengths["y"]["axis"]["format"]) == ("left", "right", "d")
    bias.slider[-1].set_value(0.99).run()  # a stricter threshold, re-decided from the stored signal
    assert any(m.value.startswith("0 of ") and "near duplicates at Jaccard >= 0.99" in m.value for m in bias.markdown)
    mixture = run_page("pages/5_Mixture.py", data_root, monkeypatch)
    shares = mixture.dataframe[0].value
    assert float(shares.loc[shares["source"] == "mm_rlhf", "sampling_factor"].iloc[0]) == 2.0
    labels = {k: v.get("label") for k, v in json.loads(mixture.dataframe[0].proto.columns).items()}
    assert labels["sampling_factor"] == "target per available" and labels["share_pct"] == "actual share %"
    manifest = Build(data_root, "demo").manifest
    assert mixture.caption[0].value.startswith(
        f"{manifest['rows_in_shards']} rows in the shards ({manifest['pairs_in_shards']} distinct pairs: upsampled "
        "copies are rows too), from 4 sources"
    )
    runs = run_page("pages/6_Runs.py", data_root, monkeypatch)
    assert "No training runs" in runs.info[0].value


def test_a_build_path_from_the_url_cannot_escape(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = run_page("pages/1_Builds.py", data_root, monkeypatch, build="../../etc")
    assert "not a finished build under the data root" in app.warning[-1].value
    assert app.selectbox[0].value == "demo"


def test_missing_data_root_is_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = run_page("pages/2_Pairs.py", tmp_path / "absent", monkeypatch)
    assert app.error[0].value == "Cannot open the data root."
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "No finished build" in run_page("pages/3_Removed.py", empty, monkeypatch).info[0].value


def test_confinement_and_broken_builds(data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(AppError, match="leaves the data root"):
        inside(data_root, "../../etc/passwd")
    with pytest.raises(AppError, match="not a finished build"):
        Build(data_root, "half.partial")
    copy = tmp_path / "root"
    shutil.copytree(data_root / "demo", copy / "broken")
    (copy / "broken" / "manifest.json").unlink()
    broken = ("broken", "broken: a shards folder without manifest.json")
    assert [(b.name, b.status) for b in list_builds(copy)] == [broken]
    # `curate export`'s Hub layout beside a build carries a copy of its manifest, but is not a build
    export_build(data_root / "demo", copy / "demo-hub")
    assert [(b.name, b.status) for b in list_builds(copy)] == [broken]
    shutil.copytree(data_root / "demo", copy / "escaping")
    manifest = json.loads((copy / "escaping" / "manifest.json").read_text())
    manifest["shards"][0]["file"] = "../../../outside.arrow"  # a manifest may not point outside its build
    (copy / "escaping" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AppError, match="leaves the build folder"):
        Build(copy, "escaping")
    demo, hostile = Build(data_root, "demo"), Build(data_root, "hostile")
    changes = diff_builds(demo.manifest, hostile.manifest, "demo", "hostile")
    assert {"source": "uf", "step": "in shards", "demo": 0, "hostile": 1, "demo − hostile": -1} in changes


def test_a_removed_example_opens_as_a_pair(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = run_page("pages/3_Removed.py", data_root, monkeypatch)
    assert any(t.value.startswith("This input row gave no pair: ") for t in app.text)  # the first group: ingest
    examples = next(s for s in app.selectbox if s.label == "examples of")
    examples.set_value(("decontaminate", "contaminated: vl_rewardbench")).run()
    assert not app.exception, app.exception
    header = next(t.value for t in app.text if " · pair " in t.value)
    assert header.endswith("removed at decontaminate: contaminated: vl_rewardbench"), header


def test_removals_are_summarized_in_stage_order(data_root: Path) -> None:
    stages = [r["stage"] for r in Build(data_root, "demo").removed_summary()]
    assert list(dict.fromkeys(stages)) == [
        "ingest", "exact_dedupe", "near_dedupe", "image_dedupe", "decontaminate", "filters", "mix"
    ]  # fmt: skip


def test_funnel_steps_are_in_pipeline_order_across_sources() -> None:
    from app.data import funnel_steps

    rows = [{"step": s} for s in ("rows read", "pairs ingested", "decontaminate: contaminated: x", "kept",
                                  "in shards", "rows read", "ingest: malformed json (rows)", "pairs ingested",
                                  "exact_dedupe: exact duplicate", "mix: not selected by mix",
                                  "human_review: swapped by review (of the kept pairs)", "kept", "upsampled copies",
                                  "in shards")]  # fmt: skip
    assert funnel_steps(rows) == [
        "rows read", "ingest: malformed json (rows)", "pairs ingested", "exact_dedupe: exact duplicate",
        "decontaminate: contaminated: x", "mix: not selected by mix", "kept",
        "human_review: swapped by review (of the kept pairs)", "upsampled copies", "in shards",
    ]  # fmt: skip


def test_histograms(data_root: Path) -> None:
    demo = Build(data_root, "demo")
    lengths = demo.length_histogram("ultrafeedback")
    assert sum(r["chosen"] for r in lengths) == sum(r["rejected"] for r in lengths) == 5
    # each bin ends after it starts, where the next starts or before (empty bins are not listed)
    assert all(a["length_bin"] < a["length_end"] <= b["length_bin"] for a, b in pairwise(lengths))
    margins = demo.histogram("margin", "ultrafeedback")
    assert sum(r["rows"] for r in margins) == 5 and demo.histogram("margin", "hh_rlhf") == []
    assert [(r["bin"], r["bin_end"]) for r in margins] == [(8.0, 8.0)]  # one value: a bin of no width
    with pytest.raises(AppError):
        demo.histogram("chosen; DROP TABLE pairs", "hh_rlhf")


def test_pair_queries_filter_and_sort(data_root: Path) -> None:
    demo = Build(data_root, "demo")
    rows, total = demo.pairs(sort="most duplicates removed in its favour", page_size=3)
    assert total == demo.manifest["rows_in_shards"]
    assert rows[0]["duplicates_removed"] >= 1  # a survivor that duplicates were removed in favour of
    _, images = demo.pairs(modalities=["image"], categories=["short"])
    assert images == 6  # mm_rlhf's three "short" image pairs, each upsampled twice
    longest = demo.pairs(sort="longest chosen", page_size=1)[0][0]["chosen_chars"]
    assert demo.pairs(min_chosen_chars=longest)[1] >= 1 and demo.pairs(max_chosen_chars=longest - 1)[1] < total
    _, margin_total = demo.pairs(min_margin=4.0, max_margin=100.0)
    assert margin_total == demo.rows("SELECT count(*) AS n FROM pairs WHERE margin >= 4")[0]["n"] > 0


def test_runs_page_plots_metrics_and_compares_with_published(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "runs" / "tiny"
    run.mkdir(parents=True)
    lines = [{"step": s, "loss": 0.7 - 0.1 * s, "accuracy": 0.5 + 0.1 * s, "margin": 0.2 * s} for s in range(4)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (run / "eval.json").write_text(json.dumps({"benchmarks": {"vl_rewardbench": {"overall": 55.0, "macro": 50.0}}}))
    app = run_page("pages/6_Runs.py", tmp_path, monkeypatch)
    assert len(app.get("vega_lite_chart")) == 3  # loss, accuracy and margin curves
    table = app.dataframe[1].value  # after the list of reports
    assert list(table["model"])[:2] == ["this model (tiny)", "GPT-4o (08-06)"]
    assert table.loc[table["model"] == "BaseReward (Qwen2.5-VL-7B)", "overall"].iloc[0] == "82.16"


def test_removed_page_sets_duplicate_and_contaminated_images_side_by_side(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = run_page("pages/3_Removed.py", data_root, monkeypatch)
    compare = next(s for s in app.selectbox if s.label == "compare")
    dups = Build(data_root, "demo").duplicates()
    image_dup = next(i for i, d in enumerate(dups) if d["method"] == "phash-hamming")
    compare.set_value(image_dup).run()
    captions = [i.proto.imgs[0].caption for i in app.get("image")]
    assert any(c.startswith("removed: ") for c in captions)
    assert any(c.startswith(f"kept at phash-hamming ({dups[image_dup]['survivor_fate']}): ") for c in captions)
    # a pair kept at a dedupe stage and removed at a later one says so
    fates = {d["survivor_fate"] for d in dups}
    assert "removed later: decontaminate: contaminated: vl_rewardbench" in fates, fates
    assert any(c.startswith("perceptual-hash distance") for c in (shown(x.value) for x in app.caption))
    images = next(s for s in app.selectbox if s.label == "compare images")
    assert images.options  # the contaminated image pairs of the demo build
    captions = [i.proto.imgs[0].caption for i in app.get("image")]
    assert any(c.startswith("training pair: ") for c in captions)
    assert any(c.startswith("benchmark item ") for c in captions)


def test_a_pair_opens_as_the_input_row_asked_for(data_root: Path, tmp_path: Path) -> None:
    """Two rows of one pair (an exact duplicate within RLAIF-V) meet different fates: each opens as itself, with
    the decision of the stage that removed it; the reward model's scores carry no stage's decision."""
    demo = Build(data_root, "demo")
    [dup] = demo.rows(f"SELECT * FROM {demo.table(demo.dups['exact_dedupe'])}")
    assert dup["pair_id"] == dup["survivor_pair_id"]  # the same pair, another row
    copy = demo.pair(dup["pair_id"], dup["source"], dup["source_row"])
    assert copy is not None and copy["source_row"] == dup["source_row"]
    assert copy["removed_at"][0] == "exact_dedupe"
    tables = demo.signal_tables(copy)
    assert all(list(row)[:2] == ["decision", "thresholds"] for rows in tables.values() for row in rows
               if "decision" in row)  # first: a wide signal table never hides what its op decided  # fmt: skip
    [decided] = {row["decision"] for name, rows in tables.items() if name.startswith("exact_dedupe") for row in rows}
    assert decided.startswith("removed: exact duplicate")
    survivor = demo.pair(dup["pair_id"], dup["survivor_source"], dup["survivor_row"])
    assert survivor is not None and survivor["source_row"] == dup["survivor_row"]
    assert survivor["removed_at"] is None or survivor["removed_at"][0] != "exact_dedupe"
    # a near-duplicate signal row names the prompt it pairs this one with
    [removed] = demo.rows(f"SELECT * FROM {demo.table(demo.dups['near_dedupe'])}")
    near_pair = demo.pair(removed["pair_id"], removed["source"], removed["source_row"])
    assert near_pair is not None
    near = [row for name, rows in demo.signal_tables(near_pair).items() if name.startswith("near_dedupe")
            for row in rows]  # fmt: skip
    assert near and all(row["with prompt"] not in ("", near_pair["prompt_id"]) for row in near)
    # scores beside the signals: measured, not decided
    root = tmp_path / "root"
    shutil.copytree(data_root / "demo", root / "demo")
    scores = {"pair_id": [dup["pair_id"]], "margin": [0.5]}
    pq.write_table(pa.table(scores), root / "demo" / "signals" / "rm_scores-test.parquet")
    opened = Build(root, "demo")
    [scored] = [rows for name, rows in opened.signal_tables(copy).items() if name.startswith("rm_scores-test")]
    assert scored == [{"pair_id": dup["pair_id"], "margin": 0.5}]


def test_text_from_a_build_is_never_rendered_as_markdown(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manifest warning (which may quote a source's path) and a run's build names are shown as written: each
    Markdown character escaped, so an image link is never fetched by the curator's browser, nor a link drawn."""
    import json
    import shutil

    from tests.app.conftest import shown

    shutil.copytree(data_root / "demo", tmp_path / "demo")
    hostile = "![img](http://127.0.0.1:9/w.png) **bold** $x^2$ :red[RED] [link](https://example.com)"
    manifest = json.loads((tmp_path / "demo" / "manifest.json").read_text())
    manifest["warnings"] = [hostile]
    (tmp_path / "demo" / "manifest.json").write_text(json.dumps(manifest))
    app = run_page("pages/1_Builds.py", tmp_path, monkeypatch)
    [warning] = [w.value for w in app.warning if "img" in w.value]
    assert shown(warning) == hostile and "![" not in warning and "](" not in warning and "**" not in warning


def test_the_word_diff_marks_only_differences_and_stops_at_its_bound() -> None:
    """The pair view marks the words only one answer has (a longest common subsequence of words); beyond a bound
    on the answers' length none is computed."""
    from app.pair_view import marked_diff

    assert marked_diff("the cat <b>sat</b>", "the dog <b>sat</b>") == (
        "the <del>cat</del> &lt;b&gt;sat&lt;/b&gt;",
        "the <ins>dog</ins> &lt;b&gt;sat&lt;/b&gt;",
    )
    assert marked_diff("w1 w2 w3", "w0 w1 w3") == ("w1<del> w2</del> w3", "<ins>w0 </ins>w1 w3")
    assert marked_diff("x " * 10_001, "y " * 10_001) is None  # 20,002 words and spaces each
    assert marked_diff("x " * 50_000, "y") is not None  # one long answer beside a short one: a small table


def test_the_bias_page_draws_scores_at_the_ends_of_the_float_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scores of 1e308 and -1e308 pass ingest and build; their histogram's bins must not overflow to infinity."""
    from curation.build import build
    from curation.recipe import load_recipe
    from tests.conftest import write_jsonl

    scores = [1e308, -1e308, 3.0, 0.85e308, -1e308, 2.0]  # 0.85e308 and 1e308 fall in the last two bins
    rows = [{"prompt": f"Question {i}?", "chosen": f"Yes {i}.", "rejected": f"No {i}.", "score_chosen": score,
             "score_rejected": 1.0} for i, score in enumerate(scores)]  # fmt: skip
    write_jsonl(tmp_path / "uf.jsonl", rows)
    (tmp_path / "r.yaml").write_text("name: far\nsources:\n  uf: {adapter: ultrafeedback_binarized, path: uf.jsonl}\n")
    build(load_recipe(tmp_path / "r.yaml"), tmp_path / "root" / "far")
    bins = Build(tmp_path / "root", "far").histogram("chosen_score", "uf")
    assert [b["rows"] for b in bins] == [2, 2, 1, 1]  # the last two bins apart
    assert [b["bin"] for b in bins] == pytest.approx([-1e308, 0.0, 0.8e308, 0.9e308], rel=1e-12)
    app = run_page("pages/4_Bias.py", tmp_path / "root", monkeypatch)
    assert not app.exception, app.exception


def test_one_very_long_answer_does_not_stretch_the_length_chart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last length bin holds every answer past the 99th percentile: drawn as wide as the others, its longest
    answer said in the caption."""
    from curation.build import build
    from curation.recipe import load_recipe
    from tests.conftest import write_jsonl

    rows = [{"prompt": f"Question {i}?", "chosen": f"Yes {i}. " + "a" * (90 + i), "rejected": f"No {i}."}
            for i in range(200)]  # fmt: skip
    rows[0]["chosen"] = "Long. " + "b" * 300_000
    write_jsonl(tmp_path / "uf.jsonl", rows)
    (tmp_path / "r.yaml").write_text("name: long\nsources:\n  uf: {adapter: ultrafeedback_binarized, path: uf.jsonl}\n")
    build(load_recipe(tmp_path / "r.yaml"), tmp_path / "root" / "long")
    bins = Build(tmp_path / "root", "long").length_histogram("uf")
    assert {r["length_end"] - r["length_bin"] for r in bins} == {bins[0]["length_end"] - bins[0]["length_bin"]}
    assert bins[-1]["longest"] == 300_006 and bins[-1]["length_end"] < 1000
    app = run_page("pages/4_Bias.py", tmp_path / "root", monkeypatch)
    said = [shown(c.value) for c in app.caption]
    assert any(f"the last bar, from {bins[-1]['length_bin']} characters, holds every longer answer, up to 300006" in c
               for c in said), said  # fmt: skip


def test_a_build_rebuilt_under_its_name_is_read_anew(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workbench keeps opened builds between page runs; one rebuilt in place (a new manifest) is opened again."""
    import shutil

    from curation.build import build
    from curation.recipe import load_recipe
    from tests.conftest import write_jsonl

    shutil.copytree(data_root / "demo", tmp_path / "root" / "b")
    first = run_page("pages/5_Mixture.py", tmp_path / "root", monkeypatch)
    assert first.caption[0].value.startswith("43 rows in the shards")
    rows = [{"prompt": f"Q{i}?", "chosen": f"A{i}.", "rejected": f"B{i}."} for i in range(3)]
    write_jsonl(tmp_path / "uf.jsonl", rows)
    (tmp_path / "r.yaml").write_text("name: b\nsources:\n  uf: {adapter: ultrafeedback_binarized, path: uf.jsonl}\n")
    shutil.rmtree(tmp_path / "root" / "b")
    build(load_recipe(tmp_path / "r.yaml"), tmp_path / "root" / "b")
    again = run_page("pages/5_Mixture.py", tmp_path / "root", monkeypatch)
    assert again.caption[0].value.startswith("3 rows in the shards")


def test_home_on_a_build_folder_points_to_its_parent(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.app.conftest import shown

    app = run_page("Home.py", data_root / "demo", monkeypatch)
    assert shown(app.info[0].value) == (
        f"This folder is a build: start the workbench on the folder that holds it, --data {data_root.resolve()}"
    )


def test_a_table_added_to_a_build_is_seen_without_a_restart(data_root: Path, tmp_path: Path) -> None:
    """`trainer score` adds `signals/rm_scores-*` to a finished build: the workbench opens the build anew."""
    import shutil

    from app.ui import open_build

    shutil.copytree(data_root / "demo", tmp_path / "demo")
    first = open_build(str(tmp_path), "demo")
    assert open_build(str(tmp_path), "demo") is first
    signal = next((tmp_path / "demo" / "signals").glob("validate-*.parquet"))
    shutil.copy(signal, tmp_path / "demo" / "signals" / "rm_scores-new.parquet")
    again = open_build(str(tmp_path), "demo")
    assert again is not first and "rm_scores-new" in again.signal_files


def test_one_opened_build_serves_sessions_querying_at_once(data_root: Path) -> None:
    """The app opens a build once for every browser session: queries from several threads at once each get their
    rows (a DuckDB connection refuses a query while another runs)."""
    from concurrent.futures import ThreadPoolExecutor

    opened = Build(data_root, "demo")
    expected = opened.pairs(page_size=5)

    def browse(k: int) -> tuple[list[dict], int]:
        opened.signals(expected[0][0]["pair_id"], "")
        opened.review_queue_counts("random sample", f"source {k}")  # counted anew: a key not seen before
        return opened.pairs(page_size=5)

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(browse, range(64))) == [expected] * 64


def test_every_page_opens_a_build_with_no_pairs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A build whose every row was removed is a build (its funnel says why): each page says what it lacks rather
    than fail on an empty table."""
    from curation.build import build
    from curation.recipe import load_recipe
    from tests.conftest import write_jsonl

    source = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "No answers.", "metadata": {}}])
    recipe = tmp_path / "empty.yaml"
    recipe.write_text(f"name: empty\nsources:\n  uf: {{adapter: ultrafeedback_binarized, path: {source}}}\n")
    root = tmp_path / "data"
    build(load_recipe(recipe), root / "empty")
    for page in sorted(p.name for p in (Path(__file__).parents[2] / "app" / "pages").glob("*.py")):
        run_page(f"pages/{page}", root, monkeypatch)
    bias = run_page("pages/4_Bias.py", root, monkeypatch)
    assert [i.value for i in bias.info] == ["This build has no pairs in its shards: nothing to chart."]


@pytest.fixture(scope="module")
def many_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build where one reason removed 229 rows (exact copies of one pair), beside a pair whose prompt and chosen
    hold invisible format characters (a right-to-left override, a zero-width space)."""
    from curation.build import build
    from curation.recipe import load_recipe
    from tests.conftest import write_jsonl

    work = tmp_path_factory.mktemp("many")
    copied = {"prompt": "Copied question?", "chosen": "Copied yes.", "rejected": "Copied no."}
    bidi = {"prompt": "RTL \u202eevil txt.exe\u202c", "chosen": "zero\u200bwidth yes.", "rejected": "plain no."}
    write_jsonl(work / "uf.jsonl", [copied] * 230 + [bidi])
    (work / "r.yaml").write_text("name: many\nsources:\n  uf: {adapter: ultrafeedback_binarized, path: uf.jsonl}\n")
    build(load_recipe(work / "r.yaml"), work / "root" / "many")
    return work / "root"


def test_the_removed_page_says_where_its_lists_are_cut(many_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """229 rows removed for one reason: 20 examples are listed, counted in the whole list; 200 of the 229 removed
    duplicates are in the table and the compare list, and the page says so."""
    many = Build(many_root, "many")
    assert many.removed_count("exact_dedupe", "exact duplicate") == many.duplicates_count() == 229
    rows = [r["source_row"] for r in many.removed_examples("exact_dedupe", "exact duplicate")]
    numbers = [int(r.rsplit(":", 1)[1]) for r in rows]
    assert numbers == sorted(numbers) and len(rows) == 20  # by row number, as the file gives them (9 before 10)
    app = run_page("pages/3_Removed.py", many_root, monkeypatch)
    captions = [shown(c.value) for c in app.caption]
    assert "showing the first 20 of 229 rows removed at exact_dedupe: exact duplicate (by source and row)" in captions
    assert "1 of 229" in captions
    assert ("showing the first 200 of 229 removed duplicates (by method, source and row), in the table and to "
            "compare") in captions  # fmt: skip
    assert len(next(d.value for d in app.dataframe if "survivor_fate" in d.value.columns)) == 200
    assert len(next(s for s in app.selectbox if s.label == "compare").options) == 200
    app.session_state["removed-at"] = 19  # the last example listed
    app.run()
    assert "20 of 229 (only the first 20 are listed)" in [c.value for c in app.caption]
    assert app.button(key="removed-at-next").disabled


def test_invisible_format_characters_are_shown_as_markers(many_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A right-to-left override would show `RTL exe.txt live`, a zero-width space nothing: each is shown as a marker
    (after the diff, which compares the text itself), and the page says how many a text holds."""
    from app.pair_view import STYLE, marked_diff, show_format_chars

    marked = marked_diff("a\u200bb same", "a\u200bb other")
    assert marked is not None and marked[0].startswith("a\u200bb ")  # equal: the character is compared as itself
    body, markers = show_format_chars(marked[0])
    assert body.startswith('a<span class="format-char">⟨U+200B⟩</span>b <del>') and markers == ["⟨U+200B⟩"]
    assert show_format_chars("سلام &lt;b&gt; é") == ("سلام &lt;b&gt; é", [])  # text beyond ASCII is left as it is
    # a NUL or an escape hid in the page while the answer's length counted it; tabs and line breaks are text
    assert show_format_chars("nul\x00 esc\x1b\tend\r\n")[1] == ["⟨U+0000⟩", "⟨U+001B⟩"]
    # a build's name, a reason, a reviewer in the page's own labels: spelled out, never reordering the label
    from app.ui import plain

    assert shown(plain("x_$x$\u202eevil: broken")) == "x_$x$\\u202eevil: broken"
    # joiners inside Persian words and emoji sequences, and soft hyphens, are text: left as written
    written = "می\u200cخواهم \U0001f469\u200d\U0001f4bb soft\u00adhyphen"
    assert show_format_chars(written) == (written, [])
    assert "unicode-bidi:plaintext" in STYLE  # right-to-left text still laid out by its own direction
    app = run_page("pages/2_Pairs.py", many_root, monkeypatch)
    app.text_input[0].set_value("evil").run()
    bodies = [e.proto.body for e in app.get("html")]
    assert not any(char in body for body in bodies for char in "\u202e\u202c\u200b")
    assert any('RTL <span class="format-char">⟨U+202E⟩</span>evil txt.exe<span class="format-char">⟨U+202C⟩</span>'
               in body for body in bodies)  # fmt: skip
    assert any('zero<span class="format-char">⟨U+200B⟩</span>width' in body for body in bodies)
    captions = [shown(c.value) for c in app.caption]
    said = " (bidi controls reorder text; zero-width spaces and control characters hide in it)"
    assert f"2 invisible format characters shown as ⟨U+202E⟩, ⟨U+202C⟩{said}" in captions
    assert f"1 invisible format character shown as ⟨U+200B⟩{said}" in captions


def test_a_missing_images_table_is_said_once(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The manifest counts images in the shards but `images/` is gone: the page says so once, rather than every
    image saying it is not in this build; a refused table is named as refused instead."""
    shutil.copytree(data_root / "demo", tmp_path / "demo")
    counted = json.loads((tmp_path / "demo" / "manifest.json").read_text())["images_in_shards"]
    assert Build(tmp_path, "demo").missing == []
    shutil.rmtree(tmp_path / "demo" / "images")
    missing = (f"images/images.parquet is missing: the manifest counts {counted} images in the shards; images are "
               "not shown")  # fmt: skip
    assert Build(tmp_path, "demo").missing == [missing]
    app = run_page("pages/2_Pairs.py", tmp_path, monkeypatch, modality="image")
    assert [shown(w.value) for w in app.warning] == [missing]
    for _ in range(5):  # the first pairs' images are also a benchmark item's, kept as evidence: shown from there
        if said := [t.value for t in app.text if ": image " in t.value]:
            break
        app.button(key="pairs-at-next").click().run()
    # each image says why it is not shown, not that the build lacks it
    assert said and all(t.endswith(" not shown (the build's image table cannot be read: see above)") for t in said)
    (tmp_path / "demo" / "images").mkdir()
    (tmp_path / "demo" / "images" / "images.parquet").symlink_to(data_root / "demo" / "images" / "images.parquet")
    refused = Build(tmp_path, "demo")
    assert list(refused.refused) == ["images/images.parquet"] and refused.missing == []


def test_the_removed_page_lists_the_benchmark_rows_not_checked_against(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A benchmark row rejected at ingest is an item decontamination never saw: the Removed page lists it with its
    file, row and reason, counted of all; a build from before the file existed says nothing of it."""
    from curation.build import build
    from curation.recipe import load_recipe
    from tests.conftest import write_jsonl

    write_jsonl(tmp_path / "uf.jsonl", [{"prompt": "Name a fruit.", "chosen": "Pear.", "rejected": "Nine."}])
    write_jsonl(tmp_path / "bench.jsonl", [{"prompt": "Name a colour.", "chosen": "Red.", "rejected": "7."},
                                           {"question": HOSTILE}])  # fmt: skip
    (tmp_path / "r.yaml").write_text("name: b\nsources:\n  uf: {adapter: ultrafeedback_binarized, path: uf.jsonl}\n"
                                     "benchmarks:\n  rb: {adapter: rewardbench, path: bench.jsonl}\n")  # fmt: skip
    build(load_recipe(tmp_path / "r.yaml"), tmp_path / "root" / "b")
    app = run_page("pages/3_Removed.py", tmp_path / "root", monkeypatch)
    assert "Benchmark rows rejected at ingest: items this build was not checked against" in [
        s.value for s in app.subheader
    ]
    assert any(c.value.startswith("1 benchmark rows could not be read as items") for c in app.caption)
    shown = app.dataframe[-1].value
    assert list(shown["source_row"]) == ["bench.jsonl:1"] and list(shown["reason"]) == ["missing field"]
    shutil.copytree(tmp_path / "root" / "b", tmp_path / "old" / "b")  # as a build from before the file was written
    (tmp_path / "old" / "b" / "rejects" / "benchmark_rejects.parquet").unlink()
    app = run_page("pages/3_Removed.py", tmp_path / "old", monkeypatch)
    assert not any("not checked against" in s.value for s in app.subheader)


def test_a_pairs_several_images_are_numbered(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A video's frames (MM-RLHF's demo video) read as which frame of how many, not all as "image"."""
    demo = Build(data_root, "demo")
    video = demo.rows("SELECT pair_id, images FROM pairs WHERE len(images) > 1 LIMIT 1")[0]
    app = run_page("pages/2_Pairs.py", data_root, monkeypatch)
    app.text_input[0].input(video["pair_id"][:8]).run()
    captions = [i.proto.imgs[0].caption for i in app.get("image")]
    count = len(video["images"])
    assert [c.split(":")[0] for c in captions] == [f"image, {k} of {count}" for k in range(1, count + 1)], captions


def test_a_filter_left_out_for_want_of_data_says_so(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hostile build's one pair has no scores: no label margin slider, and a caption saying why."""
    app = run_page("pages/2_Pairs.py", data_root, monkeypatch, build="hostile")
    assert not [s for s in app.slider if s.label == "label margin"]
    assert "No label margin filter: no pair in the shards has a label margin." in [shown(c.value) for c in app.caption]
    app = run_page("pages/2_Pairs.py", data_root, monkeypatch)  # the demo: only UltraFeedback's 5 rows have one
    assert "No label margin filter: the label margin is 8 wherever there is one (5 of the 43 rows of the shards)." in [
        shown(c.value) for c in app.caption
    ]
