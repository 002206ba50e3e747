"""The Runs page under streamlit's AppTest: curves with points and values, every evaluation report with its counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.app.conftest import run_page, shown
from trainer.reports import EVALS, VERSION, write_report


def _entry(scored: int, total: int, overall_scored: float, overall_all: float) -> dict[str, Any]:
    """A VL-RewardBench entry of a report, as `trainer eval` writes it (items left out): one group, so no macro."""
    return {
        "rows_read": total,
        "items_total": total,
        "items_scored": scored,
        "not_scored": {"image not found": total - scored} if scored < total else {},
        "groups": {"general": {"items_total": total, "items_scored": scored}},
        "scores_over_scored": {"overall": overall_scored, "general": overall_scored},
        "scores_over_all": {"overall": overall_all, "general": overall_all},
        "length_judge": {
            "scores_over_scored": {"overall": 50.0, "general": 50.0},
            "scores_over_all": {"overall": 40.0, "general": 40.0},
        },
    }


def _report(created: str, entry: dict[str, Any]) -> dict[str, Any]:
    return {"version": VERSION, "created": created, "models": ["run/model"], "benchmarks": {"vl_rewardbench": entry}}


def _run_folder(root: Path) -> Path:
    run = root / "runs" / "tiny"
    run.mkdir(parents=True)
    # Training curves every step, evaluation at the end only: one point each at step 12.
    lines = [{"step": s, "loss": 0.7 - 0.05 * s, "accuracy": 0.5 + 0.04 * s, "pairs": 8} for s in range(1, 13)]
    lines.append({"step": 12, "eval/loss": 0.3895, "eval/accuracy": 1.0, "eval/pairs": 9})
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return run


def test_one_point_curves_show_the_point_its_value_and_whole_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run_folder(tmp_path)
    app = run_page("pages/6_Runs.py", tmp_path, monkeypatch)
    specs = {json.loads(c.proto.spec)["title"]["text"]: json.loads(c.proto.spec) for c in app.get("vega_lite_chart")}
    assert list(specs) == ["loss", "accuracy", "eval/loss", "eval/accuracy"]
    # each curve says what its values are means over, in its subtitle; its value axis has the metric's short name
    assert specs["accuracy"]["title"]["subtitle"] == "over 8 pairs a step"
    assert specs["eval/accuracy"]["title"]["subtitle"] == "over 9 held-out pairs"
    for name, spec in specs.items():
        line, values = spec["layer"]
        assert line["encoding"]["y"]["title"] == name
        assert line["mark"] == {"type": "line", "point": True}  # a lone point is drawn
        assert line["encoding"]["x"]["axis"] == {"format": "d", "tickMinStep": 1}  # steps are whole numbers
        assert values["mark"]["type"] == "text" and values["encoding"]["text"]["field"] == "value"
    assert specs["eval/loss"]["layer"][0]["encoding"]["x"]["scale"]["domain"] == [11, 13]  # step 12 in the middle
    assert specs["eval/loss"]["height"] == 200 and "height" not in specs["loss"]  # one point: a short chart
    assert "domain" not in specs["loss"]["layer"][0]["encoding"]["x"]["scale"]
    assert any("Not evaluated yet" in m.value for m in app.markdown)


def test_every_report_is_listed_with_its_counts_and_each_score_with_its_items(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _run_folder(tmp_path)
    (run / "eval.json").write_text(json.dumps({"benchmarks": {"vl_rewardbench": {"overall": 55.0, "macro": 50.0}}}))
    first = write_report(run / EVALS, _report("2025-01-01T12:00:00Z", _entry(4, 4, 75.0, 75.0)))
    second = write_report(run / EVALS, _report("2025-01-01T12:00:00Z", _entry(3, 4, 66.67, 50.0)))
    assert (first.name, second.name) == (
        "20250101T120000Z-vl_rewardbench.json",
        "20250101T120000Z-vl_rewardbench-2.json",
    )
    app = run_page("pages/6_Runs.py", tmp_path, monkeypatch)
    listed = app.dataframe[0].value  # a dataframe: the reports' names and benchmarks are never Markdown
    assert not app.table
    assert list(listed["report"]) == ["eval.json", f"{EVALS}/{first.name}", f"{EVALS}/{second.name}"]  # oldest first
    assert list(listed["items"]) == ["vl_rewardbench: not counted", "vl_rewardbench: 4 of 4 scored",
                                     "vl_rewardbench: 3 of 4 scored"]  # fmt: skip
    assert list(listed["written (UTC)"]) == ["not recorded", "2025-01-01T12:00:00Z", "2025-01-01T12:00:00Z"]

    # The newest report is shown first: each score beside the items it is over.
    evaluation = next(s for s in app.selectbox if s.label == "evaluation")
    assert evaluation.value == f"{EVALS}/{second.name}"
    assert (
        "vl_rewardbench: 3 of 4 items scored; 1 of 4 not scored (image not found: 1); by group: general 3 of 4; "
        "no macro score: it averages the 3 groups' accuracies, and these items are of 1 of them"
    ) in [shown(c.value) for c in app.caption]
    # four items beside published rows over 1,250: the page says what one item weighs
    assert any(
        c.value.startswith("Over 4 items, one item is 25.0 points of a score over all items") for c in app.caption
    )
    assert "trained on: not recorded (no readable data.json)" in [shown(c.value) for c in app.caption]
    table = app.dataframe[1].value
    labels = {k: v.get("label") for k, v in json.loads(app.dataframe[1].proto.columns).items()}
    assert labels["overall"] == "overall %", labels  # scores are percentages, as `trainer eval` prints them
    run_rows = table[table["model"] == "this model (tiny)"]
    assert list(run_rows["result"]) == ["over the scored items", "over all items (not scored = wrong)"]
    assert list(run_rows["items"]) == ["3 of 4", "4"] and list(run_rows["overall"]) == ["66.67", "50.00"]
    published = table[table["result"] == "published"]
    assert set(published["items"]) == {"1250"} and "BaseReward (Qwen2.5-VL-7B)" in set(published["model"])
    assert set(published["general"]) == {"-"}  # the paper gives no score for the group: "-", as `trainer eval` says
    assert any(c.value.startswith("-: a score the paper does not give") for c in app.caption)  # and says what - is

    evaluation.set_value("eval.json").run()  # a legacy report: its scores, without counts
    captions = [shown(c.value) for c in app.caption]
    assert "vl_rewardbench: item counts not recorded (a report from before they were)" in captions
    table = app.dataframe[1].value
    assert list(table["model"])[:2] == ["this model (tiny)", "GPT-4o (08-06)"]
    assert table["overall"].iloc[0] == "55.00"


def test_an_unreadable_report_is_named_and_the_others_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = _run_folder(tmp_path)
    write_report(run / EVALS, _report("2025-01-01T12:00:00Z", _entry(4, 4, 75.0, 75.0)))
    (run / EVALS / "20250102T000000Z-vl_rewardbench.json").write_text("{")  # cut short by hand
    app = run_page("pages/6_Runs.py", tmp_path, monkeypatch)
    assert [w.value for w in app.warning] == ["Cannot read this run's evaluation."]
    assert any("20250102T000000Z-vl_rewardbench.json is not a readable JSON report" in t.value for t in app.text)
    assert len(app.dataframe[0].value) == 1 and len(app.dataframe) == 2


def test_a_run_says_what_it_trained_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = _run_folder(tmp_path)
    counts = {"eval": 9, "left_out": 0, "rows": 43, "pairs": 36, "train_draws": 32, "weight": 1}
    (run / "data.json").write_text(json.dumps({"builds": {"/data/builds/demo": counts}}))
    app = run_page("pages/6_Runs.py", tmp_path, monkeypatch)
    assert "trained on: /data/builds/demo (32 training draws from 43 rows (36 distinct pairs), 9 pairs held out)" in [
        shown(c.value) for c in app.caption
    ]  # a run from before the held-out rows were counted
    (run / "data.json").write_text(json.dumps({"builds": {"/data/builds/demo": {**counts, "eval_rows": 11}}}))
    app = run_page("pages/6_Runs.py", tmp_path, monkeypatch)
    assert ("trained on: /data/builds/demo (32 training draws from 43 rows (36 distinct pairs), 9 pairs (11 rows) "
            "held out)") in [shown(c.value) for c in app.caption]  # fmt: skip
    # A run that records the draws its steps reached says how far it went, and what it skipped of them.
    report = {"builds": {"/data/builds/demo": counts}, "train_draws": 32, "steps": 2, "draws_reached": 16,
              "skipped_train_draws": {"longer than max_length": 1}}  # fmt: skip
    (run / "data.json").write_text(json.dumps(report))
    app = run_page("pages/6_Runs.py", tmp_path, monkeypatch)
    assert "training: 2 steps: 16 draws reached (0.5 of an epoch of 32 draws), 1 of them (6%) skipped, never " \
        "trained on: 1 longer than max_length" in [shown(c.value) for c in app.caption]  # fmt: skip
    report["skipped_train_draws"] = {"longer than max_length": 12}  # most of them: a warning
    (run / "data.json").write_text(json.dumps(report))
    app = run_page("pages/6_Runs.py", tmp_path, monkeypatch)
    assert "training: 2 steps: 16 draws reached (0.5 of an epoch of 32 draws), 12 of them (75%) skipped, never " \
        "trained on: 12 longer than max_length" in [shown(w.value) for w in app.warning]  # fmt: skip


def test_malformed_run_files_are_said_not_tracebacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any folder with a metrics.jsonl is a run: lines that are not a step's record, values that are not finite,
    a file that is not UTF-8 or not a plain file, and a report that is not an object are named on the page."""
    import os

    run = _run_folder(tmp_path)
    lines = ['{"step": 1, "loss": NaN, "pairs": NaN}', '{"step": 2, "loss": 0.3, "margin": Infinity}', "5",
             '{"step": "one", "loss": 0.1}', '{"step": 3, "loss": 0.2, "pairs": 8}', '{"step": 4, "lo']  # fmt: skip
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (run / "evals").mkdir()
    (run / "evals" / "2026-01-01T00-00-00-x.json").write_text("[1, 2]")
    (run / "evals" / "2026-01-02T00-00-00-x.json").write_text('{"benchmarks": {"vl_rewardbench": "not an object"}}')
    entry = {"scores_over_scored": {}, "items_total": 4}  # counted, but without the rest of its counts
    (run / "evals" / "2026-01-03T00-00-00-x.json").write_text(json.dumps({"benchmarks": {"x": entry}}))
    good = _report("2026-01-04T00:00:00Z", _entry(4, 4, 50.0, 50.0))
    (run / "evals" / "2026-01-04T00-00-00-x.json").write_text(json.dumps(good))
    app = run_page("pages/6_Runs.py", tmp_path, monkeypatch)
    assert "Evaluations (1 of 4 reports)" in [h.value for h in app.subheader]  # the other 3 named in warnings
    assert not app.exception, app.exception
    # a line being written (cut short) is left out with the others: it made the whole run unreadable
    assert "3 lines of metrics.jsonl (line 3, 4, 6) are not a step's record (a JSON object with a whole-number step) " \
        "and not drawn." in [w.value for w in app.warning]  # fmt: skip
    captions = [shown(c.value) for c in app.caption]
    assert "loss: 1 of 3 logged values are not finite numbers and are not drawn (step 1: nan)" in captions
    assert any(c.startswith("reward margin (chosen - rejected): 1 of 1 logged values") for c in captions)
    assert any(
        "2026-01-01T00-00-00-x.json: not a report (a JSON object with its benchmarks)" in t.value for t in app.text
    )
    assert "2026-01-02T00-00-00-x.json: its entry for 'vl_rewardbench' is not as `trainer eval` writes it " \
        "(str, not an object)" in " ".join(t.value for t in app.text)  # fmt: skip
    assert "2026-01-03T00-00-00-x.json: its entry for 'x' is not as `trainer eval` writes it (`items_scored` is not " \
        "a count)" in " ".join(t.value for t in app.text)  # fmt: skip
    (run / "metrics.jsonl").write_bytes(b'{"step": 1, "loss": 0.5}\n\xff\n')
    assert run_page("pages/6_Runs.py", tmp_path, monkeypatch).error[0].value == "Cannot read this run's metrics."
    (run / "metrics.jsonl").unlink()
    os.mkfifo(run / "metrics.jsonl")  # reading it would block the page
    assert run_page("pages/6_Runs.py", tmp_path, monkeypatch).error[0].value == "Cannot read this run's metrics."


def test_plain_runs_come_before_the_fold_runs_of_audits_which_say_what_they_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for folder, fold in (("a-audit/fold-0", 0), ("a-audit/fold-1", 1), ("z-run", None)):
        run = tmp_path / folder
        run.mkdir(parents=True)
        (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 0.7, "pairs": 8}) + "\n")
        settings = {"folds": 2 if fold is not None else 0, "fold": fold or 0, "seed": 0}
        (run / "config.yaml").write_text(json.dumps(settings))  # YAML: JSON is a subset
        left_out = 17 if fold is not None else 0
        builds = {"builds": {"b": {"rows": 43, "pairs": 36, "train_draws": 19, "eval": 0, "left_out": left_out}}}
        (run / "data.json").write_text(json.dumps(builds))
    app = run_page("pages/6_Runs.py", tmp_path, monkeypatch)
    (box,) = app.selectbox
    assert box.options == [
        "z-run",
        "a-audit/fold-0 (audit fold 0 of 2: trained without that fold's pairs)",
        "a-audit/fold-1 (audit fold 1 of 2: trained without that fold's pairs)",
    ]
    assert any(shown(c.value) == "trained on: b (19 training draws from 43 rows (36 distinct pairs), 0 pairs held out)"
               for c in app.caption)  # fmt: skip
    box.set_value(box.options[1]).run()
    left_out = (
        "0 pairs held out, 17 rows of the shards left out (the audit's fold, upsampled copies counted: the "
        "pairs this run's model judges))"
    )
    assert any(shown(c.value).endswith(left_out) for c in app.caption)
    home = run_page("Home.py", tmp_path, monkeypatch)
    assert any("1 run found, and 2 fold runs of audits." in m.value for m in home.markdown)


def test_a_run_with_no_steps_logged_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "runs" / "new"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("")  # `trainer fit` has started, no step logged yet
    app = run_page("pages/6_Runs.py", tmp_path, monkeypatch)
    assert [i.value for i in app.info] == ["No steps logged yet: metrics.jsonl holds no step's record."]
    assert not app.get("vega_lite_chart")


def test_the_margin_curve_has_its_title_and_a_short_value_axis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The axis names the metric (`margin`); the title says what it is; the pairs it is over go in the subtitle,
    so the axis label is never longer than the chart."""
    run = tmp_path / "runs" / "tiny"
    run.mkdir(parents=True)
    lines = [{"step": s, "loss": 0.7, "margin": 0.1 * s, "pairs": 3 + s % 6} for s in range(1, 20)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    app = run_page("pages/6_Runs.py", tmp_path, monkeypatch)
    margin = next(json.loads(c.proto.spec) for c in app.get("vega_lite_chart")
                  if json.loads(c.proto.spec)["title"]["text"].startswith("reward margin"))  # fmt: skip
    assert margin["title"] == {"text": "reward margin (chosen - rejected)", "subtitle": "over 3-8 pairs a step",
                               "anchor": "start"}  # fmt: skip
    assert margin["encoding"]["y"]["title"] == "margin"
