"""Browse pairs with filters and sorting; inspect one pair with its images, diff, signals and cluster."""

from __future__ import annotations

import difflib

import streamlit as st

from app.data import SORTS
from app.ui import build_or_stop, root_or_stop, show_text

st.title("Pairs")
root = root_or_stop()
build = build_or_stop(root)
sources = [r["source"] for r in build.rows("SELECT DISTINCT source FROM pairs ORDER BY 1")]
modalities = [r["modality"] for r in build.rows("SELECT DISTINCT modality FROM pairs ORDER BY 1")]
a, b, c = st.columns(3)
# Filters can come from the URL (?source=...&modality=...), so a view can be linked.
chosen_sources = a.multiselect(
    "sources", sources, default=[v for v in st.query_params.get_all("source") if v in sources]
)
chosen_modalities = b.multiselect(
    "modalities", modalities, default=[v for v in st.query_params.get_all("modality") if v in modalities]
)
sort = c.selectbox("sort by", list(SORTS))
categories = [r["category"] for r in build.rows("SELECT DISTINCT category FROM pairs WHERE category IS NOT NULL")]
chosen_categories = st.multiselect("categories", sorted(categories)) if categories else []
search = st.text_input("search prompt and answers")
d, e = st.columns(2)
longest = max(1, build.rows("SELECT max(length(chosen)) AS n FROM pairs")[0]["n"] or 1)
low, high = d.slider("chosen length (characters)", 0, longest, (0, longest))
margins = build.rows("SELECT min(margin) AS lo, max(margin) AS hi FROM pairs")[0]
margin_range = None
if margins["lo"] is not None and margins["lo"] < margins["hi"]:
    margin_range = e.slider("margin", float(margins["lo"]), float(margins["hi"]), (margins["lo"], margins["hi"]))
page = st.number_input("page", min_value=0, value=0, step=1)
rows, total = build.pairs(
    sources=chosen_sources,
    modalities=chosen_modalities,
    categories=chosen_categories,
    search=search,
    min_chosen_chars=low if low > 0 else None,
    max_chosen_chars=high if high < longest else None,
    min_margin=margin_range[0] if margin_range and margin_range[0] > margins["lo"] else None,
    max_margin=margin_range[1] if margin_range and margin_range[1] < margins["hi"] else None,
    sort=sort,
    page=int(page),
)
st.caption(f"{total} pairs match")
st.dataframe(rows, hide_index=True)
if not rows:
    st.stop()
pair_id = st.selectbox("inspect pair", [r["pair_id"] for r in rows])
pair = build.pair(pair_id)
if pair is None:
    st.stop()
st.subheader("Pair")
st.text(f"{pair['source']} {pair['source_row']}  ({pair['pair_id']})")
for sha in pair["images"]:
    image = build.image(sha)
    if image is not None:
        st.image(image, caption=sha[:12])
for message in pair["prompt"]:
    show_text(message["role"], message["content"])
left, right = st.columns(2)
with left:
    show_text("chosen", pair["chosen"])
with right:
    show_text("rejected", pair["rejected"])
st.caption("word diff (- chosen only, + rejected only)")
diff = difflib.ndiff(pair["chosen"].split(), pair["rejected"].split())
st.text(" ".join(w for w in diff if w[:1] in "-+"))
st.subheader("Signals")
st.json(build.signals(pair["pair_id"], pair["prompt_id"], list(pair["images"])), expanded=False)
cluster = build.cluster(pair["pair_id"])
st.subheader("Duplicate cluster")
if cluster:
    st.dataframe(cluster, hide_index=True)
else:
    st.write("No duplicate was removed in favour of this pair.")
