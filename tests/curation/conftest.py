"""Fixtures shared by the curation tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from curation.demo import write_demo

MIXES = Path(__file__).resolve().parents[2] / "mixes"


@pytest.fixture(scope="session")
def demo_recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped `mixes/demo.yaml`, beside a freshly written demo collection (as `make demo` lays them out)."""
    root = tmp_path_factory.mktemp("demo")
    write_demo(root / "demo_data")
    (root / "mixes").mkdir()
    recipe = root / "mixes" / "demo.yaml"
    recipe.write_text((MIXES / "demo.yaml").read_text())
    return recipe
