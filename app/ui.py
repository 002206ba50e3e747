"""Shared page pieces: the data root, the build picker, and text that is always rendered as text."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app.data import AppError, Build, data_root, list_builds


def root_or_stop() -> Path:
    try:
        return data_root()
    except AppError as exc:
        st.error("Cannot open the data root.")
        st.text(str(exc))
        st.stop()
        raise


@st.cache_resource(max_entries=4)
def open_build(root: str, name: str) -> Build:
    return Build(Path(root), name)


def build_or_stop(root: Path, key: str = "build", label: str = "Build") -> Build:
    """A selectbox of the finished builds; half-written or broken ones are listed with a message."""
    entries = list_builds(root)
    unfinished = [f"{e.name}: {e.status}" for e in entries if e.status != "ready"]
    if unfinished:
        st.warning("Some builds are not finished or are refused, and are not shown:")
        st.text("\n".join(unfinished))
    ready = [e.name for e in entries if e.status == "ready"]
    if not ready:
        st.info("No finished build under the data root. Run `curate build --mix RECIPE --out DATA_ROOT/NAME`.")
        st.stop()
    wanted = st.query_params.get(key)
    if wanted is not None and wanted not in ready:
        st.warning("The build named in the URL is not a finished build under the data root; showing another.")
    index = ready.index(wanted) if wanted in ready else 0
    name = st.selectbox(label, ready, index=index, key=f"select-{key}")
    try:
        build = open_build(str(root), name)
    except AppError as exc:
        st.error("Cannot open this build.")
        st.text(str(exc))
        st.stop()
        raise
    show_refused(list(build.refused.values()))
    return build


def show_refused(messages: list[str]) -> None:
    """Files left unread because their real path leaves the data root; the names are shown as text."""
    if messages:
        st.warning("Some files were refused and are not shown:")
        st.text("\n".join(messages))


def show_text(label: str, text: str) -> None:
    """Dataset text as plain text: never Markdown or HTML."""
    st.caption(label)
    st.text(text)
