"""Writing a build's shards: the selected pairs in hash order, in the Arrow layout `datasets` writes.

Sorting the full rows (gigabytes of text) in DuckDB made writing slow, so the order is decided on narrow
columns (each selected copy's `position` in hash order) and the rows are routed by sequential reads: a read
collects the rows of as many shards as fit a memory budget (by each pair's estimated size), each of those
shards is put in order a record batch at a time and written (by `threads` at once: ordering, encoding and
hashing release the GIL), and the next read collects the next shards. The first read also writes the pairs no
copy of which was selected to `removed_pairs`. Nothing is written twice (scratch files cost more than a re-read).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from curation.io import ParquetBatchWriter, fsync_rename
from curation.schema import PAIR_SCHEMA

# Record batches of this many rows inside a shard file.
BATCH_ROWS = 10_000
# Rows held in memory per read, in estimated bytes (at least one shard's worth; at 1M pairs, 5 of 9 shards).
MEMORY_BUDGET = 2**30


def shard_schema() -> pa.Schema:
    """The pair schema with the `huggingface` metadata that lets `Dataset.from_file` open a shard as it is."""
    from datasets import Features

    features = Features.from_arrow_schema(PAIR_SCHEMA)
    metadata = {**PAIR_SCHEMA.metadata, b"huggingface": json.dumps({"info": {"features": features.to_dict()}}).encode()}
    return PAIR_SCHEMA.with_metadata(metadata)


@dataclass(frozen=True)
class Placement:
    """Where each selected copy goes: `row_keys` ascending (a key repeats once per upsampled copy), each copy's
    `positions` in the shards' order (0 .. total-1) and its estimated `sizes` in memory (bytes), which decide
    how many shards one read collects."""

    row_keys: np.ndarray
    positions: np.ndarray
    sizes: np.ndarray

    @property
    def total(self) -> int:
        return len(self.positions)


def write_shards(
    read_rows: Callable[[], Iterator[pa.RecordBatch]],
    placement: Placement,
    folder: Path,
    rows_per_shard: int,
    removed: ParquetBatchWriter,
    memory_budget: int = MEMORY_BUDGET,
    threads: int = 1,
) -> list[dict[str, Any]]:
    """Route the rows of `read_rows()` (all pairs with a leading `row_key`, ascending; called once per read) to
    the shards by `placement`; the rows not placed go to `removed`. Returns each shard's file, rows and sha256."""
    with ThreadPoolExecutor(max(1, threads)) as pool:
        return _write_shards(read_rows, placement, folder, rows_per_shard, removed, memory_budget, pool)


def _write_shards(
    read_rows: Callable[[], Iterator[pa.RecordBatch]],
    placement: Placement,
    folder: Path,
    rows_per_shard: int,
    removed: ParquetBatchWriter,
    memory_budget: int,
    pool: ThreadPoolExecutor,
) -> list[dict[str, Any]]:
    count = max(1, -(-placement.total // rows_per_shard))
    schema = shard_schema()
    folder.mkdir(parents=True, exist_ok=True)
    shard_bytes = np.bincount(placement.positions // rows_per_shard, placement.sizes, minlength=count)
    shards: list[dict[str, Any]] = []
    for first, last in _reads(shard_bytes, memory_budget):  # each read collects shards first..last-1
        parts: dict[int, list[pa.RecordBatch]] = {}
        positions: dict[int, list[np.ndarray]] = {}
        for batch, placed, rows_in_batch, not_placed in _routed(read_rows(), placement):
            if first == 0 and not_placed.any():
                removed.write_table(pa.Table.from_batches([batch.filter(pa.array(not_placed))]))
            shard_of = placed // rows_per_shard
            for k in np.unique(shard_of[(shard_of >= first) & (shard_of < last)]).tolist():
                mine = shard_of == k
                parts.setdefault(k, []).append(batch.take(pa.array(rows_in_batch[mine])))
                positions.setdefault(k, []).append(placed[mine])
        written = [
            pool.submit(_write_shard, folder, schema, k, count, parts.pop(k, []), positions.pop(k, []))
            for k in range(first, last)
        ]
        # All written before the next read: memory stays within the budget plus a record batch per thread.
        shards.extend(future.result() for future in written)
    return shards


def _reads(shard_bytes: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Consecutive runs of shards whose estimated bytes fit the budget (a shard larger than it reads alone)."""
    reads, first, held = [], 0, 0.0
    for k, size in enumerate(shard_bytes.tolist()):
        if k > first and held + size > budget:
            reads.append((first, k))
            first, held = k, 0.0
        held += size
    return [*reads, (first, len(shard_bytes))]


def _routed(
    batches: Iterator[pa.RecordBatch], placement: Placement
) -> Iterator[tuple[pa.RecordBatch, np.ndarray, np.ndarray, np.ndarray]]:
    """Per batch: the pair rows, the positions placed from it, the row of each, and the rows placed nowhere."""
    last_key = -1
    for batch in batches:
        keys = batch.column(0).to_numpy()
        if len(keys) == 0:
            continue
        if keys[0] <= last_key or np.any(np.diff(keys) <= 0):
            raise AssertionError("pairs are not read in row_key order")
        last_key = int(keys[-1])
        lo = np.searchsorted(placement.row_keys, keys[0], side="left")
        hi = np.searchsorted(placement.row_keys, keys[-1], side="right")
        rows_in_batch = np.searchsorted(keys, placement.row_keys[lo:hi])
        if not np.array_equal(keys[rows_in_batch], placement.row_keys[lo:hi]):
            raise AssertionError("a placed row_key is not among the pairs")
        not_placed = np.ones(len(keys), bool)
        not_placed[rows_in_batch] = False
        pairs = pa.RecordBatch.from_arrays(batch.columns[1:], schema=PAIR_SCHEMA)  # checks names and types
        yield pairs, placement.positions[lo:hi], rows_in_batch, not_placed


def _write_shard(
    folder: Path, schema: pa.Schema, index: int, count: int, parts: list[pa.RecordBatch], positions: list[np.ndarray]
) -> dict[str, Any]:
    table = pa.Table.from_batches(parts, schema=PAIR_SCHEMA) if parts else PAIR_SCHEMA.empty_table()
    order = np.argsort(np.concatenate(positions), kind="stable") if parts else np.zeros(0, np.int64)
    path = folder / f"train-{index:05d}-of-{count:05d}.arrow"
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as handle:
        sink = _HashingWriter(handle)  # hashed as written: the file is not read back
        with ipc.new_stream(pa.PythonFile(sink, mode="w"), schema) as writer:
            # Put in order a record batch at a time: a whole ordered copy of the shard would hold another shard's
            # worth of memory per thread, freshly allocated (on this machine that costs more than the copying).
            for start in range(0, len(order), BATCH_ROWS):
                batch = table.take(pa.array(order[start : start + BATCH_ROWS])).combine_chunks()
                writer.write_batch(batch.cast(schema).to_batches()[0])
    fsync_rename(tmp, path)
    return {"file": f"shards/{path.name}", "rows": table.num_rows, "sha256": sink.digest.hexdigest()}


class _HashingWriter(io.RawIOBase):
    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.digest.update(data)
        return self.handle.write(data)
