"""Target vs actual pairs and share per source, and how much each source was subsampled or upsampled."""

from __future__ import annotations

import altair as alt
import streamlit as st

from app.ui import build_or_stop, page, root_or_stop

page("Mixture")
root = root_or_stop()
build = build_or_stop(root)
rows = build.mixture()
total = sum(r["in_shards"] for r in rows)
st.caption(f"{total} pairs in the shards, from {len(rows)} sources")
st.dataframe(rows, hide_index=True, width="stretch")
long = [
    {"source": r["source"], "share": kind, "percent": r[column]}
    for r in rows
    for kind, column in (("target", "target_share_pct"), ("actual", "share_pct"))
]
chart = (
    alt.Chart(alt.Data(values=long))
    .mark_bar()
    .encode(
        y=alt.Y("source:N", title=None, axis=alt.Axis(labelLimit=300)),
        yOffset="share:N",
        x=alt.X("percent:Q", title="share of the pairs in the shards (%)"),
        color=alt.Color("share:N", title=None),
        tooltip=["source:N", "share:N", "percent:Q"],
    )
    .properties(height=48 * len(rows) + 40)
)
st.altair_chart(chart, width="stretch")
