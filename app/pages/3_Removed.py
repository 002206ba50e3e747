"""What was removed, grouped by stage and reason, with examples, duplicates and contamination evidence."""

from __future__ import annotations

import streamlit as st

from app.ui import build_or_stop, root_or_stop

st.title("Removed")
root = root_or_stop()
build = build_or_stop(root)
summary = build.removed_summary()
if not summary:
    st.info("Nothing was removed from this build.")
    st.stop()
st.dataframe(summary, hide_index=True)
groups = sorted({(r["stage"], r["reason"]) for r in summary})
stage, reason = st.selectbox("examples of", groups, format_func=lambda g: f"{g[0]}: {g[1]}")
st.dataframe(build.removed_examples(stage, reason), hide_index=True)
st.subheader("Duplicates and their survivors")
dups = build.rows(
    "SELECT r.source, r.source_row, r.detail FROM rejects r WHERE r.stage LIKE '%dedupe' ORDER BY 1, 2 LIMIT 200"
)
st.dataframe(dups, hide_index=True)
st.subheader("Contamination: the benchmark item each removed pair matched")
contamination = build.contamination()
if contamination:
    st.dataframe(contamination, hide_index=True)
else:
    st.write("No contamination found.")
