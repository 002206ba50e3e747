"""llm-blender Unified-Feedback: two rated conversations (`conv_A`, `conv_B`) that share their prompt turns.

Each conversation is a message list ending with its assistant answer; the turns before it must be the same
on both sides and end with a user turn. The higher of `conv_A_rating`/`conv_B_rating` is chosen, equal
ratings are a tie (A listed as chosen), margin = the rating gap. `source` (the re-packaged dataset) becomes
`subset`. The Hub config defaults to "all". Pitfalls: it re-packages hh-rlhf, UltraFeedback, Nectar and
others, so never mix it with those sources without prompt-level dedup.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from curation.errors import RowError
from curation.pair import Pair
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import field, final_answer, messages, parse_score


class UnifiedFeedback(Adapter):
    info = SourceInfo(
        key="unified_feedback",
        name="Unified-Feedback",
        kind="train",
        modality="text",
        hub_id="llm-blender/Unified-Feedback",
        license="MIT",
        description="Preference sets (hh-rlhf, UltraFeedback, Nectar, ...) re-packaged as rated conversation pairs.",
    )
    mapped_fields = frozenset({"conv_A", "conv_B", "conv_A_rating", "conv_B_rating", "num_turns", "source"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.read.config is None:  # the Hub dataset has one config per re-packaged source plus "all"
            self.read = dataclasses.replace(self.read, config="all")

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        prompt_a, answer_a = final_answer(messages(row.get("conv_A"), "conv_A"), "conv_A")
        prompt_b, answer_b = final_answer(messages(row.get("conv_B"), "conv_B"), "conv_B")
        if prompt_a != prompt_b:
            raise RowError("prompt differs between sides", "conv_A and conv_B do not share the turns before the answer")
        rating_a = parse_score(field(row, "conv_A_rating", (int, float, str)), "conv_A_rating")
        rating_b = parse_score(field(row, "conv_B_rating", (int, float, str)), "conv_B_rating")
        a_first = rating_a >= rating_b
        return [
            Pair(
                prompt=prompt_a,
                chosen=answer_a if a_first else answer_b,
                rejected=answer_b if a_first else answer_a,
                subset=field(row, "source", optional=True),
                chosen_score=rating_a if a_first else rating_b,
                rejected_score=rating_b if a_first else rating_a,
                tie=rating_a == rating_b,
                extra={"chosen_side": "conv_A" if a_first else "conv_B"},
            )
        ]
