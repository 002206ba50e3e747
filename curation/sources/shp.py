"""Stanford Human Preferences (SHP): two Reddit comments on one post, the more upvoted one preferred.

The post (`history`) is the user turn; `labels == 1` means comment A (`human_ref_A`) is preferred, 0 means B.
The comments' upvotes (`score_A`/`score_B`) become the oriented scores and `margin = log(score_ratio)`
(`score_ratio` = preferred score / dispreferred score, >= 1 per the card, so a ratio of 2 gives margin 0.69):
the log puts SHP's multiplicative gaps on an additive scale. `domain` is the subreddit and the split joined by
an underscore ("askculinary_train"); the subreddit becomes `subset` (one subset across splits) and `domain`
stays in meta. Pitfalls: many pairs per post (split by prompt_id); low-ratio pairs are noisy (filter on margin).
"""

from __future__ import annotations

import math
from typing import Any

from curation.errors import RowError
from curation.pair import Pair
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import field, parse_score, text_field, user_prompt

SPLIT_SUFFIXES = ("_train", "_validation", "_test")


def subreddit(domain: str | None) -> str | None:
    """The subreddit of a `domain` ("askculinary_train" -> "askculinary"); one without a split suffix is kept."""
    for suffix in SPLIT_SUFFIXES:
        if domain is not None and domain.endswith(suffix) and len(domain) > len(suffix):
            return domain[: -len(suffix)]
    return domain


class Shp(Adapter):
    info = SourceInfo(
        key="shp",
        name="Stanford Human Preferences (SHP)",
        kind="train",
        modality="text",
        hub_id="stanfordnlp/SHP",
        license="Reddit API terms (no standard license)",
        description="Reddit comment pairs on one post over 18 domains; the more upvoted (written later) one wins.",
    )
    mapped_fields = frozenset({"history", "human_ref_A", "human_ref_B", "labels", "score_A", "score_B", "score_ratio"})

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        label = field(row, "labels", int)
        if label not in (0, 1):
            raise RowError("undetermined preference", f"'labels': {label!r} (expected 1 for A or 0 for B)")
        chosen, rejected = ("A", "B") if label == 1 else ("B", "A")
        ratio = parse_score(field(row, "score_ratio", (int, float, str)), "score_ratio")
        if ratio < 1:  # the preferred comment's score over the other's: below 1, label and scores disagree
            raise RowError("undetermined preference", f"'score_ratio': {ratio!r} is below 1 for the preferred comment")
        return [
            Pair(
                prompt=user_prompt(text_field(row, "history")),
                chosen=text_field(row, f"human_ref_{chosen}"),
                rejected=text_field(row, f"human_ref_{rejected}"),
                subset=subreddit(field(row, "domain", optional=True)),
                chosen_score=parse_score(field(row, f"score_{chosen}", (int, float, str)), f"score_{chosen}"),
                rejected_score=parse_score(field(row, f"score_{rejected}", (int, float, str)), f"score_{rejected}"),
                margin=math.log(ratio),
                extra={"chosen_side": chosen},
            )
        ]
