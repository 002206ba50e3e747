"""Fixtures shared by the curation tests (the demo recipe fixture lives in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import upload_folder

MIXES = Path(__file__).resolve().parents[2] / "mixes"


@pytest.fixture(scope="session")
def s3_recipe(s3: Any, demo_recipe: Path) -> Path:
    """The demo recipe with every source, images root and benchmark read from s3://inputs/."""
    s3.create_bucket(Bucket="inputs")
    upload_folder(s3, demo_recipe.parent.parent / "demo_data" / "native", "inputs", "demo/native")
    recipe = demo_recipe.with_name("demo-s3.yaml")
    recipe.write_text(demo_recipe.read_text().replace("../demo_data/native/", "s3://inputs/demo/native/"))
    return recipe
