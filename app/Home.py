"""Workbench home: `streamlit run app/Home.py -- --data DIR`."""

from __future__ import annotations

import streamlit as st

from app.data import list_builds, list_runs
from app.ui import plain, root_or_stop, show_refused
from curation.words import quantity

st.set_page_config(page_title="RM data workbench", layout="wide")
st.title("Reward-model data workbench")
root = root_or_stop()
st.caption(plain(f"data root: {root}"))
builds = list_builds(root)
if not builds and (root / "manifest.json").is_file():  # pointed at a build rather than the folder of builds
    st.info(plain(f"This folder is a build: start the workbench on the folder that holds it, --data {root.parent}"))
elif not builds:
    st.info("No builds here yet. `curate build --mix mixes/demo.yaml --out DIR/demo` makes one.")
else:
    st.subheader("Builds")
    st.dataframe([{"build": b.name, "status": b.status} for b in builds], hide_index=True)
st.subheader("Training runs")
runs, refused = list_runs(root)
in_audits = sum(fold is not None for fold in runs.values())
st.write(f"{quantity(len(runs) - in_audits, 'run')} found"
         + (f", and {quantity(in_audits, 'fold run')} of audits." if in_audits else "."))  # fmt: skip
show_refused(refused)
st.markdown(
    "Pages: **Builds** (recipe, funnel, diff), **Pairs** (browse and inspect), **Removed** (what went and why), "
    "**Bias** (length and margin statistics), **Mixture** (target vs actual), **Runs** (training results), "
    "**Review** (mark pairs keep, drop or swap; a build whose recipe lists the reviews file applies them)."
)
