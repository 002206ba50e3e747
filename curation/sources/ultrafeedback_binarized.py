"""UltraFeedback binarized (H4, trl-lib and flattened copies): one pair per prompt, scores kept.

Three layouts are read: H4's message lists with `score_chosen`/`score_rejected`, trl-lib's message lists,
and flattened rows with string answers and scores under `metadata`. Scores give `margin`; equal scores
mark a tie (kept; a later stage decides). Local parquet of any of the three is converted in DuckDB
(`sql_layout`).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from curation.errors import RowError
from curation.pair import Pair
from curation.schema import IMAGE_TOKEN
from curation.sources.base import Adapter, RowContext, SourceInfo, SqlLayout
from curation.sources.common import (
    maybe_score,
    message_pair_sql,
    messages,
    score_sql,
    split_shared_prompt,
    user_prompt,
)


class UltrafeedbackBinarized(Adapter):
    info = SourceInfo(
        key="ultrafeedback_binarized",
        name="UltraFeedback binarized",
        kind="train",
        modality="text",
        hub_id="HuggingFaceH4/ultrafeedback_binarized",
        license="MIT",
        description="Best-rated vs a random other response of UltraFeedback (GPT-4 ratings), one pair per prompt.",
        default_split="train_prefs",
    )
    mapped_fields = frozenset({"prompt", "chosen", "rejected", "score_chosen", "score_rejected", "messages"})

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        chosen, rejected = row.get("chosen"), row.get("rejected")
        if chosen is None or rejected is None:
            raise RowError("missing field", f"'{'chosen' if chosen is None else 'rejected'}'")
        if isinstance(chosen, str) and isinstance(rejected, str):
            prompt_text = row.get("prompt")
            if not isinstance(prompt_text, str):
                raise RowError("missing field" if prompt_text is None else "wrong type", "'prompt'")
            prompt, chosen_text, rejected_text = user_prompt(prompt_text), chosen, rejected
        else:
            prompt, chosen_text, rejected_text = split_shared_prompt(
                messages(chosen, "chosen"), messages(rejected, "rejected")
            )
        scores = row.get("metadata") if isinstance(row.get("metadata"), dict) else row
        score_c = maybe_score(scores.get("score_chosen"), "score_chosen")
        score_r = maybe_score(scores.get("score_rejected"), "score_rejected")
        return [
            Pair(
                prompt=prompt,
                chosen=chosen_text,
                rejected=rejected_text,
                chosen_score=score_c,
                rejected_score=score_r,
                tie=score_c is not None and score_c == score_r,
                binarization="best_vs_random",
            )
        ]

    def meta(self, row: dict[str, Any]) -> dict[str, Any]:
        """The unmapped fields, and a top-level score that gives no number (an "N/A" in a JSON copy of H4's layout,
        or an integer too large for a float): it gives no margin, and the pair keeps what it was. A float never is
        kept (a NaN or infinity is no JSON), so the columnar path, which reads numeric scores only and takes a
        non-finite one as missing, spells the same `meta`."""
        meta = super().meta(row)
        for name in ("score_chosen", "score_rejected"):
            value = row.get(name)
            if value is not None and not isinstance(value, float) and maybe_score(value, name) is None:
                meta[name] = value
        return meta

    def sql_layout(self, schema: pa.Schema) -> SqlLayout | None:
        """The flattened layout (string `prompt`, `chosen`, `rejected`) and the message lists of H4 and trl-lib;
        numeric scores under a `metadata` struct, or beside the answers in rows without `metadata`, as `convert`
        reads them."""
        scores = _scores_sql(schema)
        if scores is None:
            return None
        chosen_score, rejected_score = scores
        columns = {
            "chosen_score": chosen_score,
            "rejected_score": rejected_score,
            "tie": f"coalesce(({chosen_score}) = ({rejected_score}), false)",
            "binarization": "'best_vs_random'",
        }
        if all(
            n in schema.names and pa.types.is_string(schema.field(n).type) for n in ("prompt", "chosen", "rejected")
        ):
            return SqlLayout(
                clean=f"prompt IS NOT NULL AND chosen IS NOT NULL AND rejected IS NOT NULL "
                f"AND NOT contains(prompt, '{IMAGE_TOKEN}')",  # `Pair.check`: no placeholder without an image
                prompt="[{'role': 'user', 'content': prompt}]",
                chosen="chosen",
                rejected="rejected",
                columns=columns,
                spells_meta=True,
            )
        split = message_pair_sql(schema)
        if split is None:
            return None
        return SqlLayout(split.clean, split.prompt, split.chosen, split.rejected, columns, spells_meta=True)


def _scores_sql(schema: pa.Schema) -> tuple[str, str] | None:
    metadata = schema.field("metadata").type if "metadata" in schema.names else None
    if metadata is not None and not pa.types.is_struct(metadata):
        return None
    scores = []
    for name in ("score_chosen", "score_rejected"):
        top = score_sql(name, schema.field(name).type if name in schema.names else None)
        if metadata is None:
            scores.append(top)
            continue
        nested = score_sql(f'"metadata".{name}', _child_type(metadata, name))
        if top is None or nested is None:
            return None
        scores.append(f'CASE WHEN "metadata" IS NOT NULL THEN {nested} ELSE {top} END')
    if scores[0] is None or scores[1] is None:
        return None
    return scores[0], scores[1]


def _child_type(struct: pa.DataType | None, name: str) -> pa.DataType | None:
    index = struct.get_field_index(name) if struct is not None else -1
    return struct.field(index).type if index >= 0 else None
