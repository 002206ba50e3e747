"""Length bias and score statistics, with a live length-ratio threshold."""

from __future__ import annotations

import streamlit as st

from app.ui import build_or_stop, root_or_stop

st.title("Bias and statistics")
root = root_or_stop()
build = build_or_stop(root)
st.subheader("Chosen vs rejected length per source")
st.dataframe(build.length_bias(), hide_index=True)
sample = build.lengths()
if sample:
    st.scatter_chart(sample, x="rejected_chars", y="chosen_chars", color="source")
    ratio = st.slider("what a max length ratio (chosen / rejected) would remove", 1.0, 20.0, 5.0, 0.5)
    over = sum(1 for r in sample if r["chosen_chars"] / max(r["rejected_chars"], 1) > ratio)
    st.write(f"{over} of {len(sample)} sampled pairs have a length ratio above {ratio}.")
margins = [r for r in sample if r["margin"] is not None]
if margins:
    st.subheader("Margins")
    st.bar_chart(margins, x="source", y="margin")
