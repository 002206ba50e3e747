"""VLFeedback (Silkie): four rated responses per image prompt, binarized by a declared policy.

Each completion is rated 1–5 by GPT-4V on three aspects (Helpfulness, Ethical Considerations, Visual
Faithfulness). A response's score is the mean of its parsable aspect ratings; ratings are strings and some
are not numbers (an unparsable aspect is left out of the mean, a response with none takes no part).
Pairs come from `common.binarize` (`policy`, `min_margin`); equal means are ties. The image is embedded
(`image`, parquet versions) or a path relative to `--images-root` (`img_path`, loader-script version with
`merged_images.zip`; resolved by unique file name when the zip's folder layout differs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from curation.errors import RowError
from curation.pair import Pair
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import (
    binarize,
    check_min_margin,
    field,
    maybe_score,
    text_field,
    user_prompt,
    with_image_tokens,
)

ASPECTS = ("Helpfulness", "Ethical Considerations", "Visual Faithfulness")
RATINGS = (1.0, 5.0)  # GPT-4V's scale for each aspect


@dataclass(frozen=True)
class Options:
    policy: Literal["max_gap", "all_pairs", "best_vs_random"] = "max_gap"
    min_margin: float = 0.0

    def __post_init__(self) -> None:
        check_min_margin(self.min_margin)


def response_score(completion: dict[str, Any], name: str) -> float | None:
    """Mean of the parsable aspect ratings; None when no aspect has a numeric rating. A number off the 1-5 scale
    is a `RowError` (no mean of it is a rating; `1e308` twice would sum to infinity)."""
    annotations = completion.get("annotations")
    if not isinstance(annotations, dict):
        return None
    ratings = []
    for aspect in ASPECTS:
        value = annotations.get(aspect)
        rating = value.get("Rating") if isinstance(value, dict) else None
        score = maybe_score(rating, f"{name}.{aspect}")
        if score is not None and not RATINGS[0] <= score <= RATINGS[1]:
            raise RowError("rating out of range", f"'{name}.annotations.{aspect}.Rating': {rating!r} (rated 1 to 5)")
        if score is not None:
            ratings.append(score)
    return sum(ratings) / len(ratings) if ratings else None


class Vlfeedback(Adapter):
    info = SourceInfo(
        key="vlfeedback",
        name="VLFeedback (Silkie)",
        kind="train",
        modality="image",
        hub_id="MMInstruction/VLFeedback",
        license="unknown",
        description="Four LVLM responses per image prompt rated by GPT-4V on three aspects; pairs by mean rating.",
    )
    Options = Options
    mapped_fields = frozenset({"prompt", "image", "img_path"})
    record_lists = frozenset({"completions"})

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        completions = field(row, "completions", list)
        responses, scores, models = [], [], []
        for i, completion in enumerate(completions):
            if not isinstance(completion, dict):
                raise RowError("wrong type", f"'completions[{i}]': expected an object")
            responses.append(text_field(completion, "response"))
            scores.append(response_score(completion, f"completions[{i}]"))
            models.append(completion.get("model") if isinstance(completion.get("model"), str) else None)
        if sum(s is not None for s in scores) < 2:
            raise RowError("unparsable score", f"'completions': fewer than two numerically rated responses {scores}")
        policy, min_margin = self.options.policy, self.options.min_margin
        indices = binarize(scores, policy, min_margin=min_margin, seed_text=f"{row.get('id')}\n{row.get('prompt')}")
        if not indices:
            raise RowError("margin below minimum", f"no pair of mean ratings {scores} differs by {min_margin} or more")
        image = row.get("image") if row.get("image") is not None else row.get("img_path")
        sha = ctx.image(image, "image" if row.get("image") is not None else "img_path", by_basename=True)
        prompt = with_image_tokens(user_prompt(text_field(row, "prompt")), 1)
        return [
            Pair(
                prompt=prompt,
                chosen=responses[c],
                rejected=responses[r],
                images=[sha],
                chosen_score=scores[c],
                rejected_score=scores[r],
                tie=tie,
                chosen_model=models[c],
                rejected_model=models[r],
                binarization=policy if min_margin <= 0 else f"{policy},gap>={min_margin:g}",
                extra={"chosen_index": c, "rejected_index": r},
            )
            for c, r, tie in indices
        ]
