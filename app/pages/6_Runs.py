"""Training runs under the data root (written by `trainer fit`)."""

from __future__ import annotations

import json

import streamlit as st

from app.data import list_runs
from app.ui import root_or_stop

st.title("Runs")
root = root_or_stop()
runs = list_runs(root)
if not runs:
    st.info("No training runs under the data root yet: `trainer fit` writes RUN/metrics.jsonl.")
    st.stop()
run = st.selectbox("run", runs, format_func=lambda p: str(p.relative_to(root)))
metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
st.dataframe(metrics)
for name in ("loss", "accuracy", "margin"):
    points = [m for m in metrics if name in m and "step" in m]
    if points:
        st.line_chart(points, x="step", y=name)
