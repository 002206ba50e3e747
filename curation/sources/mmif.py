"""MMIF (MM-IFDPO-23k): instruction-following pairs with many constraints per prompt.

The repository holds the SFT and DPO files of v1.0 and v2 side by side; the Hub id reads the v2 DPO file,
`v2/dpo/mmif_23k_4o_qwen2_5.json` (`SourceInfo.hub_file`; `--config`, `--data-dir` or `--split` read the
repository's tables instead). Rows are read as LLaMA-Factory's ranking format, which a third-party loader of that
file confirms for `conversations`, `chosen`, `rejected` and `images`: the prompt is a `messages` (`{role, content}`)
or `conversations` (`{from, value}`) list ending with a user turn, optionally after a `system` string; `chosen` and
`rejected` are single assistant turns (`{from, value}` or `{role, content}`) or plain strings; `images` is a list of
paths (relative to `--images-root`) or `{bytes, path}` structs, a single `image` also accepted, absent for text-only
rows. Rejected answers were generated with weakened or removed constraints (paper). No ties or scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from curation.pair import Pair
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import answer_text, field, messages, with_image_tokens

PROMPT_FIELDS = ("messages", "conversations")


class Mmif(Adapter):
    info = SourceInfo(
        key="mmif",
        name="MMIF (MM-IFEngine DPO)",
        kind="train",
        modality="image",
        hub_id="ChrisDing1105/MMIF-23k",
        license="Apache-2.0",
        description="Multimodal instruction following: answer meeting all constraints vs one under weakened ones.",
        # The repository holds SFT and DPO files of two versions side by side; its v2 DPO file is the pairs.
        hub_file="v2/dpo/mmif_23k_4o_qwen2_5.json",
    )
    mapped_fields = frozenset({*PROMPT_FIELDS, "system", "chosen", "rejected", "images", "image"})

    @dataclass(frozen=True)
    class Options:
        by_basename: bool = False  # find images by unique file name when the folder layout differs

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        name = next((n for n in PROMPT_FIELDS if row.get(n) is not None), PROMPT_FIELDS[0])
        prompt = messages(row.get(name), name)
        system = field(row, "system", optional=True)
        if system:
            prompt = [{"role": "system", "content": system}, *prompt]
        chosen, rejected = answer_text(row, "chosen"), answer_text(row, "rejected")
        images = [
            ctx.image(value, label, by_basename=self.options.by_basename) for label, value in self._image_values(row)
        ]
        return [Pair(prompt=with_image_tokens(prompt, len(images)), chosen=chosen, rejected=rejected, images=images)]

    @staticmethod
    def _image_values(row: dict[str, Any]) -> list[tuple[str, Any]]:
        """(field label, value) of each image, in placeholder order."""
        value = row.get("images")
        if value is None:
            return [] if row.get("image") is None else [("image", row["image"])]
        if isinstance(value, list):
            return [(f"images[{i}]", v) for i, v in enumerate(value)]
        return [("images", value)]
