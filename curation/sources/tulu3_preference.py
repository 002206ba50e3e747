"""Tulu-3 preference mixtures (AllenAI): chosen/rejected message lists, optional ratings and model names.

The prompt is the turns both lists share before their final assistant answer (`split_shared_prompt`); the
`prompt` string column repeats the first user turn. `source` (the mixture's subset) becomes `subset`.
Where `chosen_rating`/`rejected_rating` are present they become the scores (margin = their difference,
equal = tie) and the pair is marked `best_vs_random`, the Tulu-3 synthetic pipeline's policy (highest mean
rating vs a random other response); a rating that is present but does not parse rejects the row.
Pitfalls: whether the IF-augmented and wildchat-UltraFeedback sets carry the rating and model columns is
unverified, so they are optional; the full mixture already contains UltraFeedback and WildChat subsets
(dedupe by prompt_id against UltraFeedback and OLMo-2 mixes). Local parquet with `{role, content}` turns and
numeric ratings is converted in DuckDB (`sql_layout`).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from curation.pair import Pair
from curation.sources.base import Adapter, RowContext, SourceInfo, SqlLayout
from curation.sources.common import field, message_pair_sql, messages, parse_score, split_shared_prompt
from curation.sql import quote_identifier


def optional_score(row: dict[str, Any], name: str) -> float | None:
    """An absent rating is None; a present one must parse (a garbled rating is a broken row, not a missing one)."""
    value = row.get(name)
    return None if value is None else parse_score(value, name)


class Tulu3Preference(Adapter):
    info = SourceInfo(
        key="tulu3_preference",
        name="Tulu-3 preference mixtures",
        kind="train",
        modality="text",
        hub_id="allenai/tulu-3-IF-augmented-on-policy-70b",
        license="ODC-BY-1.0",
        description="AllenAI Tulu-3 preference sets (IF-augmented on-policy by default; full and WildChat-UF mixes).",
    )
    mapped_fields = frozenset(
        {"prompt", "chosen", "rejected", "source", "chosen_rating", "rejected_rating", "chosen_model", "rejected_model"}
    )

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        prompt, chosen, rejected = split_shared_prompt(
            messages(row.get("chosen"), "chosen"), messages(row.get("rejected"), "rejected")
        )
        score_c, score_r = optional_score(row, "chosen_rating"), optional_score(row, "rejected_rating")
        rated = score_c is not None and score_r is not None
        return [
            Pair(
                prompt=prompt,
                chosen=chosen,
                rejected=rejected,
                subset=field(row, "source", optional=True),
                chosen_score=score_c,
                rejected_score=score_r,
                tie=rated and score_c == score_r,
                chosen_model=field(row, "chosen_model", optional=True),
                rejected_model=field(row, "rejected_model", optional=True),
                binarization="best_vs_random" if rated else None,
            )
        ]

    def sql_layout(self, schema: pa.Schema) -> SqlLayout | None:
        """`{role, content}` message lists, numeric ratings and string `source` and model names (each may be
        absent); a rating that is not finite is a reject, left to `convert`."""
        split = message_pair_sql(schema)
        if split is None:
            return None
        values, clean = {}, [split.clean]
        for name in ("chosen_rating", "rejected_rating", "source", "chosen_model", "rejected_model"):
            kind = schema.field(name).type if name in schema.names else pa.null()
            column = quote_identifier(name)
            if pa.types.is_null(kind):
                values[name] = "NULL"
            elif name.endswith("_rating") and (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
                values[name] = f"CAST({column} AS DOUBLE)"
                clean.append(f"({column} IS NULL OR isfinite(CAST({column} AS DOUBLE)))")
            elif not name.endswith("_rating") and pa.types.is_string(kind):
                values[name] = column
            else:
                return None  # ratings as strings are parsed by Python's float()
        chosen_score, rejected_score = values["chosen_rating"], values["rejected_rating"]
        rated = f"({chosen_score}) IS NOT NULL AND ({rejected_score}) IS NOT NULL"
        return SqlLayout(
            clean=" AND ".join(clean),
            prompt=split.prompt,
            chosen=split.chosen,
            rejected=split.rejected,
            columns={
                "subset": values["source"],
                "chosen_score": chosen_score,
                "rejected_score": rejected_score,
                "tie": f"coalesce({rated} AND ({chosen_score}) = ({rejected_score}), false)",
                "chosen_model": values["chosen_model"],
                "rejected_model": values["rejected_model"],
                "binarization": f"CASE WHEN {rated} THEN 'best_vs_random' END",
            },
        )
