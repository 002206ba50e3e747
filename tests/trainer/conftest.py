"""A demo build to train on, and small inline pairs with generated images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from curation.build import build
from curation.recipe import load_recipe
from tests.conftest import image_bytes


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory: pytest.TempPathFactory, demo_recipe: Path) -> Path:
    out = tmp_path_factory.mktemp("trainer") / "demo"
    build(load_recipe(demo_recipe), out)
    return out


def pair_row(prompt: str, chosen: str, rejected: str, images: int = 0, margin: float | None = None) -> dict[str, Any]:
    content = "<image>" * images + prompt
    return {
        "pair_id": f"{prompt}|{chosen}|{rejected}",
        "modality": "image" if images else "text",
        "prompt": [{"role": "user", "content": content}],
        "chosen": chosen,
        "rejected": rejected,
        "images": [f"img{i}" for i in range(images)],
        "margin": margin,
    }


def pair_images(images: int, seed: int = 0) -> list[bytes]:
    return [image_bytes(seed + i, size=(60, 90)) for i in range(images)]
