"""image_dedupe: the same prompt over a near-duplicate image (re-encoded, resized) is a duplicate.

Score: a perceptual hash per image of the ingested pairs (`signals/`). Decide: images within `max_distance`
bits are clustered around the first-seen image; prompts whose text is equal and whose images fall in the
same clusters are one prompt, and only the survivor's (first-listed source, earliest row) pairs are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import polars as pl
import pyarrow as pa

from curation.ops.base import Decision, Op
from curation.ops.clusters import CLUSTER_READS, cluster_decision
from curation.ops.context import BuildContext
from curation.perceptual import as_signed, as_unsigned, cached_phashes, close_pairs, hamming
from curation.shingles import tokenize
from curation.sql import read_parquet


@dataclass(frozen=True)
class ImageDedupeParams:
    max_distance: int = 4  # Hamming distance between 64-bit perceptual hashes
    hash_size: int = 8

    def check(self) -> None:
        if not 2 <= self.hash_size <= 8:
            raise ValueError("hash_size must be 2..8 (hashes of up to 64 bits are stored)")
        if not 0 <= self.max_distance < self.hash_size**2:
            raise ValueError(f"max_distance must be 0..{self.hash_size**2 - 1}")


def image_hashes(ctx: BuildContext, signals: Path, hash_size: int) -> None:
    """Write (sha256, phash) for every image of the ingested pairs."""
    shas = [r[0] for r in ctx.rows("SELECT DISTINCT unnest(images) FROM pairs ORDER BY 1")]
    hashes = cached_phashes(ctx, shas, hash_size)
    table = pa.table(
        {"sha256": pa.array(shas, pa.string()), "phash": pa.array([as_signed(hashes[s]) for s in shas], pa.int64())}
    )
    ctx.write_table(table, signals, "sha256")


class ImageDedupe(Op):
    name = "image_dedupe"
    Params = ImageDedupeParams
    reads: ClassVar[dict[str, tuple[str, ...]]] = {"pairs": ("images",), "live_pairs": (*CLUSTER_READS, "images")}
    uses = ("prompt_units", "phashes")
    signal_keys: ClassVar[dict[str, str]] = {"sha256": "image"}
    evidence: ClassVar[tuple[str, ...]] = ("dups/image_dedupe.parquet",)
    thresholds = frozenset({"max_distance"})

    def input_fingerprint(self, ctx: BuildContext) -> str | None:
        return ctx.fingerprint("images")

    def score(self, ctx: BuildContext, params: ImageDedupeParams, signals: Path) -> None:
        image_hashes(ctx, signals, params.hash_size)

    def decide(self, ctx: BuildContext, params: ImageDedupeParams, signals: Path) -> Decision:
        bits = params.hash_size**2
        # Images of the live pairs in order of first use, so every cluster's representative is the first-seen image.
        first_use = ctx.rows(
            "SELECT sha256, min(row_key) FROM (SELECT row_key, unnest(images) AS sha256 FROM live_pairs) "
            "GROUP BY sha256 ORDER BY 2, 1"
        )
        live = {sha for sha, _ in first_use}
        hashes = {sha: as_unsigned(h) for sha, h in ctx.rows(f"SELECT * FROM {read_parquet(signals)}") if sha in live}
        rank = {sha: i for i, (sha, _) in enumerate(first_use)}
        neighbours: dict[str, list[tuple[str, int]]] = {}
        for a, b, distance in close_pairs(hashes, None, params.max_distance, bits):
            neighbours.setdefault(a, []).append((b, distance))
            neighbours.setdefault(b, []).append((a, distance))
        representative: dict[str, tuple[str, int]] = {}
        for sha, _ in first_use:
            if sha in representative:
                continue
            representative[sha] = (sha, 0)
            for other, distance in sorted(neighbours.get(sha, []), key=lambda x: rank[x[0]]):
                representative.setdefault(other, (sha, distance))
        units = ctx.prompt_units().filter(pl.col("images") != "")
        # Prompts with equal text whose images share clusters are candidates; a prompt is a duplicate only of a
        # survivor whose images are each within max_distance of its own (two members of one cluster may not be).
        survivors: dict[tuple[str, tuple[str, ...]], list[tuple[str, list[str]]]] = {}
        members = []
        tokens = tokenize(units["text"].to_list()).to_list()  # the words near_dedupe and decontaminate compare
        for (prompt_id, images), text in zip(units.select("prompt_id", "images").iter_rows(), tokens, strict=True):
            shas = images.split(",")
            key = (" ".join(text or []), tuple(representative[sha][0] for sha in shas))
            for survivor, survivor_shas in survivors.get(key, []):
                distances = [hamming(hashes[a], hashes[b]) for a, b in zip(shas, survivor_shas, strict=True)]
                if max(distances) <= params.max_distance:
                    members.append((prompt_id, survivor, 1 - max(distances) / bits))
                    break
            else:
                survivors.setdefault(key, []).append((prompt_id, shas))
        return cluster_decision(
            self.name, members, "phash-hamming", "near-duplicate image", "same prompt and image as", "phash similarity"
        )
