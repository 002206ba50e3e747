"""Target vs actual rows and share per source, and how much each source was subsampled or upsampled."""

from __future__ import annotations

import altair as alt
import streamlit as st

from app.ui import build_or_stop, page, root_or_stop

page("Mixture")
root = root_or_stop()
build = build_or_stop(root)
rows = build.mixture()
total = sum(r["rows_in_shards"] for r in rows)
distinct = build.manifest.get("pairs_in_shards")
pairs = f" ({distinct} distinct pairs: upsampled copies are rows too)" if distinct is not None else ""
st.caption(f"{total} rows in the shards{pairs}, from {len(rows)} sources; `available` counts the pairs the mix drew "
           "from, `target` the rows the recipe asked for, `target per available` the one over the other (below 1 the "
           "source was subsampled, above 1 upsampled)")  # fmt: skip
labels = {
    "available": st.column_config.NumberColumn("available", help="pairs the mix drew from"),
    "target": st.column_config.NumberColumn("target", help="rows the recipe asked for"),
    "rows_in_shards": st.column_config.NumberColumn("rows in shards"),
    "target_share_pct": st.column_config.NumberColumn("target share %", help="of the rows the recipe asked for"),
    "share_pct": st.column_config.NumberColumn("actual share %", help="of the rows in the shards"),
    "sampling_factor": st.column_config.NumberColumn(
        "target per available",
        help="rows the recipe asked for per pair available: below 1 subsampled, above 1 upsampled",
    ),
}
st.dataframe(rows, hide_index=True, width="stretch", column_config=labels)
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
        x=alt.X("percent:Q", title="share of the rows in the shards (%)"),
        color=alt.Color("share:N", title=None),
        tooltip=["source:N", "share:N", "percent:Q"],
    )
    .properties(height=48 * len(rows) + 40)
)
st.altair_chart(chart, width="stretch")
