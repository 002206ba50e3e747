"""MMPR (InternVL MPO data): a `meta.json` index of subsets, each an annotation jsonl of flat pairs.

`meta.json` maps a subset name to `{root, annotation, data_augment, repeat_time, length}`. Given the
folder that holds `meta.json` (or the file itself), subsets are read in sorted name order; `annotation`
is resolved relative to `meta.json`'s folder (absolute paths are kept). A row's `image` (one relative
path, a list for multi-image, absent for text-only) lives at `root/image`, read under `--images-root` when
one is given, else under `meta.json`'s folder. `subset` is the subset name.

`repeat_time` < 1 subsamples: a row is kept iff a hash of its content falls below `repeat_time`
(deterministic, about that fraction; InternVL itself draws a random sample), and skipped rows are
rejected as "subsampled by repeat_time". `repeat_time` > 1 is not duplicated here (mixing is the build's
job); it is recorded in `meta`. A plain annotation jsonl (no `meta.json`) is read as is, with images
relative to `--images-root` and the file name as `subset`. No ties or scores: labels are correctness-based
on the reasoning subsets, and rejected answers of open-ended subsets were generated without the image.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from curation.errors import InputError, RowError
from curation.images import ImagesRoot
from curation.pair import Pair
from curation.readers import SUPPORTED_SUFFIXES, Record, iter_file_isolated
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import field, text_field, user_prompt, with_image_tokens

META_FILE = "meta.json"
# The subset a row came from travels with the row (records may be converted in other processes).
SUBSET_KEY = "_mmpr_subset"


@dataclass(frozen=True)
class Subset:
    name: str
    root: str
    repeat_time: float
    folder: str | None  # meta.json's folder: where `root/image` is read when no --images-root is given


def keep_fraction(row: dict[str, Any], fraction: float) -> bool:
    """Deterministic subsampling: the row's content hash, as a number in [0, 1), below `fraction`."""
    digest = hashlib.blake2b(json.dumps(row, sort_keys=True, ensure_ascii=False).encode("utf-8"), digest_size=8)
    return int.from_bytes(digest.digest(), "big") / 2**64 < fraction


def file_stem(file_ref: str) -> str:
    """The subset of a plain annotation file: its name without the reader suffix."""
    name = PurePosixPath(file_ref).name
    return next((name[: -len(s)] for s in SUPPORTED_SUFFIXES if name.endswith(s)), name)


def meta_path(location: str) -> Path | None:
    path = Path(location)
    if path.is_file() and path.name == META_FILE:
        return path
    if path.is_dir() and (path / META_FILE).is_file():
        return path / META_FILE
    return None


def load_meta(path: Path) -> dict[str, dict[str, Any]]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or not all(isinstance(v, dict) for v in meta.values()):
        raise InputError(f"{path}: expected an object of subsets {{name: {{root, annotation, ...}}}}")
    for name, spec in meta.items():
        if not isinstance(spec.get("annotation"), str):
            raise InputError(f"{path}: subset {name!r} has no 'annotation' path")
        try:
            repeat = float(spec.get("repeat_time", 1))
        except (TypeError, ValueError, OverflowError):
            repeat = math.nan
        if not 0 < repeat < math.inf:
            raise InputError(f"{path}: subset {name!r}: repeat_time {spec['repeat_time']!r} is not a number > 0")
    return meta


class Mmpr(Adapter):
    info = SourceInfo(
        key="mmpr",
        name="MMPR (InternVL MPO preference data)",
        kind="train",
        modality="image+multi_image+text",
        hub_id="OpenGVLab/MMPR-v1.2",
        license="MIT",
        description="InternVL's mixed preference data: correctness-based and DropoutNTP pairs over many subsets.",
    )
    mapped_fields = frozenset({"image", "question", "chosen", "rejected", SUBSET_KEY})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._folders: dict[str, ImagesRoot] = {}  # opened lazily, in whichever process converts

    def records(self, location: str, images_root: ImagesRoot) -> Iterator[Record]:
        meta_file = meta_path(location)
        if meta_file is None:
            yield from super().records(location, images_root)
            return
        folder = meta_file.parent
        fallback = None if images_root.root is not None else str(folder)
        for name, spec in sorted(load_meta(meta_file).items()):
            annotation = folder / spec["annotation"]
            repeat_time = float(spec.get("repeat_time", 1))
            subset = Subset(name, str(spec.get("root") or ""), repeat_time, fallback)
            # One subset's missing or empty annotation file is one reject; the other subsets are read.
            for record in iter_file_isolated(annotation, f"{name}/{annotation.name}"):
                if record.data is not None and repeat_time < 1 and not keep_fraction(record.data, repeat_time):
                    reason = RowError("subsampled by repeat_time", f"{record.ref}: repeat_time {repeat_time:g}")
                    yield Record(record.ref, None, reason)
                elif record.data is not None:
                    yield Record(record.ref, {**record.data, SUBSET_KEY: subset})
                else:
                    yield record

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        file_ref = ctx.ref.rpartition(":")[0]
        subset: Subset | None = row.get(SUBSET_KEY)
        value = field(row, "image", (str, list), optional=True)
        paths = ([value] if value else []) if isinstance(value, str) else list(value or [])  # "" or []: text-only
        images = []
        for i, rel in enumerate(paths):
            if not isinstance(rel, str) or not rel:
                raise RowError("wrong type", f"'image[{i}]': expected a relative path, got {rel!r}")
            images.append(self._image(ctx, subset, rel))
        extra = {}
        if subset is not None and subset.repeat_time != 1:
            extra["repeat_time"] = subset.repeat_time
        return [
            Pair(
                prompt=with_image_tokens(user_prompt(text_field(row, "question")), len(images)),
                chosen=text_field(row, "chosen"),
                rejected=text_field(row, "rejected"),
                images=images,
                subset=subset.name if subset is not None else file_stem(file_ref),
                extra=extra,
            )
        ]

    def _image(self, ctx: RowContext, subset: Subset | None, rel: str) -> str:
        if subset is None:
            return ctx.image_path(rel)
        path = posixpath.join(subset.root, rel)
        if subset.folder is None:
            return ctx.image_path(path)
        if subset.folder not in self._folders:
            self._folders[subset.folder] = ImagesRoot(Path(subset.folder))
        return ctx.image_bytes(self._folders[subset.folder].read(path), path)
