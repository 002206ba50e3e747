"""Shared page pieces: the data root, the build picker, and text that is always rendered as text."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from app.data import AppError, Build, data_root, list_builds
from curation.words import visible


def page(title: str) -> None:
    """Every page: the wide layout (a page opened by its URL gets it too) and its title."""
    st.set_page_config(page_title=f"{title} · RM data workbench", layout="wide")
    st.title(title)


NEXT_PAGE = "more on the next page"  # where the rest of a paged list is


def pick_row(
    rows: list[dict[str, Any]],
    key: str,
    offset: int = 0,
    total: int | None = None,
    rest: str = NEXT_PAGE,
    wide: tuple[str, ...] = (),
) -> int:
    """A table whose rows open on a click, with previous/next buttons under it; returns the row to show. A click
    moves the reader to that row; previous/next step from there. A table that is part of a longer list says where
    it is in the whole list: its first row is number `offset + 1` of `total`, and its last says where the `rest`
    is. The columns `wide` are shown wide enough for a few words (not cut to their first ones)."""
    event = st.dataframe(
        rows,
        hide_index=True,
        width="stretch",
        on_select="rerun",
        selection_mode="single-row",
        key=f"{key}-table",
        column_config={column: st.column_config.TextColumn(width="medium") for column in wide},
    )
    selected = event.selection.rows if event is not None else []
    if selected and selected != st.session_state.get(f"{key}-clicked"):
        st.session_state[f"{key}-at"] = selected[0]
    st.session_state[f"{key}-clicked"] = selected
    return step_buttons(f"{key}-at", len(rows), offset, total, rest)


def step_buttons(key: str, count: int, offset: int = 0, total: int | None = None, rest: str = NEXT_PAGE) -> int:
    """Previous/next buttons over `count` items, numbered from `offset + 1` of `total`; the position is kept in the
    session under `key`. The buttons move it in their callbacks, which run before the page does, so what is drawn
    matches the new position. At the last item of a longer list, the caption says where the `rest` is."""

    def move(delta: int) -> None:
        st.session_state[key] = min(max(int(st.session_state.get(key, 0)) + delta, 0), max(count - 1, 0))

    at = min(int(st.session_state.get(key, 0)), max(count - 1, 0))
    st.session_state[key] = at
    back, position, forward = st.columns([1, 3, 1])
    back.button("< previous", key=f"{key}-back", disabled=at <= 0, on_click=move, args=(-1,))
    forward.button("next >", key=f"{key}-next", disabled=at >= count - 1, on_click=move, args=(1,))
    more = total is not None and at == count - 1 and offset + count < total
    position.caption(f"{offset + at + 1} of {count if total is None else total}" + (f" ({rest})" if more else ""))
    return at


def root_or_stop() -> Path:
    try:
        return data_root()
    except AppError as exc:
        st.error("Cannot open the data root.")
        st.text(str(exc))
        st.stop()
        raise


def open_build(root: str, name: str) -> Build:
    """The build, opened once per version: one rebuilt under the same name (a new manifest), or given new tables
    since (`trainer score` adds `signals/rm_scores-*`), is opened again."""
    version = []
    for part in ("manifest.json", "signals", "dups", "flags"):
        try:
            stat = (Path(root) / name / part).stat()
            version.append((stat.st_ino, stat.st_mtime_ns, stat.st_size))
        except OSError:
            version.append(None)
    return _open_build(root, name, tuple(version))


@st.cache_resource(max_entries=4)
def _open_build(root: str, name: str, version: tuple[tuple[int, int, int] | None, ...]) -> Build:
    return Build(Path(root), name)


def build_or_stop(root: Path, key: str = "build", label: str = "Build") -> Build:
    """A selectbox of the finished builds; half-written, broken or refused ones are listed, each with its status, in
    a collapsed expander (Home shows them all); what the chosen build refused or lacks is said."""
    entries = list_builds(root)
    unfinished = [visible(f"{e.name}: {e.status}") for e in entries if e.status != "ready"]
    if unfinished:
        with st.expander(f"{len(unfinished)} of {len(entries)} builds not shown: unfinished, broken or refused"):
            st.text("\n".join(unfinished))
    ready = [e.name for e in entries if e.status == "ready"]
    if not ready:
        st.info("No finished build under the data root. Run `curate build --mix RECIPE --out DATA_ROOT/NAME`.")
        st.stop()
    wanted = st.query_params.get(key)
    if wanted is not None and wanted not in ready:
        st.warning("The build named in the URL is not a finished build under the data root; showing another.")
    index = ready.index(wanted) if wanted in ready else 0
    name = st.selectbox(label, ready, index=index, key=f"select-{key}", format_func=visible)
    try:
        build = open_build(str(root), name)
    except AppError as exc:
        st.error("Cannot open this build.")
        st.text(str(exc))
        st.stop()
        raise
    show_refused(list(build.refused.values()))
    for missing in build.missing:
        st.warning(plain(missing))
    return build


def show_refused(messages: list[str]) -> None:
    """Files left unread because their real path leaves the data root; the names are shown as text."""
    if messages:
        st.warning("Some files were refused and are not shown:")
        st.text("\n".join(messages))


def show_images(build: Build, hashes: list[str] | None, label: str, max_side: int = 640) -> None:
    """A pair's images with their size and hash, or what is missing; several (a video's frames) are numbered."""
    count = len(hashes or [])
    for k, sha in enumerate(hashes or [], 1):
        name = label if count == 1 else f"{label}, {k} of {count}"
        found = build.image(sha, max_side=max_side)
        if found is None:
            unread = "not shown (the build's image table cannot be read: see above)"
            st.text(f"{name}: image {sha} {unread if build.images_unread else 'is not in this build'}")
            continue
        image, info = found
        size = f"{info['width']}x{info['height']} {info['format']}, {info['kib']} KiB"
        if image is None:
            st.text(f"{name}: image {sha} ({size}) {info['error']}")
            continue
        st.image(image, caption=f"{name}: {size}, sha256 {sha}")
    if not hashes:
        st.text(f"{label}: no image")


_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character, which Markdown may escape
# Where GitHub Markdown makes a link of bare text (`http://`, `https://`, `www.`, `name@host.tld`, `mailto:`,
# `xmpp:`), escaped punctuation or not: an invisible word joiner there breaks the match and shows nothing.
_AUTOLINK = re.compile(r"(?i)(?<=http)(?=:)|(?<=https)(?=:)|(?<=www)(?=\.)|(?<=mailto)(?=:)|(?<=xmpp)(?=:)|(?=@)")
WORD_JOINER = "\u2060"


def plain(text: str) -> str:
    """Text for a Markdown label (captions, warnings, expanders: Streamlit renders them as Markdown) that shows as
    written: each punctuation character escaped and bare URLs and e-mail addresses broken by an invisible word
    joiner, so a file name or a value from a build cannot add links, images, LaTeX or colours; line breaks become
    spaces, and control and bidirectional formatting characters are spelled out (`visible`), so none reorders or
    hides the page's own words."""
    unlinked = _AUTOLINK.sub(WORD_JOINER, visible(" ".join(str(text).splitlines())))
    return _PUNCTUATION.sub(r"\\\1", unlinked)


def show_text(label: str, text: str) -> None:
    """Dataset text as plain text: never Markdown or HTML."""
    st.caption(plain(label))
    st.text(text)


def histogram_chart(rows: list[dict[str, Any]], start: str, end: str, counts: dict[str, str], x_title: str,
                    y_title: str) -> alt.Chart:  # fmt: skip
    """Bins as bars from their start to their end on a numeric axis, the count columns `counts` (column: legend
    name) side by side within each bin; where every value is one (each bin's start its end), one bar labelled by
    that value. Counts are whole numbers on their axis."""
    frame = pd.DataFrame(rows).melt(id_vars=[start, end], value_vars=list(counts), var_name="of", value_name="count")
    y = alt.Y("count:Q", title=y_title, axis=alt.Axis(format="d", tickMinStep=1))
    tooltip = [alt.Tooltip(f"{start}:Q", title="from", format=".4~g"), alt.Tooltip(f"{end}:Q", title="to",
               format=".4~g"), "of:N", "count:Q"]  # fmt: skip
    color = alt.Color("of:N", title=None, legend=None if len(counts) == 1 else alt.Legend(orient="top"))
    if (frame[start] == frame[end]).all():
        frame["of"] = frame["of"].map(counts)
        x = alt.X(f"{start}:O", title=x_title, axis=alt.Axis(labelAngle=0))
        return alt.Chart(frame).mark_bar().encode(x=x, y=y, color=color, xOffset="of:N", tooltip=tooltip)
    # each series its share of the bin's width, so that no bar hides another
    share = (frame[end] - frame[start]) / len(counts)
    position = frame["of"].map({column: k for k, column in enumerate(counts)})
    frame["left"], frame["right"] = frame[start] + share * position, frame[start] + share * (position + 1)
    frame["of"] = frame["of"].map(counts)
    x = alt.X("left:Q", title=x_title, axis=alt.Axis(format=".4~g"))
    # y2 at zero: a bar spanning its part of the bin on x is read as vertical, from nothing up to its count
    return alt.Chart(frame).mark_bar().encode(x=x, x2="right:Q", y=y, y2=alt.datum(0), color=color, tooltip=tooltip)
