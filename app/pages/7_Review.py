"""Review queues: the pairs a reward model flagged, the contamination matches, duplicate clusters and a random
sample per source. Read a pair, mark it keep, drop or swap with a note; the reviews go to
DATA_ROOT/reviews/<build>.parquet and the next build applies them (the op human_review)."""

from __future__ import annotations

import streamlit as st

from app.data import AppError, review_file
from app.pair_view import show_pair
from app.ui import build_or_stop, page, pick_row, root_or_stop
from curation.errors import InputError
from curation.reviews import latest, read_reviews

page("Review")
root = root_or_stop()
build = build_or_stop(root)
queues = build.review_queues()
left, right = st.columns(2)
queue = left.selectbox("queue", queues, help="flagged pairs come first")
sources = ["all", *build.manifest["sources"]]
source = right.selectbox("source", sources)
rows = build.review_queue(queue, None if source == "all" else source)
try:
    path = review_file(root, build.name)
    reviewed = {r["pair_id"]: r["action"] for r in latest(read_reviews(path))} if path.is_file() else {}
except (AppError, InputError) as exc:
    st.warning("The reviews of this build cannot be read.")
    st.text(str(exc))
    reviewed = {}
table = [{"reviewed": reviewed.get(r["pair_id"], ""), **r} for r in rows]  # first: a wide queue never hides it
done = sum(1 for r in table if r["reviewed"])
st.caption(f"{len(rows)} pairs in this queue (at most 200 shown); {done} of them reviewed. Click a row to read it.")
if not rows:
    st.info("This queue is empty.")
    st.stop()
at = pick_row(table, "review")
pair = build.pair(rows[at]["pair_id"])
if pair is None:
    st.warning("This pair is in neither the shards nor the removed pairs of the build.")
else:
    show_pair(build, pair, queue=queue)
