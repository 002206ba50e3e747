"""LLaVA-RLHF human preference (10K): a LLaVA conversation, two candidate last answers and `preference` 1|2.

The prompt is `conversations` without its last `gpt` turn (a placeholder the reference code overwrites with
each output), so prompts can be multi-turn. `preference` is 1-based: 1 means `output_1` is chosen, 2 means
`output_2` (the reference code maps it to a 0/1 index, easy to invert). `conversations` wrapped in one extra
list is unwrapped, as the reference code does. `image` is a COCO file name resolved under `--images-root`
(anywhere by file name with `by_basename`, on by default); a row without an `image` key is text-only, as in
the reference loader, and so is a null `image`: `datasets` (the reference loader opens the file with
`load_dataset("json")`) serves an absent key as null. A prompt that holds `<image>` without an image is still
rejected (`image placeholders mismatch`). Outputs are `{from, value}` turns (plain strings also accepted). No
ties, no margin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from curation.errors import RowError
from curation.pair import Pair
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import answer_text, messages, with_image_tokens

OUTPUTS = {1: "output_1", 2: "output_2"}


def _preference(value: Any) -> int:
    """1 or 2, stored as an int (strings "1"/"2" also accepted)."""
    if isinstance(value, str) and value.strip() in ("1", "2"):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value in OUTPUTS:
        return value
    raise RowError("undetermined preference", f"'preference': {value!r} (expected 1 or 2)")


class LlavaRlhf(Adapter):
    info = SourceInfo(
        key="llava_rlhf",
        name="LLaVA-RLHF human preference",
        kind="train",
        modality="image",
        hub_id="zhiqings/LLaVA-Human-Preference-10K",
        license="Apache-2.0",
        description="Human choice between two LLaVA answers to a (multi-turn) COCO image conversation.",
    )
    mapped_fields = frozenset({"image", "conversations", "output_1", "output_2", "preference"})

    @dataclass(frozen=True)
    class Options:
        by_basename: bool = True  # find a COCO file name anywhere under --images-root

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        conversation = row.get("conversations")
        if isinstance(conversation, list) and len(conversation) == 1 and isinstance(conversation[0], list):
            conversation = conversation[0]
        prompt = messages(conversation, "conversations")
        if prompt and prompt[-1]["role"] == "assistant":
            prompt = prompt[:-1]  # the placeholder answer
        preferred = _preference(row.get("preference"))
        chosen = answer_text(row, OUTPUTS[preferred])
        rejected = answer_text(row, OUTPUTS[3 - preferred])
        image = row.get("image")
        images = [] if image is None else [ctx.image(image, "image", by_basename=self.options.by_basename)]
        return [Pair(prompt=with_image_tokens(prompt, len(images)), chosen=chosen, rejected=rejected, images=images)]
