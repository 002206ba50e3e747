"""Look one pair up in a finished build: its signals, whichever way each op keys them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb

from curation.sql import parquet_relation


def pair_signals(
    db: duckdb.DuckDBPyConnection, files: Mapping[str, Path], pair_id: str, prompt_id: str | None
) -> dict[str, list[dict[str, Any]]]:
    """Rows of every signal table (`files`: name -> path, as `BuildDir.signals` lists them) that mention the pair:
    by `pair_id`, else by its prompt (either side of an edge)."""
    out = {}
    for name, path in files.items():
        source = parquet_relation(db, path)
        columns = [c[0] for c in db.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]
        if "pair_id" in columns:
            keys = [("pair_id", pair_id)]
        else:
            keys = [(k, prompt_id) for k in ("prompt_id", "other_prompt_id") if k in columns and prompt_id]
        if not keys:
            continue
        cursor = db.execute(
            f"SELECT * FROM {source} WHERE {' OR '.join(f'{k} = ?' for k, _ in keys)}", [v for _, v in keys]
        )
        names = [c[0] for c in cursor.description]
        found = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
        if found:
            out[name] = found
    return out
