"""A build's work files: each source's ingested pairs as an Arrow IPC file, memory-mapped and addressed by
`row_key` (the source's index in the recipe in the high bits, the pair's row in its file below).

Mapped, the files are read with no decoding and no copy: DuckDB scans the columns a stage needs, and the shards
gather their rows straight from the page cache, where a parquet work file had to be decoded into fresh memory
(which on a virtual machine costs more than the decoding) and read once per memory budget's worth of shards.
Pages touched through a mapping count in the process's resident memory (as with `datasets`, which maps its
Arrow files too) until `release` lets go of them; they stay in the page cache, which the kernel can reclaim.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from curation.schema import PAIR_SCHEMA

ROW_KEY_BITS = 40


class WorkPairs:
    """The pairs of `paths` (one Arrow file per source, in recipe order), whose `source` column reads `names`
    (the recipe's names for the sources)."""

    def __init__(self, paths: list[Path], names: list[str]) -> None:
        self.names = pa.array(names, pa.string())
        self._maps = []
        for path in paths:
            with open(path, "rb") as handle:
                self._maps.append(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ))
        files = [ipc.open_file(pa.BufferReader(pa.py_buffer(m))) for m in self._maps]
        self._files = [[file.get_batch(i) for i in range(file.num_record_batches)] for file in files]
        self._sizes = np.array([sum(b.num_rows for b in batches) for batches in self._files], np.int64)

    def tables(self) -> list[pa.Table]:
        """Each source's pairs with a leading `row_key` (no copy: the table reads the mapped file)."""
        tables = []
        for index, batches in enumerate(self._files):
            table = pa.Table.from_batches(batches, schema=PAIR_SCHEMA)
            keys = np.arange(table.num_rows, dtype=np.int64) + (index << ROW_KEY_BITS)
            tables.append(table.add_column(0, "row_key", pa.array(keys)))
        return tables

    def release(self) -> None:
        """Let go of the mapped pages touched so far (resident memory; the data stays readable)."""
        if hasattr(mmap, "MADV_DONTNEED"):  # not on every platform; there the pages stay mapped
            for mapped in self._maps:
                mapped.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        """Drop the mappings (unmapped once nothing else holds their batches, such as a closed DuckDB)."""
        self._files, self._maps = [], []

    def take(self, keys: np.ndarray, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """The pairs at `keys` (row_keys in any order, repeats allowed), in that order, as record batches of
        `batch_rows`; the mapped pages are released at the end (not after each batch: the kernel maps the
        neighbours of each page touched, so every batch would map most of the file again)."""
        batches = [b for file in self._files for b in file]
        # Taken from each record batch: a take across chunks would first concatenate them all.
        firsts = np.cumsum([0] + [b.num_rows for b in batches], dtype=np.int64)
        sources, rows = keys >> ROW_KEY_BITS, keys & ((1 << ROW_KEY_BITS) - 1)
        if len(keys) and (
            sources.min() < 0 or sources.max() >= len(self._sizes) or np.any(rows >= self._sizes[sources])
        ):
            raise AssertionError("a row_key is not among the work files' pairs")
        index = np.concatenate([[0], np.cumsum(self._sizes)[:-1]]).astype(np.int64)[sources] + rows
        source_column = PAIR_SCHEMA.get_field_index("source")
        for start in range(0, len(keys), batch_rows):
            wanted = index[start : start + batch_rows]
            by_batch = np.argsort(wanted, kind="stable")
            ordered = wanted[by_batch]
            which = np.searchsorted(firsts, ordered, side="right") - 1
            cuts = [0, *(np.flatnonzero(np.diff(which)) + 1).tolist(), len(ordered)]
            parts = [batches[which[a]].take(pa.array(ordered[a:b] - firsts[which[a]])) for a, b in pairwise(cuts)]
            # Back in the order asked, in one take across the parts (5x faster than joining them first).
            gathered = pa.Table.from_batches(parts, schema=PAIR_SCHEMA).take(pa.array(np.argsort(by_batch)))
            batch = gathered.combine_chunks().to_batches()[0]
            source = pa.DictionaryArray.from_arrays(
                pa.array(sources[start : start + batch_rows], pa.int32()), self.names
            )
            yield batch.set_column(source_column, PAIR_SCHEMA.field(source_column), source.cast(pa.string()))
        self.release()
