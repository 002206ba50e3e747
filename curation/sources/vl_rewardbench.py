"""VL-RewardBench (benchmark): one image, one query, two responses, a human ranking.

Two layouts are detected per row. The Hub parquet has `query`, `response` (2 strings), an embedded `image`
and `human_ranking` (rank per response, 0 = best: `[1, 0]` means `response[1]` is chosen; equal ranks are a
tie, kept with the first response as chosen); `models` gives the two model names in response order. The
converted file of `yfzhang114/r1_reward` has `prompt`, `chosen`, `rejected` and `image` as a relative path
(`vl_reward/img/image_N.jpg`, resolved under --images-root; the images are not shipped with it).

`subset` and `category` are the scoring group from the id (`vl_rewardbench_group`), under the `grouping`
option: `official` (by id prefix, 183/749/318; an id of no listed source is general, as `cal.py` counts it) or
`r1_reward` (that repository's case-sensitive substring test, 484/448/318; only group and macro numbers differ).
Pitfalls: 25 ids occur twice with different pairs, and 410 prompts are "Describe this image in detail.", so the
image path stays in `meta` and identity needs the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from curation.errors import RowError
from curation.pair import Pair
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import field, text_field, user_prompt, with_image_tokens

Grouping = Literal["official", "r1_reward"]

# Official groups by id prefix (case-sensitive), as the source datasets of `cal.py` map to them. Every other id
# (wildvision, and VLFeedback's own sources: jailbreak, LRVInstruction, politics, svit, ...) is general.
OFFICIAL_PREFIXES: dict[str, tuple[str, ...]] = {
    "hallucination": ("hallucination_pair", "RLAIF", "RLHF"),
    "reasoning": ("mmmu", "mathverse"),
}


# The sources of the benchmark's 1,250 item ids (its id prefixes): a file none of whose ids starts with one is
# another benchmark's, however alike their columns (MM-RLHF-RewardBench's jsonl has the same ones).
SOURCE_PREFIXES = ("hallucination_pair", "RLAIF", "RLHF", "mmmu", "mathverse", "wildvision", "jailbreak",
                   "LRVInstruction", "politics", "svit")  # fmt: skip


def vl_rewardbench_group(item_id: str, grouping: Grouping = "official") -> str:
    """The scoring group of an item id."""
    if grouping == "r1_reward":
        # r1_reward get_acc.py tests lower-case substrings, so "RLAIF-V-*" and "RLHF-V-*" fall into general.
        if "mmmu" in item_id or "mathverse" in item_id:
            return "reasoning"
        if "hallucination" in item_id or "rlhf" in item_id or "rlaif" in item_id:
            return "hallucination"
        return "general"
    for group, prefixes in OFFICIAL_PREFIXES.items():
        if item_id.startswith(prefixes):
            return group
    return "general"


class VlRewardbench(Adapter):
    info = SourceInfo(
        key="vl_rewardbench",
        name="VL-RewardBench",
        kind="benchmark",
        modality="image",
        hub_id="MMInstruction/VL-RewardBench",
        license="MIT (research use only)",
        description="1,250 image pairs in general / hallucination / reasoning groups; human-ranked responses.",
        default_split="test",
    )

    @dataclass(frozen=True)
    class Options:
        grouping: Grouping = "official"

    # `image` is kept in meta on purpose: ids repeat, the image path is the row's stable key.
    mapped_fields = frozenset({"query", "response", "human_ranking", "models", "prompt", "chosen", "rejected"})

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        item_id = text_field(row, "id")
        if "response" in row:
            query = text_field(row, "query")
            chosen, rejected, tie, chosen_model, rejected_model = self._ranked(row)
        else:
            query = text_field(row, "prompt")
            chosen, rejected = text_field(row, "chosen"), text_field(row, "rejected")
            tie, chosen_model, rejected_model = False, None, None
        image = ctx.image(row.get("image"), "image")
        group = vl_rewardbench_group(item_id, self.options.grouping)
        return [
            Pair(
                prompt=with_image_tokens(user_prompt(query), 1),
                chosen=chosen,
                rejected=rejected,
                images=[image],
                subset=group,
                category=group,
                tie=tie,
                chosen_model=chosen_model,
                rejected_model=rejected_model,
            )
        ]

    @staticmethod
    def _ranked(row: dict[str, Any]) -> tuple[str, str, bool, str | None, str | None]:
        """(chosen, rejected, tie, chosen model, rejected model) from `response` ordered by `human_ranking`."""
        responses = field(row, "response", list)
        ranking = field(row, "human_ranking", list)
        if len(responses) != 2 or not all(isinstance(r, str) for r in responses):
            raise RowError("wrong type", f"'response': expected 2 strings, got {len(responses)} items")
        if len(ranking) != 2 or not all(isinstance(r, int) and not isinstance(r, bool) for r in ranking):
            raise RowError("undetermined preference", f"'human_ranking': {ranking!r}")
        models = row.get("models")
        ok = isinstance(models, list) and len(models) == 2
        names = [m if isinstance(m, str) else None for m in models] if ok else [None, None]
        first, second = (1, 0) if ranking[1] < ranking[0] else (0, 1)  # rank 0 = best
        return responses[first], responses[second], ranking[0] == ranking[1], names[first], names[second]
