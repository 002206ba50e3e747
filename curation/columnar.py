"""The columnar ingest: a native layout converted by one DuckDB query instead of row by row in Python.

An adapter offers it for layouts it recognizes (`Adapter.sql_layout`, given the files' Arrow schema). The
query converts the rows that need no Python: "clean" rows, by the layout's own conditions (present, typed
fields that make a valid pair), with no NUL characters, and with `meta` values that DuckDB spells as
`json.dumps` does. Every other row goes through the adapter's `convert`, so rejects and odd rows have one
implementation. Both streams are merged in input order and written by the same writer as the row-by-row
ingest: the pairs and rejects are byte-identical to it (tests compare), only faster. A layout with one
embedded image per row (`SqlLayout.image`) has its images hashed and decoded in Python threads first, each
distinct image once; the images file then holds the same rows as the row-by-row ingest's, in the order the
image check meets them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.errors import RowError
from curation.images import ImageRow, decode_image
from curation.io import row_group_ends
from curation.readers import _BATCH_ROWS, DAMAGED, Record, is_hub_id, table_record
from curation.schema import WHITESPACE, install_text_macros
from curation.sources.base import Adapter, SqlLayout
from curation.sql import GLOB_CHARACTERS, quote_identifier, read_parquet, sql_literal

# A native row's key (`__row_key`): its input file's index in the high bits, its row in that file below (the
# build's row keys, `curation.work.ROW_KEY_BITS`, key a pair by source and ingested row instead).
_FILE_ROW_BITS = 40
# The checked images' rows, registered on the connection by the ingest (`checked_images`).
IMAGE_ROWS = "__image_rows"
IMAGE_BATCH = 256  # rows of image bytes held at once


class UnreadableInput(Exception):
    """DuckDB could not read the native files (a damaged page, a string that is not UTF-8): the ingest goes row
    by row instead, which rejects only what is damaged."""


# How DuckDB reports a file it cannot decode: invalid input (a string that is not UTF-8) and its plain `Error` (a
# corrupt page); the Arrow stream passes them on as `OSError`s whose message starts so. Its other errors (memory,
# disk, interrupts, a mistake in the query) are not the input's, and are raised as they are.
_DAMAGED_PREFIXES = ("Invalid Input Error", "Invalid Error")


def _damaged_input(exc: Exception) -> bool:
    if isinstance(exc, duckdb.Error):
        return type(exc) is duckdb.Error or isinstance(exc, duckdb.InvalidInputException)
    return str(exc).startswith(_DAMAGED_PREFIXES)


def batches(db: duckdb.DuckDBPyConnection, query: str, batch_size: int) -> Iterator[pa.RecordBatch]:
    """The query's result a batch at a time; errors reading a damaged input become `UnreadableInput`."""
    try:
        reader = db.sql(query).to_arrow_reader(batch_size=batch_size)
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            yield batch
    except (duckdb.Error, pa.ArrowException, OSError) as exc:
        if _damaged_input(exc):
            raise UnreadableInput(str(exc)) from exc
        raise


def json_sql(expr: str, dtype: pa.DataType) -> tuple[str, str] | None:
    """(SQL for `json.dumps(value, ensure_ascii=False, sort_keys=True)` of a column, SQL condition under which
    that spelling is exact), or None for types this does not spell (the layout then stays row by row)."""
    if pa.types.is_null(dtype):
        return "'null'", "true"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        # DuckDB writes these control characters' hex digits in upper case; NUL ends some of its string functions.
        spelled, exact = f"to_json({expr})::VARCHAR", f"NOT regexp_matches({expr}, '[\\x00\\x0b\\x0e\\x0f\\x1a-\\x1f]')"
    elif pa.types.is_integer(dtype):
        spelled, exact = f"CAST({expr} AS VARCHAR)", "true"
    elif pa.types.is_boolean(dtype):
        spelled, exact = f"CASE WHEN {expr} THEN 'true' ELSE 'false' END", "true"
    elif pa.types.is_floating(dtype):
        # Python's repr and DuckDB agree on the shortest round-trip digits; they differ in exponent notation.
        value = f"CAST({expr} AS DOUBLE)"
        spelled, exact = f"CAST({value} AS VARCHAR)", f"({value} = 0 OR (abs({value}) >= 1e-4 AND abs({value}) < 1e16))"
    elif pa.types.is_struct(dtype):
        parts, conditions = [], []
        for child in sorted(dtype, key=lambda f: f.name):
            inner = json_sql(f"{expr}.{quote_identifier(child.name)}", child.type)
            if inner is None:
                return None
            parts.append(f"{sql_literal(json.dumps(child.name, ensure_ascii=False) + ': ')} || {inner[0]}")
            conditions.append(inner[1])
        spelled = "'{' || " + " || ', ' || ".join(parts) + " || '}'" if parts else "'{}'"
        exact = " AND ".join(conditions) or "true"
    elif pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        inner = json_sql("__e", dtype.value_type)
        if inner is None:
            return None
        spelled = f"'[' || array_to_string(list_transform({expr}, lambda __e: {inner[0]}), ', ') || ']'"
        exact = f"coalesce(list_bool_and(list_transform({expr}, lambda __e: {inner[1]})), true)"
    else:
        return None
    return f"CASE WHEN {expr} IS NULL THEN 'null' ELSE {spelled} END", f"({expr} IS NULL OR ({exact}))"


def meta_sql(
    schema: pa.Schema, mapped: frozenset[str], fields: Mapping[str, tuple[str, str]] | None = None
) -> tuple[str, str] | None:
    """`meta` (the unmapped native fields as `dump_meta` writes them) and its exactness condition; `fields`
    spell the fields an adapter's `meta` rewrites."""
    parts, conditions = [], []
    for name in sorted(n for n in schema.names if n not in mapped):
        spelled = (fields or {}).get(name) or json_sql(quote_identifier(name), schema.field(name).type)
        if spelled is None:
            return None
        parts.append(f"{sql_literal(json.dumps(name, ensure_ascii=False) + ': ')} || {spelled[0]}")
        conditions.append(spelled[1])
    spelled = "'{' || " + " || ', ' || ".join(parts) + " || '}'" if parts else "'{}'"
    return spelled, " AND ".join(conditions or ["true"])


@dataclass(frozen=True)
class ColumnarPlan:
    adapter: Adapter
    files: list[tuple[Path, str]]  # (path, name as refs spell it)
    layout: SqlLayout
    meta: tuple[str, str]


def plan(adapter: Adapter, location: str) -> ColumnarPlan | None:
    """The columnar plan for a local parquet file or folder whose files share one schema the adapter converts
    (None: convert row by row)."""
    if is_hub_id(location) or not Path(location).exists() or not _adapter_allows(adapter):
        return None
    root = Path(location)
    paths = adapter.local_files(location)
    if not all(p.name.endswith(".parquet") and p.is_file() for p in paths):
        return None  # another format, or a link to nothing or to a FIFO: the row-by-row reader reports it
    if any(c in GLOB_CHARACTERS for p in paths for c in str(p)):
        return None  # DuckDB would read `x[1].parquet` as the pattern, that is `x1.parquet`
    try:
        schemas = {pq.read_schema(p).remove_metadata() for p in paths}
    except DAMAGED:
        return None  # the row-by-row reader reports the broken file
    if len(schemas) != 1 or not identity_portable():
        return None
    schema = schemas.pop()
    if adapter.columns is not None:
        schema = pa.schema([schema.field(n) for n in schema.names if n in adapter.columns])
    if not _names_bind(schema):
        return None
    layout = adapter.sql_layout(schema)
    if layout is None or (type(adapter).meta is not Adapter.meta and not layout.spells_meta):
        return None  # an adapter's own `meta` is reproduced only where its layout spells it
    meta = meta_sql(schema, adapter.mapped_fields, layout.meta_fields)
    if meta is None:
        return None
    files = [(p, p.name if root.is_file() else p.relative_to(root).as_posix()) for p in paths]
    return ColumnarPlan(adapter, files, layout, meta)


def _adapter_allows(adapter: Adapter) -> bool:
    """The columnar path replaces `convert` and the default `records` only."""
    kind = type(adapter)
    return kind.convert is not Adapter.convert and kind.records is Adapter.records


def _names_bind(schema: pa.Schema | pa.DataType) -> bool:
    """Names that DuckDB binds as Python reads them: DuckDB matches names case-insensitively, and the query's
    own names (`file_row_number`, `__...`) must not be shadowed; struct fields (also in lists) likewise."""
    fields = list(schema) if isinstance(schema, pa.Schema) else list(schema) if pa.types.is_struct(schema) else []
    if isinstance(schema, pa.DataType) and (pa.types.is_list(schema) or pa.types.is_large_list(schema)):
        return _names_bind(schema.value_type)
    names = [f.name for f in fields]
    if len({n.lower() for n in names}) != len(names):
        return False
    if any(not n or n.startswith("__") or n.lower() == "file_row_number" for n in names):
        return False
    return all(_names_bind(f.type) for f in fields)


@functools.cache
def identity_portable() -> bool:
    """Whether DuckDB's NFC and this Python's agree (both follow their own Unicode version: a composition new
    in one is not in the other), and this Python's whitespace is the one the SQL spelling collapses."""
    if "".join(chr(c) for c in range(0x110000) if chr(c).isspace()) != WHITESPACE:
        return False
    # Characters newer than this Python's Unicode are not probed: text holding them may get other ids here.
    canonical = (chr(c) for c in range(0x110000) if unicodedata.decomposition(chr(c))[:1] not in ("", "<"))
    decomposed = [unicodedata.normalize("NFD", c) for c in canonical]
    db = duckdb.connect()
    try:
        got = [r[0] for r in db.execute("SELECT nfc_normalize(s) FROM unnest(?) t(s)", [decomposed]).fetchall()]
    finally:
        db.close()
    return got == [unicodedata.normalize("NFC", d) for d in decomposed]


def _select(plan: ColumnarPlan) -> str:
    """The native rows of every file, in file order, with `row_key` and `source_row`."""
    parts = [
        f"""SELECT ({index}::BIGINT << {_FILE_ROW_BITS}) + file_row_number AS __row_key,
                   {sql_literal(name + ":")} || file_row_number AS __source_row, * EXCLUDE (file_row_number)
            FROM {read_parquet(path, "file_row_number = true")}"""
        for index, (path, name) in enumerate(plan.files)
    ]
    return " UNION ALL ".join(parts)


def _clean(plan: ColumnarPlan) -> str:
    """SQL: the row converts exactly in SQL (the layout's conditions, no NUL, meta spelled as Python does); a
    layout with an image also needs it among the checked ones (`pairs_query`)."""
    layout = plan.layout
    texts = [layout.chosen, layout.rejected]
    no_nul = " AND ".join(f"NOT contains({t}, chr(0))" for t in texts)
    nul = "contains(__m.role || __m.content, chr(0))"
    prompt_ok = f"NOT list_bool_or(list_transform({layout.prompt}, lambda __m: {nul}))"
    return f"coalesce(({layout.clean}) AND {no_nul} AND {prompt_ok} AND ({plan.meta[1]}), false)"


def images_query(plan: ColumnarPlan) -> str:
    """SQL: the image bytes of the rows clean but for their image (to be checked in Python), in input order."""
    image = plan.layout.image
    return f"""SELECT __row_key, {image} AS __image FROM ({_select(plan)})
               WHERE {_clean(plan)} AND {image} IS NOT NULL AND octet_length({image}) > 0"""


def checked_images(
    db: duckdb.DuckDBPyConnection,
    plan: ColumnarPlan,
    max_pixels: int,
    threads: int,
    store: Callable[[list[ImageRow]], None],
) -> pa.Table:
    """Hash each row's image (`images_query`) and decode each distinct one once, in `threads` (hashlib and
    Pillow release the GIL). Returns the rows whose image decodes within `max_pixels`, as (`__row_key`,
    `__image` sha256), and passes each of their images to `store` once, in the order rows first use them. A
    row whose image fails is left to `convert`, which rejects it with its reason. Memory grows with the rows
    (a key and a hash each) and the distinct images (a flag each), not with the images' bytes."""
    decodes: dict[str, bool] = {}  # sha256 -> decodes within the limit
    keys: list[np.ndarray] = []
    hashes: list[pa.Array] = []
    with ThreadPoolExecutor(threads) as pool:
        for batch in batches(db, images_query(plan), IMAGE_BATCH):
            blobs = batch.column("__image").to_pylist()
            digests = [d for part in pool.map(_sha256s, _split(blobs, threads)) for d in part]
            fresh = list({d: b for d, b in zip(digests, blobs, strict=True) if d not in decodes}.items())
            parts = pool.map(_decode_all, _split(fresh, threads), repeat(max_pixels))
            checked = [row for part in parts for row in part]
            decodes.update((digest, row is not None) for (digest, _), row in zip(fresh, checked, strict=True))
            if any(row is not None for row in checked):
                store([row for row in checked if row is not None])
            ok = np.array([decodes[d] for d in digests], bool)
            keys.append(batch.column("__row_key").to_numpy()[ok])
            hashes.append(pa.array(digests, pa.string()).filter(ok))
    row_keys = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    return pa.table({"__row_key": pa.array(row_keys, pa.int64()), "__image": pa.chunked_array(hashes, pa.string())})


def _split(items: list[Any], parts: int) -> list[list[Any]]:
    size = -(-len(items) // max(parts, 1)) or 1
    return [items[i : i + size] for i in range(0, len(items), size)]


def _sha256s(blobs: list[bytes]) -> list[str]:
    return [hashlib.sha256(b).hexdigest() for b in blobs]


def _decode_all(items: list[tuple[str, bytes]], max_pixels: int) -> list[ImageRow | None]:
    rows: list[ImageRow | None] = []
    for digest, data in items:
        try:
            rows.append(decode_image(data, "image", max_pixels, sha256=digest))
        except RowError:
            rows.append(None)
    return rows


def pairs_query(plan: ColumnarPlan) -> str:
    """SQL: every native row in input order, as `__row_key`, `__clean` (converted here) and the canonical
    columns, which hold the pair where `__clean` is true and mean nothing elsewhere (`convert` takes over)."""
    layout, info = plan.layout, plan.adapter.info
    values = {
        "subset": "NULL",
        "chosen_score": "NULL",
        "rejected_score": "NULL",
        "margin": None,
        "tie": "false",
        "chosen_model": "NULL",
        "rejected_model": "NULL",
        "category": "NULL",
        "language": "NULL",
        "license": "NULL",
        "binarization": "NULL",
        **layout.columns,
    }
    if values["margin"] is None:  # as `Pair.to_row`: the score difference when both scores are known
        values["margin"] = "chosen_score - rejected_score"
    # Stored in canonical form, as `Pair.to_row` stores them; the ids over it equal the ids over the native text.
    turn = "{'role': __m.role, 'content': canonical_text(__m.content)}"
    prompt = f"list_transform({layout.prompt}, lambda __m: {turn})"
    clean = _clean(plan)
    if layout.image:  # the checked image's hash, joined on the row key (a join does not keep the input order)
        rows, images, modality, order = (
            f"native LEFT JOIN {IMAGE_ROWS} USING (__row_key)",
            "[__image]",
            "image",
            "ORDER BY __row_key",
        )
        clean = f"({clean} AND __image IS NOT NULL)"
    else:
        rows, images, modality, order = "native", "[]::VARCHAR[]", "text", ""
    return f"""
        WITH native AS ({_select(plan)}),
        converted AS (
            SELECT __row_key, {clean} AS __clean, __source_row, {prompt} AS prompt,
                   canonical_text({layout.chosen}) AS chosen, canonical_text({layout.rejected}) AS rejected,
                   {images} AS images, {plan.meta[0]} AS meta,
                   {", ".join(f"{expr} AS {name}" for name, expr in values.items() if name != "margin")}
            FROM {rows}),
        identified AS (
            SELECT *, prompt_json(prompt, images) AS payload FROM converted)
        SELECT __row_key, __clean AND coalesce(isfinite({values["margin"]}), true) AS __clean,
               -- first: the ingest merges on them, then drops them; a margin that is not finite is stored as
               -- NULL with its reason, as `Pair.to_row` does
               identity_digest(pair_json(payload, chosen, rejected)) AS pair_id,
               identity_digest(payload) AS prompt_id,
               {sql_literal(info.key)} AS source, __source_row AS source_row, subset,
               {sql_literal(modality)} AS modality, prompt, chosen, rejected, images, chosen_score, rejected_score,
               {values["margin"]} AS margin, tie, chosen_model, rejected_model, category, language,
               coalesce(license, {sql_literal(info.license)}) AS license, binarization, meta
        FROM identified {order}"""


class NativeRows:
    """Native rows by row key (asked for in increasing order), read as the row-by-row ingest reads them: in
    batches of the row group that holds the key, one file open at a time."""

    def __init__(self, plan: ColumnarPlan) -> None:
        self.plan = plan
        self._file: tuple[int, pq.ParquetFile, np.ndarray] | None = None  # file index, file, row groups' ends
        self._group: int | None = None
        self._batches: Iterator[pa.RecordBatch] = iter(())
        self._batch: tuple[int, pa.RecordBatch] | None = None  # its first row in the file, its rows

    def record(self, key: int) -> Record:
        try:
            return self._record(key)
        except DAMAGED as exc:  # a page DuckDB did not need to decode
            raise UnreadableInput(str(exc)) from exc

    def _record(self, key: int) -> Record:
        index, row = key >> _FILE_ROW_BITS, key & ((1 << _FILE_ROW_BITS) - 1)
        if self._file is None or self._file[0] != index:
            self.close()
            file = pq.ParquetFile(self.plan.files[index][0])
            self._file, self._group = (index, file, row_group_ends(file.metadata)), None
        _, file, ends = self._file
        group = int(np.searchsorted(ends, row, side="right"))
        if group != self._group:  # a later row group: the ones between are not read
            columns = self.plan.adapter.columns
            if columns is not None:
                columns = [c for c in columns if c in file.schema_arrow.names]
            self._group = group
            self._batches = file.iter_batches(batch_size=_BATCH_ROWS, row_groups=[group], columns=columns)
            self._batch = (int(ends[group - 1]) if group else 0), next(self._batches)
        assert self._batch is not None
        while row >= self._batch[0] + self._batch[1].num_rows:
            self._batch = self._batch[0] + self._batch[1].num_rows, next(self._batches)
        first, batch = self._batch
        return table_record(batch, row - first, f"{self.plan.files[index][1]}:{row}")

    def close(self) -> None:
        if self._file is not None:
            self._file[1].close()
            self._file = None


def connect(workers: int | None, temp_directory: Path | None = None) -> duckdb.DuckDBPyConnection:
    db = duckdb.connect()
    db.execute(f"SET threads = {int(workers or os.cpu_count() or 1)}")
    db.execute("SET memory_limit = '1GB'")  # the query streams (an image layout's pairs are sorted: few rows)
    if temp_directory is not None:
        db.execute(f"SET temp_directory = {sql_literal(temp_directory)}")
    db.execute("SET preserve_insertion_order = true")
    install_text_macros(db)
    return db


def row_count(plan: ColumnarPlan) -> int:
    return sum(pq.ParquetFile(path).metadata.num_rows for path, _ in plan.files)
