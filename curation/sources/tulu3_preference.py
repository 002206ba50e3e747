"""Tulu-3 preference mixtures (AllenAI): chosen/rejected message lists, optional ratings and model names.

The prompt is the turns both lists share before their final assistant answer (`split_shared_prompt`); the
`prompt` string column repeats the first user turn. `source` (the mixture's subset) becomes `subset`.
Where `chosen_rating`/`rejected_rating` are present they become the scores (margin = their difference,
equal = tie) and the pair is marked `best_vs_random`, the Tulu-3 synthetic pipeline's policy (highest mean
rating vs a random other response); a rating that is present but does not parse rejects the row.
Pitfalls: whether the IF-augmented and wildchat-UltraFeedback sets carry the rating and model columns is
unverified, so they are optional; the full mixture already contains UltraFeedback and WildChat subsets
(dedupe by prompt_id against UltraFeedback and OLMo-2 mixes).
"""

from __future__ import annotations

from typing import Any

from curation.pair import Pair
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import field, messages, parse_score, split_shared_prompt


def optional_score(row: dict[str, Any], name: str) -> float | None:
    """An absent rating is None; a present one must parse (a garbled rating is a broken row, not a missing one)."""
    value = row.get(name)
    return None if value is None else parse_score(value, name)


class Tulu3Preference(Adapter):
    info = SourceInfo(
        key="tulu3_preference",
        name="Tulu-3 preference mixtures",
        kind="train",
        modality="text",
        hub_id="allenai/tulu-3-IF-augmented-on-policy-70b",
        license="ODC-BY-1.0",
        description="AllenAI Tulu-3 preference sets (IF-augmented on-policy by default; full and WildChat-UF mixes).",
    )
    mapped_fields = frozenset(
        {"prompt", "chosen", "rejected", "source", "chosen_rating", "rejected_rating", "chosen_model", "rejected_model"}
    )

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        prompt, chosen, rejected = split_shared_prompt(
            messages(row.get("chosen"), "chosen"), messages(row.get("rejected"), "rejected")
        )
        score_c, score_r = optional_score(row, "chosen_rating"), optional_score(row, "rejected_rating")
        rated = score_c is not None and score_r is not None
        return [
            Pair(
                prompt=prompt,
                chosen=chosen,
                rejected=rejected,
                subset=field(row, "source", optional=True),
                chosen_score=score_c,
                rejected_score=score_r,
                tie=rated and score_c == score_r,
                chosen_model=field(row, "chosen_model", optional=True),
                rejected_model=field(row, "rejected_model", optional=True),
                binarization="best_vs_random" if rated else None,
            )
        ]
