"""exact_dedupe: one survivor per `pair_id`, then at most N pairs per `prompt_id`.

Survivor rule (all dedupe ops): the copy from the source listed first in the recipe, then the earliest row.
The prompt cap keeps the pairs of a prompt that come first in hash(pair_id, seed) order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from curation.ops.base import Decision, Op
from curation.ops.context import BuildContext
from curation.sql import read_parquet


@dataclass(frozen=True)
class ExactDedupeParams:
    max_pairs_per_prompt: int | None = None  # None: no cap

    def check(self) -> None:
        if self.max_pairs_per_prompt is not None and self.max_pairs_per_prompt < 1:  # 0 would remove every pair
            raise ValueError("max_pairs_per_prompt must be at least 1 (or null: no cap)")


class ExactDedupe(Op):
    name = "exact_dedupe"
    Params = ExactDedupeParams
    default_on = True
    thresholds = frozenset({"max_pairs_per_prompt"})
    reads: ClassVar[dict[str, tuple[str, ...]]] = {
        "live_pairs": ("row_key", "pair_id", "prompt_id", "source", "source_row")
    }
    evidence: ClassVar[tuple[str, ...]] = ("dups/exact_dedupe.parquet",)

    def score(self, ctx: BuildContext, params: ExactDedupeParams, signals: Path) -> None:
        # Among the pairs that reached this stage: each copy's rank and its survivor.
        ctx.copy(
            """SELECT row_key, pair_id, source, source_row, row_number() OVER w AS copy,
                      first_value(source) OVER w AS survivor_source, first_value(source_row) OVER w AS survivor_row
               FROM live_pairs WINDOW w AS (PARTITION BY pair_id ORDER BY row_key) ORDER BY row_key""",
            signals,
        )

    def decide(self, ctx: BuildContext, params: ExactDedupeParams, signals: Path) -> Decision:
        evidence = f"""SELECT pair_id, source, source_row, pair_id AS survivor_pair_id, survivor_source, survivor_row,
                              'exact' AS method, 1.0 AS similarity
                       FROM {read_parquet(signals)} WHERE copy > 1 ORDER BY pair_id, source, source_row"""
        queries = [
            f"""SELECT row_key, 'exact duplicate' AS reason,
                       'same pair as ' || survivor_source || ' ' || survivor_row AS detail
                FROM {read_parquet(signals)} WHERE copy > 1"""
        ]
        if params.max_pairs_per_prompt is not None:
            # Runs after the duplicates are gone (the runner applies queries in order).
            queries.append(
                f"""SELECT row_key, 'prompt cap' AS reason,
                           'more than {params.max_pairs_per_prompt} pairs for prompt ' || prompt_id AS detail
                    FROM (SELECT row_key, prompt_id, row_number() OVER (
                            PARTITION BY prompt_id ORDER BY {ctx.hash_order("pair_id")}, row_key) AS rank
                          FROM live_pairs)
                    WHERE rank > {params.max_pairs_per_prompt}"""
            )
        return Decision(evidence={"dups/exact_dedupe.parquet": evidence}, removals=queries)
