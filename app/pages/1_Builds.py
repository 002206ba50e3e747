"""A build: its recipe, per-source funnel, shards and images, and a diff with another build."""

from __future__ import annotations

import streamlit as st

from app.data import AppError, diff_builds, funnel, list_builds
from app.ui import build_or_stop, open_build, root_or_stop

st.title("Builds")
root = root_or_stop()
build = build_or_stop(root)
manifest = build.manifest
left, right, third = st.columns(3)
left.metric("pairs in shards", manifest["rows_in_shards"])
right.metric("shards", len(manifest["shards"]))
third.metric("images", manifest["images"])
st.subheader("Funnel")
rows = funnel(manifest)
st.dataframe(rows, hide_index=True)
removed = [r for r in rows if ":" in r["step"] or r["step"] in ("kept",)]
if removed:
    st.bar_chart(removed, x="step", y="count", color="source", horizontal=True)
st.subheader("Recipe")
st.code(manifest["recipe"]["text"], language="yaml")
others = [b.name for b in list_builds(root) if b.status == "ready" and b.path != build.path]
if others:
    st.subheader("Compare with another build")
    other = st.selectbox("other build", others)
    try:
        changes = diff_builds(manifest, open_build(str(root), other).manifest)
    except AppError as exc:
        st.warning("Cannot open the other build.")
        st.text(str(exc))
        st.stop()
    if changes:
        st.dataframe(changes, hide_index=True)
    else:
        st.write("Same funnel.")
