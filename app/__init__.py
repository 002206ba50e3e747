"""Streamlit workbench over builds and training runs: `Home.py`, six pages, and the read-only queries (`data`)."""
