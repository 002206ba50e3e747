"""Review queues: the pairs a reward model flagged, the contamination matches, duplicate clusters and a random
sample per source. Read a pair, mark it keep, drop or swap with a note; the reviews go to
DATA_ROOT/reviews/<build>.parquet and the next build applies them (the op human_review)."""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from app.data import AppError, AppliedReviews, read_review_file, review_file
from app.pair_view import as_shown, show_pair
from app.ui import build_or_stop, page, pick_row, plain, root_or_stop
from curation.errors import InputError
from curation.reviews import reviews_path
from curation.words import quantity

page("Review")
root = root_or_stop()
build = build_or_stop(root)
queues = build.review_queues()
left, right = st.columns(2)
sources = ["all", *build.manifest["sources"]]
source = right.selectbox("source", sources)
chosen_source = None if source == "all" else source
counts = {q: build.review_queue_counts(q, chosen_source) for q in queues}
# Opens on the first queue holding pairs a review can change (those in the shards), flagged pairs first.
first = next((i for i, q in enumerate(queues) if counts[q][1]), 0)
queue = left.selectbox(
    "queue",
    queues,
    index=first,
    key=f"review-queue-{build.name}",  # kept when the source changes (the labels' counts do)
    format_func=lambda q: f"{q} ({counts[q][1]} of {counts[q][0]} pairs in the shards)",
    help="flagged pairs come first; a review changes only pairs in the shards (a removed pair stays removed)",
)
rows = build.review_queue(queue, chosen_source)
own = reviews_path(root, build.name)  # where the review form writes (a build's name is a folder's)
try:
    path = review_file(root, build.name)
    written, last = read_review_file(path)
    reviewed = {r["pair_id"]: r for r in last}
except (AppError, InputError) as exc:
    st.warning("The reviews of this build cannot be read.")
    st.text(str(exc))
    written, reviewed = [], {}
try:
    record = build.applied_reviews()
except AppError as exc:
    st.warning("The reviews this build applied cannot be read.")
    st.text(str(exc))
    record = AppliedReviews({}, [], [])
applied = sum(r["outcome"].startswith("applied") for r in record.taken.values())
if record.taken:  # a build made with reviews: new ones go to its own file, which its recipe may not read yet
    # as YAML reads them, whatever they hold; absolute, as `curate reviews` prints them (a build from before the
    # files it read were recorded: as its recipe named them)
    files = ", ".join(json.dumps(name) for name in record.paths or record.files)
    st.caption(plain(f"This build applied {applied} of the {quantity(len(record.taken), 'review')} it took (from "
                     f"{files}); reviews saved here go to reviews/{build.name}.parquet" + (
                         ", which its recipe reads: building it again applies them." if record.reads(own) else
                         f". To apply both in the next build, list both files in the recipe: human_review: "
                         f"{{reviews: [{files}, {json.dumps(str(own))}]}} (each file's last review of a pair, then "
                         "the newest across files, applies).")))  # fmt: skip


def review_text(pair: dict[str, Any]) -> str:
    """The pair's review and what this build did with it (`drop, applied`), as recorded (of a pair a review
    swapped: of the pair before the swap); a review saved here since, as shown (of a swapped pair, keep and swap
    exchanged) and `pending`: the next build reading the file applies it."""
    mine, taken = reviewed.get(pair["reviewed_as"]), record.taken.get(pair["reviewed_as"])
    if mine is not None and record.outcome(mine, own, written) is None:
        return as_shown(mine["action"], pair["swapped"]) + ", pending"
    return "" if taken is None else f"{taken['action']}, {taken['outcome']}"


# The review and the pair's fate in this build first, a wide queue never hides them; then why the queue lists it
# (the decision of the stage that listed it, which a later stage or a review may have overruled).
table = [{"reviewed": review_text(r),
          "in_shards": "yes, chosen and rejected swapped" if r["swapped"] else "yes" if r["in_shards"] else "removed",
          "listed because": r["why"],
          **{k: v for k, v in r.items() if k not in ("reviewed_as", "swapped", "in_shards", "why")}}
         for r in rows]  # fmt: skip
total, live = counts[queue]
done = sum(1 for r in table if r["reviewed"])
shown = f"the first {len(rows)} shown, " if len(rows) < total else ""
st.caption(f"{total} pairs in this queue, {live} of them in the shards ({shown}pairs in the shards first); {done} of "
           f"the {len(rows)} shown reviewed (saved here, or applied by this build). Click a row to read "
           "it.")  # fmt: skip
if not rows:
    st.info("This queue is empty.")
    st.stop()
at = pick_row(table, "review", total=total, rest=f"only the first {len(rows)} are listed",
              wide=("reviewed", "in_shards", "listed because"))  # fmt: skip
pair = build.pair(rows[at]["pair_id"], rows[at]["source"], rows[at]["source_row"])
if pair is None:
    st.warning("This pair is in neither the shards nor the removed pairs of the build.")
else:
    show_pair(build, pair, queue=queue)
