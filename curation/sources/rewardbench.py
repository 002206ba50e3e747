"""RewardBench v1 (benchmark, text): single-turn prompt, chosen and rejected strings with their models.

`subset` is the native subset (23 in the `filtered` split); `category` is its leaderboard section from
`SECTIONS` (Chat, Chat Hard, Safety, Reasoning); a subset outside the table (the `raw` split has more) keeps
category None and is still a pair. Pitfalls: section scores weight subsets by `EXAMPLE_COUNTS` (math-prm
up-weighted, xstest weights swapped in one version), which is the scorer's business, not this adapter's;
alpacaeval-easy/hard are solvable by length.
"""

from __future__ import annotations

from typing import Any

from curation.pair import Pair
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import field, text_field, user_prompt

_SECTION_SUBSETS = {
    "Chat": ("alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy", "mt-bench-med"),
    "Chat Hard": (
        "mt-bench-hard",
        "llmbar-natural",
        "llmbar-adver-neighbor",
        "llmbar-adver-GPTInst",
        "llmbar-adver-GPTOut",
        "llmbar-adver-manual",
    ),
    "Safety": (
        "refusals-dangerous",
        "refusals-offensive",
        "xstest-should-refuse",
        "xstest-should-respond",
        "donotanswer",
    ),
    "Reasoning": ("math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"),
}
# Subset -> leaderboard section (`rewardbench/constants.py` SUBSET_MAPPING).
SECTIONS: dict[str, str] = {subset: section for section, subsets in _SECTION_SUBSETS.items() for subset in subsets}


class Rewardbench(Adapter):
    info = SourceInfo(
        key="rewardbench",
        name="RewardBench (v1)",
        kind="benchmark",
        modality="text",
        hub_id="allenai/reward-bench",
        license="ODC-BY",
        description="2,985 filtered text pairs in 23 subsets; section scores Chat, Chat Hard, Safety, Reasoning.",
        default_split="filtered",
    )
    mapped_fields = frozenset({"prompt", "chosen", "chosen_model", "rejected", "rejected_model", "subset"})

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        subset = field(row, "subset", optional=True)
        return [
            Pair(
                prompt=user_prompt(text_field(row, "prompt")),
                chosen=text_field(row, "chosen"),
                rejected=text_field(row, "rejected"),
                subset=subset,
                category=SECTIONS.get(subset) if subset else None,
                chosen_model=field(row, "chosen_model", optional=True),
                rejected_model=field(row, "rejected_model", optional=True),
            )
        ]
