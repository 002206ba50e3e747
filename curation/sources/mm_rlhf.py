"""MM-RLHF `dpo_pairs.jsonl`: flat pairs over an image or a video given as a folder of frames.

Each row has `image` (relative, e.g. `mcq/073712.png`) or `video` (a frame folder, e.g. `video/<id>`), both
under `--images-root` (the unzipped category archives). The first path component (mcq, long, short,
safety, video) is the `category`. A video becomes its frames in name order with one `<image>` placeholder
per frame and `modality` video. Several pairs share one `id` (ranked responses split into pairs).
`chosen_reason`/`rejected_reason` (present in the RewardBench copy, assumed here) stay in `meta`.
The ranked `data.jsonl` has unverified keys and is not read: its rows are rejected as an unsupported layout.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from curation.errors import RowError
from curation.pair import Pair
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import field, text_field, user_prompt, with_image_tokens


class MmRlhf(Adapter):
    info = SourceInfo(
        key="mm_rlhf",
        name="MM-RLHF",
        kind="train",
        modality="image+video",
        hub_id="yifanzhang114/MM-RLHF",
        license="unknown",
        description="Human-ranked MLLM responses over images and videos, as ready pairs (dpo_pairs.jsonl).",
        hub_file="dpo_pairs.jsonl",  # the repository's default config is other data (data/*.parquet)
    )
    mapped_fields = frozenset({"image", "video", "prompt", "chosen", "rejected"})

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        if "chosen" not in row and "rejected" not in row:
            raise RowError("unsupported layout", "no 'chosen'/'rejected': only dpo_pairs.jsonl rows are read")
        chosen, rejected = text_field(row, "chosen"), text_field(row, "rejected")
        video = field(row, "video", str, optional=True)
        if video:
            images, media = ctx.video_frames(video), video
        else:
            media = field(row, "image", str)
            images = [ctx.image_path(media, field="image")]
        category = next(p for p in PurePosixPath(media.replace("\\", "/")).parts if p != "/")
        return [
            Pair(
                prompt=with_image_tokens(user_prompt(text_field(row, "prompt")), len(images)),
                chosen=chosen,
                rejected=rejected,
                images=images,
                video=bool(video),
                category=category,
            )
        ]
