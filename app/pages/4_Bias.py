"""Length bias, margin and score distributions, category mix, and thresholds re-applied live to the signals."""

from __future__ import annotations

import streamlit as st

from app.ui import build_or_stop, histogram_chart, page, plain, root_or_stop

page("Bias and statistics")
root = root_or_stop()
build = build_or_stop(root)
st.subheader("Chosen vs rejected length per source")
st.caption("over the rows of the shards (the mix's upsampled copies are rows too)")
lengths_by_source = {
    "mean_chosen_chars": st.column_config.NumberColumn("chosen, mean characters"),
    "mean_rejected_chars": st.column_config.NumberColumn("rejected, mean characters"),
    "chosen_longer_pct": st.column_config.NumberColumn("chosen longer %", help="of the rows"),
    "median_length_ratio": st.column_config.NumberColumn("median length ratio", help="chosen / rejected characters"),
}
st.dataframe(build.length_bias(), hide_index=True, column_config=lengths_by_source)
sources = [r["source"] for r in build.rows("SELECT DISTINCT source FROM pairs ORDER BY 1")]
if not sources:
    st.info("This build has no pairs in its shards: nothing to chart.")
    st.stop()
source = st.selectbox("source", sources)
bins = build.length_histogram(source)
last = bins[-1] if bins and bins[-1]["longest"] >= bins[-1]["length_end"] else None
longer = (f"; the last bar, from {last['length_bin']} characters, holds every longer answer, up to {last['longest']}"
          if last else "")  # fmt: skip
st.caption(f"length distribution: chosen vs rejected answers, rows of the shards{longer}")
sides = {"chosen": "chosen", "rejected": "rejected"}
lengths = histogram_chart(bins, "length_bin", "length_end", sides, "answer length (characters)", "answers")
st.altair_chart(lengths, width="stretch")
for column, what, note in (("margin", "label margin", " (the source's score gap, chosen minus rejected)"),
                           ("chosen_score", "chosen score", "")):  # fmt: skip
    counts = build.histogram(column, source)
    if counts:
        st.caption(f"{what} distribution{note}, rows of the shards")
        st.altair_chart(histogram_chart(counts, "bin", "bin_end", {"rows": "rows"}, what, "rows"), width="stretch")
    else:  # said, not a chart that silently is not there
        st.caption(plain(f"No {what} chart: no pair of {source} in the shards has a {what}."))
st.subheader("Category mix")
st.caption('rows of the shards per source and category (a source that gives no category: "none given")')
st.dataframe(build.rows("SELECT source, coalesce(category, 'none given') AS category, count(*) AS rows FROM pairs "
                        "GROUP BY ALL ORDER BY ALL"), hide_index=True)  # fmt: skip
st.subheader("Thresholds, re-applied live to the stored signals")
ratio_signal = build.signal_file("filters")
if ratio_signal is not None:
    ratio = st.slider("max length ratio (chosen / rejected)", 1.0, 20.0, 5.0, 0.5)
    over = build.rows(
        f"SELECT count(*) FILTER (length_ratio > ?) AS n, count(*) AS total FROM {build.table(ratio_signal)}", [ratio]
    )[0]
    st.write(f"{over['n']} of the {over['total']} pairs that reached the filters have a length ratio above {ratio} "
             "(the shards' and those the filters or a later stage removed).")  # fmt: skip
near = build.signal_file("near_dedupe")
if near is not None:
    jaccard = st.slider("near-duplicate threshold (Jaccard)", 0.5, 1.0, 0.8, 0.01)
    edges = build.rows(
        f"SELECT count(*) FILTER (jaccard >= ?) AS n, count(*) AS total FROM {build.table(near)}", [jaccard]
    )[0]
    verb = "is a near duplicate" if edges["n"] == 1 else "are near duplicates"
    st.write(f"{edges['n']} of the {edges['total']} measured prompt pairs {verb} at Jaccard >= {jaccard}.")
