"""Streamlit workbench for browsing builds (pages arrive with the app issue)."""
