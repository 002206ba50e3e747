"""A data root with the demo build, a build holding hostile text, and a half-written build."""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.data import DATA_ENV
from app.ui import WORD_JOINER
from curation.build import build
from curation.recipe import load_recipe
from tests.conftest import write_jsonl

APP = Path(__file__).resolve().parents[2] / "app"


def run_page(page: str, root: Path, monkeypatch: pytest.MonkeyPatch, **params: str) -> AppTest:
    """Run one page (`Home.py`, `pages/2_Pairs.py`, ...) on the data root `root` under AppTest, with URL
    parameters; it must not raise."""
    monkeypatch.setenv(DATA_ENV, str(root))
    app = AppTest.from_file(str(APP / page), default_timeout=60)
    for key, value in params.items():
        app.query_params[key] = value
    app.run()
    assert not app.exception, app.exception
    return app


HOSTILE = "<script>alert('x')</script> **bold** [link](http://example.com)"


@pytest.fixture(autouse=True)
def keep_main_module() -> Iterator[None]:
    """AppTest runs a page as `__main__` and leaves it there; processes spawned later (the ingest's workers)
    would run that page on start-up."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory, demo_build: Path) -> Path:
    root = tmp_path_factory.mktemp("data")
    shutil.copytree(demo_build, root / "demo")
    rows = [{"prompt": "Say something.", "chosen": HOSTILE, "rejected": "no", "metadata": {}},
            {"prompt": "No answers.", "metadata": {}}]  # fmt: skip
    # The file's name labels the removed row (`read uf hostile-www.example.com.jsonl:1`), a Markdown label where
    # a bare `www.` address would be a link but for `app.ui.plain`.
    source = write_jsonl(root.parent / "hostile-www.example.com.jsonl", rows)
    recipe = root.parent / "hostile.yaml"
    recipe.write_text(f"name: hostile\nsources:\n  uf: {{adapter: ultrafeedback_binarized, path: {source}}}\n")
    build(load_recipe(recipe), root / "hostile")
    (root / "half.partial").mkdir()  # a build still being written
    return root


def shown(label: str) -> str:
    """A Markdown label as the page shows it: its escaped punctuation (`app.ui.plain`) unescaped, the word joiners
    that break its bare links (invisible) left out."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", label).replace(WORD_JOINER, "")
