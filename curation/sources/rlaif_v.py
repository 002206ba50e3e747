"""RLAIF-V: one image, one question, a chosen and a rejected answer per row (three layouts).

- Hub parquet (`openbmb/RLAIF-V-Dataset`): `question`, `chosen`, `rejected`, `image` as `{bytes, path}`;
  `origin_dataset` becomes `subset`. `origin_split` is metadata serialized as a string: `meta` keeps it parsed
  when it is JSON and as the raw string otherwise. When it parses to an object with a `model` key, that model
  is taken as the generator of both answers (RLAIF-V samples both from one generator, as
  `data_cards/rlaif_v.md` records; that this key names it is unverified).
- Pair-construction pipeline output (jsonl with `image_id`, `org_infos`): `image_path` is an absolute path from
  the authors' machine, so the image is found by basename under `--images-root`. Scores are strings of floats
  under `org_infos.scores.{chosen,rejected}.score`; the pipeline pairs every two answers whose score gap reaches
  a threshold (policy `all_pairs`). An unparsable score leaves the pair without scores (it is kept in `meta`).
- `trl-lib/rlaif-v`: `prompt`/`chosen`/`rejected` message lists with OpenAI-style image parts, `images` list.

No ties in the released set; a pipeline row with equal scores is kept as a tie. Local parquet of the released
layout with embedded image bytes is converted in DuckDB (`sql_layout`), its images checked in Python.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from curation.pair import Pair
from curation.schema import IMAGE_TOKEN
from curation.sources.base import Adapter, RowContext, SourceInfo, SqlLayout
from curation.sources.common import (
    field,
    final_answer,
    json_object_sql,
    maybe_score,
    messages,
    parsed_json_or_text,
    text_field,
    user_prompt,
    with_image_tokens,
)


def _pipeline_score(row: dict[str, Any], side: str) -> float | None:
    """`org_infos.scores.<side>.score` (a string of a float); None when absent or unparsable."""
    node: Any = row
    for key in ("org_infos", "scores", side, "score"):
        node = node.get(key) if isinstance(node, dict) else None
    return maybe_score(node, f"org_infos.scores.{side}.score")


class RlaifV(Adapter):
    info = SourceInfo(
        key="rlaif_v",
        name="RLAIF-V",
        kind="train",
        modality="image",
        hub_id="openbmb/RLAIF-V-Dataset",
        license="CC-BY-NC-4.0",
        description="Open-source-MLLM AI feedback on de-confounded answers: one image, chosen vs rejected answer.",
    )
    mapped_fields = frozenset({"question", "chosen", "rejected", "image", "origin_dataset", "prompt", "images"})

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        if isinstance(row.get("chosen"), list):
            return [self._conversational(row, ctx)]
        if "org_infos" in row or "image_id" in row:
            return [self._pipeline(row, ctx)]
        return [self._released(row, ctx)]

    def meta(self, row: dict[str, Any]) -> dict[str, Any]:
        meta = super().meta(row)
        if "origin_split" in meta:
            meta["origin_split"] = parsed_json_or_text(meta["origin_split"])
        return meta

    def sql_layout(self, schema: pa.Schema) -> SqlLayout | None:
        """The released layout: string `question`, `chosen`, `rejected`, the image as `{bytes, path}`, and
        `origin_split` (when present) a flat JSON object of strings, as `_released` and `meta` read them."""
        strings = ("question", "chosen", "rejected", "origin_dataset", "origin_split")
        if any(n in schema.names and not pa.types.is_string(schema.field(n).type) for n in strings):
            return None
        image = schema.field("image").type if "image" in schema.names else None
        if (
            any(n not in schema.names for n in ("question", "chosen", "rejected"))
            or any(n in schema.names for n in ("org_infos", "image_id"))  # `convert` reads those as the pipeline's
            or image is None
            or not pa.types.is_struct(image)
            or image.get_field_index("bytes") < 0
            or not pa.types.is_binary(image.field(image.get_field_index("bytes")).type)
        ):
            return None
        # The model is read from `origin_split` where its `meta` spelling is exact, which every clean row needs.
        model, meta_fields = "NULL", {}
        if "origin_split" in schema.names:
            origin = json_object_sql("origin_split")
            model, meta_fields = origin.key("model"), {"origin_split": (origin.spelled, origin.exact)}
        return SqlLayout(
            clean=f"question IS NOT NULL AND chosen IS NOT NULL AND rejected IS NOT NULL "
            f"AND NOT contains(question, '{IMAGE_TOKEN}')",  # else `with_image_tokens` decides
            prompt=f"[{{'role': 'user', 'content': '{IMAGE_TOKEN}' || chr(10) || question}}]",
            chosen="chosen",
            rejected="rejected",
            columns={
                "subset": "origin_dataset" if "origin_dataset" in schema.names else "NULL",
                "chosen_model": model,
                "rejected_model": model,
            },
            image='"image".bytes',
            meta_fields=meta_fields,
            spells_meta=True,  # `meta` rewrites only `origin_split`
        )

    def _released(self, row: dict[str, Any], ctx: RowContext) -> Pair:
        question, chosen, rejected = text_field(row, "question"), text_field(row, "chosen"), text_field(row, "rejected")
        # Without embedded bytes, the struct's `path` or `image_path` names a file from the authors' machine.
        name = "image_path" if row.get("image") is None and row.get("image_path") is not None else "image"
        image = ctx.image(row.get(name), name, by_basename=True)
        origin = parsed_json_or_text(row.get("origin_split"))
        model = origin.get("model") if isinstance(origin, dict) and isinstance(origin.get("model"), str) else None
        return Pair(
            prompt=with_image_tokens(user_prompt(question), 1),
            chosen=chosen,
            rejected=rejected,
            images=[image],
            subset=field(row, "origin_dataset", optional=True),
            chosen_model=model,
            rejected_model=model,
        )

    def _pipeline(self, row: dict[str, Any], ctx: RowContext) -> Pair:
        question, chosen, rejected = text_field(row, "question"), text_field(row, "chosen"), text_field(row, "rejected")
        name = "image_path" if row.get("image_path") else "image_id"
        image = ctx.image(row.get(name), name, by_basename=True)
        score_c, score_r = _pipeline_score(row, "chosen"), _pipeline_score(row, "rejected")
        return Pair(
            prompt=with_image_tokens(user_prompt(question), 1),
            chosen=chosen,
            rejected=rejected,
            images=[image],
            chosen_score=score_c,
            rejected_score=score_r,
            tie=score_c is not None and score_c == score_r,
            binarization="all_pairs",
        )

    def _conversational(self, row: dict[str, Any], ctx: RowContext) -> Pair:
        prompt = messages(row.get("prompt"), "prompt")
        images = [ctx.image(value, f"images[{i}]") for i, value in enumerate(field(row, "images", list))]
        _, chosen = final_answer(messages(row["chosen"], "chosen"), "chosen")
        _, rejected = final_answer(messages(field(row, "rejected", list), "rejected"), "rejected")
        return Pair(prompt=with_image_tokens(prompt, len(images)), chosen=chosen, rejected=rejected, images=images)
