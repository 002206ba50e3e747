"""Atomic file output: write under a temporary name, fsync, then rename, so readers never see half a file."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

PARQUET_OPTIONS = {"compression": "zstd", "write_statistics": True}


def fsync_rename(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, final)


class ParquetBatchWriter:
    """Buffer rows and write them in fixed-size row groups; the file appears under its name only on `close`."""

    def __init__(self, path: Path, schema: pa.Schema, rows_per_group: int = 5000) -> None:
        self.path = path
        self.tmp = path.with_name(path.name + ".partial")
        self.schema = schema
        self.rows_per_group = rows_per_group
        self.rows = 0
        self._buffer: list[dict[str, Any]] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(self.tmp, schema, **PARQUET_OPTIONS)

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self._buffer.append(row)
            if len(self._buffer) >= self.rows_per_group:
                self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._writer.write_table(pa.Table.from_pylist(self._buffer, schema=self.schema))
            self.rows += len(self._buffer)
            self._buffer = []

    def close(self) -> None:
        self._flush()
        self._writer.close()
        fsync_rename(self.tmp, self.path)

    def abort(self) -> None:
        self._writer.close()
        self.tmp.unlink(missing_ok=True)


def read_shards(paths: Iterable[Path | str]) -> pa.Table:
    """The rows of a build's Arrow shards, memory-mapped (nothing is copied until a query touches it)."""
    tables = [ipc.open_stream(pa.memory_map(str(path))).read_all() for path in paths]
    if not tables:
        from curation.schema import PAIR_SCHEMA

        return PAIR_SCHEMA.empty_table()
    return pa.concat_tables(tables)
