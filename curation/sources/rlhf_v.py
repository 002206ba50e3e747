"""RLHF-V: the pair is a JSON document inside the `text` column; the image is embedded.

`json.loads(text)` gives `{question, chosen, rejected}`: `chosen` is a human segment-level correction of
`rejected`, so the two differ by a few words. `origin_dataset` becomes `subset`; `origin_split` (encoded
metadata) is kept in `meta`, parsed when it is JSON. Keys of `text` beyond the three are kept in `meta` as
`text_extra`. Rows without embedded bytes fall back to `image_path` under `--images-root` (by basename).
No ties or scores.
"""

from __future__ import annotations

from typing import Any

from curation.errors import RowError
from curation.pair import Pair
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import (
    field,
    load_json_field,
    parsed_json_or_text,
    text_field,
    user_prompt,
    with_image_tokens,
)

PAIR_KEYS = ("question", "chosen", "rejected")


def _text_document(row: dict[str, Any]) -> dict[str, Any]:
    document = load_json_field(row, "text")
    if not isinstance(document, dict):
        raise RowError("wrong type", f"'text': expected a JSON object, got {type(document).__name__}")
    return document


def _document_text(document: dict[str, Any], key: str) -> str:
    try:
        return text_field(document, key)
    except RowError as exc:
        raise RowError(exc.reason, f"'text' JSON: {exc.detail}") from None


class RlhfV(Adapter):
    info = SourceInfo(
        key="rlhf_v",
        name="RLHF-V",
        kind="train",
        modality="image",
        hub_id="openbmb/RLHF-V-Dataset",
        license="CC-BY-NC-4.0",
        description="Human segment-level corrections of hallucinated MLLM answers; pair serialized in `text`.",
    )
    mapped_fields = frozenset({"text", "image", "origin_dataset"})

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        document = _text_document(row)
        question, chosen, rejected = (_document_text(document, key) for key in PAIR_KEYS)
        # Without embedded bytes, the struct's `path` or `image_path` names a file from the authors' machine.
        name = "image" if row.get("image") is not None else "image_path"
        image = ctx.image(row.get(name), name, by_basename=True)
        return [
            Pair(
                prompt=with_image_tokens(user_prompt(question), 1),
                chosen=chosen,
                rejected=rejected,
                images=[image],
                subset=field(row, "origin_dataset", optional=True),
            )
        ]

    def meta(self, row: dict[str, Any]) -> dict[str, Any]:
        meta = super().meta(row)
        if "origin_split" in meta:
            meta["origin_split"] = parsed_json_or_text(meta["origin_split"])
        # Called after `convert` succeeded, so `text` parses.
        extra = {k: v for k, v in _text_document(row).items() if k not in PAIR_KEYS}
        if extra:
            meta["text_extra"] = extra
        return meta
