"""Atomic file output: write under a temporary name, then rename (after an fsync where the file must survive a
crash of the machine), so readers never see half a file."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import secrets
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from curation.errors import InputError

PARQUET_OPTIONS = {"compression": "zstd", "write_statistics": True}


def sha256_file(path: Path, stop: threading.Event | None = None) -> str:
    """The file's sha256; `stop` set ends the reading early (`CancelledError`)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            if stop is not None and stop.is_set():
                raise CancelledError(f"hashing {path}")
            digest.update(block)
    return digest.hexdigest()


def sha256_once(path: Path) -> str:
    """`path`'s sha256, hashed once per process while the file is unchanged: its size, inode and times (the
    change time too, which no one sets back by hand as `touch` or `rsync -t` set the modification time)."""
    info = path.stat()
    return _sha256_of(path, info.st_size, info.st_ino, info.st_mtime_ns, info.st_ctime_ns)


@functools.lru_cache(maxsize=4096)
def _sha256_of(path: Path, size: int, inode: int, mtime_ns: int, ctime_ns: int) -> str:
    return sha256_file(path)


def row_group_ends(metadata: pq.FileMetaData) -> np.ndarray:
    """Each row group's end row in the file: row r is in group `searchsorted(ends, r, side="right")`."""
    return np.cumsum([metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)], dtype=np.int64)


def fsync_rename(tmp: Path, final: Path, durable: bool = True) -> None:
    """Rename `tmp` to `final`, after its bytes reached the disk (`durable`: a crash of the machine, not only of
    the process, leaves either no file or the whole file)."""
    if durable:
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
    os.replace(tmp, final)


def fsync_folder(folder: Path) -> None:
    """Make the renames inside `folder` durable (a crash of the machine keeps them)."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


@contextlib.contextmanager
def atomic_file(path: Path, durable: bool = True) -> Iterator[BinaryIO]:
    """A new, empty temporary file beside `path`, open for the block to write (`path.partial-` and a random name,
    created exclusively and never through a link, with the umask's mode: two writers, builds sharing a cache say,
    never share one, and nothing planted beside `path` is written through); renamed to `path` when the block ends
    (after an fsync where `durable`), removed when it raises, so a failure leaves neither half a file nor a
    temporary one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.partial-{secrets.token_hex(6)}")
    handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    try:
        with os.fdopen(handle, "wb") as file:
            yield file
            file.flush()
            if durable:
                os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str, durable: bool = True) -> None:
    """A text file, whole or not at all (`atomic_file`)."""
    data = text.encode("utf-8")  # a text that cannot be encoded fails before any file is made
    with atomic_file(path, durable) as file:
        file.write(data)


def write_json(path: Path, value: Any, durable: bool = True) -> None:
    """A JSON state file, whole or not at all (`write_text`)."""
    write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n", durable)


def read_json_state(path: Path) -> Any:
    """A JSON state file's value, or None where it is missing or damaged (then its work is redone)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def readable_parquet(path: Path) -> bool:
    """Whether `path` is a whole parquet file (absent, or cut short by a crash of the machine: False)."""
    try:
        pq.read_metadata(path)
    except (OSError, pa.ArrowException, ValueError):
        return False
    return True


class BatchWriter:
    """Buffer rows and write them in fixed-size groups; the file appears under its name only on `close` (fsynced
    first when `durable`). As a context manager: closed when the block ends, aborted (no file) when it raises."""

    def __init__(self, path: Path, schema: pa.Schema, rows_per_group: int = 5000, durable: bool = True) -> None:
        self.path = path
        self.durable = durable
        self.tmp = path.with_name(path.name + ".partial")
        self.schema = schema
        self.rows_per_group = rows_per_group
        self.rows = 0
        self._buffer: list[dict[str, Any]] = []
        self._tables: list[pa.Table] = []
        self._table_rows = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = self._open()

    def _open(self) -> Any:
        raise NotImplementedError

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self._buffer.append(row)
            if self._table_rows + len(self._buffer) >= self.rows_per_group:
                self._write_full_groups()

    def write_table(self, table: pa.Table) -> None:
        """Rows already in Arrow form, after any dict rows written before them: grouped exactly as `write` would
        group the same rows, so the bytes do not depend on how rows were fed."""
        self._rows_to_table()
        self._tables.append(table.cast(self.schema))
        self._table_rows += table.num_rows
        self._write_full_groups()

    def _rows_to_table(self) -> None:
        if self._buffer:
            self._tables.append(pa.Table.from_pylist(self._buffer, schema=self.schema))
            self._table_rows += len(self._buffer)
            self._buffer = []

    def _write_full_groups(self) -> None:
        self._rows_to_table()
        while self._table_rows >= self.rows_per_group:
            combined = pa.concat_tables(self._tables)
            self._write_group(combined.slice(0, self.rows_per_group))
            rest = combined.slice(self.rows_per_group)
            self._tables, self._table_rows = [rest], rest.num_rows

    def _write_group(self, table: pa.Table) -> None:
        self._writer.write_table(table.combine_chunks())  # one row group, or one record batch
        self.rows += table.num_rows

    def close(self) -> None:
        self._rows_to_table()
        if self._table_rows:
            self._write_group(pa.concat_tables(self._tables))
        self._close_writer()
        fsync_rename(self.tmp, self.path, self.durable)

    def abort(self) -> None:
        self._close_writer()
        self.tmp.unlink(missing_ok=True)

    def _close_writer(self) -> None:
        self._writer.close()

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, error_type: type[BaseException] | None, *_: object) -> None:
        if error_type is None:
            self.close()
        else:
            self.abort()


class ParquetBatchWriter(BatchWriter):
    """A parquet file of `rows_per_group`-row groups."""

    def __init__(
        self,
        path: Path,
        schema: pa.Schema,
        rows_per_group: int = 5000,
        compression: str = "zstd",
        durable: bool = True,
    ) -> None:
        self.compression = compression
        super().__init__(path, schema, rows_per_group, durable)

    def _open(self) -> pq.ParquetWriter:
        return pq.ParquetWriter(self.tmp, self.schema, **{**PARQUET_OPTIONS, "compression": self.compression})


class ArrowBatchWriter(BatchWriter):
    """An Arrow IPC file of `rows_per_group`-row record batches: memory-mapped, it is read with no decoding and
    no copy, which is what a build's work files need (`curation.work`)."""

    def _open(self) -> ipc.RecordBatchFileWriter:
        # Buffered: written a buffer at a time, large text buffers took twice as long to reach the page cache.
        self._sink = pa.BufferedOutputStream(pa.OSFile(str(self.tmp), "wb"), 1 << 20)
        return ipc.new_file(self._sink, self.schema)

    def _close_writer(self) -> None:
        self._writer.close()
        self._sink.close()


def read_shards(paths: Iterable[Path | str]) -> pa.Table:
    """The rows of a build's Arrow shards, memory-mapped (nothing is copied until a query touches it)."""
    tables = [ipc.open_stream(pa.memory_map(str(path))).read_all() for path in paths]
    if not tables:
        from curation.schema import PAIR_SCHEMA

        return PAIR_SCHEMA.empty_table()
    return pa.concat_tables(tables)


LOCK_TRIES = 25  # 0.5 s of retries


def open_lock(path: Path, create: bool = True, what: str = "the lock") -> int:
    """A lock file's descriptor, opened as a plain file only: never through a link (a planted one would have the
    lock made, or written, elsewhere) and never blocking on a pipe planted under its name; `InputError` naming it
    otherwise. `create`: opened for writing and made where absent; else read only."""
    flags = (os.O_WRONLY | os.O_CREAT if create else os.O_RDONLY) | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        raise InputError(f"{path}: cannot open {what} ({exc.strerror}; a link is refused)") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError(f"{path}: {what} is not a plain file")
    return fd


def held(lock: Path) -> bool:
    """Whether a process holds `lock` (an `only_writer` lock) now. Asked with a shared lock taken and given back
    at once: the file is opened for reading and never created."""
    try:
        fd = open_lock(lock, create=False)
    except InputError:  # absent, a link or a pipe: no lock
        return False
    with os.fdopen(fd) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


@contextlib.contextmanager
def only_writer(lock: Path, busy: str) -> Iterator[None]:
    """Held while one process writes an output (`lock`: a file beside or inside it, kept): a second writer gets
    `InputError(busy)` at once rather than write over the first's files."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with os.fdopen(open_lock(lock), "w") as handle:
        # A reader asking whether the output is being written (`held`) holds the lock for an instant: a writer
        # retries for a moment before it calls the output busy.
        for attempt in range(LOCK_TRIES):
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == LOCK_TRIES - 1:
                    raise InputError(busy) from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
