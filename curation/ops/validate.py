"""validate: both answers non-empty (texts are normalized at ingest; an answer with no visible character,
`context.VISIBLE`, is empty too), a prompt with text where the pair has no image, images within limits.

The ingest already guarantees the rest of validation for every pair: images decode fully, the prompt ends
with a user turn, one placeholder per image, and one prompt and image list shared by both answers (the
schema has a single `prompt` and `images`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from curation.ops.base import Decision, Op
from curation.ops.context import BuildContext
from curation.sql import read_parquet


@dataclass(frozen=True)
class ValidateParams:
    max_pixels: int = 50_000_000
    min_answer_chars: int = 1  # after normalization
    min_prompt_chars: int = 1  # of a pair without images (an image alone may be the prompt)

    def check(self) -> None:
        if self.max_pixels < 1 or self.min_answer_chars < 0 or self.min_prompt_chars < 0:
            raise ValueError("need max_pixels >= 1, min_answer_chars >= 0 and min_prompt_chars >= 0")


class Validate(Op):
    name = "validate"
    version = 3  # blank answers (no visible character) are empty; a text pair needs a prompt
    Params = ValidateParams
    default_on = True
    thresholds = frozenset({"max_pixels", "min_answer_chars", "min_prompt_chars"})
    reads: ClassVar[dict[str, tuple[str, ...]]] = {
        "live_pairs": ("row_key", "pair_id", "images"),
        "images": ("sha256", "width", "height"),
    }
    uses = ("text_stats",)

    def score(self, ctx: BuildContext, params: ValidateParams, signals: Path) -> None:
        # Per row: copies of one pair_id may differ in whitespace, so their lengths may too.
        ctx.copy(
            f"""SELECT p.row_key, p.pair_id, t.chosen_chars, t.rejected_chars, t.chosen_blank, t.rejected_blank,
                      t.prompt_chars, t.prompt_blank, len(p.images) AS images, m.max_image_pixels
               FROM live_pairs p JOIN {ctx.text_stats()} t USING (row_key)
               LEFT JOIN (SELECT u.row_key, max(i.width::BIGINT * i.height) AS max_image_pixels
                          FROM (SELECT row_key, unnest(images) AS sha256 FROM live_pairs) u JOIN images i USING (sha256)
                          GROUP BY u.row_key) m USING (row_key)
               ORDER BY p.row_key""",
            signals,
        )

    def decide(self, ctx: BuildContext, params: ValidateParams, signals: Path) -> Decision:
        short = params.min_answer_chars
        no_prompt = f"(s.images = 0 AND (s.prompt_chars < {params.min_prompt_chars} OR s.prompt_blank))"
        return Decision(
            removals=[
                f"""SELECT p.row_key,
                  CASE WHEN s.chosen_chars < {short} OR s.chosen_blank THEN 'empty chosen'
                       WHEN s.rejected_chars < {short} OR s.rejected_blank THEN 'empty rejected'
                       WHEN {no_prompt} THEN 'empty prompt'
                       ELSE 'image too large' END AS reason,
                  'chosen ' || s.chosen_chars || ' chars' || CASE WHEN s.chosen_blank THEN ' (none visible)' ELSE ''
                    END || ', rejected ' || s.rejected_chars || ' chars' || CASE WHEN s.rejected_blank
                    THEN ' (none visible)' ELSE '' END || ', prompt ' || s.prompt_chars || ' chars'
                    || CASE WHEN s.prompt_blank THEN ' (none visible)' ELSE '' END || CASE WHEN s.images = 0
                    THEN ', no image' ELSE ', ' || s.images || CASE WHEN s.images = 1 THEN ' image' ELSE ' images' END
                    || ', largest ' || s.max_image_pixels || ' px' END AS detail
               FROM live_pairs p JOIN {read_parquet(signals)} s USING (row_key)
               WHERE s.chosen_chars < {short} OR s.rejected_chars < {short} OR s.chosen_blank OR s.rejected_blank
                  OR {no_prompt} OR coalesce(s.max_image_pixels, 0) > {params.max_pixels}"""
            ]
        )
