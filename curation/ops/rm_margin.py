"""rm_margin: pairs a trained reward model confidently reverses (likely label noise), from `trainer score` output.

Score: each live pair's rewards from the scores table (`pair_id, reward_chosen, reward_rejected, margin`, written
by `trainer score --model RUN --build DIR` into DIR/signals/); pairs the table lacks get no margin and are kept.
Decide: `margin < min_margin` is a reversal. The default -1.0 means the model gives the rejected answer at least
sigmoid(1) = 73% Bradley-Terry probability. `action: drop` removes reversals; `flag` keeps them and lists them in
`flags/rm_margin.parquet`. The signal's name covers the scores file's content, so rescoring with another model
gives another signal file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from curation.ops.base import Decision, Op
from curation.ops.context import BuildContext
from curation.sql import sql_literal


@dataclass(frozen=True)
class RmMarginParams:
    scores: str = ""  # the parquet `trainer score` wrote
    min_margin: float = -1.0
    action: Literal["drop", "flag"] = "drop"

    def check(self) -> None:
        if not self.scores:
            raise ValueError("scores: give the file `trainer score --model RUN --build DIR` wrote")
        if not Path(self.scores).is_file():
            raise ValueError(f"scores: {self.scores} does not exist (run `trainer score` first)")


class RmMargin(Op):
    name = "rm_margin"
    Params = RmMarginParams
    thresholds = frozenset({"min_margin", "action"})
    reads: ClassVar[dict[str, tuple[str, ...]]] = {"live_pairs": ("row_key", "pair_id", "source", "source_row")}
    evidence: ClassVar[tuple[str, ...]] = ("flags/rm_margin.parquet",)

    def scoring(self, params: Any) -> dict[str, Any]:
        from curation.io import sha256_file

        return {"scores_sha256": sha256_file(Path(params.scores))}

    def score(self, ctx: BuildContext, params: RmMarginParams, signals: Path) -> None:
        ctx.copy(
            f"""SELECT p.row_key, p.pair_id, s.reward_chosen, s.reward_rejected, s.margin
                FROM live_pairs p LEFT JOIN (
                    SELECT DISTINCT ON (pair_id) pair_id, reward_chosen, reward_rejected, margin
                    FROM read_parquet({sql_literal(params.scores)}) ORDER BY pair_id
                ) s USING (pair_id)
                ORDER BY p.row_key""",
            signals,
        )

    def decide(self, ctx: BuildContext, params: RmMarginParams, signals: Path) -> Decision:
        if params.action == "flag":
            return Decision(
                evidence={
                    "flags/rm_margin.parquet": f"""
                        SELECT p.source, p.source_row, p.pair_id, s.margin
                        FROM live_pairs p JOIN read_parquet({sql_literal(signals)}) s USING (row_key)
                        WHERE s.margin < {params.min_margin} ORDER BY p.row_key"""
                }
            )
        return Decision(
            removals=[
                f"""SELECT row_key, 'reward model reverses' AS reason,
                           'margin ' || round(margin, 4) || ' < ' || {params.min_margin} AS detail
                    FROM read_parquet({sql_literal(signals)}) WHERE margin < {params.min_margin}"""
            ]
        )
