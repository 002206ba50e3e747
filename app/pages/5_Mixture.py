"""Target vs actual share per source and upsampling factors."""

from __future__ import annotations

import streamlit as st

from app.ui import build_or_stop, root_or_stop

st.title("Mixture")
root = root_or_stop()
build = build_or_stop(root)
rows = build.mixture()
st.dataframe(rows, hide_index=True)
st.bar_chart(rows, x="source", y="share_pct")
