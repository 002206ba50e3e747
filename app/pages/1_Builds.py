"""A build: its recipe, per-source funnel, shards and images, and a diff with another build."""

from __future__ import annotations

import altair as alt
import streamlit as st

from app.data import AppError, diff_builds, funnel, funnel_steps, list_builds
from app.ui import build_or_stop, open_build, page, plain, root_or_stop
from curation.build_card import shards_text

page("Builds")
root = root_or_stop()
build = build_or_stop(root)
manifest = build.manifest
left, right, third = st.columns(3)
left.metric("rows in shards", manifest["rows_in_shards"], help="the mix's upsampled copies are rows too")
right.metric("shards", len(manifest["shards"]))
third.metric("images in shards", manifest.get("images_in_shards", manifest["images"]))
st.caption(shards_text(manifest))
for warning in manifest.get("warnings", []):
    st.warning(plain(warning))
st.subheader("Funnel")
rows = funnel(manifest)
order = funnel_steps(rows)  # pipeline order, not alphabetical; every step labelled
chart = (
    alt.Chart(alt.Data(values=rows))
    .mark_bar()
    .encode(
        y=alt.Y("step:N", sort=order, title=None, axis=alt.Axis(labelLimit=480, labelOverlap=False)),
        x=alt.X("sum(count):Q", title="rows or pairs"),
        color=alt.Color("source:N"),
        tooltip=["source:N", "step:N", "count:Q"],
    )
    .properties(height=22 * len(order) + 40)
)
st.altair_chart(chart, width="stretch")
with st.expander(f"the funnel as a table ({len(rows)} rows)"):
    st.dataframe(rows, hide_index=True, width="stretch", height=36 * (len(rows) + 1))
st.subheader("Recipe")
st.code(manifest["recipe"]["text"], language="yaml")
others = [b.name for b in list_builds(root) if b.status == "ready" and b.path != build.path]
if others:
    st.subheader("Compare with another build")
    other = st.selectbox("other build", others)
    try:
        changes = diff_builds(manifest, open_build(str(root), other).manifest, build.name, other)
    except AppError as exc:
        st.warning("Cannot open the other build.")
        st.text(str(exc))
        st.stop()
    if changes:
        st.dataframe(changes, hide_index=True, width="stretch")
    else:
        st.write("Same funnel.")
