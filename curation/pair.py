"""`Pair`: what an adapter returns for one preference pair, before ids and modality are derived."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from curation.errors import RowError
from curation.schema import IMAGE_TOKEN, canonical_text, compute_ids

# Scores are decimals held as binary floats (0.3 - 0.2 is 0.09999999999999998): a margin within this of a minimum
# (an adapter's `min_margin`, the filters' `min_margin`) reaches it.
MARGIN_SLACK = 1e-9


@dataclass
class Pair:
    prompt: list[dict[str, str]]
    chosen: str
    rejected: str
    images: list[str] = field(default_factory=list)  # sha256 of each image, in placeholder order
    video: bool = False  # images are the ordered frames of one video
    subset: str | None = None
    category: str | None = None
    chosen_score: float | None = None
    rejected_score: float | None = None
    margin: float | None = None
    tie: bool = False
    chosen_model: str | None = None
    rejected_model: str | None = None
    language: str | None = None
    license: str | None = None
    binarization: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # derived facts worth keeping in `meta`

    def check(self) -> None:
        """The invariants every adapter's output must hold; a violation makes the row a reject."""
        if not self.prompt or self.prompt[-1]["role"] != "user":
            raise RowError("no user turn", "the prompt does not end with a user turn before the answers")
        placeholders = count_image_tokens(self.prompt)
        if placeholders != len(self.images):
            raise RowError("image placeholders mismatch", f"{placeholders} placeholders for {len(self.images)} images")

    @property
    def modality(self) -> str:
        if self.video:
            return "video"
        return {0: "text", 1: "image"}.get(len(self.images), "multi_image")

    def to_row(
        self, source: str, source_row: str, meta: dict[str, Any], default_license: str, canonical: bool = True
    ) -> dict[str, Any]:
        """The canonical row; texts in canonical form (`canonical_text`) unless `canonical` is false."""
        text = canonical_text if canonical else str
        margin, extra = self.margin, self.extra
        if margin is None and self.chosen_score is not None and self.rejected_score is not None:
            margin = self.chosen_score - self.rejected_score
        if margin is not None and not math.isfinite(margin):  # 1e308 - (-1e308): no usable margin
            extra = {
                **extra,
                "margin": f"not finite ({margin}): chosen {self.chosen_score}, rejected {self.rejected_score}",
            }
            margin = None
        pair_id, prompt_id = compute_ids(self.prompt, self.images, self.chosen, self.rejected)
        prompt = [{"role": m["role"], "content": text(m["content"])} for m in self.prompt]
        if (placeholders := count_image_tokens(prompt)) != len(self.images):  # NFC joins ">" + U+0338 into one
            raise RowError("image placeholders mismatch", f"{placeholders} placeholders in canonical form")
        return {
            "pair_id": pair_id,
            "prompt_id": prompt_id,
            "source": source,
            "source_row": source_row,
            "subset": self.subset,
            "modality": self.modality,
            "prompt": prompt,
            "chosen": text(self.chosen),
            "rejected": text(self.rejected),
            "images": list(self.images),
            "chosen_score": self.chosen_score,
            "rejected_score": self.rejected_score,
            "margin": margin,
            "tie": self.tie,
            "chosen_model": self.chosen_model,
            "rejected_model": self.rejected_model,
            "category": self.category,
            "language": self.language,
            "license": self.license or default_license,
            "binarization": self.binarization,
            "meta": dump_meta({**meta, **({"_derived": extra} if extra else {})}),
        }


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"  # image bytes live in the image table, not in meta
    return str(value)


def dump_meta(meta: dict[str, Any]) -> str:
    """Deterministic JSON of the unmapped native fields; numbers JSON cannot spell (NaN, infinities, which Python
    parses from JSON text) are kept as the strings "NaN", "Infinity" and "-Infinity"."""
    try:
        return json.dumps(meta, ensure_ascii=False, sort_keys=True, default=_json_default, allow_nan=False)
    except ValueError:
        return json.dumps(_spell_non_finite(meta), ensure_ascii=False, sort_keys=True, default=_json_default)


def _spell_non_finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return json.dumps(value)
    if isinstance(value, dict):
        return {k: _spell_non_finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_spell_non_finite(v) for v in value]
    return value


def count_image_tokens(prompt: list[dict[str, str]]) -> int:
    return sum(m["content"].count(IMAGE_TOKEN) for m in prompt)
