"""filters: per-pair checks that RM builders re-implement by hand, as signals plus thresholds.

Signals: identical answers, tie, margin, lengths in characters (and in tokens of `tokenizer`, when one is
named), chosen/rejected length ratio, the first regex that matches an answer. Each threshold left unset
(None) keeps the check off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pyarrow as pa

from curation.ops.base import MODEL, Decision, Op
from curation.ops.context import BuildContext
from curation.sql import read_parquet


@dataclass(frozen=True)
class FiltersParams:
    drop_identical: bool = True  # chosen == rejected after normalization
    drop_ties: bool = True  # a plain Bradley-Terry loss has no term for ties
    min_margin: float | None = None  # pairs with a known margin below this are removed
    max_chars: int | None = None  # longest of prompt, chosen, rejected
    min_length_ratio: float | None = None  # len(chosen) / len(rejected)
    max_length_ratio: float | None = None
    regex: tuple[str, ...] = ()  # remove pairs whose chosen or rejected matches (RE2 syntax)
    # A Hugging Face tokenizer's name or local folder (the backbone's) to count tokens.
    tokenizer: str | None = field(default=None, metadata=MODEL)
    max_tokens: int | None = None  # longest of prompt, chosen, rejected, in tokens of `tokenizer`

    def check(self) -> None:
        if self.max_tokens is not None and self.tokenizer is None:
            raise ValueError("max_tokens needs a tokenizer (the name or path of the backbone's tokenizer)")
        import duckdb

        for pattern in self.regex:  # the build matches with DuckDB's RE2: compile each pattern there now
            try:
                duckdb.connect().execute("SELECT regexp_matches('', ?)", [pattern])
            except duckdb.Error as exc:
                raise ValueError(f"regex {pattern!r} is not a valid RE2 pattern ({exc})") from None


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def count_tokens(ctx: BuildContext, tokenizer_name: str) -> None:
    """Register `token_counts` (pair_id, longest_tokens): the longest of prompt, chosen, rejected in tokens."""
    from transformers import AutoTokenizer

    from curation.ops.semantic_dedupe import BUNDLED_MODEL, bundled_model_path

    path = bundled_model_path() if tokenizer_name == BUNDLED_MODEL else tokenizer_name
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    reader = ctx.db.sql(
        "SELECT DISTINCT ON (pair_id) pair_id, "
        "array_to_string(list_transform(prompt, lambda m: m.content), chr(10)) AS prompt, chosen, rejected "
        "FROM live_pairs ORDER BY pair_id"
    ).to_arrow_reader(batch_size=2048)
    ids, longest = [], []
    for batch in reader:
        counts = [
            [len(x) for x in tokenizer(batch.column(name).to_pylist(), add_special_tokens=False)["input_ids"]]
            for name in ("prompt", "chosen", "rejected")
        ]
        ids += batch.column("pair_id").to_pylist()
        longest += [max(c) for c in zip(*counts, strict=True)]
    ctx.db.register("token_counts", pa.table({"pair_id": ids, "longest_tokens": pa.array(longest, pa.int64())}))


class Filters(Op):
    name = "filters"
    Params = FiltersParams
    default_on = True
    thresholds = frozenset(
        {"drop_identical", "drop_ties", "min_margin", "max_chars", "min_length_ratio", "max_length_ratio", "max_tokens"}
    )
    reads: ClassVar[dict[str, tuple[str, ...]]] = {
        "live_pairs": ("row_key", "pair_id", "tie", "margin", "prompt", "chosen", "rejected")
    }
    uses = ("text_stats",)

    def score(self, ctx: BuildContext, params: FiltersParams, signals: Path) -> None:
        if params.tokenizer:
            count_tokens(ctx, params.tokenizer)
        tokens = "any_value(k.longest_tokens)" if params.tokenizer else "NULL"
        token_join = "LEFT JOIN token_counts k USING (pair_id)" if params.tokenizer else ""
        regex_hit = "NULL::VARCHAR"
        for pattern in reversed(params.regex):
            quoted = _quote(pattern)
            matches = f"regexp_matches(p.chosen, {quoted}) OR regexp_matches(p.rejected, {quoted})"
            regex_hit = f"CASE WHEN {matches} THEN {quoted} ELSE {regex_hit} END"
        ctx.copy(
            f"""SELECT pair_id, any_value(t.identical) AS identical, any_value(p.tie) AS tie,
                       any_value(p.margin) AS margin,
                       any_value(t.chosen_chars) AS chosen_chars, any_value(t.rejected_chars) AS rejected_chars,
                       any_value(t.prompt_chars) AS prompt_chars,
                       any_value(t.chosen_chars / greatest(t.rejected_chars, 1)) AS length_ratio,
                       any_value({regex_hit}) AS regex_hit, {tokens} AS longest_tokens
                FROM live_pairs p JOIN {ctx.text_stats()} t USING (row_key) {token_join}
                GROUP BY pair_id ORDER BY pair_id""",
            signals,
        )

    def decide(self, ctx: BuildContext, params: FiltersParams, signals: Path) -> Decision:
        longest = "greatest(s.chosen_chars, s.rejected_chars, s.prompt_chars)"
        rules = [
            (params.drop_identical, "s.identical", "chosen == rejected", "'identical answers'"),
            (params.drop_ties, "s.tie", "tie", "'tie'"),
            (params.min_margin is not None, f"s.margin < {params.min_margin}", "margin below minimum",
             "'margin ' || s.margin"),
            (params.max_chars is not None, f"{longest} > {params.max_chars}", "too long",
             f"'longest part ' || {longest} || ' chars'"),
            (params.min_length_ratio is not None, f"s.length_ratio < {params.min_length_ratio}", "length ratio",
             "'ratio ' || round(s.length_ratio, 3)"),
            (params.max_length_ratio is not None, f"s.length_ratio > {params.max_length_ratio}", "length ratio",
             "'ratio ' || round(s.length_ratio, 3)"),
            (bool(params.regex), "s.regex_hit IS NOT NULL", "regex match", "'pattern ' || s.regex_hit"),
            (params.max_tokens is not None, f"s.longest_tokens > {params.max_tokens}", "too many tokens",
             "'longest part ' || s.longest_tokens || ' tokens'"),
        ]  # fmt: skip
        active = [(cond, reason, detail) for on, cond, reason, detail in rules if on]
        if not active:
            return Decision()
        reason = "CASE " + " ".join(f"WHEN {c} THEN {_quote(r)}" for c, r, _ in active) + " END"
        detail = "CASE " + " ".join(f"WHEN {c} THEN {d}" for c, _, d in active) + " END"
        where = " OR ".join(f"coalesce({c}, false)" for c, _, _ in active)
        return Decision(
            removals=[
                f"""SELECT p.row_key, {reason} AS reason, {detail} AS detail
                    FROM live_pairs p JOIN {read_parquet(signals)} s USING (pair_id) WHERE {where}"""
            ]
        )
