"""MM-RLHF-RewardBench (benchmark): flat chosen/rejected rows over an image or a video.

Each row names either an `image` (relative path, e.g. `mcq/073712.png`) or a `video` (a folder of frames,
`video/<id>`, read in name order as one video: `Pair(video=True)`, one placeholder per frame). `subset` and
`category` are the first of mcq, long, short, safety, video found in that path (the r1_reward `get_acc.py`
rule); a path with none of them gives category None. Pitfalls: 170 pairs share 46 ids (2-6 pairs each, ranked
lists where an answer is chosen in one pair and rejected in another), so Acc+ groups by `id`, kept in `meta`.
The Hub copy also has a parquet under `data/` whose declared features could not be read; the card reconstructs
them as the jsonl's string columns (`image`/`video` null where unused). An image given as a `{bytes, path}`
struct is accepted too and its `path` gives the category.
"""

from __future__ import annotations

from typing import Any

from curation.errors import RowError
from curation.pair import Pair
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import text_field, user_prompt, with_image_tokens

CATEGORY_KEYWORDS = ("mcq", "long", "short", "safety", "video")


def media_category(path: str) -> str | None:
    """The first category keyword contained in an image/video path (substring test, keyword order)."""
    return next((k for k in CATEGORY_KEYWORDS if k in path), None)


class MmRlhfRewardbench(Adapter):
    info = SourceInfo(
        key="mm_rlhf_rewardbench",
        name="MM-RLHF-RewardBench",
        kind="benchmark",
        modality="image+video",
        hub_id="yifanzhang114/MM-RLHF-RewardBench",
        license="not stated (unverified)",
        description="170 pairs over 46 prompts (mcq/long/short/safety image rows, video rows); Acc and Acc+.",
    )
    # `image` / `video` stay in meta: the path is the row's provenance (and the video's YouTube id).
    mapped_fields = frozenset({"prompt", "chosen", "rejected"})

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        image, video = row.get("image"), row.get("video")
        if image and video:
            raise RowError("ambiguous media", f"both 'image' ({_path(image)}) and 'video' ({video!r})")
        if video:
            if not isinstance(video, str):
                raise RowError("wrong type", f"'video': expected a frame folder path, got {type(video).__name__}")
            images, path = ctx.video_frames(video), video
        elif image:
            images, path = [ctx.image(image, "image")], _path(image)
        else:
            raise RowError("missing field", "'image' or 'video'")
        category = media_category(path)
        return [
            Pair(
                prompt=with_image_tokens(user_prompt(text_field(row, "prompt")), len(images)),
                chosen=text_field(row, "chosen"),
                rejected=text_field(row, "rejected"),
                images=images,
                video=bool(video),
                subset=category,
                category=category,
            )
        ]


def _path(image: Any) -> str:
    """The path of an image given as a relative path or a `{bytes, path}` struct ("" when it has none)."""
    if isinstance(image, dict):
        return str(image.get("path") or "")
    return image if isinstance(image, str) else ""
