"""human_review: apply curators' reviews (`curation.reviews`) to the pairs they name.

Score: each live pair's review, by `pair_id`, from the reviews files (`reviews`: a path or a list; the workbench
writes `DATA_ROOT/reviews/<build>.parquet`): in a file the last written, across files the newest (`newest`).
Decide: `drop` removes the pair (reason "dropped by review", the note and reviewer in the detail); `swap` keeps it
with chosen and rejected exchanged in the shards (a label fix: scores, models and the margin's sign follow, the
pair_id is that of the swapped pair, and `meta` records the review); `keep` changes nothing, but for a pair an
earlier stage swapped (`rm_margin`'s label fix): it is put back as its source gives it, a person's verdict over a
model's. Every review is listed in `flags/human_review.parquet` with its outcome: applied (and whose swap a keep
undid), or why not (the pair was removed by an earlier stage, or is not among this build's pairs). The stage runs
after the other ops, so a review never brings back a pair another stage removed; the mix comes after it (a source
with a `count` fills a dropped pair's place with another).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from curation.io import sha256_file
from curation.ops.base import FILE, Decision, Op
from curation.ops.context import BuildContext
from curation.reviews import REVIEW_SCHEMA, newest, read_reviews
from curation.schema import compute_pair_id
from curation.sql import read_parquet
from curation.words import quantity


@dataclass(frozen=True)
class HumanReviewParams:
    # The reviews files the workbench wrote (DATA_ROOT/reviews/<build>.parquet), one or a list: of a pair's
    # reviews, each file's last written, then the newest of those (a later file's, at the same time).
    reviews: tuple[str, ...] = field(default=(), metadata=FILE)

    def check(self) -> None:
        if not self.reviews:
            raise ValueError("reviews: give the reviews file (DATA_ROOT/reviews/<build>.parquet) or a list of them")
        for path in self.reviews:
            if not path:
                raise ValueError("reviews: an empty path")
            if Path(path).is_dir():
                raise ValueError(f"reviews: {path} is a folder; give the reviews file in it (<build>.parquet)")
            if not Path(path).is_file():
                raise ValueError(f"reviews: {path} does not exist (review pairs in the workbench first)")


class HumanReview(Op):
    name = "human_review"
    Params = HumanReviewParams
    reads: ClassVar[dict[str, tuple[str, ...]]] = {
        "pairs": ("row_key", "pair_id", "prompt", "images", "chosen", "rejected"),
        "live_pairs": ("row_key", "pair_id", "source", "source_row"),
    }
    evidence: ClassVar[tuple[str, ...]] = ("flags/human_review.parquet",)

    def scoring(self, params: Any) -> dict[str, Any]:
        return {"reviews_sha256": [sha256_file(Path(path)) for path in params.reviews]}

    def score(self, ctx: BuildContext, params: HumanReviewParams, signals: Path) -> None:
        files = [read_reviews(Path(path)) for path in params.reviews]
        rows = pa.Table.from_pylist(newest(files), schema=REVIEW_SCHEMA)
        ctx.db.register("review_rows", rows)
        try:
            # A swap's pair id once swapped: a pair that already exists the other way round is then a duplicate.
            to_swap = ctx.rows(
                """SELECT DISTINCT p.pair_id, p.prompt, p.images, p.chosen, p.rejected FROM pairs p
                   SEMI JOIN (SELECT pair_id FROM review_rows WHERE action = 'swap') USING (pair_id)"""
            )
            swapped = pa.table(
                {
                    "pair_id": pa.array([r[0] for r in to_swap], pa.string()),
                    "swapped_pair_id": pa.array(
                        [compute_pair_id(r[1], r[2], r[4], r[3]) for r in to_swap], pa.string()
                    ),
                }
            )
            ctx.db.register("swapped_ids", swapped)
            # Every review, with the pairs it names among all ingested pairs (none: another build's pair).
            ctx.copy(
                """SELECT r.pair_id, r.action, r.note, r.reviewer, r.reviewed_at, r.build, r.queue,
                          r.source AS reviewed_source, r.source_row AS reviewed_row, p.row_key, w.swapped_pair_id
                   FROM review_rows r LEFT JOIN pairs p USING (pair_id) LEFT JOIN swapped_ids w USING (pair_id)
                   ORDER BY r.pair_id, p.row_key""",
                signals,
            )
        finally:
            ctx.db.unregister("review_rows")
            ctx.db.unregister("swapped_ids")

    def decide(self, ctx: BuildContext, params: HumanReviewParams, signals: Path) -> Decision:
        reviews = f"{read_parquet(signals)}"
        live = f"(SELECT s.*, p.source, p.source_row FROM {reviews} s JOIN live_pairs p USING (row_key))"
        detail = "'by ' || reviewer || ' at ' || reviewed_at || CASE WHEN note = '' THEN '' ELSE ': ' || note END"
        # One line per review: applied when a copy of its pair is live.
        # A `keep` of a pair an earlier stage swapped (a reward model's label fix) puts it back as its source
        # gives it: a person's verdict over a model's.
        undone = "any_value(w.stage) FILTER (s.action = 'keep')"
        outcome = f"""CASE WHEN count(s.row_key) = 0 THEN 'not applied: not among this build''s pairs'
                           WHEN count(p.row_key) = 0 THEN 'not applied: removed by an earlier stage'
                           WHEN {undone} IS NOT NULL THEN 'applied: the swap by ' || {undone} || ' undone'
                           ELSE 'applied' END"""
        per_review = f"""
            SELECT s.pair_id, s.reviewed_source AS source, s.reviewed_row AS source_row, s.action, s.note, s.reviewer,
                   s.reviewed_at, s.build, s.queue, {outcome} AS outcome
            FROM {reviews} s LEFT JOIN live_pairs p USING (row_key) LEFT JOIN swapped w USING (row_key)
            GROUP BY ALL ORDER BY s.pair_id"""
        # Reviews the build cannot apply are said, not only listed (in the evidence): another build's pair, say.
        outcomes = dict(ctx.rows(f"SELECT outcome, count(*) FROM ({per_review}) GROUP BY ALL"))
        other = outcomes.get("not applied: not among this build's pairs", 0)
        removed = outcomes.get("not applied: removed by an earlier stage", 0)
        warnings = []
        if other or removed:
            warnings.append(f"human_review: {other + removed} of {sum(outcomes.values())} reviews not applied (not "
                            f"among this build's pairs: {other}; removed by an earlier stage: {removed}); "
                            "flags/human_review.parquet lists each")  # fmt: skip
        return Decision(
            warnings=warnings,
            evidence={"flags/human_review.parquet": per_review},
            removals=[
                f"SELECT row_key, 'dropped by review' AS reason, {detail} AS detail FROM {live} WHERE action = 'drop'",
                # Swapped, the pair would be another live pair: it goes, as an exact duplicate would.
                f"""SELECT s.row_key, 'duplicate once swapped' AS reason,
                           'swapped, it is ' || d.source || ' ' || d.source_row || ', ' || {detail} AS detail
                    FROM {live} s JOIN (SELECT DISTINCT ON (pair_id) pair_id, source, source_row FROM live_pairs
                                        ORDER BY pair_id, row_key) d ON d.pair_id = s.swapped_pair_id
                    WHERE s.action = 'swap'""",
            ],
            swaps=[
                f"SELECT row_key, 'swapped by review' AS reason, {detail} AS detail FROM {live} WHERE action = 'swap'"
            ],
            unswaps=[
                f"""SELECT row_key, 'kept by review' AS reason, {detail} AS detail FROM {live}
                    WHERE action = 'keep' AND row_key IN (SELECT row_key FROM swapped)"""
            ],
        )


def outcome_text(flags: Path) -> str:
    """`human_review: 3 of 5 reviews applied (keep 1, drop 1, swap 1); ...`: what a build's
    `flags/human_review.parquet` lists, in one line (why the others were not, the stage's warning says)."""
    rows = pq.read_table(flags, columns=["action", "outcome"]).to_pylist()
    applied = [r["action"] for r in rows if r["outcome"].startswith("applied")]
    actions = ", ".join(f"{a} {applied.count(a)}" for a in ("keep", "drop", "swap"))
    return (f"human_review: {len(applied)} of {quantity(len(rows), 'review')} applied ({actions}); "
            "flags/human_review.parquet lists each")  # fmt: skip
