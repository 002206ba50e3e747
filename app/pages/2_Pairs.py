"""Browse pairs with filters and sorting; click a row (or step with previous/next) to read the pair: its images,
prompt, both answers with their differences marked, metadata, signals and duplicates, and review it."""

from __future__ import annotations

import streamlit as st

from app.data import SORTS, looks_like_an_id
from app.pair_view import show_pair
from app.ui import build_or_stop, page, pick_row, plain, root_or_stop

page("Pairs")
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
unknown = [f"{key}={value}" for key, known in (("source", sources), ("modality", modalities))
           for value in st.query_params.get_all(key) if value not in known]  # fmt: skip
if unknown:  # said, not a filter that silently is not there
    st.warning(plain(f"Not in this build's shards, so not a filter: {', '.join(unknown)} (from the URL)."))
sort = c.selectbox("sort by", list(SORTS))
categories = [r["category"] for r in build.rows("SELECT DISTINCT category FROM pairs WHERE category IS NOT NULL")]
chosen_categories = st.multiselect("categories", sorted(categories)) if categories else []
search = st.text_input("search prompt and answers")
d, e = st.columns(2)
longest = max(1, build.rows("SELECT max(length(chosen)) AS n FROM pairs")[0]["n"] or 1)
low, high = d.slider("chosen length (characters)", 0, longest, (0, longest))
margins = build.rows("SELECT min(margin) AS lo, max(margin) AS hi, count(margin) AS n, count(*) AS total FROM pairs")[0]
margin_range = None
if margins["lo"] is not None and margins["lo"] < margins["hi"]:
    margin_range = e.slider("label margin", float(margins["lo"]), float(margins["hi"]), (margins["lo"], margins["hi"]))
else:  # said, not a filter that silently is not there
    e.caption("No label margin filter: " + ("no pair in the shards has a label margin." if margins["lo"] is None else
              f"the label margin is {margins['lo']:g} wherever there is one ({margins['n']} of the "
              f"{margins['total']} rows of the shards)."))  # fmt: skip
PAGE_SIZE = 25
page_number = st.number_input("page", min_value=1, value=1, step=1)  # past the last page: an empty page, said so
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
    page=int(page_number) - 1,
    page_size=PAGE_SIZE,
)
pages = max(1, -(-total // PAGE_SIZE))
first = (int(page_number) - 1) * PAGE_SIZE
shown_range = f"rows {first + 1}-{first + len(rows)}" if rows else "no row"
if looks_like_an_id(search):
    st.caption("The search looks like a pair id: it also matches pair ids, and ids before a swap, that begin with it.")
matching = "1 row of the shards matches" if total == 1 else f"{total} rows of the shards match"
st.caption(
    f"{matching} (an upsampled pair is a row per copy; `copies` counts them); page {int(page_number)} of {pages} "
    f"shows {shown_range}. Click a row to read it."
)
if not rows:
    st.stop()
columns = ["source", "source_row", "copies", "margin", "chosen_chars", "rejected_chars", "category", "modality",
           "pair_id"]  # fmt: skip
shown = [{k: r.get(k) for k in columns if k in r} | {k: v for k, v in r.items() if k not in columns} for r in rows]
for row in shown:  # as the Bias page says it, not "None"
    if "category" in row and row["category"] is None:
        row["category"] = "none given"
at = pick_row(shown, "pairs", offset=first, total=total)
pair = build.pair(rows[at]["pair_id"], rows[at]["source"], rows[at]["source_row"])
if pair is not None:
    show_pair(build, pair)
