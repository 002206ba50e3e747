"""rm_margin: pairs a reward model confidently reverses (likely label noise), from `trainer score` or
`trainer audit` output.

Score: each live pair's rewards from the scores table (`pair_id, reward_chosen, reward_rejected, margin`, written
into DIR/signals/ by `trainer score --model RUN --build DIR` or, judged out of fold, by `trainer audit`); pairs the
table lacks get no margin and are kept.
Decide which pairs are reversals (`select`):
- `margin`: `margin < min_margin`. The default -1.0 means the model gives the rejected answer at least
  sigmoid(1) = 73% Bradley-Terry probability.
- `noise_rate`, confident learning's estimate (Northcutt et al., 2021), per source: the threshold t is the mean
  probability p = sigmoid(margin) the model gives the labels; a pair is confidently agreed with when p >= t and
  confidently reversed when 1 - p >= t (p < 0.5); the estimated noise rate is reversed / (reversed + agreed) (the
  pairs confident either way; the calibrated confident joint of one noisy class), and round(rate x pairs scored) of
  the most reversed pairs (lowest margin first) are selected, never one the model agrees with (p >= 0.5). The
  estimate per source is written to `flags/rm_margin_estimate.parquet`.
Then `action`: `drop` removes them; `flag` keeps them and lists them in `flags/rm_margin.parquet`; `swap` keeps them
with chosen and rejected exchanged (a label fix; one that would then duplicate another live pair is removed; a pair
whose mirror is selected too is left as is and listed in `flags/rm_margin.parquet`, since swapping both changes
nothing).
The signal's name covers the scores file's content, so rescoring with another model gives another signal file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.errors import InputError
from curation.ops.base import FILE, Decision, Op
from curation.ops.context import BuildContext
from curation.schema import compute_pair_id
from curation.sql import read_parquet


@dataclass(frozen=True)
class RmMarginParams:
    scores: str = field(default="", metadata=FILE)  # the parquet `trainer score` or `trainer audit` wrote
    select: Literal["margin", "noise_rate"] = "margin"  # a fixed margin, or each source's estimated noise rate
    min_margin: float = -1.0  # with select: margin
    action: Literal["drop", "flag", "swap"] = "drop"
    # The guard: the build stops when a source would lose (drop) or have swapped (swap) more than this share of
    # its live pairs: a model that reverses that many more likely fails than the labels do (1.0: no guard).
    max_removal_rate: float = 0.3

    def check(self) -> None:
        if not self.scores:
            raise ValueError("scores: give the file `trainer score` or `trainer audit` wrote")
        if not 0 <= self.max_removal_rate <= 1:
            raise ValueError("max_removal_rate is a share: 0..1")
        if not Path(self.scores).exists():
            raise ValueError(f"scores: {self.scores} does not exist (run `trainer score` or `trainer audit` first)")
        read_scores(Path(self.scores))


AUDIT_METADATA = "rm_workbench.audit"  # `trainer audit`'s held-out verdict, in its scores file's metadata
SCORE_COLUMNS = {"pair_id": "text", "reward_chosen": "number", "reward_rejected": "number", "margin": "number"}


def read_scores(path: Path) -> pa.Table:
    """The columns of a scores file as `trainer score` and `trainer audit` write it, or ValueError: each column
    with its type, every pair id given and once, every margin finite or null (no score). Read by pyarrow, by exact
    path and column name: nothing in the file name (a glob, `key=value` folders) or another column's case changes
    what is read."""
    if not path.is_file():
        raise ValueError(f"scores: {path} is not a file")
    try:
        names = pq.read_schema(path).names
    except (OSError, pa.ArrowException) as exc:
        raise ValueError(f"scores: {path} is not a parquet file ({exc})") from None
    missing = [name for name in SCORE_COLUMNS if name not in names]
    if missing:
        raise ValueError(f"scores: {path} has no column {', '.join(missing)} (not a `trainer score` table)")
    try:  # `trainer score` writes pages with checksums: one damaged in place is an error, not wrong margins
        table = pq.read_table(path, columns=list(SCORE_COLUMNS), page_checksum_verification=True)
    except (OSError, pa.ArrowException) as exc:
        raise ValueError(f"scores: {path} cannot be read whole ({exc}); score again") from None
    kinds = {"text": (pa.types.is_string, pa.types.is_large_string), "number": (pa.types.is_floating,)}
    for name, kind in SCORE_COLUMNS.items():
        if not any(test(table.schema.field(name).type) for test in kinds[kind]):
            raise ValueError(f"scores: {path}: column {name} is {table.schema.field(name).type}, not {kind}")
    ids = table.column("pair_id")
    if ids.null_count:
        raise ValueError(f"scores: {path}: {ids.null_count} rows have no pair_id")
    if pc.count_distinct(ids).as_py() != len(ids):
        counts = pc.value_counts(ids)
        twice = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
        raise ValueError(f"scores: {path}: {len(twice)} pair ids appear more than once (e.g. {twice[0]})")
    bad = pc.sum(pc.invert(pc.is_finite(table.column("margin")))).as_py() or 0  # nulls are not counted
    if bad:
        raise ValueError(f"scores: {path}: {bad} margins are NaN or infinite (a margin is a number, or null)")
    return table.cast(pa.schema([(name, pa.string() if kind == "text" else pa.float64())
                                 for name, kind in SCORE_COLUMNS.items()]))  # fmt: skip


class RmMargin(Op):
    name = "rm_margin"
    Params = RmMarginParams
    thresholds = frozenset({"select", "min_margin", "action", "max_removal_rate"})
    reads: ClassVar[dict[str, tuple[str, ...]]] = {
        "live_pairs": ("row_key", "pair_id", "source", "source_row"),
        "pairs": ("row_key", "prompt", "images", "chosen", "rejected"),  # a swapped pair's new id
    }
    evidence: ClassVar[tuple[str, ...]] = ("flags/rm_margin.parquet", "flags/rm_margin_estimate.parquet")

    def scoring(self, params: Any) -> dict[str, Any]:
        from curation.io import sha256_file

        return {"scores_sha256": sha256_file(Path(params.scores))}

    def score(self, ctx: BuildContext, params: RmMarginParams, signals: Path) -> None:
        try:  # as the recipe was checked; the file may have changed since
            scores = read_scores(Path(params.scores))
        except ValueError as exc:
            raise InputError(f"rm_margin: {exc}") from None
        ctx.db.register("rm_margin_scores", scores)
        try:
            joined = """SELECT p.row_key, p.pair_id, s.reward_chosen, s.reward_rejected, s.margin
                        FROM live_pairs p LEFT JOIN rm_margin_scores s USING (pair_id)"""
            ((live, scored),) = ctx.rows(f"SELECT count(*), count(margin) FROM ({joined})")
            if live and not scored:
                raise InputError(
                    f"rm_margin: none of the {live} live pairs has a score in {params.scores} (scores of another "
                    "build?)"
                )
            ctx.copy(f"{joined} ORDER BY p.row_key", signals)
        finally:
            ctx.db.unregister("rm_margin_scores")

    def decide(self, ctx: BuildContext, params: RmMarginParams, signals: Path) -> Decision:
        decision = self._decide(ctx, params, signals)
        decision.warnings = _chance_warning(Path(params.scores)) + _coverage_warning(ctx, signals, params.scores)
        decision.max_removal_rate = params.max_removal_rate
        return decision

    def _decide(self, ctx: BuildContext, params: RmMarginParams, signals: Path) -> Decision:
        evidence = {}
        if params.select == "noise_rate":
            selected = _noise_rate_selection(signals)
            evidence["flags/rm_margin_estimate.parquet"] = _estimates(signals)
        else:
            selected = f"""SELECT row_key, margin, 'margin ' || round(margin, 4) || ' < ' || {params.min_margin}
                                  AS detail
                           FROM {read_parquet(signals)} SEMI JOIN live_pairs USING (row_key)
                           WHERE margin < {params.min_margin}"""
        if params.action == "flag":
            evidence["flags/rm_margin.parquet"] = f"""
                SELECT p.source, p.source_row, p.pair_id, s.margin, s.detail
                FROM live_pairs p JOIN ({selected}) s USING (row_key) ORDER BY p.row_key"""
            return Decision(
                evidence=evidence,
                flags=[f"SELECT row_key, 'reward model reverses' AS reason, detail FROM ({selected})"],
            )
        if params.action == "drop":
            return Decision(
                evidence=evidence,
                removals=[f"SELECT row_key, 'reward model reverses' AS reason, detail FROM ({selected})"],
            )
        # swap: each selected pair's id once swapped, to find the ones that would duplicate a live pair. The
        # selection is kept as a table, made before the removals: selecting again after them would count the live
        # pairs anew (another estimate, another threshold).
        rows = ctx.rows(
            f"""SELECT s.row_key, p.prompt, p.images, p.chosen, p.rejected
                FROM ({selected}) s JOIN pairs p USING (row_key) ORDER BY s.row_key"""
        )
        swapped_ids = pa.table(
            {
                "row_key": pa.array([r[0] for r in rows], pa.int64()),
                "swapped_pair_id": pa.array([compute_pair_id(r[1], r[2], r[4], r[3]) for r in rows], pa.string()),
            }
        )
        # A selected pair whose mirror (the same answers, the other way round) is selected too: the models reverse
        # both readings, so swapping both changes nothing; neither is swapped nor removed, and both are listed.
        mirrored = """SELECT s.row_key, min(m.source || ' ' || m.source_row) AS mirror
                      FROM rm_margin_selected s JOIN rm_margin_swaps w USING (row_key)
                      JOIN live_pairs m ON m.pair_id = w.swapped_pair_id SEMI JOIN rm_margin_selected o
                      ON o.row_key = m.row_key GROUP BY s.row_key"""
        chosen = """(SELECT s.*, w.swapped_pair_id FROM rm_margin_selected s JOIN rm_margin_swaps w USING (row_key)
                     ANTI JOIN rm_margin_mirrored USING (row_key))"""
        evidence["flags/rm_margin.parquet"] = """
            SELECT p.source, p.source_row, p.pair_id, s.margin,
                   'left as is: its mirror ' || m.mirror || ' is reversed too; ' || s.detail AS detail
            FROM live_pairs p JOIN rm_margin_selected s USING (row_key) JOIN rm_margin_mirrored m USING (row_key)
            ORDER BY p.row_key"""
        return Decision(
            relations=[
                ("rm_margin_selected", selected),
                ("rm_margin_swaps", swapped_ids),
                ("rm_margin_mirrored", mirrored),
            ],
            evidence=evidence,
            removals=[
                f"""SELECT s.row_key, 'duplicate once swapped' AS reason,
                           'swapped, it is ' || d.source || ' ' || d.source_row || '; ' || s.detail AS detail
                    FROM {chosen} s JOIN (SELECT DISTINCT ON (pair_id) pair_id, source, source_row FROM live_pairs
                                          ORDER BY pair_id, row_key) d ON d.pair_id = s.swapped_pair_id"""
            ],
            swaps=[
                f"""SELECT row_key, 'reward model reverses' AS reason, detail
                    FROM {chosen} s SEMI JOIN live_pairs USING (row_key)"""
            ],
            flags=[
                """SELECT s.row_key, 'left as is: its mirror is reversed too' AS reason, s.detail
                   FROM rm_margin_selected s SEMI JOIN rm_margin_mirrored USING (row_key)"""
            ],
        )


def _coverage_warning(ctx: BuildContext, signals: Path, scores: str) -> list[str]:
    """Said where some live pairs have no margin (not in the scores file, or not scorable there): they are kept
    as they are, judged by no model, whatever the threshold."""
    ((live, scored),) = ctx.rows(f"""SELECT count(*), count(margin) FROM {read_parquet(signals)}
                                     SEMI JOIN live_pairs USING (row_key)""")  # fmt: skip
    if scored == live:
        return []
    return [
        f"rm_margin: {scored} of {live} live pairs have a margin in {scores}; those without one ({live - scored}) "
        "are kept as they are, judged by no model (not in the file, or not scorable there)"
    ]


def _chance_warning(scores: Path) -> list[str]:
    """A warning when the scores come from a `trainer audit` whose models do not beat chance on held-out pairs
    (its verdict is in the file's metadata): the pairs they reverse are then no evidence of wrong labels."""
    metadata = pq.read_schema(scores).metadata or {}
    if AUDIT_METADATA.encode() not in metadata:
        return []  # `trainer score`'s file, or another tool's: no verdict to pass on
    try:
        verdict = json.loads(metadata[AUDIT_METADATA.encode()])["held_out"]
        if verdict["beats_chance"] is True:
            return []
        if verdict["pairs"] == 0:
            return [f"rm_margin: the audit behind {scores} had no held-out pairs: whether its models beat chance is "
                    "unknown"]  # fmt: skip
        low, high = verdict["interval_95"]
        measured = (
            f"accuracy {verdict['accuracy']:.3f}, {verdict['agreeing']} of {verdict['pairs']}; "
            f"95% interval {low:.3f}-{high:.3f}"
        )
    except (ValueError, KeyError, TypeError):
        return [f"rm_margin: the audit verdict in {scores}'s metadata is unreadable: whether its models beat chance "
                "is unknown"]  # fmt: skip
    return [
        f"rm_margin: the audit behind {scores} does not beat chance on held-out pairs ({measured}): the pairs it "
        "selects are no evidence of wrong labels"
    ]


def _scored(signals: Path) -> str:
    """SQL: the live pairs with a margin, with their source and the probability sigmoid(margin)."""
    return f"""SELECT s.row_key, p.source, s.margin, 1 / (1 + exp(-s.margin)) AS probability
               FROM {read_parquet(signals)} s JOIN live_pairs p USING (row_key)
               WHERE isfinite(s.margin)"""


def _estimates(signals: Path) -> str:
    """SQL: per source, the pairs scored, the threshold (mean probability), the confidently reversed and agreed
    pairs, the estimated noise rate and the pairs it selects."""
    return f"""WITH scored AS ({_scored(signals)}),
               threshold AS (SELECT source, avg(probability) AS confidence FROM scored GROUP BY source),
               counted AS (
                   SELECT source, count(*) AS pairs_scored, any_value(t.confidence) AS confidence,
                          count(*) FILTER (WHERE probability < 0.5 AND 1 - probability >= t.confidence) AS reversed,
                          count(*) FILTER (WHERE probability >= 0.5 AND probability >= t.confidence) AS agreed,
                          count(*) FILTER (WHERE probability < 0.5) AS below_half
                   FROM scored JOIN threshold t USING (source) GROUP BY source),
               rated AS (SELECT *, coalesce(reversed / nullif(reversed + agreed, 0), 0) AS rate FROM counted)
               SELECT * EXCLUDE (rate, below_half), round(rate, 6) AS estimated_noise_rate,
                      least(CAST(round(rate * pairs_scored) AS BIGINT), below_half) AS selected
               FROM rated ORDER BY source"""


def _noise_rate_selection(signals: Path) -> str:
    """SQL: per source, as many of the most reversed pairs (lowest margin first) as its estimate counts."""
    return f"""WITH scored AS ({_scored(signals)}),
               ranked AS (SELECT *, row_number() OVER (PARTITION BY source ORDER BY margin, row_key) AS rank
                          FROM scored)
               SELECT r.row_key, r.margin,
                      'probability ' || round(r.probability, 4) || ': among the ' || e.selected
                      || ' most reversed of ' || e.pairs_scored || ' (estimated noise rate '
                      || e.estimated_noise_rate || ')' AS detail
               FROM ranked r JOIN ({_estimates(signals)}) e USING (source) WHERE r.rank <= e.selected"""
