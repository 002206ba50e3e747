"""Training runs under the data root: loss, accuracy and margin curves; every evaluation beside published results.

A run is a folder with `metrics.jsonl` (one JSON object per logged step: `step`, `loss`, `accuracy`, `margin`,
...) and, once evaluated, one report per evaluation, `evals/<UTC time>-<benchmarks>.json` (`trainer.reports`: per
benchmark its item counts and each score over the scored items and over all items). A run evaluated before
per-report files has one `eval.json`, its scores without item counts.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from app.data import (
    AppError,
    data_report,
    list_evaluations,
    list_runs,
    read_evaluation,
    read_metrics,
    trained_on,
    training_reach,
)
from app.ui import page, plain, root_or_stop, show_refused
from curation.words import quantity
from trainer.published import comparison_rows, table_columns
from trainer.reports import cell, counted, counts_text

SMALL = 200  # fewer items than this: the page says how much one item weighs
LABELLED_POINTS = 12  # a curve of at most this many points shows each value beside its point


def curve(metric: str, title: str, over_text: str, points: list[dict[str, float]]) -> alt.LayerChart | alt.Chart:
    """A metric by step: points joined by a line (one point has no line, so points are drawn), an integer step
    axis, and the values written beside few points (evaluations are often one or two). The metric's short name
    labels the value axis; the title says what it is, the subtitle what its values are means over."""
    steps = sorted({p["step"] for p in points})
    # One step alone would make a zero-width axis: a step either side keeps the point inside and labelled.
    domain = [steps[0] - 1, steps[0] + 1] if len(steps) == 1 else alt.Undefined
    # padded: the value written beside the last point is not cut at the chart's edge
    scale = alt.Scale(domain=domain, nice=False, padding=24)
    x = alt.X("step:Q", axis=alt.Axis(format="d", tickMinStep=1), scale=scale)
    y = alt.Y("value:Q", title=metric, axis=alt.Axis(format=".4~g"), scale=alt.Scale(zero=False))
    base = alt.Chart(pd.DataFrame(points))
    line = base.mark_line(point=True).encode(x=x, y=y, tooltip=["step:Q", alt.Tooltip("value:Q", format=".4f")])
    heading = alt.TitleParams(text=title, subtitle=over_text or alt.Undefined, anchor="start")
    if len(points) > LABELLED_POINTS:
        return line.properties(title=heading)
    values = base.mark_text(dy=-12).encode(x=x, y=y, text=alt.Text("value:Q", format=".4f"))
    # one step (a run evaluated once): a short chart, its one value labelled, not a page of empty axes
    chart = (line + values).properties(title=heading)
    return chart.properties(height=200) if len(steps) == 1 else chart


def report_summary(name: str, report: dict[str, Any]) -> dict[str, str]:
    benchmarks = report.get("benchmarks", {})
    items = [
        f"{b}: {e['items_scored']} of {e['items_total']} scored" if counted(e) else f"{b}: not counted"
        for b, e in sorted(benchmarks.items())
    ]
    return {"written (UTC)": report.get("created", "not recorded"), "report": name,
            "benchmarks": ", ".join(sorted(benchmarks)), "items": "; ".join(items)}  # fmt: skip


page("Runs")
root = root_or_stop()
runs, refused = list_runs(root)
show_refused(refused)
if not runs:
    st.info("No training runs under the data root yet: `trainer fit` writes RUN/metrics.jsonl.")
    st.stop()


def run_label(run: Path) -> str:
    fold = runs[run]
    where = str(run.relative_to(root))
    return where if fold is None else f"{where} (audit fold {fold[0]} of {fold[1]}: trained without that fold's pairs)"


run = st.selectbox("run", list(runs), format_func=run_label)
report = data_report(root, run)  # read once, for what the run trained on and how far it went
st.caption(plain(f"trained on: {trained_on(report) or 'not recorded (no readable data.json)'}"))
reach = training_reach(report)
if reach is not None:  # more than a tenth of the draws reached skipped: a warning, as `trainer fit` gives
    (st.warning if reach[1] else st.caption)(plain(reach[0]))
try:
    metrics, left_out = read_metrics(root, run)
except AppError as exc:
    st.error("Cannot read this run's metrics.")
    st.text(str(exc))
    st.stop()
if left_out:
    lines, verb = ", ".join(map(str, left_out[:5])) + (", ..." if len(left_out) > 5 else ""), "is are".split()
    st.warning(f"{quantity(len(left_out), 'line')} of metrics.jsonl (line {lines}) {verb[len(left_out) > 1]} not a "
               "step's record (a JSON object with a whole-number step) and not drawn.")  # fmt: skip
if not metrics:  # a run just started (or one whose every line is left out, said above)
    st.info("No steps logged yet: metrics.jsonl holds no step's record.")


def number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def over(records: list[dict[str, Any]], key: str, what: str) -> str:
    """`over 8 pairs a step`: the pairs a curve's values are means over, where the log records them."""
    counts = sorted({int(m[key]) for m in records if number(m.get(key)) and math.isfinite(m[key])})
    if not counts:
        return ""
    return f"over {counts[0] if len(counts) == 1 else f'{counts[0]}-{counts[-1]}'} {what}"


CURVES = {"loss": "loss", "accuracy": "accuracy", "margin": "reward margin (chosen - rejected)",
          "eval/loss": "eval/loss", "eval/accuracy": "eval/accuracy"}  # fmt: skip
for name, title in CURVES.items():
    logged = [m for m in metrics if m.get(name) is not None]  # null: a step with no value (every draw skipped)
    points = [{"step": m["step"], "value": m[name]} for m in logged if number(m[name]) and math.isfinite(m[name])]
    held_out = name.startswith("eval/")
    pairs = over(metrics, "eval/pairs", "held-out pairs") if held_out else over(metrics, "pairs", "pairs a step")
    if points:
        st.altair_chart(curve(name, title, pairs, points), width="stretch")
    if len(points) < len(logged):  # NaN, infinity or not a number: said, not silently left out of the curve
        odd = [f"step {m['step']}: {m[name]!r}" for m in logged if not (number(m[name]) and math.isfinite(m[name]))]
        st.caption(plain(f"{title}: {len(odd)} of {len(logged)} logged values are not finite numbers and are not "
                         f"drawn ({'; '.join(odd[:5])}{'; ...' if len(odd) > 5 else ''})"))  # fmt: skip
names, refused_reports = list_evaluations(root, run)
show_refused(refused_reports)
if not names and not refused_reports:
    st.write("Not evaluated yet (`trainer eval --model RUN` writes RUN/evals/<UTC time>-<benchmarks>.json).")
reports = {}
for name in names:
    try:
        reports[name] = read_evaluation(root, run, name)
    except AppError as exc:
        st.warning("Cannot read this run's evaluation.")
        st.text(str(exc))
if reports:
    # of every report file: those that cannot be read are named in the warnings above
    st.subheader(f"Evaluations ({len(reports)}" + (f" of {len(names)} reports)" if len(reports) < len(names) else ")"))
    # a dataframe, not st.table, whose cells are Markdown: benchmark names come from the report files
    st.dataframe([report_summary(name, report) for name, report in reports.items()], hide_index=True)
    chosen = st.selectbox("evaluation", list(reports), index=len(reports) - 1)  # the newest first shown
    report = reports[chosen]
    st.subheader("Beside published results")
    for benchmark, entry in sorted(report.get("benchmarks", {}).items()):
        st.caption(plain(f"{benchmark}: {counts_text(benchmark, entry)}"))
        total = entry.get("items_total") if counted(entry) else None
        if total and total < SMALL:  # a demo slice or a subset beside full-benchmark results
            st.caption(f"Over {total} items, one item is {100 / total:.1f} points of a score over all items (more "
                       "over fewer scored ones); each published row is over its own items (its column says how "
                       "many).")  # fmt: skip
        rows = comparison_rows(report, benchmark, f"this model ({run.name})")
        columns = table_columns(rows)
        # cells as `trainer eval` prints them: scores are percentages ("overall %") to two places, and a result not
        # published (a group the paper gives no score for) or an item count not stated is "-", not "None"
        shown_rows = [{c: cell(row.get(c)) for c in columns} for row in rows]
        if any(v == "-" for row in shown_rows for v in row.values()):
            st.caption("-: a score the paper does not give for that group (or an item count it does not state).")
        scores = {c: st.column_config.TextColumn(f"{c} %") for c in columns if c not in ("model", "result", "items")}
        st.dataframe(shown_rows, hide_index=True, column_config=scores)
