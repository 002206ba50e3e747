"""Training runs under the data root: loss, accuracy and margin curves; evaluations beside published results.

A run is a folder with `metrics.jsonl` (one JSON object per logged step: `step`, `loss`, `accuracy`, `margin`,
...) and, once evaluated, `eval.json` (`{"benchmarks": {NAME: {METRIC: percent}}, "length_judge": {...}}`).
"""

from __future__ import annotations

import streamlit as st

from app.data import AppError, list_runs, read_evaluation, read_metrics
from app.ui import root_or_stop, show_refused
from trainer.published import comparison_rows

st.title("Runs")
root = root_or_stop()
runs, refused = list_runs(root)
show_refused(refused)
if not runs:
    st.info("No training runs under the data root yet: `trainer fit` writes RUN/metrics.jsonl.")
    st.stop()
run = st.selectbox("run", runs, format_func=lambda p: str(p.relative_to(root)))
try:
    metrics = read_metrics(root, run)
except AppError as exc:
    st.error("Cannot read this run's metrics.")
    st.text(str(exc))
    st.stop()
for name in ("loss", "accuracy", "margin", "eval/loss", "eval/accuracy"):
    points = [{"step": m["step"], name: m[name]} for m in metrics if name in m and "step" in m]
    if points:
        st.caption(name)
        st.line_chart(points, x="step", y=name)
try:
    report = read_evaluation(root, run)
except AppError as exc:
    st.warning("Cannot read this run's evaluation.")
    st.text(str(exc))
    st.stop()
if report is not None:
    st.subheader("Evaluation beside published results")
    for benchmark in sorted(report.get("benchmarks", {})):
        st.caption(benchmark)
        st.dataframe(comparison_rows(report, benchmark, f"this run ({run.name})"), hide_index=True)
else:
    st.write("Not evaluated yet (`trainer eval` writes eval.json).")
