"""OmniAlign-V-DPO: six task jsonl files of flat rows (`image`, `prompt`, `chosen`, `rejected`).

chosen = the curated OmniAlign-V SFT answer, rejected = a rejection-sampled answer of LLaVANext-OA-InternLM-7B.
The task file (knowledge, ins_follow, creation, chart, diagram, poster) is the row's `subset` and `category`,
taken from the record ref (`knowledge.jsonl:3`); rows from any other file have none: the Hub serves the six
files as one `train` split (`train:3`), and a parquet or Arrow copy names its shards, not the task. `image` is a
path relative to the task root inside `images.tar` (a string; a list for several images, as the authors' DPO
loader accepts), resolved under `--images-root`; option `by_basename` finds files whose folder layout differs.
No ties or scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from curation.errors import RowError
from curation.pair import Pair
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import field, file_stem, ref_file, text_field, user_prompt, with_image_tokens

TASKS = ("knowledge", "ins_follow", "creation", "chart", "diagram", "poster")


def task_of(ref: str) -> str | None:
    """The task of a `file:line` ref naming one of the six task files ("chart/chart.jsonl:3" -> "chart"); None for
    Hub refs (`train:3`) and for other files (a parquet shard's stem is no task)."""
    stem = file_stem(ref_file(ref))
    return stem if stem in TASKS else None


class OmnialignVDpo(Adapter):
    info = SourceInfo(
        key="omnialign_v_dpo",
        name="OmniAlign-V-DPO",
        kind="train",
        modality="image",
        hub_id="PhoenixZ/OmniAlign-V-DPO",
        license="unknown",
        description="Curated SFT answer vs rejection-sampled answer over six open-ended image task files.",
    )
    mapped_fields = frozenset({"image", "prompt", "chosen", "rejected"})

    @dataclass(frozen=True)
    class Options:
        by_basename: bool = False  # find images by unique file name when the archive layout differs

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        prompt, chosen, rejected = text_field(row, "prompt"), text_field(row, "chosen"), text_field(row, "rejected")
        value = field(row, "image", (str, list, dict, bytes))
        values = value if isinstance(value, list) else [value]
        if not values:
            raise RowError("missing field", "'image': empty list")
        images = [
            ctx.image(v, f"image[{i}]" if isinstance(value, list) else "image", by_basename=self.options.by_basename)
            for i, v in enumerate(values)
        ]
        task = task_of(ctx.ref)
        return [
            Pair(
                prompt=with_image_tokens(user_prompt(prompt), len(images)),
                chosen=chosen,
                rejected=rejected,
                images=images,
                subset=task,
                category=task,
            )
        ]
