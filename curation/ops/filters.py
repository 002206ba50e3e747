"""filters: per-pair checks that RM builders re-implement by hand, as signals plus thresholds.

Signals: identical answers, tie, margin, lengths in characters (and in tokens of `tokenizer`, when one is
named, with the part that is longest), chosen/rejected length ratio, the first regex that matches an answer
and which answers it matches. Each threshold left unset (None) keeps the check off. A removal's detail names the
field that decided (`chosen 20447 chars`, `pattern ... in rejected`, `tie: chosen_score 7.0 = rejected_score 7.0`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pyarrow as pa

from curation.ops.base import MODEL, Decision, Op
from curation.ops.context import BuildContext
from curation.pair import MARGIN_SLACK
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
        # bounds that no pair can meet remove every pair: a mistake, said before the build starts
        for name in ("max_chars", "max_tokens"):
            if (value := getattr(self, name)) is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (or null: no bound)")
        for name in ("min_length_ratio", "max_length_ratio"):
            if (value := getattr(self, name)) is not None and value <= 0:
                raise ValueError(f"{name} must be above 0 (a ratio of lengths; or null: no bound)")
        low, high = self.min_length_ratio, self.max_length_ratio
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_length_ratio {low:g} is above max_length_ratio {high:g}: no pair is within both")
        if "" in self.regex:
            raise ValueError("regex: an empty pattern matches every answer")
        import duckdb

        for pattern in self.regex:  # the build matches with DuckDB's RE2: compile each pattern there now
            try:
                duckdb.connect().execute("SELECT regexp_matches('', ?)", [pattern])
            except duckdb.Error as exc:
                raise ValueError(f"regex {pattern!r} is not a valid RE2 pattern ({exc})") from None


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


PARTS = ("prompt", "chosen", "rejected")


def count_tokens(ctx: BuildContext, tokenizer_name: str) -> None:
    """Register `token_counts` (pair_id, longest_tokens, longest_part): the longest of prompt, chosen, rejected in
    tokens, and which it is."""
    from transformers import AutoTokenizer

    from curation.ops.semantic_dedupe import BUNDLED_MODEL, bundled_model_path

    path = bundled_model_path() if tokenizer_name == BUNDLED_MODEL else tokenizer_name
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    reader = ctx.db.sql(
        "SELECT DISTINCT ON (pair_id) pair_id, "
        "array_to_string(list_transform(prompt, lambda m: m.content), chr(10)) AS prompt, chosen, rejected "
        "FROM live_pairs ORDER BY pair_id"
    ).to_arrow_reader(batch_size=2048)
    ids, longest, part = [], [], []
    for batch in reader:
        counts = [
            [len(x) for x in tokenizer(batch.column(name).to_pylist(), add_special_tokens=False)["input_ids"]]
            for name in PARTS
        ]
        ids += batch.column("pair_id").to_pylist()
        for pair_counts in zip(*counts, strict=True):
            longest.append(max(pair_counts))
            part.append(PARTS[pair_counts.index(longest[-1])])  # the first of equals, in PARTS order
    columns = {"pair_id": ids, "longest_tokens": pa.array(longest, pa.int64()), "longest_part": part}
    ctx.db.register("token_counts", pa.table(columns))


class Filters(Op):
    name = "filters"
    Params = FiltersParams
    default_on = True
    thresholds = frozenset(
        {"drop_identical", "drop_ties", "min_margin", "max_chars", "min_length_ratio", "max_length_ratio", "max_tokens"}
    )
    # v2: which answers a regex matched, the part longest in tokens, the scores of a tie; v3: answers alike but for
    # spacing are identical
    version = 3
    reads: ClassVar[dict[str, tuple[str, ...]]] = {
        "live_pairs": (
            "row_key", "pair_id", "tie", "margin", "chosen_score", "rejected_score", "prompt", "chosen", "rejected"
        )
    }  # fmt: skip
    uses = ("text_stats",)

    def score(self, ctx: BuildContext, params: FiltersParams, signals: Path) -> None:
        if params.tokenizer:
            count_tokens(ctx, params.tokenizer)
        tokens = "any_value(k.longest_tokens)" if params.tokenizer else "NULL::BIGINT"
        token_part = "any_value(k.longest_part)" if params.tokenizer else "NULL::VARCHAR"
        token_join = "LEFT JOIN token_counts k USING (pair_id)" if params.tokenizer else ""
        # The first pattern that matches an answer, and the answers it matches: each pattern is matched against
        # each answer once (`__c<k>`, `__r<k>`), the two CASEs read those.
        regex_hit, regex_in, matched = "NULL::VARCHAR", "NULL::VARCHAR", ""
        for k, pattern in reversed(list(enumerate(params.regex))):
            quoted, chosen, rejected = _quote(pattern), f"p.__c{k}", f"p.__r{k}"
            matched = (
                f", regexp_matches(chosen, {quoted}) AS __c{k}, regexp_matches(rejected, {quoted}) AS __r{k}" + matched
            )
            regex_hit = f"CASE WHEN {chosen} OR {rejected} THEN {quoted} ELSE {regex_hit} END"
            answers = f"CASE WHEN NOT {rejected} THEN 'chosen' WHEN NOT {chosen} THEN 'rejected' ELSE 'both' END"
            regex_in = f"CASE WHEN {chosen} OR {rejected} THEN {answers} ELSE {regex_in} END"
        ctx.copy(
            f"""SELECT pair_id, any_value(t.identical) AS identical, any_value(p.tie) AS tie,
                       any_value(p.margin) AS margin, any_value(p.chosen_score) AS chosen_score,
                       any_value(p.rejected_score) AS rejected_score,
                       any_value(t.chosen_chars) AS chosen_chars, any_value(t.rejected_chars) AS rejected_chars,
                       any_value(t.prompt_chars) AS prompt_chars,
                       any_value(t.chosen_chars / greatest(t.rejected_chars, 1)) AS length_ratio,
                       any_value({regex_hit}) AS regex_hit, any_value({regex_in}) AS regex_in,
                       {tokens} AS longest_tokens, {token_part} AS longest_tokens_part
                FROM (SELECT *{matched} FROM live_pairs) p JOIN {ctx.text_stats()} t USING (row_key) {token_join}
                GROUP BY pair_id ORDER BY pair_id""",
            signals,
        )

    def decide(self, ctx: BuildContext, params: FiltersParams, signals: Path) -> Decision:
        longest = "greatest(s.chosen_chars, s.rejected_chars, s.prompt_chars)"
        # the longest part named, the first of equals in prompt, chosen, rejected order
        longest_part = (f"CASE {longest} WHEN s.prompt_chars THEN 'prompt' WHEN s.chosen_chars THEN 'chosen' "
                        "ELSE 'rejected' END")  # fmt: skip
        scores = ("coalesce(': chosen_score ' || s.chosen_score || ' = rejected_score ' || s.rejected_score, "
                  "' (marked by the source)')")  # fmt: skip
        ratio = "'chosen ' || s.chosen_chars || ' / rejected ' || s.rejected_chars || ' chars = '"
        rules = [
            (params.drop_identical, "s.identical", "chosen == rejected", "'identical answers'"),
            (params.drop_ties, "s.tie", "tie", f"'tie' || {scores}"),
            (params.min_margin is not None, f"s.margin < {params.min_margin} - {MARGIN_SLACK}", "margin below minimum",
             f"'margin ' || round(s.margin, 9) || ' < min_margin {params.min_margin}'"),
            (params.max_chars is not None, f"{longest} > {params.max_chars}", "too long",
             f"{longest_part} || ' ' || {longest} || ' chars > max_chars {params.max_chars}'"),
            (params.min_length_ratio is not None, f"s.length_ratio < {params.min_length_ratio}", "length ratio",
             f"{ratio} || round(s.length_ratio, 3) || ' < min_length_ratio {params.min_length_ratio}'"),
            (params.max_length_ratio is not None, f"s.length_ratio > {params.max_length_ratio}", "length ratio",
             f"{ratio} || round(s.length_ratio, 3) || ' > max_length_ratio {params.max_length_ratio}'"),
            (bool(params.regex), "s.regex_hit IS NOT NULL", "regex match",
             "'pattern ' || s.regex_hit || ' in ' || CASE s.regex_in WHEN 'both' THEN 'chosen and rejected' "
             "ELSE s.regex_in END"),
            (params.max_tokens is not None, f"s.longest_tokens > {params.max_tokens}", "too many tokens",
             f"s.longest_tokens_part || ' ' || s.longest_tokens || ' tokens > max_tokens {params.max_tokens}'"),
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
