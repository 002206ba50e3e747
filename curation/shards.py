"""Writing a build's shards: the selected pairs in hash order, in the Arrow layout `datasets` writes.

Sorting the full rows (gigabytes of text) in DuckDB made writing slow, so the order is decided on narrow
columns (each selected copy's row_key, in hash order) and each shard gathers its rows a record batch at a time
from the memory-mapped work files (`curation.work`). Each shard is a job (`shard_jobs`) that a pool of threads
runs beside others (gathering, encoding, hashing and writing release the GIL). Memory stays at a record batch
per thread plus the work-file pages a shard touches.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import json
import mmap
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from curation.io import fsync_rename, read_json_state, sha256_file, write_json
from curation.pair import dump_meta
from curation.schema import PAIR_SCHEMA, compute_pair_id
from curation.work import WorkPairs

# Record batches of this many rows inside a shard file.
BATCH_ROWS = 10_000

# The pairs at the given row_keys, in that order, as record batches of at most the given rows (`WorkPairs.take`).
Take = Callable[[np.ndarray, int], Iterator[pa.RecordBatch]]


@functools.cache
def shard_schema() -> pa.Schema:
    """The pair schema with the `huggingface` metadata that lets `Dataset.from_file` open a shard as it is."""
    from datasets import Features

    features = Features.from_arrow_schema(PAIR_SCHEMA)
    metadata = {**PAIR_SCHEMA.metadata, b"huggingface": json.dumps({"info": {"features": features.to_dict()}}).encode()}
    return PAIR_SCHEMA.with_metadata(metadata)


def swapping(take: Take, swapped: np.ndarray) -> Take:
    """`take` with chosen and rejected exchanged in the pairs at the row_keys `swapped` (sorted): their scores and
    models follow, the margin changes sign, the pair_id becomes the swapped pair's, and `meta` keeps the old id.
    Only batches holding a swapped pair are touched."""

    def swapped_take(keys: np.ndarray, batch_rows: int) -> Iterator[pa.RecordBatch]:
        for start, batch in zip(range(0, len(keys), batch_rows), take(keys, batch_rows), strict=True):
            mask = np.isin(keys[start : start + batch_rows], swapped)
            yield _swap_labels(batch, mask) if mask.any() else batch

    return swapped_take


# A swapped pair's meta records its id before the swap (the signals and the reviews know it by that id).
ID_BEFORE_SWAP_SQL = "json_extract_string(meta, '$._review.pair_id_before')"


def id_before_swap(meta: str | None) -> str | None:
    """The pair id a pair had before the build swapped its chosen and rejected answers, from its `meta`; None if it
    was not swapped."""
    return (json.loads(meta or "{}").get("_review") or {}).get("pair_id_before")


def _swap_labels(batch: pa.RecordBatch, mask: np.ndarray) -> pa.RecordBatch:
    columns = {name: batch.column(name) for name in batch.schema.names}
    where = pa.array(mask)
    for a, b in (("chosen", "rejected"), ("chosen_score", "rejected_score"), ("chosen_model", "rejected_model")):
        columns[a], columns[b] = pc.if_else(where, columns[b], columns[a]), pc.if_else(where, columns[a], columns[b])
    columns["margin"] = pc.if_else(where, pc.negate(columns["margin"]), columns["margin"])
    ids, metas = columns["pair_id"].to_pylist(), columns["meta"].to_pylist()
    for i in np.flatnonzero(mask).tolist():
        prompt, images = columns["prompt"][i].as_py(), columns["images"][i].as_py()
        meta = {**json.loads(metas[i]), "_review": {"swapped": True, "pair_id_before": ids[i]}}
        ids[i] = compute_pair_id(prompt, images, columns["chosen"][i].as_py(), columns["rejected"][i].as_py())
        metas[i] = dump_meta(meta)
    columns["pair_id"], columns["meta"] = pa.array(ids, pa.string()), pa.array(metas, pa.string())
    return pa.RecordBatch.from_arrays([columns[n] for n in batch.schema.names], schema=batch.schema)


class WorkTake:
    """`take` over a build's work files that can travel to another process (a Ray task): the files are opened
    where it runs, once per call, and closed after (a mapping kept open would keep deleted work files on disk)."""

    def __init__(self, paths: list[Path], names: list[str], swapped: np.ndarray) -> None:
        self.paths, self.names, self.swapped = [str(p) for p in paths], list(names), swapped

    def __call__(self, keys: np.ndarray, batch_rows: int) -> Iterator[pa.RecordBatch]:
        work = WorkPairs([Path(p) for p in self.paths], self.names)
        try:
            take = swapping(work.take, self.swapped) if len(self.swapped) else work.take
            yield from take(keys, batch_rows)
        finally:
            work.close()


def shard_jobs(
    take: Take,
    keys: np.ndarray,
    folder: Path,
    rows_per_shard: int,
    records: Path | None = None,
    identity: str = "",
) -> list[Callable[[], dict[str, Any]]]:
    """One job per shard of `rows_per_shard` rows of the pairs at `keys` (row_keys in shard order; a key repeats
    once per upsampled copy), at least one (empty when nothing was selected). Each job writes its file and
    returns its file, rows and sha256; the jobs are independent, to be run in any order, in any pool. With
    `records` (a folder kept across runs), a job also records what it wrote, and a rerun's job whose shard is
    recorded for the same rows of the same `identity` (what else decides a row's content: the work files, the
    swapped pairs) returns the record instead of writing it again."""
    count = max(1, -(-len(keys) // rows_per_shard))
    schema = shard_schema()
    folder.mkdir(parents=True, exist_ok=True)
    if records is not None:
        records.mkdir(parents=True, exist_ok=True)
    cut = [keys[k * rows_per_shard : (k + 1) * rows_per_shard] for k in range(count)]
    return [functools.partial(_write_shard, take, cut[k], folder, schema, k, count, records, identity)
            for k in range(count)]  # fmt: skip


def _write_shard(
    take: Take,
    keys: np.ndarray,
    folder: Path,
    schema: pa.Schema,
    index: int,
    count: int,
    records: Path | None,
    identity: str,
) -> dict[str, Any]:
    path = folder / f"train-{index:05d}-of-{count:05d}.arrow"
    record = records / f"{path.name}.json" if records is not None else None
    rows_digest = hashlib.md5(identity.encode() + np.ascontiguousarray(keys, np.int64).tobytes()).hexdigest()
    if record is not None:
        done = read_json_state(record)
        shard = done.get("shard") if isinstance(done, dict) else None
        if isinstance(shard, dict) and done.get("rows_md5") == rows_digest and path.is_file():
            # the size first (cheap), then the bytes: a shard damaged in place is written again
            if path.stat().st_size == done.get("bytes") and sha256_file(path) == shard.get("sha256"):
                return shard
    tmp = path.with_name(path.name + ".partial")
    rows = 0
    with _ShardFile(tmp) as sink:
        with ipc.new_stream(pa.PythonFile(sink, mode="w"), schema) as writer:
            for batch in take(keys, BATCH_ROWS):
                writer.write_batch(pa.RecordBatch.from_arrays(batch.columns, schema=schema))  # checks the types
                rows += batch.num_rows
    fsync_rename(tmp, path)
    shard = {"file": f"shards/{path.name}", "rows": rows, "sha256": sink.digest.hexdigest()}
    if record is not None:
        write_json(record, {"rows_md5": rows_digest, "bytes": sink.size, "shard": shard}, durable=False)
    return shard


class _ShardFile(io.RawIOBase):
    """A shard's bytes on their way to `path`: hashed as written (the file is not read back) and written from
    one reused, page-aligned buffer, around the page cache (`O_DIRECT`) where the system allows. Buffered
    writes first fill fresh page-cache pages, which on a virtual machine cost more than the copying (`dd` here:
    0.48 GB/s buffered against 2.9 GB/s direct); the build reads no shard back, and `fsync` follows anyway."""

    def __init__(self, path: Path) -> None:
        self.digest = hashlib.sha256()
        self.size = 0
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        try:
            self.fd = os.open(path, flags | getattr(os, "O_DIRECT", 0), 0o644)
            self.direct = hasattr(os, "O_DIRECT")
        except OSError:  # a file system without direct I/O: buffered
            self.fd, self.direct = os.open(path, flags, 0o644), False
        self._stage = mmap.mmap(-1, STAGE_BYTES)
        self._filled = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        written = len(view)
        self.digest.update(view)
        self.size += written
        while len(view):
            n = min(len(view), STAGE_BYTES - self._filled)
            self._stage[self._filled : self._filled + n] = view[:n]
            self._filled += n
            view = view[n:]
            if self._filled == STAGE_BYTES:
                self._flush(STAGE_BYTES)
        return written

    def _flush(self, length: int) -> None:
        with memoryview(self._stage) as staged:
            try:
                _write_all(self.fd, staged[:length])
            except OSError as exc:
                if exc.errno != errno.EINVAL or not self.direct:
                    raise
                import fcntl  # where there is O_DIRECT, there is fcntl

                # The file system opened the file for direct I/O but refuses direct writes: go on buffered.
                fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~os.O_DIRECT)
                self.direct = False
                _write_all(self.fd, staged[:length])
        self._filled = 0

    def close(self) -> None:
        if not self.closed:
            if self._filled:  # direct writes come in whole blocks: the last one is padded, then cut off
                self._flush(-(-self._filled // DIRECT_BLOCK) * DIRECT_BLOCK if self.direct else self._filled)
                os.ftruncate(self.fd, self.size)
            self._stage.close()
            os.close(self.fd)
        super().close()


STAGE_BYTES = 8 * 2**20  # a multiple of any direct-I/O block size
DIRECT_BLOCK = 4096


def _write_all(fd: int, view: memoryview) -> None:
    while len(view):
        view = view[os.write(fd, view) :]
