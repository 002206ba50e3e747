"""Values and files spliced into SQL text: quoted literals, and parquet files read exactly as named."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

# What DuckDB's file readers take as a pattern in a file name.
GLOB_CHARACTERS = frozenset("*?[")


# A `source_row` column in the order its files give the rows: by file, then row number (`a.jsonl:9` before
# `a.jsonl:10`; an upsampled copy, `a.jsonl:9+`, beside its row).
ROW_ORDER = ("regexp_replace(source_row, ':[0-9]+\\+?$', ''), "
             "try_cast(regexp_extract(source_row, ':([0-9]+)\\+?$', 1) AS BIGINT)")  # fmt: skip


def sql_literal(value: str | Path | int | float) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def read_parquet(path: str | Path | list[str | Path], options: str = "") -> str:
    """SQL reading the parquet file(s) at `path` (chosen by this program: under a build or work folder) with
    `hive_partitioning = false`: DuckDB would otherwise read a `key=value` folder in the path as a column `key`,
    which shadows a column of that name in the file. `options`: more of read_parquet's, e.g. "file_row_number =
    true". Paths with glob characters are refused where they are chosen (`curate build --out`)."""
    files = "[" + ", ".join(map(sql_literal, path)) + "]" if isinstance(path, list) else sql_literal(path)
    return f"read_parquet({files}, hive_partitioning = false{', ' + options if options else ''})"


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def parquet_relation(db: Any, path: Path) -> str:
    """A name under which `db` reads the parquet file `path` exactly: DuckDB's `read_parquet` reads a file name as
    a glob pattern (`x[1].parquet` is `x1.parquet`), so readers of paths they did not choose register the file
    through pyarrow instead (filters and columns are still pushed down)."""
    import pyarrow.dataset as ds  # imported here: builds do not need it, and it costs tens of MB

    name = "parquet_" + hashlib.sha256(str(path).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    db.register(name, ds.dataset(str(path), format="parquet"))
    return quote_identifier(name)
