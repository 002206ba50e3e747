"""One pair, as a curator reads it: images, prompt, both answers side by side with their differences marked, the
metadata, the signals per op, and the review form. Dataset text is escaped before it is marked up, so hostile
text stays inert; `st.html` shows it without Markdown. Invisible format characters (bidi controls, zero-width
characters) are shown as markers, so none reorders or hides what is shown."""

from __future__ import annotations

import html
import re
from typing import Any

import streamlit as st

from app.data import AppError, AppliedReviews, Build, read_review_file, review_file
from app.ui import plain, show_images
from curation.errors import InputError
from curation.reviews import ACTIONS, Review, append_review
from curation.shards import id_before_swap
from curation.words import visible

TOKEN = re.compile(r"\s+|\w+|[^\w\s]")
METADATA = ("source", "source_row", "pair_id", "prompt_id", "modality", "subset", "category", "chosen_score",
            "rejected_score", "margin", "tie", "chosen_model", "rejected_model", "language", "license",
            "binarization")  # fmt: skip
# `unicode-bidi: plaintext`: each paragraph laid out by its own first strong character, so Arabic or Hebrew reads
# right to left and a paragraph of it does not reorder the next one
STYLE = (
    "<style>.pair-text{white-space:pre-wrap;unicode-bidi:plaintext;font-family:monospace;font-size:0.9em;"
    "border:1px solid #ddd;padding:0.5em;border-radius:4px} .pair-text del{background:#dfd;text-decoration:none}"
    " .pair-text ins{background:#fdd;text-decoration:none}"
    " .pair-text .format-char{color:#7a4b00;background:#fde9b8;border-radius:3px;font-size:0.8em}</style>"
)
# The characters that reorder text or hide in it: bidi embeddings, overrides, isolates and marks, invisible
# spacers, and control characters (NUL, escape, ...; not tab or line breaks). Joiners (U+200C, U+200D: inside
# Persian, Indic words and emoji sequences) and soft hyphens are left as written; they change no order and hide
# no word.
HIDDEN = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c\u200b\u2060\ufeff]"
)


# The diff's table takes a bit per pair of tokens: 4e8 pairs (two answers of 20,000 words and spaces) take 50 MB and
# about 0.1 s on the 2-core machine; longer answers are shown unmarked.
MAX_DIFF_CELLS = 400_000_000


def marked_diff(chosen: str, rejected: str) -> tuple[str, str] | None:
    """HTML of both answers, the words only one of them has marked (`<del>` in chosen, `<ins>` in rejected), by
    the longest common subsequence of their words; every piece of text is HTML-escaped. None where an answer is
    where the answers' words and spaces, multiplied, exceed `MAX_DIFF_CELLS`."""
    from rapidfuzz.distance import Indel

    a, b = TOKEN.findall(chosen), TOKEN.findall(rejected)
    if len(a) * len(b) > MAX_DIFF_CELLS:
        return None
    left, right = [], []
    for op, i1, i2, j1, j2 in Indel.opcodes(a, b):
        old, new = html.escape("".join(a[i1:i2])), html.escape("".join(b[j1:j2]))
        if op == "equal":
            left.append(old)
            right.append(new)
            continue
        if old:
            left.append(f"<del>{old}</del>")
        if new:
            right.append(f"<ins>{new}</ins>")
    return "".join(left), "".join(right)


def show_format_chars(body_html: str) -> tuple[str, list[str]]:
    """HTML with each character that reorders or hides text (`HIDDEN`: bidi controls such as U+202E, zero-width
    space, word joiner, byte order mark) replaced by a visible marker `⟨U+202E⟩`, and the markers in order. Applied
    to escaped, already marked text: the diff compares the text itself, and no marker is escaped again."""
    found = []

    def marker(match: re.Match[str]) -> str:
        found.append(f"⟨U+{ord(match.group()):04X}⟩")
        return f'<span class="format-char">{found[-1]}</span>'

    return HIDDEN.sub(marker, body_html), found


def _text_block(label: str, body_html: str) -> None:
    shown, markers = show_format_chars(body_html)
    st.caption(plain(label))
    if markers:  # said, so a marker is not read as part of the text
        kinds = ", ".join(dict.fromkeys(markers))
        st.caption(plain(f"{len(markers)} invisible format character{'s' if len(markers) > 1 else ''} shown as "
                         f"{kinds} (bidi controls reorder text; zero-width spaces and control characters hide in "
                         "it)"))  # fmt: skip
    st.html(f'{STYLE}<div class="pair-text">{shown}</div>')


def show_pair(build: Build, pair: dict[str, Any], queue: str = "pairs") -> None:
    fate = pair.get("fate", "in the shards")
    st.subheader("Pair")
    swap = id_before_swap(pair.get("meta"))
    swapped = f" · chosen and rejected swapped in this build (pair id before: {swap})" if swap else ""
    st.text(f"{pair['source']} {pair['source_row']} · pair {pair['pair_id']} · {fate}{swapped}")
    if pair["images"]:
        show_images(build, pair["images"], "image", max_side=1024)
    for message in pair["prompt"]:
        _text_block(message["role"], html.escape(message["content"]))
    marked = marked_diff(pair["chosen"], pair["rejected"])
    if marked is None:
        st.caption("The answers are too long to mark their differences (over 20,000 words and spaces each).")
        chosen, rejected = html.escape(pair["chosen"]), html.escape(pair["rejected"])
        marks = ("", "")
    else:
        (chosen, rejected), marks = marked, ("; green: only in chosen", "; red: only in rejected")
    left, right = st.columns(2)
    with left:
        _text_block(f"chosen ({len(pair['chosen'])} chars{marks[0]})", chosen)
    with right:
        _text_block(f"rejected ({len(pair['rejected'])} chars{marks[1]})", rejected)
    st.markdown("**Metadata**")
    st.dataframe(
        [{"field": k, "value": "" if pair.get(k) is None else str(pair[k])} for k in METADATA if k in pair],
        hide_index=True,
        width="stretch",
    )
    st.markdown("**Signals**")
    tables = build.signal_tables(pair)
    if not tables:
        st.write("No op measured this pair (or its prompt or images).")
    for op, rows in tables.items():
        st.caption(plain(op))
        wide = {"thresholds": st.column_config.TextColumn(width="large")}  # the recipe's values, read whole
        st.dataframe(rows, hide_index=True, width="stretch", column_config=wide)
    cluster = build.cluster(pair["pair_id"])
    if cluster:
        st.markdown("**Duplicates**")
        st.dataframe(cluster, hide_index=True, width="stretch")
    review_form(build, pair, queue)


SAVED = "review_saved"  # the saved review's line, shown once after the rerun


# A review of a pair a review swapped in this build, said of the pair as its source gives it (and back).
AS_SOURCE_GIVES_IT = {"keep": "swap", "swap": "keep", "drop": "drop"}


def as_shown(action: str, swapped: bool) -> str:
    """A recorded review's action as it reads for the pair shown: of a swapped pair, keep and swap exchanged."""
    return AS_SOURCE_GIVES_IT[action] if swapped and action in AS_SOURCE_GIVES_IT else action


def review_form(build: Build, pair: dict[str, Any], queue: str) -> None:
    """Mark the pair keep, drop or swap with a note; written to DATA_ROOT/reviews/<build>.parquet only. A pair a
    review swapped in this build is reviewed as shown, and recorded of the pair before the swap (its id there, keep
    and swap exchanged), which is the pair the next build reads from the source."""
    st.markdown("**Review**")
    before = id_before_swap(pair.get("meta"))
    target = before or pair["pair_id"]
    try:
        path = review_file(build.root, build.name)
        written, last_of_each = read_review_file(path)
        earlier = [r for r in last_of_each if r["pair_id"] == target]
    except (AppError, InputError) as exc:
        st.warning("Reviews cannot be kept for this build.")
        st.text(str(exc))
        return
    saved_now = st.session_state.pop(SAVED, None)
    if saved_now:  # said after the rerun that refreshed the queue's counts and this form
        st.success("Review saved.")
        st.text(saved_now)
    last = earlier[0] if earlier else None
    try:
        record = build.applied_reviews()
    except AppError:  # the Review page says so above the queue
        record = AppliedReviews({}, [], [])
    taken = record.taken.get(target)  # as recorded, of the pair before a swap
    if last:
        shown = as_shown(last["action"], before is not None)
        outcome = record.outcome(last, path, written)
        status = "the next build reading the file applies it" if outcome is None else f"in this build: {outcome}"
        st.text(visible(f"reviewed: {shown} by {last['reviewer']} at {last['reviewed_at']}: {last['note']} ({status})"))
    elif taken is not None:
        st.text(visible(f"a review of this pair from another build's file: {taken['action']} (of the pair as its "
                        f"source gives it) by {taken['reviewer']}; in this build: {taken['outcome']}"))  # fmt: skip
    in_shards = build.rows("SELECT count(*) AS n FROM pairs WHERE pair_id = ?", [pair["pair_id"]])[0]["n"]
    if pair.get("removed_at") is not None and in_shards:
        st.caption(
            plain(
                f"This row was removed at {pair['removed_at'][0]}, but its pair is in the shards through "
                f"other rows ({in_shards}): a review is of the pair, so it changes those in the next build."
            )
        )
    elif pair.get("removed_at") is not None:
        st.caption(
            plain(
                f"This pair was removed at {pair['removed_at'][0]}: a review of it is recorded, and the next "
                "build still removes it (reviews apply after the other ops)."
            )
        )
    else:
        st.caption("A review is of the pair: it applies to every row that gives this pair id.")
    if before is not None:
        st.caption(plain(f"This pair's chosen and rejected were swapped in this build (by a review or by rm_margin). "
                         f"Review it as shown: the review is recorded of the pair as its source gives it ({before}), "
                         "with keep and swap exchanged, so the next build applies it to that pair (a keep there undoes "
                         "a reward model's swap)."))  # fmt: skip
    # Outside the form, kept for the session: a review cannot be saved without it, and a form sent without it
    # would clear the note. Never the server account's name, which is not who reviews on a shared server.
    reviewer = st.text_input("reviewer", key="reviewer", help="your name, saved with each review")
    if not reviewer.strip():
        st.caption("Give your name as the reviewer to save a review.")
    # The decision starts at the pair's latest one, so saving again repeats it rather than undoing it.
    with st.form(f"review-{pair['pair_id']}", clear_on_submit=True):
        start = ACTIONS.index(as_shown(last["action"], before is not None)) if last else 0
        action = st.radio("action", ACTIONS, index=start, horizontal=True,
                          help="swap: chosen and rejected are exchanged")  # fmt: skip
        note = st.text_input("note", key="review-note")  # a note belongs to the review it is written with
        if st.form_submit_button("Save review", disabled=not reviewer.strip()):
            try:
                review = Review(
                    target,
                    pair["source"],
                    pair["source_row"],
                    as_shown(action, before is not None),
                    note,
                    reviewer.strip(),
                    build.name,
                    queue,
                )
                saved = append_review(path, review)
            except Exception as exc:  # a bad entry or an unwritable data root: said on the page, nothing written
                st.error("The review was not saved.")
                st.text(str(exc))
            else:
                where = path.relative_to(build.root)
                recorded = f" (recorded as {saved.action} of {target})" if before is not None else ""
                st.session_state[SAVED] = (f"{action}{recorded}, in {where}; a build applies it with the op "
                                           "human_review")  # fmt: skip
                st.rerun()
