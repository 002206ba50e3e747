"""What was removed, grouped by stage and reason, with examples, duplicates and contamination evidence."""

from __future__ import annotations

import streamlit as st

from app.pair_view import show_pair
from app.ui import build_or_stop, page, pick_row, plain, root_or_stop, show_images, show_text

page("Removed")
root = root_or_stop()
build = build_or_stop(root)
summary = build.removed_summary()
if summary:
    st.caption("rows: input rows rejected at ingest; pair rows (an upsampled pair's copies each) at later stages")
    st.dataframe(summary, hide_index=True)
    groups = list(dict.fromkeys((r["stage"], r["reason"]) for r in summary))  # in stage order
    stage, reason = st.selectbox("examples of", groups, format_func=lambda g: f"{g[0]}: {g[1]}")
    examples, removed = build.removed_examples(stage, reason), build.removed_count(stage, reason)
    if len(examples) < removed:
        st.caption(plain(f"showing the first {len(examples)} of {removed} rows removed at {stage}: {reason} (by "
                         "source and row)"))  # fmt: skip
    at = pick_row(examples, "removed", total=removed, rest=f"only the first {len(examples)} are listed")
    example = examples[at]
    pair = build.pair(example["pair_id"], example["source"], example["source_row"]) if example["pair_id"] else None
    with st.expander(plain(f"read {example['source']} {example['source_row']}")):
        if pair is None:  # rejected at ingest: the row gave no pair
            st.text(f"This input row gave no pair: {example['detail']}")
        else:
            show_pair(build, pair, queue="removed")
elif "rejects/rejects.parquet" not in build.refused:  # a refused file is named above, not called empty
    st.info("Nothing was removed from this build.")
st.subheader("Duplicates and the pair each was removed in favour of")
dups, removed_duplicates = build.duplicates(), build.duplicates_count()
if dups:
    if len(dups) < removed_duplicates:
        st.caption(f"showing the first {len(dups)} of {removed_duplicates} removed duplicates (by method, source and "
                   "row), in the table and to compare")  # fmt: skip
    st.dataframe(
        [{k: d[k] for k in ("method", "similarity", "source", "source_row", "survivor_source", "survivor_row",
                            "survivor_fate")}
         for d in dups],
        hide_index=True,
    )  # fmt: skip
    pick = st.selectbox(
        "compare", range(len(dups)), format_func=lambda i: f"{dups[i]['source_row']} vs {dups[i]['survivor_row']}"
    )
    dup = dups[pick]
    st.caption(plain(f"{dup['method']}, similarity {dup['similarity']}"))
    left, right = st.columns(2)
    with left:
        show_images(build, dup["removed_images"], "removed")
        show_text("removed: prompt", dup["removed_prompt"] or "")
        show_text("removed: chosen", dup["removed_chosen"] or "")
    with right:  # the pair kept at this stage; a later stage may have removed it too (its fate says)
        label = f"kept at {dup['method']} ({dup['survivor_fate']})"
        show_images(build, dup["survivor_images"], label)
        show_text(f"{label}: prompt", dup["survivor_prompt"] or "")
        show_text(f"{label}: chosen", dup["survivor_chosen"] or "")
else:
    st.write("No duplicates were removed.")
st.subheader("Contamination: the benchmark item each matching pair matched")
contamination, actions = build.contamination()
if contamination:
    st.write(
        f"{actions.get('removed', 0)} pairs removed, {actions.get('kept', 0)} matches only recorded (kept: a text-only "
        f"match that is not distinctive, or an image that differs); showing {len(contamination)} of "
        f"{sum(actions.values())}, removed first."
    )
    st.dataframe(contamination, hide_index=True)
    with_images = [i for i, m in enumerate(contamination) if m.get("benchmark_images") or m.get("pair_images")]
    if with_images:
        pick = st.selectbox(
            "compare images",
            with_images,
            format_func=lambda i: (
                f"{contamination[i]['source_row']} vs {contamination[i]['benchmark']} "
                f"{contamination[i]['benchmark_row']}"
            ),
        )
        match = contamination[pick]
        distance = match["image_distance"]
        st.caption(plain(f"perceptual-hash distance {'-' if distance is None else distance} bits; {match['action']}"))
        left, right = st.columns(2)
        with left:
            show_images(build, match["pair_images"], "training pair")
        with right:
            show_images(build, match["benchmark_images"], f"benchmark item {match['benchmark_row']}")
else:
    st.write("No training pair matched a benchmark.")
unchecked, total = build.benchmark_rejects()
if total:
    st.subheader("Benchmark rows rejected at ingest: items this build was not checked against")
    st.caption(f"{total} benchmark rows could not be read as items (the manifest counts them by reason); showing "
               f"{len(unchecked)} of {total}, in benchmark and row order.")  # fmt: skip
    st.dataframe(unchecked, hide_index=True)
