"""Multimodal RewardBench (facebookresearch, benchmark): `Output1`/`Output2` with a `Better` label.

Read `data/all_data.json` (a JSON array of objects) that the repository's `scripts/0_download_data.py` writes
from the shipped `data/all_data_release.json`, with --images-root at that `data/` folder. A row is `ID`
(`nocaps_13062`), `Image` (`images/<subset>/<n>.jpg`), `Text` (the prompt), `Output1`, `Output2`, `Better`
(`"Output1"` or `"Output2"`) and `Category` (top level, e.g. `open_generation/correctness_task`): the fields the
repository's judge and accuracy scripts read (its prediction files wrap the row as `Meta`, hence their
`Meta.Category`). chosen = the output named by `Better`; any other label is an undetermined preference.
`subset` and `category` follow `scripts/2_get_accuracy.py`: `Category`, with `safety` split into `safety/bias`
(ID starts with "pairs") and `safety/toxicity`, and `reasoning` into `reasoning/math` (ID starts with "math")
and `reasoning/coding`, tested on the lower-cased ID as there. Pitfalls: the release file lacks `Text` for the
subsets the download script fills, so an empty or absent prompt is rejected; Hateful Memes is not
redistributed, so its images are missing.
"""

from __future__ import annotations

from typing import Any

from curation.errors import RowError
from curation.pair import Pair
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import field, text_field, user_prompt, with_image_tokens

# Categories that the accuracy script splits by ID prefix: category -> (prefix, if prefix, otherwise).
SPLITS = {
    "safety": ("pairs", "safety/bias", "safety/toxicity"),
    "reasoning": ("math", "reasoning/math", "reasoning/coding"),
}


def mmrb_category(item_id: str, category: str | None) -> str | None:
    """The scoring category of an item, as `scripts/2_get_accuracy.py` computes it."""
    if category in SPLITS:
        prefix, matched, other = SPLITS[category]
        return matched if item_id.lower().startswith(prefix) else other
    return category


class MultimodalRewardbench(Adapter):
    info = SourceInfo(
        key="multimodal_rewardbench",
        name="Multimodal RewardBench",
        kind="benchmark",
        modality="image",
        hub_id=None,
        license="CC-BY-NC (plus third-party image terms)",
        description="≈5,000 image pairs over correctness, preference, knowledge, reasoning, safety and VQA.",
    )
    mapped_fields = frozenset({"Image", "Text", "Output1", "Output2", "Better", "Category"})

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        item_id = text_field(row, "ID")
        text = text_field(row, "Text")
        if not text.strip():
            raise RowError("missing field", "'Text' is empty (filled by scripts/0_download_data.py)")
        outputs = {"Output1": text_field(row, "Output1"), "Output2": text_field(row, "Output2")}
        better = row.get("Better")
        if not isinstance(better, str) or better not in outputs:
            raise RowError("undetermined preference", f"'Better': {better!r}")
        worse = "Output2" if better == "Output1" else "Output1"
        category = mmrb_category(item_id, field(row, "Category", str))  # its scoring group: no guess
        return [
            Pair(
                prompt=with_image_tokens(user_prompt(text), 1),
                chosen=outputs[better],
                rejected=outputs[worse],
                images=[ctx.image(row.get("Image"), "Image")],
                subset=category,
                category=category,
            )
        ]
