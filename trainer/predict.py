"""Rewards from a saved model: one prompt (with optional images) and one or more answers."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from PIL import Image

from curation.schema import IMAGE_TOKEN
from trainer.data import PairFeatures, collate
from trainer.model import RewardModel


def resolve_model(path: Path) -> Path:
    """A model folder, or a run folder (its final `model/`)."""
    return path / "model" if (path / "model" / "reward_model.json").is_file() else path


def load_reward_model(path: Path) -> RewardModel:
    model = RewardModel.load(resolve_model(path))
    model.eval()
    return model


@torch.no_grad()
def rewards(
    model: RewardModel, prompt: str, answers: list[str], images: list[bytes] | None = None, max_length: int = 4096
) -> list[float]:
    """The prompt gets one `<image>` placeholder per image in front unless it already places them."""
    images = images or []
    backbone = model.backbone
    if images and IMAGE_TOKEN not in prompt:
        prompt = IMAGE_TOKEN * len(images) + "\n" + prompt
    pixel_values = grid = None
    image_tokens: list[int] = []
    if images:
        if backbone.kind != "vision_language":
            raise ValueError(f"images given, but the backbone ({backbone.kind}) reads text only")
        decoded = []
        for k, data in enumerate(images, start=1):
            with Image.open(io.BytesIO(data)) as image:
                decoded.append(image.convert("RGB"))
            try:  # the processor's own refusal (an aspect ratio above 200, say) names no image: said with its place
                backbone.image_inputs(decoded[-1:])
            except ValueError as exc:
                raise ValueError(
                    f"image {k} of {len(images)}: the backbone's image processor refuses it ({exc})"
                ) from None
        pixel_values, grid = backbone.image_inputs(decoded)
        image_tokens = backbone.tokens_per_image(grid)
    messages = [{"role": "user", "content": prompt}]
    out = []
    for answer in answers:
        ids = backbone.sequence(messages, answer, max_length, image_tokens).input_ids
        # A "pair" of the answer with itself: one code path with training, the first reward is the answer's.
        batch = collate([PairFeatures("", ids, ids, pixel_values, grid, None)], backbone.pad_token_id)
        out.append(float(model(**batch.model_inputs())[0]))
    return out


def read_images(paths: list[Path]) -> list[bytes]:
    """Each file's bytes; `ValueError` naming a file that cannot be read or is not an image."""
    found = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"{path}: cannot read the image ({exc.strerror})") from None
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.verify()
        except Exception as exc:  # Pillow raises many types for what is not an image
            raise ValueError(f"{path}: not an image ({type(exc).__name__})") from None
        found.append(data)
    return found
