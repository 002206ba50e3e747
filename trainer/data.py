"""Training data from `curate build` outputs: the shards, the image table, a held-out split and a seeded order.

- Shards are memory-mapped Arrow (nothing is loaded up front); images are fetched by sha256 from the build's
  image table (sorted by hash in small row groups, so one lookup reads one row group).
- Each build has a weight: `round(weight x its train pairs)` draws, whole passes first, then the remainder in
  hash order (the same rule as the recipe's mix). The held-out split and every epoch's order derive from
  hashes of `pair_id` and the seed, never from process state, so a resumed run sees the same order.
- A pair becomes two sequences (chosen, rejected) sharing one set of image (or video) features. A pair that cannot
  be trained on as it is (answer longer than `max_length`, images or video on a text backbone, text holding the
  model's image pad tokens) is skipped and counted.
"""

from __future__ import annotations

import bisect
import hashlib
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import torch

from trainer.backbone import Backbone, PlaceholderMismatch, SequenceTooLong

COLUMNS = ["pair_id", "modality", "prompt", "chosen", "rejected", "images", "margin"]
SKIP_VIDEO = "video pair on a backbone without video input"
SKIP_IMAGES_ON_TEXT = "image pair on a text-only backbone"
SKIP_TOO_LONG = "longer than max_length"
SKIP_PAD_TOKENS = "text holds the model's image/video pad tokens"
SKIP_REASONS = (SKIP_VIDEO, SKIP_IMAGES_ON_TEXT, SKIP_TOO_LONG, SKIP_PAD_TOKENS)


def unit_hash(*parts: object) -> float:
    """A deterministic number in [0, 1) from the parts."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class ImageTable:
    """Random access by sha256 to a build's `images/images.parquet` through its row-group statistics."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = pq.ParquetFile(path) if path.is_file() else None
        self.first_hashes: list[str] = []
        if self.file is not None:
            column = self.file.schema_arrow.get_field_index("sha256")
            for group in range(self.file.num_row_groups):
                stats = self.file.metadata.row_group(group).column(column).statistics
                self.first_hashes.append(stats.min)

    def get(self, sha256: str) -> bytes | None:
        if self.file is None or not self.first_hashes:
            return None
        group = bisect.bisect_right(self.first_hashes, sha256) - 1
        table = self.file.read_row_group(max(group, 0), columns=["sha256", "bytes"])
        hashes = table.column("sha256").to_pylist()
        return table.column("bytes")[hashes.index(sha256)].as_py() if sha256 in hashes else None

    def read(self, sha256: str) -> bytes:
        data = self.get(sha256)
        if data is None:
            raise KeyError(f"{self.path}: image {sha256} not found")
        return data


@dataclass
class Build:
    path: Path
    weight: float
    table: pa.Table
    images: ImageTable

    @classmethod
    def open(cls, spec: str) -> Build:
        """`DIR` or `DIR=WEIGHT`."""
        path_text, _, weight = spec.partition("=")
        path = Path(path_text)
        shards = sorted((path / "shards").glob("*.arrow"))
        if not shards:
            raise FileNotFoundError(f"{path}: no shards/*.arrow (is this a `curate build` output?)")
        tables = [ipc.open_stream(pa.memory_map(str(s))).read_all().select(COLUMNS) for s in shards]
        return cls(
            path,
            float(weight) if weight else 1.0,
            pa.concat_tables(tables),
            ImageTable(path / "images" / "images.parquet"),
        )

    def row(self, index: int) -> dict[str, Any]:
        return self.table.slice(index, 1).to_pylist()[0]


@dataclass(frozen=True)
class Entry:
    build: int
    row: int
    pair_id: str
    copy: int = 0


@dataclass
class PairData:
    """The train and held-out entries of one or several builds."""

    builds: list[Build]
    train: list[Entry]
    eval: list[Entry]
    seed: int
    counts: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, specs: list[str], seed: int, eval_fraction: float) -> PairData:
        builds = [Build.open(spec) for spec in specs]
        train: list[Entry] = []
        held_out: list[Entry] = []
        counts: dict[str, Any] = {}
        for b, build in enumerate(builds):
            ids = build.table.column("pair_id").to_pylist()
            held = [unit_hash("eval", seed, pid) < eval_fraction for pid in ids]  # by content: stable across builds
            evals = [Entry(b, i, pid) for i, pid in enumerate(ids) if held[i]]
            trains = [Entry(b, i, pid) for i, pid in enumerate(ids) if not held[i]]
            drawn = weighted(trains, build.weight, seed)
            train += drawn
            held_out += evals
            counts[str(build.path)] = {"pairs": len(ids), "weight": build.weight, "train_draws": len(drawn),
                                       "eval": len(evals)}  # fmt: skip
        return cls(builds, train, held_out, seed, counts)

    def epoch_order(self, epoch: int) -> list[Entry]:
        return sorted(
            self.train, key=lambda e: (unit_hash("order", self.seed, epoch, e.pair_id, e.copy), e.build, e.row)
        )

    def row(self, entry: Entry) -> dict[str, Any]:
        return self.builds[entry.build].row(entry.row)

    def image(self, entry: Entry, sha256: str) -> bytes:
        return self.builds[entry.build].images.read(sha256)


def weighted(entries: list[Entry], weight: float, seed: int) -> list[Entry]:
    """`round(weight x n)` draws: copy c of the entry ranked r is draw c x n + r."""
    n = len(entries)
    target = round(weight * n)
    ranked = sorted(entries, key=lambda e: (unit_hash("weight", seed, e.pair_id), e.row))
    return [
        Entry(e.build, e.row, e.pair_id, copy)
        for copy in range(-(-target // n) if n else 0)
        for r, e in enumerate(ranked)
        if copy * n + r < target
    ]


@dataclass
class PairFeatures:
    pair_id: str
    chosen: list[int]
    rejected: list[int]
    pixel_values: torch.Tensor | None
    image_grid_thw: torch.Tensor | None
    margin: float | None
    pixel_values_videos: torch.Tensor | None = None
    video_grid_thw: torch.Tensor | None = None


MAX_FRAMES = 16  # frames sampled evenly from a longer video


def _decode(data: bytes) -> Any:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def featurize(backbone: Backbone, row: dict[str, Any], image_bytes: list[bytes], max_length: int) -> PairFeatures | str:
    """The two token sequences of a pair and its images (or video) once, or the reason it is skipped."""
    pixel_values = grid = videos = video_grid = None
    image_tokens: list[int] = []
    video_tokens: int | None = None
    if row["images"] and backbone.kind != "vision_language":
        return SKIP_VIDEO if row["modality"] == "video" else SKIP_IMAGES_ON_TEXT
    if row["modality"] == "video":
        step = max(1, -(-len(image_bytes) // MAX_FRAMES))
        videos, video_grid = backbone.video_inputs([_decode(b) for b in image_bytes[::step]])
        video_tokens = backbone.tokens_per_image(video_grid)[0]
    elif row["images"]:
        pixel_values, grid = backbone.image_inputs([_decode(b) for b in image_bytes])
        image_tokens = backbone.tokens_per_image(grid)
    try:
        chosen = backbone.sequence(row["prompt"], row["chosen"], max_length, image_tokens, video_tokens)
        rejected = backbone.sequence(row["prompt"], row["rejected"], max_length, image_tokens, video_tokens)
    except SequenceTooLong:
        return SKIP_TOO_LONG
    except PlaceholderMismatch:
        return SKIP_PAD_TOKENS
    return PairFeatures(row["pair_id"], chosen.input_ids, rejected.input_ids, pixel_values, grid, row["margin"],
                        videos, video_grid)  # fmt: skip


@dataclass
class Batch:
    """2B rows: chosen 0..B-1, then rejected B..2B-1; images of pair i encoded once, used by rows i and B+i."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pixel_values: torch.Tensor | None
    image_grid_thw: torch.Tensor | None
    image_index: list[int]
    margin: torch.Tensor
    pairs: int
    pixel_values_videos: torch.Tensor | None = None
    video_grid_thw: torch.Tensor | None = None
    video_index: list[int] = field(default_factory=list)

    def to(self, device: torch.device) -> Batch:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Batch(move(self.input_ids), move(self.attention_mask), move(self.pixel_values),
                     move(self.image_grid_thw), self.image_index, move(self.margin), self.pairs,
                     move(self.pixel_values_videos), move(self.video_grid_thw), self.video_index)  # fmt: skip

    def model_inputs(self) -> dict[str, Any]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "pixel_values": self.pixel_values,
                "image_grid_thw": self.image_grid_thw, "image_index": self.image_index,
                "pixel_values_videos": self.pixel_values_videos, "video_grid_thw": self.video_grid_thw,
                "video_index": self.video_index}  # fmt: skip

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())


def _visual(grids: list[torch.Tensor | None], pixels: list[torch.Tensor | None]) -> tuple[Any, Any, list[int]]:
    """Concatenated pixels and grids of the pairs, and each occurrence's index: chosen rows, then rejected rows."""
    per_pair, n = [], 0
    for grid in grids:
        count = 0 if grid is None else len(grid)
        per_pair.append(list(range(n, n + count)))
        n += count
    present = [p for p in pixels if p is not None]
    grid_list = [g for g in grids if g is not None]
    return (torch.cat(present) if present else None, torch.cat(grid_list) if grid_list else None,
            [i for indices in per_pair for i in indices] * 2)  # fmt: skip


def collate(features: list[PairFeatures], pad_id: int, padding_side: str = "right") -> Batch:
    rows = [f.chosen for f in features] + [f.rejected for f in features]
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(length - len(row), length) if padding_side == "left" else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    pixels, grids, image_index = _visual([f.image_grid_thw for f in features], [f.pixel_values for f in features])
    videos, video_grids, video_index = _visual([f.video_grid_thw for f in features],
                                               [f.pixel_values_videos for f in features])  # fmt: skip
    margin = torch.tensor([f.margin if f.margin is not None else 0.0 for f in features], dtype=torch.float32)
    return Batch(ids, mask, pixels, grids, image_index, margin, len(features), videos, video_grids, video_index)


class Featurizer:
    """Entries to features, counting the skipped pairs by reason."""

    def __init__(self, data: PairData, backbone: Backbone, max_length: int) -> None:
        self.data = data
        self.backbone = backbone
        self.max_length = max_length
        self.skipped: Counter[str] = Counter()

    def __call__(self, entries: list[Entry]) -> list[PairFeatures]:
        out = []
        for entry in entries:
            row = self.data.row(entry)
            result = featurize(self.backbone, row, [self.data.image(entry, h) for h in row["images"]], self.max_length)
            if isinstance(result, str):
                self.skipped[result] += 1
            else:
                out.append(result)
        return out


class StepBatches(torch.utils.data.Dataset):
    """Item i: one rank's collated micro-batches of training step `start + i` (None where every pair of a
    micro-batch was skipped) and that step's skip counts. A `DataLoader` over it prepares steps in worker
    processes, ahead of the model, in step order; the content depends only on (seed, step, rank)."""

    def __init__(
        self,
        data: PairData,
        backbone: Backbone,
        *,
        max_length: int,
        padding_side: str,
        global_batch: int,
        micro_batch: int,
        accumulation: int,
        rank: int,
        world: int,
        start: int,
        total: int,
    ) -> None:
        self.data, self.backbone = data, backbone
        self.max_length, self.padding_side = max_length, backbone.padding_side(padding_side)
        self.global_batch, self.micro_batch, self.accumulation = global_batch, micro_batch, accumulation
        self.rank, self.world, self.start, self.total = rank, world, start, total
        self.steps_per_epoch = len(data.train) // global_batch
        self.order: tuple[int, list[Entry]] | None = None  # one epoch's order, per process

    def __len__(self) -> int:
        return self.total - self.start

    def micro_batches(self, step: int) -> list[list[Entry]]:
        """Micro-batch a of rank r is slot a x world + r of the step's global batch."""
        epoch, within = divmod(step, self.steps_per_epoch)
        if self.order is None or self.order[0] != epoch:
            self.order = (epoch, self.data.epoch_order(epoch))
        size, micro = self.global_batch, self.micro_batch
        entries = self.order[1][within * size : (within + 1) * size]
        slots = [a * self.world + self.rank for a in range(self.accumulation)]
        return [entries[s * micro : (s + 1) * micro] for s in slots]

    def __getitem__(self, index: int) -> tuple[list[Batch | None], dict[str, int]]:
        featurize = Featurizer(self.data, self.backbone, self.max_length)
        pad = self.backbone.pad_token_id
        batches = [collate(f, pad, self.padding_side) if f else None
                   for f in map(featurize, self.micro_batches(self.start + index))]  # fmt: skip
        return batches, dict(featurize.skipped)
