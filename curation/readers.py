"""Stream native rows from local files (jsonl, jsonl.gz, json, parquet, arrow) or a Hugging Face dataset.

Every row comes out as a `Record` with a reference that locates it (`file:line` or `split:index`); a row
that cannot be read (bad UTF-8, malformed JSON, a truncated gzip tail) comes out as a `Record` carrying a
`RowError`, so the caller records it as a reject instead of losing it.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from curation.errors import InputError, RowError

SUPPORTED_SUFFIXES = (".jsonl.gz", ".json.gz", ".jsonl", ".json", ".parquet", ".arrow")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_BATCH_ROWS = 1000


@dataclass(frozen=True)
class Record:
    ref: str
    data: dict[str, Any] | None
    error: RowError | None = None


def is_hub_id(location: str) -> bool:
    return not Path(location).exists() and bool(_HUB_ID.match(location))


def list_files(root: Path, suffixes: Sequence[str] = SUPPORTED_SUFFIXES) -> list[Path]:
    """A file itself, or every supported file under a folder, in sorted (deterministic) order."""
    if root.is_file():
        return [root]
    if not root.exists():
        raise InputError(f"{root}: no such file or folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(tuple(suffixes)))
    if not files:
        raise InputError(f"{root}: no {', '.join(suffixes)} files found")
    return files


def iter_file(path: Path, name: str | None = None, columns: Sequence[str] | None = None) -> Iterator[Record]:
    """Rows of one local file; `name` is how refs spell the file (defaults to its file name)."""
    name = name or path.name
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    if path.name.endswith((".jsonl.gz", ".jsonl", ".json.gz")):
        yield from _iter_jsonl(path, name)
    elif path.name.endswith(".json"):
        yield from _iter_json(path, name)
    elif path.name.endswith(".parquet"):
        yield from _iter_parquet(path, name, columns)
    elif path.name.endswith(".arrow"):
        yield from _iter_arrow(path, name, columns)
    else:
        raise InputError(f"{path}: unsupported file type (expected one of {', '.join(SUPPORTED_SUFFIXES)})")


def iter_local(root: Path, columns: Sequence[str] | None = None) -> Iterator[Record]:
    files = list_files(root)
    for path in files:
        name = path.name if root.is_file() else path.relative_to(root).as_posix()
        yield from iter_file(path, name, columns)


def iter_hub(
    hub_id: str,
    config: str | None = None,
    split: str = "train",
    revision: str | None = None,
    columns: Sequence[str] | None = None,
) -> Iterator[Record]:
    """Stream a Hub dataset without decoding images (bytes stay bytes); no remote code is run."""
    import datasets  # imported lazily: only Hub reads need it

    try:
        ds = datasets.load_dataset(hub_id, name=config, split=split, revision=revision, streaming=True)
    except Exception as exc:  # the Hub client raises many types; the message is what the user needs
        raise InputError(f"{hub_id}: cannot open on the Hugging Face Hub ({type(exc).__name__}: {exc})") from exc
    if columns is not None:
        ds = ds.select_columns([c for c in columns if c in (ds.column_names or columns)])
    for index, row in enumerate(ds.decode(False)):
        yield Record(f"{split}:{index}", dict(row))


def iter_location(
    location: str,
    *,
    config: str | None = None,
    split: str = "train",
    revision: str | None = None,
    columns: Sequence[str] | None = None,
) -> Iterator[Record]:
    """Rows of a local file or folder, or of a Hub dataset id when no such local path exists."""
    if is_hub_id(location):
        yield from iter_hub(location, config=config, split=split, revision=revision, columns=columns)
    else:
        yield from iter_local(Path(location), columns)


def _parse_json_line(raw: bytes, ref: str) -> Record:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Record(ref, None, RowError("invalid utf-8", f"{ref}: byte {exc.start}: {exc.reason}"))
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return Record(ref, None, RowError("malformed json", f"{ref}: column {exc.colno}: {exc.msg}"))
    if not isinstance(value, dict):
        return Record(ref, None, RowError("not a json object", f"{ref}: got {type(value).__name__}"))
    return Record(ref, value)


def _iter_jsonl(path: Path, name: str) -> Iterator[Record]:
    opener = gzip.open if path.name.endswith(".gz") else open
    line_no = 0
    yielded = 0
    try:
        with opener(path, "rb") as handle:
            for line_no, raw in enumerate(handle):
                if not raw.strip():
                    continue  # blank lines (a trailing newline) are not rows
                yielded += 1
                yield _parse_json_line(raw.rstrip(b"\r\n"), f"{name}:{line_no}")
    except (EOFError, OSError, zlib.error) as exc:
        # A truncated or corrupt gzip stream: what was read is kept; the unreadable tail is one reject.
        tail = f"{name}:{line_no + 1 if yielded else 0}+"
        yield Record(tail, None, RowError("truncated file", f"{path}: unreadable from line {tail}: {exc}"))
        return
    if not yielded:
        raise InputError(f"{path}: file has no rows")


def _iter_json(path: Path, name: str) -> Iterator[Record]:
    # A .json file is a JSON array of objects (POVID, LLaVA-RLHF) or, as often on the Hub, json lines.
    with open(path, "rb") as handle:
        head = handle.read(1024).lstrip()
    if not head.startswith(b"["):
        yield from _iter_jsonl(path, name)
        return
    try:
        rows = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc
    if not rows:
        raise InputError(f"{path}: file has no rows")
    for index, value in enumerate(rows):
        ref = f"{name}:{index}"
        if isinstance(value, dict):
            yield Record(ref, value)
        else:
            yield Record(ref, None, RowError("not a json object", f"{ref}: got {type(value).__name__}"))


def _iter_table_batches(batches: Iterator[pa.RecordBatch], name: str) -> Iterator[Record]:
    index = 0
    for batch in batches:
        for row in batch.to_pylist():
            yield Record(f"{name}:{index}", row)
            index += 1


def _iter_parquet(path: Path, name: str, columns: Sequence[str] | None) -> Iterator[Record]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: not a readable parquet file ({exc})") from exc
    if columns is not None:
        columns = [c for c in columns if c in parquet.schema_arrow.names]
    yield from _iter_table_batches(parquet.iter_batches(batch_size=_BATCH_ROWS, columns=columns), name)


def _iter_arrow(path: Path, name: str, columns: Sequence[str] | None) -> Iterator[Record]:
    # `datasets` writes the Arrow IPC stream format; other tools write the file format.
    source = pa.memory_map(str(path))
    try:
        reader: Any = ipc.open_file(source)
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
    except pa.ArrowInvalid:
        try:
            reader = ipc.open_stream(pa.memory_map(str(path)))
        except pa.ArrowInvalid as exc:
            raise InputError(f"{path}: not a readable Arrow file ({exc})") from exc
        batches = iter(reader)
    if columns is not None:
        keep = [c for c in columns if c in reader.schema.names]
        batches = (b.select(keep) for b in batches)
    yield from _iter_table_batches(batches, name)
