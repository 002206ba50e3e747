"""POVID: two LLaVA conversations per row that share the human turns and differ in the last `gpt` turn.

chosen = last `gpt` turn of `conversations`, rejected = last `gpt` turn of `rejected_conversations`; the shared
turns before them are the prompt (the `<image>` placeholder is kept: one per image). Images are COCO train2014
files referenced as `./data/coco/COCO_train2014_….jpg`; they are not distributed, so `--images-root` must hold
them: under that relative path, or anywhere by file name (option `by_basename`, on by default). Rejected answers
are GPT-4V hallucination injections, near-duplicates of chosen. No ties or scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from curation.pair import Pair
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import messages, split_shared_prompt, text_field, with_image_tokens


class Povid(Adapter):
    info = SourceInfo(
        key="povid",
        name="POVID",
        kind="train",
        modality="image",
        hub_id="YiyangAiLab/POVID_preference_data_for_VLLMs",
        license="CC-BY-4.0",
        description="COCO images; rejected = GPT-4V hallucination-injected edit of the preferred answer.",
    )
    mapped_fields = frozenset({"image", "conversations", "rejected_conversations"})

    @dataclass(frozen=True)
    class Options:
        by_basename: bool = True  # find `./data/coco/X.jpg` as any unique `X.jpg` under --images-root

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        prompt, chosen, rejected = split_shared_prompt(
            messages(row.get("conversations"), "conversations"),
            messages(row.get("rejected_conversations"), "rejected_conversations"),
        )
        image = ctx.image(text_field(row, "image"), "image", by_basename=self.options.by_basename)
        return [Pair(prompt=with_image_tokens(prompt, 1), chosen=chosen, rejected=rejected, images=[image])]
