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

import hashlib
import io
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from curation.build_dir import BuildDir, ImageTable
from curation.errors import InputError
from trainer.backbone import Backbone, PlaceholderMismatch, SequenceTooLong
from trainer.layout import Packed, pack, packed_index, shared_prefix_length
from trainer.run_summary import (
    SKIP_BAD_IMAGE,
    SKIP_IMAGES_ON_TEXT,
    SKIP_PAD_TOKENS,
    SKIP_TOO_LONG,
    SKIP_VIDEO,
    steps_per_epoch,
)

COLUMNS = ["pair_id", "prompt_id", "modality", "prompt", "chosen", "rejected", "images", "margin", "tie"]
PACK_LENGTH = 8192  # tokens per packed row (`layout: packed`); a longer pair has a row of its own


def unit_hash(*parts: object) -> float:
    """A deterministic number in [0, 1) from the parts."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


# What the held-out split and the audit's folds fall by: a prompt's pairs stay together (recorded in checkpoints and
# audit plans, so work split another way is not resumed as if it were the same).
SPLIT_BY = "prompt_id"


def fold_of(prompt_id: str, seed: int, folds: int) -> int:
    """The cross-fitting fold of a pair: a hash of its prompt's id and the seed, so a pair's fold is the same in any
    build, and the pairs of one prompt share a fold (no model judges a pair after training on its prompt)."""
    return min(int(unit_hash("fold", seed, prompt_id) * folds), folds - 1)


@dataclass
class Build:
    path: Path
    weight: float
    table: pa.Table
    images: ImageTable
    shards_sha256: list[str] = field(default_factory=list)  # what the build is, wherever it lies

    @classmethod
    def open(cls, spec: str) -> Build:
        """`DIR` or `DIR=WEIGHT`; DIR is a build folder or its `shards/`. A shard whose sha256 is not the one
        the manifest records (edited in place, even rewritten with the same rows) is a `BuildError`: the
        manifest's digests are what a run records of its data, so the run would not be of the build it names.
        Shards hold text only (images are in `images/`): reading them whole takes about 0.6 s a GB, once per
        process and file (an audit's folds open the build again), under torchrun by one process per machine
        (`LOCAL_RANK` 0; a refusal there ends every rank)."""
        from trainer.config import shard_weight

        build = BuildDir.open(spec.partition("=")[0])
        pairs = build.pairs(COLUMNS, check_text=True)  # first: a shard that cannot be read says why
        digests = [shard["sha256"] for shard in build.manifest["shards"]]
        # one process per machine under torchrun, each its own copy of the build; a process alone always checks
        if os.environ.get("WORLD_SIZE", "1") == "1" or os.environ.get("LOCAL_RANK", "0") == "0":
            build.check_shards_unchanged()
        return cls(build.path, shard_weight(spec), pairs, build.images(), digests)

    def row(self, index: int) -> dict[str, Any]:
        return self.table.slice(index, 1).to_pylist()[0]


@dataclass(frozen=True)
class Entry:
    build: int
    row: int
    pair_id: str
    copy: int = 0


def build_identity(shards_sha256: list[str], weight: float) -> list[Any]:
    """One build as a run records what it trained on (`PairData.identity`, `data.json`'s `data`)."""
    return [list(shards_sha256), weight]


@dataclass
class PairData:
    """The train and held-out entries of one or several builds."""

    builds: list[Build]
    train: list[Entry]
    eval: list[Entry]
    seed: int
    counts: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, specs: list[str], seed: int, eval_fraction: float, folds: int = 0, fold: int = 0) -> PairData:
        """The builds' pairs, split into train and held-out by a hash of the prompt id, so the pairs of one prompt
        fall on one side (a held-out pair is evaluated once, however many copies of it the shards hold: `counts`
        gives each build's rows, distinct pairs, training draws and held-out pairs); with `folds`, the prompts of the
        first build's fold `fold` (`fold_of`) are left out altogether, from every build that holds them
        (cross-fitting: another model judges their pairs)."""
        builds = [Build.open(spec) for spec in specs]
        train: list[Entry] = []
        held_out: list[Entry] = []
        counts: dict[str, Any] = {}
        judged_elsewhere: set[str] = set()
        if folds and builds:
            # the audited build's prompts: its shards' and its removed pairs' (which the audit judges too)
            first = builds[0].table.column("prompt_id").to_pylist()
            removed = BuildDir.open(builds[0].path).removed_pairs(["prompt_id"])
            first += removed.column("prompt_id").to_pylist() if removed is not None else []
            judged_elsewhere = {prompt for prompt in first if fold_of(prompt, seed, folds) == fold}
        evaluated: set[str] = set()  # a held-out pair is evaluated once, whatever its copies in the shards
        planned = 0  # training draws of the builds so far
        for b, build in enumerate(builds):
            ids = build.table.column("pair_id").to_pylist()
            prompts = build.table.column("prompt_id").to_pylist()
            used = [i for i, prompt in enumerate(prompts) if prompt not in judged_elsewhere]
            held = {i for i in used if unit_hash("eval", seed, prompts[i]) < eval_fraction}  # stable across builds
            evals = []
            for i in sorted(held):
                if ids[i] not in evaluated:
                    evaluated.add(ids[i])
                    evals.append(Entry(b, i, ids[i]))
            trains = [Entry(b, i, ids[i]) for i in used if i not in held]
            planned += build.weight * len(trains)  # a float: a weight of 1e308 makes inf, which round() refuses
            if planned > MAX_DRAWS:  # before they are made: the epoch's order is held in memory
                raise InputError(
                    f"--shards {specs[b]}: more than {MAX_DRAWS:,} training draws an epoch with the builds before it "
                    "(about 150 bytes each in memory); lower the weights"
                )
            drawn = weighted(trains, build.weight, seed)
            train += drawn
            held_out += evals
            # `eval`: this build's held-out pairs, also those evaluated through an earlier build that holds them
            name = str(build.path) if str(build.path) not in counts else f"{build.path} (--shards number {b + 1})"
            # a tie is trained as a preference of chosen over rejected as given: counted, so the run can say so
            ties = build.table.column("tie").to_pylist()
            counts[name] = {"rows": len(ids), "pairs": len(set(ids)), "weight": build.weight,
                            "train_draws": len(drawn), "eval": len({ids[i] for i in held}), "eval_rows": len(held),
                            "left_out": len(ids) - len(used),
                            "ties": len({ids[i] for i in used if ties[i]})}  # fmt: skip
        # In hash order across builds: `eval_max_pairs` takes a sample of them all, not the first build's first pairs
        held_out.sort(key=lambda e: (unit_hash("eval order", seed, e.pair_id), e.build, e.row))
        return cls(builds, train, held_out, seed, counts)

    def identity(self) -> list[list[Any]]:
        """The builds by content and weight: a run trains on the same data after its builds moved."""
        return [build_identity(b.shards_sha256, b.weight) for b in self.builds]

    def epoch_order(self, epoch: int) -> list[Entry]:
        return sorted(
            self.train, key=lambda e: (unit_hash("order", self.seed, epoch, e.pair_id, e.copy), e.build, e.row)
        )

    def row(self, entry: Entry) -> dict[str, Any]:
        return self.builds[entry.build].row(entry.row)

    def image(self, entry: Entry, sha256: str) -> bytes:
        return self.builds[entry.build].images.read(sha256)


MAX_DRAWS = 50_000_000  # training draws an epoch


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
    prefix: int = 0  # leading tokens the two sequences share (`trainer.layout`)


MAX_FRAMES = 16  # frames sampled evenly from a longer video


MAX_ASPECT_RATIO = 200  # Qwen2-VL's image processor refuses a longer side more than 200 times the shorter


class UndecodableImage(Exception):
    """An image of a pair that cannot be decoded, holds more than `DEFAULT_MAX_PIXELS` or is a strip beyond
    `MAX_ASPECT_RATIO` (a build checks images as it ingests them; shards edited since, or written otherwise, may hold
    such a one)."""


def _decode(data: bytes) -> Any:
    from PIL import Image

    from curation.images import DEFAULT_MAX_PIXELS

    try:
        with warnings.catch_warnings():  # PIL's bomb warning: the size is checked here instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        with image:
            if image.width * image.height > DEFAULT_MAX_PIXELS:
                raise UndecodableImage(f"{image.width}x{image.height}")
            if max(image.size) > MAX_ASPECT_RATIO * min(image.size):
                raise UndecodableImage(f"{image.width}x{image.height}: an aspect ratio above {MAX_ASPECT_RATIO}")
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UndecodableImage(str(exc)) from exc


def featurize(backbone: Backbone, row: dict[str, Any], image_bytes: list[bytes], max_length: int) -> PairFeatures | str:
    """The two token sequences of a pair and its images (or video) once, or the reason it is skipped."""
    pixel_values = grid = videos = video_grid = None
    image_tokens: list[int] = []
    video_tokens: int | None = None
    if row["images"] and backbone.kind != "vision_language":
        return SKIP_VIDEO if row["modality"] == "video" else SKIP_IMAGES_ON_TEXT
    try:
        if row["modality"] == "video":
            step = max(1, -(-len(image_bytes) // MAX_FRAMES))
            videos, video_grid = backbone.video_inputs([_decode(b) for b in image_bytes[::step]])
            video_tokens = backbone.tokens_per_image(video_grid)[0]
        elif row["images"]:
            pixel_values, grid = backbone.image_inputs([_decode(b) for b in image_bytes])
            image_tokens = backbone.tokens_per_image(grid)
    except UndecodableImage:
        return SKIP_BAD_IMAGE
    try:
        chosen = backbone.sequence(row["prompt"], row["chosen"], max_length, image_tokens, video_tokens)
        rejected = backbone.sequence(row["prompt"], row["rejected"], max_length, image_tokens, video_tokens)
    except SequenceTooLong:
        return SKIP_TOO_LONG
    except PlaceholderMismatch:
        return SKIP_PAD_TOKENS
    prefix = 0
    if chosen.input_ids[: chosen.prompt_tokens] == rejected.input_ids[: rejected.prompt_tokens]:
        prefix = shared_prefix_length(chosen.input_ids, rejected.input_ids, chosen.prompt_tokens)
    return PairFeatures(row["pair_id"], chosen.input_ids, rejected.input_ids, pixel_values, grid, row["margin"],
                        videos, video_grid, prefix)  # fmt: skip


@dataclass
class Batch:
    """Padded layout: 2B rows, chosen 0..B-1, then rejected B..2B-1; images of pair i encoded once, used by rows
    i and B+i. Shared-prefix layout (`segments` set): B rows `[prefix | chosen | rejected]` (`trainer.layout`);
    packed (`packing` set too): the same rows, which the decoder runs packed several to a row."""

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
    segments: torch.Tensor | None = None
    sequence_image_index: list[int] = field(default_factory=list)
    sequence_video_index: list[int] = field(default_factory=list)
    position_ids: torch.Tensor | None = None  # set by `with_positions`; else the model's pass computes them
    packing: Packed | None = None  # where the decoder's packed rows take their tokens (`trainer.layout.Packed`)

    def to(self, device: torch.device) -> Batch:
        tensors = {k: v.to(device) for k, v in vars(self).items() if isinstance(v, (torch.Tensor, Packed))}
        return replace(self, **tensors)

    def model_inputs(self) -> dict[str, Any]:
        inputs = {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                  "pixel_values": self.pixel_values, "image_grid_thw": self.image_grid_thw,
                  "image_index": self.image_index, "pixel_values_videos": self.pixel_values_videos,
                  "video_grid_thw": self.video_grid_thw, "video_index": self.video_index}  # fmt: skip
        if self.segments is not None:
            inputs |= {"segments": self.segments, "sequence_image_index": self.sequence_image_index,
                       "sequence_video_index": self.sequence_video_index}  # fmt: skip
        if self.position_ids is not None:
            inputs["position_ids"] = self.position_ids
        if self.packing is not None:
            inputs["packing"] = self.packing
        return inputs

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())


def _visual(
    features: list[PairFeatures], kind: str, shared: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None, list[int], list[int]]:
    """Concatenated pixels and grids of the pairs' images (`kind` "image") or videos ("video"), each encoded once,
    and two occurrence lists: in the chosen-then-rejected sequences, and in the model's rows (the same, padded;
    once per pair where the prefix holds its images, shared)."""
    pixels = [getattr(f, "pixel_values" if kind == "image" else "pixel_values_videos") for f in features]
    grids = [getattr(f, "image_grid_thw" if kind == "image" else "video_grid_thw") for f in features]
    per_pair, n = [], 0
    for grid in grids:
        count = 0 if grid is None else len(grid)
        per_pair.append(list(range(n, n + count)))
        n += count
    sequence_order = [i for indices in per_pair for i in indices] * 2
    row_order = sequence_order
    if shared:
        row_order = [i for f, indices in zip(features, per_pair, strict=True) for i in indices * (1 if f.prefix else 2)]
    present = [p for p in pixels if p is not None]
    grid_list = [g for g in grids if g is not None]
    return (torch.cat(present) if present else None, torch.cat(grid_list) if grid_list else None, row_order,
            sequence_order)  # fmt: skip


def collate(
    features: list[PairFeatures],
    pad_id: int,
    padding_side: str = "right",
    layout: str = "padded",
    pack_length: int = PACK_LENGTH,
) -> Batch:
    """`layout`: `padded` (2B rows), `shared_prefix` (B right-padded rows, see `trainer.layout`) or `packed` (those
    rows packed into rows of at most `pack_length` tokens for the decoder)."""
    shared = layout in ("shared_prefix", "packed")
    if shared:
        rows = [f.chosen + f.rejected[f.prefix :] for f in features]
        padding_side = "right"
    else:
        rows = [f.chosen for f in features] + [f.rejected for f in features]
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(length - len(row), length) if padding_side == "left" else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    pixels, grids, image_index, sequence_images = _visual(features, "image", shared)
    videos, video_grids, video_index, sequence_videos = _visual(features, "video", shared)
    margin = torch.tensor([f.margin if f.margin is not None else 0.0 for f in features], dtype=torch.float32)
    batch = Batch(ids, mask, pixels, grids, image_index, margin, len(features), videos, video_grids, video_index)
    if shared:
        segments = [[f.prefix, len(f.chosen) - f.prefix, len(f.rejected) - f.prefix] for f in features]
        batch = replace(batch, segments=torch.tensor(segments, dtype=torch.long), sequence_image_index=sequence_images,
                        sequence_video_index=sequence_videos)  # fmt: skip
    if layout == "packed":
        assert batch.segments is not None
        batch = replace(batch, packing=packed_index(batch.segments, pack(batch.segments, pack_length), length))
    return batch


def with_positions(batch: Batch, backbone: Backbone) -> Batch:
    """The batch with its position ids computed now, on the host: in the trainer's data workers rather than at
    the start of each pass, where reading the batch back from the device would wait for the previous pass."""
    if backbone.kind != "vision_language" and batch.segments is None:
        return batch  # the backbone derives them from the attention mask itself
    positions = backbone.positions(batch.input_ids, batch.attention_mask, batch.segments, batch.image_grid_thw,
                                   batch.image_index, batch.sequence_image_index, batch.video_grid_thw,
                                   batch.video_index, batch.sequence_video_index)  # fmt: skip
    return replace(batch, position_ids=positions)


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
            try:
                images = [self.data.image(entry, h) for h in row["images"]]
            except KeyError as exc:  # the shards name an image the build's table lacks: a damaged build
                raise InputError(f"{exc.args[0]} (pair {row['pair_id']}); the build is damaged: build again") from None
            result = featurize(self.backbone, row, images, self.max_length)
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
        layout: str,
        pack_length: int = PACK_LENGTH,
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
        self.layout, self.pack_length = backbone.layout(layout), pack_length
        self.global_batch, self.micro_batch, self.accumulation = global_batch, micro_batch, accumulation
        self.rank, self.world, self.start, self.total = rank, world, start, total
        self.steps_per_epoch = steps_per_epoch(len(data.train), global_batch)
        self.order: tuple[int, list[Entry]] | None = None  # one epoch's order, per process

    def __len__(self) -> int:
        return self.total - self.start

    def micro_batches(self, step: int) -> list[list[Entry]]:
        """Micro-batch a of rank r is slot a x world + r of the step's global batch; slots empty on every rank are
        left out."""
        epoch, within = divmod(step, self.steps_per_epoch)
        if self.order is None or self.order[0] != epoch:
            self.order = (epoch, self.data.epoch_order(epoch))
        size, micro = self.global_batch, self.micro_batch
        entries = self.order[1][within * size : (within + 1) * size]
        # A step holding fewer pairs than a global batch (the epoch's last, or a build smaller than one) runs the
        # passes its pairs fill on the busiest rank, not `accumulation` of them: every rank still runs as many.
        passes = min(self.accumulation, -(-len(entries) // (micro * self.world)))
        slots = [a * self.world + self.rank for a in range(passes)]
        return [entries[s * micro : (s + 1) * micro] for s in slots]

    def __getitem__(self, index: int) -> tuple[list[Batch | None], dict[str, int]]:
        """The rank's pairs of the step, sorted by length before they are cut into micro-batches: pairs of like
        length share a micro-batch and little is padded. Exact: the step's gradient is a sum over its pairs, and
        every rank runs the same number of passes (`micro_batches`; None where nothing is left)."""
        featurize = Featurizer(self.data, self.backbone, self.max_length)
        groups = [featurize(entries) for entries in self.micro_batches(self.start + index)]
        features = sorted((f for group in groups for f in group), key=lambda f: row_length(f, self.layout))
        chunks = [features[i : i + self.micro_batch] for i in range(0, len(features), self.micro_batch)]
        pad = self.backbone.pad_token_id
        batches = [with_positions(collate(c, pad, self.padding_side, self.layout, self.pack_length), self.backbone)
                   for c in chunks]  # fmt: skip
        return batches + [None] * (len(groups) - len(batches)), dict(featurize.skipped)


def row_length(feature: PairFeatures, layout: str) -> int:
    """Tokens a pair's row takes: `[prefix | chosen | rejected]`, or the longer sequence when padded."""
    if layout in ("shared_prefix", "packed"):
        return len(feature.chosen) + len(feature.rejected) - feature.prefix
    return max(len(feature.chosen), len(feature.rejected))
