"""MMPR (InternVL MPO data): a `meta.json` index of subsets, each an annotation jsonl of flat pairs.

`meta.json` maps a subset name to `{root, annotation, data_augment, repeat_time, length}`. Given the
folder that holds `meta.json` (or the file itself), subsets are read in sorted name order; `annotation`
is resolved relative to `meta.json`'s folder. A row's media live under the subset's `root`, read under
`--images-root` when one is given, else under `meta.json`'s folder. Releases write these paths differently
(absolute paths of the authors' cluster, paths from the folder above `MMPR/`): a path that does not exist is
read as its longest tail (of two parts or more) that does (`/mnt/.../MMPR/annotations/x.jsonl` as
`annotations/x.jsonl`). `subset` is
the subset name.

Media, as InternVL's MPO/DPO loader (`LazySupervisedDataset.__getitem__`) chooses them: a non-empty `image` (one
relative path, a list for multi-image) wins; else a `video` that is neither null nor "" is a video, either a
folder of frames (read in name order: `Pair(video=True)`, modality video) or a list of frame paths; else the row
is text-only. A `<video>` placeholder in the question becomes one `<image>` placeholder per frame (InternVL
writes "FrameN: <image>" lines there); without one the placeholders lead the question. InternVL samples 8-32
frames from a video; all frames are kept here. A video file (`.mp4`, ...) cannot be read as frames and a `clip`
range cannot be applied to a frame folder: both are rejects ("video file not supported", "video clip not
supported"), never a text pair.

`repeat_time` < 1 subsamples: a row is kept iff a hash of its content falls below `repeat_time`
(deterministic, about that fraction; InternVL itself draws a random sample), and skipped rows are
rejected as "subsampled by repeat_time". `repeat_time` > 1 is not duplicated here (mixing is the build's
job); it is recorded in `meta`. A plain annotation jsonl (no `meta.json`) is read as is, with media
relative to `--images-root` and the file name as `subset`; a table (parquet, Arrow, a Hub dataset) has no
subset name but its config. No ties or scores: labels are correctness-based on the reasoning subsets, and
rejected answers of open-ended subsets were generated without the image.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from curation.errors import InputError, RowError
from curation.images import ImagesRoot
from curation.pair import Pair
from curation.readers import Record, iter_file_isolated, json_value
from curation.schema import IMAGE_TOKEN
from curation.sources.base import Adapter, RowContext, SourceInfo
from curation.sources.common import field, file_stem, ref_file, text_field, user_prompt, with_image_tokens

META_FILE = "meta.json"
VIDEO_TOKEN = "<video>"
# Files InternVL's loader decodes as videos; here only frame folders and frame lists are read.
VIDEO_FILE_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".flv", ".wmv", ".m4v", ".mpg", ".mpeg", ".gif")
# Files whose rows name their subset by the file name (annotation files); tables are named by their config.
ANNOTATION_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")
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


def meta_path(location: str) -> Path | None:
    path = Path(location)
    if path.is_file() and path.name == META_FILE:
        return path
    if path.is_dir() and (path / META_FILE).is_file():
        return path / META_FILE
    return None


def _subsets(meta_file: Path) -> list[tuple[str, dict[str, Any], Path]]:
    """(name, entry, annotation file) of each subset `meta.json` lists, in name order."""
    folder = meta_file.parent
    return [(name, spec, folder / located(spec["annotation"], lambda tail: (folder / tail).is_file()))
            for name, spec in sorted(load_meta(meta_file).items())]  # fmt: skip


def load_meta(path: Path) -> dict[str, dict[str, Any]]:
    try:
        meta, twice = json_value(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc
    if twice is not None:
        raise InputError(f"{path}: {twice!r} is given twice in one object; which one is meant cannot be known")
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


def located(given: str, exists: Callable[[str], bool]) -> str:
    """`given`, or where it does not exist its longest tail of two parts or more that does (else `given`): a `meta.json`
    written elsewhere names its files by absolute paths (`/mnt/.../MMPR/annotations/x.jsonl`) or from the folder
    above it (`MMPR/annotations/x.jsonl`)."""
    parts = PurePosixPath(given.replace("\\", "/")).parts
    # Tails of two parts at least (`annotations/x.jsonl`, `images/ScienceQA`): a lone name could be anything.
    for start in range(max(len(parts) - 1, 1)):
        tail = posixpath.join(*parts[start:])
        if tail != "/" and exists(tail):
            return tail
    return given


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
        media = images_root if images_root.root is not None else ImagesRoot(folder)
        for name, spec, annotation in _subsets(meta_file):
            repeat_time = float(spec.get("repeat_time", 1))
            root = str(spec.get("root") or "")
            subset = Subset(name, root and located(root, media.holds), repeat_time, fallback)
            # One subset's missing or empty annotation file is one reject; the other subsets are read.
            for record in iter_file_isolated(annotation, f"{name}/{annotation.name}"):
                if record.data is not None and repeat_time < 1 and not keep_fraction(record.data, repeat_time):
                    reason = RowError("subsampled by repeat_time", f"{record.ref}: repeat_time {repeat_time:g}")
                    yield Record(record.ref, None, reason)
                elif record.data is not None:
                    yield Record(record.ref, {**record.data, SUBSET_KEY: subset})
                else:
                    yield record

    def input_files(self, location: str) -> list[Path]:
        """`meta.json` and the annotation files it names (image archives beside them are images, not rows)."""
        meta_file = meta_path(location)
        if meta_file is None:
            return super().input_files(location)
        return [meta_file] + [a for _, _, a in _subsets(meta_file) if a.is_file()]

    def files_note(self, location: str) -> str | None:
        """None for a `meta.json` folder: meta.json names the files read, whatever their names say of splits."""
        return None if meta_path(location) is not None else super().files_note(location)

    def images_folder(self, location: str) -> Path | None:
        meta_file = meta_path(location)
        return meta_file.parent if meta_file is not None else None

    def convert(self, row: dict[str, Any], ctx: RowContext) -> list[Pair]:
        subset: Subset | None = row.get(SUBSET_KEY)
        question = text_field(row, "question")
        value = field(row, "image", (str, list), optional=True)
        paths = ([value] if value else []) if isinstance(value, str) else list(value or [])  # "" or []: text-only
        is_video = not paths and row.get("video") not in (None, "")  # as InternVL: a non-empty image wins
        if is_video:
            images = self._video(ctx, subset, row)
            question = question.replace(VIDEO_TOKEN, "\n".join([IMAGE_TOKEN] * len(images)))
        else:
            images = [self._image(ctx, subset, rel) for rel in _relative_paths(paths, "image")]
        extra = {}
        if subset is not None and subset.repeat_time != 1:
            extra["repeat_time"] = subset.repeat_time
        return [
            Pair(
                prompt=with_image_tokens(user_prompt(question), len(images)),
                chosen=text_field(row, "chosen"),
                rejected=text_field(row, "rejected"),
                images=images,
                video=is_video,
                subset=subset.name if subset is not None else self._table_subset(ctx.ref),
                extra=extra,
            )
        ]

    def _table_subset(self, ref: str) -> str | None:
        """A plain annotation file's subset is its name; a table's (parquet shard, Hub split) is its config."""
        file_ref = ref_file(ref)
        return file_stem(file_ref) if file_ref.endswith(ANNOTATION_SUFFIXES) else self.read.config

    def _video(self, ctx: RowContext, subset: Subset | None, row: dict[str, Any]) -> list[str]:
        """The frames of `video`: a folder of frame images or a list of frame paths (never a video file)."""
        video = row["video"]
        if row.get("clip") is not None:
            raise RowError("video clip not supported", f"'clip': {row['clip']!r} cannot be applied to frames")
        if isinstance(video, list):
            frames = [self._image(ctx, subset, rel) for rel in _relative_paths(video, "video")]
            if not frames:
                raise RowError("image not found", "'video': an empty list of frames")
            return frames
        if not isinstance(video, str):
            raise RowError(
                "wrong type", f"'video': expected a frame folder or a list of frames, got {type(video).__name__}"
            )
        if video.lower().endswith(VIDEO_FILE_SUFFIXES):
            raise RowError("video file not supported", f"'video': {video} is a video file; frame folders are read")
        root, folder = self._root(ctx, subset), self._path(subset, video)
        return [ctx.image_bytes(root.read(name), name) for name in root.frames(folder)]

    def _image(self, ctx: RowContext, subset: Subset | None, rel: str) -> str:
        path = self._path(subset, rel)
        return ctx.image_bytes(self._root(ctx, subset).read(path), path)

    @staticmethod
    def _path(subset: Subset | None, rel: str) -> str:
        return rel if subset is None else posixpath.join(subset.root, rel)

    def _root(self, ctx: RowContext, subset: Subset | None) -> ImagesRoot:
        """Where a row's media are read: --images-root, else (meta.json without one) meta.json's folder."""
        if subset is None or subset.folder is None:
            return ctx.images_root
        if subset.folder not in self._folders:
            self._folders[subset.folder] = ImagesRoot(Path(subset.folder))
        return self._folders[subset.folder]


def _relative_paths(values: list[Any], name: str) -> list[str]:
    for i, rel in enumerate(values):
        if not isinstance(rel, str) or not rel:
            raise RowError("wrong type", f"'{name}[{i}]': expected a relative path, got {rel!r}")
    return values
