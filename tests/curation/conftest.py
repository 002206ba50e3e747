"""Fixtures shared by the curation tests (the demo recipe fixture lives in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

MIXES = Path(__file__).resolve().parents[2] / "mixes"
