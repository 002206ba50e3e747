"""Training runs under the data root: loss, accuracy and margin curves; evaluations beside published results.

A run is a folder with `metrics.jsonl` (one JSON object per logged step: `step`, `loss`, `accuracy`, `margin`,
...) and, once evaluated, `eval.json` (`{"benchmarks": {NAME: {METRIC: percent}}, "length_judge": {...}}`).
"""

from __future__ import annotations

import json

import streamlit as st

from app.data import list_runs
from app.ui import root_or_stop
from trainer.published import comparison_rows

st.title("Runs")
root = root_or_stop()
runs = list_runs(root)
if not runs:
    st.info("No training runs under the data root yet: `trainer fit` writes RUN/metrics.jsonl.")
    st.stop()
run = st.selectbox("run", runs, format_func=lambda p: str(p.relative_to(root)))
try:
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
except json.JSONDecodeError as exc:
    st.error("metrics.jsonl is not valid JSON lines.")
    st.text(str(exc))
    st.stop()
for name in ("loss", "accuracy", "margin", "eval/loss", "eval/accuracy"):
    points = [{"step": m["step"], name: m[name]} for m in metrics if name in m and "step" in m]
    if points:
        st.caption(name)
        st.line_chart(points, x="step", y=name)
evaluation = run / "eval.json"
if evaluation.is_file():
    st.subheader("Evaluation beside published results")
    report = json.loads(evaluation.read_text())
    for benchmark in sorted(report.get("benchmarks", {})):
        st.caption(benchmark)
        st.dataframe(comparison_rows(report, benchmark, f"this run ({run.name})"), hide_index=True)
else:
    st.write("Not evaluated yet (`trainer eval` writes eval.json).")
