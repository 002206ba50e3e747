"""UltraFeedback binarized (H4, trl-lib and flattened copies): one pair per prompt, scores kept.

Three layouts are read: H4's message lists with `score_chosen`/`score_rejected`, trl-lib's message lists,
and flattened rows with string answers and scores under `metadata`. Scores give `margin`; equal scores
mark a tie (kept; a later stage decides).
"""

from __future__ import annotations

from typing import Any

from curation.errors import RowError
from curation.pair import Pair
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import maybe_score, messages, split_shared_prompt, user_prompt


class UltrafeedbackBinarized(Adapter):
    info = SourceInfo(
        key="ultrafeedback_binarized",
        name="UltraFeedback binarized",
        kind="train",
        modality="text",
        hub_id="HuggingFaceH4/ultrafeedback_binarized",
        license="MIT",
        description="Best-rated vs a random other response of UltraFeedback (GPT-4 ratings), one pair per prompt.",
        default_split="train_prefs",
    )
    mapped_fields = frozenset({"prompt", "chosen", "rejected", "score_chosen", "score_rejected", "messages"})

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        chosen, rejected = row.get("chosen"), row.get("rejected")
        if chosen is None or rejected is None:
            raise RowError("missing field", f"'{'chosen' if chosen is None else 'rejected'}'")
        if isinstance(chosen, str) and isinstance(rejected, str):
            prompt_text = row.get("prompt")
            if not isinstance(prompt_text, str):
                raise RowError("missing field" if prompt_text is None else "wrong type", "'prompt'")
            prompt, chosen_text, rejected_text = user_prompt(prompt_text), chosen, rejected
        else:
            prompt, chosen_text, rejected_text = split_shared_prompt(
                messages(chosen, "chosen"), messages(rejected, "rejected")
            )
        scores = row.get("metadata") if isinstance(row.get("metadata"), dict) else row
        score_c = maybe_score(scores.get("score_chosen"), "score_chosen")
        score_r = maybe_score(scores.get("score_rejected"), "score_rejected")
        return [
            Pair(
                prompt=prompt,
                chosen=chosen_text,
                rejected=rejected_text,
                chosen_score=score_c,
                rejected_score=score_r,
                tie=score_c is not None and score_c == score_r,
                binarization="best_vs_random",
            )
        ]
