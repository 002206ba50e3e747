"""UltraFeedback raw (openbmb): four GPT-4-rated completions per instruction, binarized by a declared policy.

Each row holds `instruction` and `completions[4]`, each with an `overall_score` and four aspect ratings under
`annotations.<aspect>.Rating`. The score (`overall_score`, or the mean of the aspect ratings) ranks the
completions and `common.binarize` forms the pairs: `max_gap` (BaseReward's Ultra-Hard, one pair per prompt),
`best_vs_random` or `all_pairs` (Ultra-All). Equal scores are kept as ties (Ultra-Hard skips them in training).
Pitfalls: aspect ratings are strings and sometimes "N/A" (the mean uses the parsable ones only); each
completion was generated under its own `custom_system_prompt`, which is not part of the shared prompt;
`overall_score` was corrected on 2023-12-29 (pin the revision); TruthfulQA prompts are included.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import fmean
from typing import Any, Literal

from curation.errors import RowError
from curation.pair import Pair
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import Policy, binarize, check_min_margin, field, maybe_score, text_field, user_prompt

ASPECTS = ("instruction_following", "honesty", "truthfulness", "helpfulness")


@dataclass(frozen=True)
class UltrafeedbackOptions:
    policy: Policy = "max_gap"
    score: Literal["overall_score", "mean_rating"] = "overall_score"
    min_margin: float = 0.0

    def __post_init__(self) -> None:
        check_min_margin(self.min_margin)


def score_of(completion: dict[str, Any], score: str) -> float | None:
    """The completion's `overall_score`, or the mean of its parsable aspect ratings ("N/A" left out)."""
    if score == "overall_score":
        return maybe_score(completion.get("overall_score"), score)
    annotations = completion.get("annotations")
    aspects = [annotations.get(a) for a in ASPECTS] if isinstance(annotations, dict) else []
    ratings = [maybe_score(a.get("Rating"), "Rating") for a in aspects if isinstance(a, dict)]
    parsed = [r for r in ratings if r is not None]
    return fmean(parsed) if parsed else None


def response(completions: list[dict[str, Any]], index: int) -> str:
    text = completions[index].get("response")
    if not isinstance(text, str):
        raise RowError("missing field" if text is None else "wrong type", f"'completions[{index}].response'")
    return text


class Ultrafeedback(Adapter):
    info = SourceInfo(
        key="ultrafeedback",
        name="UltraFeedback (raw)",
        kind="train",
        modality="text",
        hub_id="openbmb/UltraFeedback",
        license="MIT",
        description="Four GPT-4-rated completions per prompt; pairs by policy (max_gap = BaseReward's Ultra-Hard).",
    )
    Options = UltrafeedbackOptions
    mapped_fields = frozenset({"instruction", "source", "models"})
    # The card declares `completions` as a list of records; a copy that declares it as a `sequence` of structs is
    # served as one record of lists, which `normalize` turns back.
    record_lists = frozenset({"completions"})

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        opts: UltrafeedbackOptions = self.options
        instruction = text_field(row, "instruction")
        completions = field(row, "completions", list)
        for i, completion in enumerate(completions):
            if not isinstance(completion, dict):
                raise RowError("wrong type", f"'completions[{i}]': expected an object, got {type(completion).__name__}")
        scores = [score_of(c, opts.score) for c in completions]
        scored = sum(s is not None for s in scores)
        if scored < 2:
            detail = f"'completions': {scored} of {len(completions)} have a parsable {opts.score}"
            raise RowError("unparsable score", detail)
        picked = binarize(scores, opts.policy, min_margin=opts.min_margin, seed_text=instruction)
        if not picked:
            raise RowError("margin too small", f"no {opts.score} gap reaches min_margin={opts.min_margin}")
        subset = field(row, "source", optional=True)
        return [
            Pair(
                prompt=user_prompt(instruction),
                chosen=response(completions, c),
                rejected=response(completions, r),
                subset=subset,
                chosen_score=scores[c],
                rejected_score=scores[r],
                tie=tie,
                chosen_model=field(completions[c], "model", optional=True),
                rejected_model=field(completions[r], "model", optional=True),
                binarization=opts.policy,
                # Indices into `completions` (kept in meta with the rationales and critiques).
                extra={"chosen_index": c, "rejected_index": r},
            )
            for c, r, tie in picked
        ]
