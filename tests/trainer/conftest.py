"""Small inline pairs with generated images (the demo build to train on, `demo_build`, is in tests/conftest.py)."""

from __future__ import annotations

from typing import Any

from tests.conftest import image_bytes


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
