"""Writing a build's shards: the selected pairs in hash order, in the Arrow layout `datasets` writes.

Sorting the full rows (gigabytes of text) in DuckDB made writing slow, so the order is decided on narrow
columns (each selected copy's row_key, in hash order) and each shard gathers its rows a record batch at a time
from the memory-mapped work files (`curation.work`), `threads` shards at once (gathering, encoding and hashing
release the GIL). Memory stays at a record batch per thread plus the work-file pages a shard touches.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from curation.io import fsync_rename
from curation.schema import PAIR_SCHEMA

# Record batches of this many rows inside a shard file.
BATCH_ROWS = 10_000

# The pairs at the given row_keys, in that order, as record batches of at most the given rows (`WorkPairs.take`).
Take = Callable[[np.ndarray, int], Iterator[pa.RecordBatch]]


def shard_schema() -> pa.Schema:
    """The pair schema with the `huggingface` metadata that lets `Dataset.from_file` open a shard as it is."""
    from datasets import Features

    features = Features.from_arrow_schema(PAIR_SCHEMA)
    metadata = {**PAIR_SCHEMA.metadata, b"huggingface": json.dumps({"info": {"features": features.to_dict()}}).encode()}
    return PAIR_SCHEMA.with_metadata(metadata)


def write_shards(
    take: Take, keys: np.ndarray, folder: Path, rows_per_shard: int, threads: int = 1
) -> list[dict[str, Any]]:
    """Write the pairs at `keys` (row_keys in shard order; a key repeats once per upsampled copy) as shards of
    `rows_per_shard` rows (at least one file, empty when nothing was selected). Returns each shard's file, rows
    and sha256."""
    count = max(1, -(-len(keys) // rows_per_shard))
    schema = shard_schema()
    folder.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        written = [
            pool.submit(
                _write_shard, take, keys[k * rows_per_shard : (k + 1) * rows_per_shard], folder, schema, k, count
            )
            for k in range(count)
        ]
        return [future.result() for future in written]


def _write_shard(
    take: Take, keys: np.ndarray, folder: Path, schema: pa.Schema, index: int, count: int
) -> dict[str, Any]:
    path = folder / f"train-{index:05d}-of-{count:05d}.arrow"
    tmp = path.with_name(path.name + ".partial")
    rows = 0
    with open(tmp, "wb") as handle:
        sink = _HashingWriter(handle)  # hashed as written: the file is not read back
        with ipc.new_stream(pa.PythonFile(sink, mode="w"), schema) as writer:
            for batch in take(keys, BATCH_ROWS):
                writer.write_batch(pa.RecordBatch.from_arrays(batch.columns, schema=schema))  # checks the types
                rows += batch.num_rows
    fsync_rename(tmp, path)
    return {"file": f"shards/{path.name}", "rows": rows, "sha256": sink.digest.hexdigest()}


class _HashingWriter(io.RawIOBase):
    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.digest.update(data)
        return self.handle.write(data)
