"""Perceptual hashes of images and the pairs of hashes within a Hamming distance.

Near-duplicate images (re-encoded, resized, lightly cropped) have perceptual hashes a few bits apart, while
their sha256 differ. Pairs within distance t are found by a compiled all-pairs XOR + popcount while that is
cheap, and beyond that by multi-index hashing: split the bits into t + 1 chunks; two hashes within t bits agree
exactly on at least one chunk (pigeonhole), so only hashes that share a chunk are compared.
"""

from __future__ import annotations

import io
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

import imagehash
import numba
import numpy as np
import polars as pl
import pyarrow as pa
from PIL import Image

from curation.io import readable_parquet
from curation.sql import parquet_relation

if TYPE_CHECKING:
    from curation.ops.context import BuildContext


def phash(data: bytes, hash_size: int = 8) -> int:
    """The DCT perceptual hash (hash_size**2 bits) of an image's bytes, as an unsigned integer."""
    with Image.open(io.BytesIO(data)) as image:
        bits = imagehash.phash(image.convert("RGB"), hash_size=hash_size).hash.flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def close_pairs(
    left: dict[str, int], right: dict[str, int] | None, max_distance: int, bits: int = 64
) -> list[tuple[str, str, int]]:
    """(left key, right key, distance) within `max_distance`; with `right=None`, pairs within `left` (a < b)."""
    same = right is None
    right = left if right is None else right
    if not left or not right:
        return []
    if len(left) * len(right) <= BRUTE_FORCE_LIMIT:
        found = _brute_force(left, right, max_distance, bits)
    else:
        found = _multi_index(left, right, max_distance, bits)
    return sorted((a, b, d) for a, b, d in found if not same or a < b)


BRUTE_FORCE_LIMIT = 4_000_000_000  # comparisons; the compiled loop does about a billion a second per core


def _split(hashes: dict[str, int], bits: int) -> tuple[list[str], np.ndarray]:
    # Up to 64 bits as uint64 (larger hashes keep their low 64 bits for the vectorized comparison).
    return list(hashes), np.array([v & ((1 << 64) - 1) for v in hashes.values()], dtype=np.uint64)


def _brute_force(left: dict[str, int], right: dict[str, int], max_distance: int, bits: int) -> list:
    if bits > 64:
        return _multi_index(left, right, max_distance, bits)
    left_keys, left_values = _split(left, bits)
    right_keys, right_values = _split(right, bits)
    counts = np.zeros(len(left_values), dtype=np.int64)
    _count_close(left_values, right_values, max_distance, counts)
    rows = np.flatnonzero(counts)  # most hashes have no close neighbour: only those rows are visited again
    offsets = np.concatenate([[0], np.cumsum(counts[rows])]).astype(np.int64)
    found = np.empty((offsets[-1], 2), dtype=np.int64)
    _list_close(left_values, right_values, max_distance, rows, offsets, found)
    return [(left_keys[i], right_keys[j], hamming(left[left_keys[i]], right[right_keys[j]])) for i, j in found.tolist()]


@numba.njit(cache=True, inline="always")
def _popcount(x: np.uint64) -> np.uint64:
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


@numba.njit(parallel=True, cache=True)
def _count_close(left: np.ndarray, right: np.ndarray, max_distance: int, counts: np.ndarray) -> None:
    for i in numba.prange(len(left)):
        n = 0
        for j in range(len(right)):
            if _popcount(left[i] ^ right[j]) <= max_distance:
                n += 1
        counts[i] = n


@numba.njit(parallel=True, cache=True)
def _list_close(
    left: np.ndarray, right: np.ndarray, max_distance: int, rows: np.ndarray, offsets: np.ndarray, out: np.ndarray
) -> None:
    for k in numba.prange(len(rows)):
        i, n = rows[k], offsets[k]
        for j in range(len(right)):
            if _popcount(left[i] ^ right[j]) <= max_distance:
                out[n, 0], out[n, 1] = i, j
                n += 1


def _multi_index(left: dict[str, int], right: dict[str, int], max_distance: int, bits: int) -> list:
    # Pigeonhole: hashes within t bits agree exactly on at least one of t + 1 chunks.
    chunks = max_distance + 1
    widths = [bits // chunks + (1 if i < bits % chunks else 0) for i in range(chunks)]

    def chunk_frame(hashes: dict[str, int]) -> pl.DataFrame:
        keys, values = list(hashes), list(hashes.values())
        rows = []
        for index, width in enumerate(widths):
            shift = sum(widths[index + 1 :])
            mask = (1 << width) - 1
            rows.append(pl.DataFrame({"key": keys, "chunk": index, "part": [(v >> shift) & mask for v in values]}))
        return pl.concat(rows)

    joined = chunk_frame(left).join(chunk_frame(right), on=["chunk", "part"], suffix="_r")
    found = []
    for a, b in joined.select("key", "key_r").unique().iter_rows():
        distance = hamming(left[a], right[b])
        if distance <= max_distance:
            found.append((a, b, distance))
    return found


def cached_phashes(ctx: BuildContext, shas: list[str], hash_size: int = 8) -> dict[str, int]:
    """Perceptual hashes of images of the build's `images` table, computed once and kept in the build's work
    folder (image_dedupe and decontaminate share them; a resumed build finds them) and, by sha256, in the build
    cache (a hash is a function of the image's bytes, valid for every build)."""
    local_store = ctx.root / "work" / f"phash-{hash_size}.parquet"
    shared_store = ctx.cache / f"phash-{hash_size}.parquet" if ctx.cache is not None else None
    local, shared = _read_phashes(ctx, local_store), _read_phashes(ctx, shared_store)
    wanted = set(shas)
    known = {**{s: shared[s] for s in wanted & shared.keys()}, **local}
    missing = sorted(wanted - set(known))
    if missing:
        ctx.db.register("wanted_images", pa.table({"sha256": pa.array(missing, pa.string())}))
        reader = ctx.db.sql(
            f"SELECT sha256, bytes FROM {ctx.all_images} SEMI JOIN wanted_images USING (sha256) ORDER BY sha256"
        ).to_arrow_reader(batch_size=PHASH_BATCH)
        batches = ((b.column("sha256").to_pylist(), b.column("bytes").to_pylist(), hash_size) for b in reader)
        if ctx.engine.distributed or (ctx.workers > 1 and len(missing) >= PARALLEL_IMAGES):
            # Decoding is most of the work and Python-bound: one process per core (or the cluster's tasks).
            with ctx.engine.pool(ctx.workers) as pool:
                pending: deque[Future[dict[str, int]]] = deque()
                for batch in batches:  # a bounded window of batches in flight, so memory stays flat
                    pending.append(pool.submit(_phash_batch, batch))
                    if len(pending) >= 4 * ctx.workers:
                        known.update(pending.popleft().result())
                for future in pending:
                    known.update(future.result())
        else:
            for batch in batches:
                known.update(_phash_batch(batch))
        ctx.db.unregister("wanted_images")
    if not wanted <= local.keys():
        _write_phashes(ctx, local_store, {s: known[s] for s in local.keys() | wanted if s in known})
    if shared_store is not None and not known.keys() <= shared.keys():
        _write_phashes(ctx, shared_store, {**shared, **known})
    return {sha: known[sha] for sha in shas if sha in known}


def _read_phashes(ctx: BuildContext, store: Path | None) -> dict[str, int]:
    if store is None or not readable_parquet(store):  # a file cut short by a crash of the machine is computed again
        return {}
    query = f"SELECT sha256, phash FROM {parquet_relation(ctx.db, store)}"
    return {sha: as_unsigned(h) for sha, h in ctx.rows(query)}


def _write_phashes(ctx: BuildContext, store: Path, hashes: dict[str, int]) -> None:
    ordered = sorted(hashes)
    table = pa.table(
        {
            "sha256": pa.array(ordered, pa.string()),
            "phash": pa.array([as_signed(hashes[s]) for s in ordered], pa.int64()),
        }
    )
    ctx.write_table(table, store, "sha256")


PHASH_BATCH = 256
PARALLEL_IMAGES = 4096  # fewer images are hashed in the build's own process (a worker starts in about a second)


def _phash_batch(batch: tuple[list[str], list[bytes], int]) -> dict[str, int]:
    shas, data, hash_size = batch
    return {sha: phash(image, hash_size) for sha, image in zip(shas, data, strict=True)}


def as_signed(value: int) -> int:
    """A 64-bit hash as a signed int64, for parquet storage (and back with `as_unsigned`)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def as_unsigned(value: int) -> int:
    return value + (1 << 64) if value < 0 else value
