"""`build_rows`: build a tiny recipe from inline native rows, returning the manifest and the build folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from curation.build import build
from curation.recipe import load_recipe
from tests.conftest import write_jsonl


class Built:
    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root, self.manifest = root, manifest

    def table(self, relative: str) -> list[dict[str, Any]]:
        return pq.read_table(self.root / relative).to_pylist()

    def removed(self, stage: str) -> list[dict[str, Any]]:
        return [r for r in self.table("rejects/rejects.parquet") if r["stage"] == stage]


BuildRows = Callable[..., Built]


@pytest.fixture
def build_rows(tmp_path: Path) -> BuildRows:
    counter = iter(range(1000))

    def run(
        sources: dict[str, tuple[str, list[dict[str, Any]]]],
        ops: dict[str, Any] | None = None,
        benchmarks: dict[str, tuple[str, list[dict[str, Any]]]] | None = None,
        images_root: Path | None = None,
    ) -> Built:
        n = next(counter)
        recipe: dict[str, Any] = {"name": f"t{n}", "seed": 0, "sources": {}, "ops": ops or {}}
        for section, entries in (("sources", sources), ("benchmarks", benchmarks or {})):
            recipe.setdefault(section, {})
            for name, (adapter, rows) in entries.items():
                path = write_jsonl(tmp_path / f"in{n}" / section / f"{name}.jsonl", rows)
                recipe[section][name] = {"adapter": adapter, "path": str(path)}
                if images_root is not None:
                    recipe[section][name]["images_root"] = str(images_root)
        recipe_path = tmp_path / f"recipe{n}.yaml"
        recipe_path.write_text(yaml.safe_dump(recipe))
        out = tmp_path / f"build{n}"
        return Built(out, build(load_recipe(recipe_path), out))

    return run


def uf(prompt: str, chosen: str = "yes", rejected: str = "no") -> dict[str, Any]:
    """A row in the flattened ultrafeedback_binarized layout."""
    return {
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "metadata": {"score_chosen": 8, "score_rejected": 2},
    }
