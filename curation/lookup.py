"""Look one pair up in a finished build: its signals, found by the keys each table declares."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb

from curation.ops import OPS
from curation.sql import parquet_relation

# Signal tables that no op writes: `trainer score`'s rewards.
OTHER_KEYS = {"rm_scores": {"pair_id": "pair"}}


def signal_keys(name: str) -> dict[str, str]:
    """The key columns of a signal table by its name (`<op>-v<version>-<hash>`, `rm_scores-<model>`)."""
    prefix = name.split("-v")[0] if name.split("-v")[0] in OPS else name.split("-")[0]
    return OPS[prefix].signal_keys if prefix in OPS else OTHER_KEYS.get(prefix, {})


def pair_signals(
    db: duckdb.DuckDBPyConnection,
    files: Mapping[str, Path],
    pair_id: str,
    prompt_id: str | None,
    images: Sequence[str] = (),
) -> dict[str, list[dict[str, Any]]]:
    """Rows of every signal table (`files`: name -> path, as `BuildDir.signals` lists them) keyed by the pair, its
    prompt or one of its images."""
    values = {"pair": [pair_id], "prompt": [prompt_id] if prompt_id else [], "image": list(images)}
    out = {}
    for name, path in files.items():
        keys = [(column, values[kind]) for column, kind in signal_keys(name).items() if values[kind]]
        if not keys:
            continue
        source = parquet_relation(db, path)
        where = " OR ".join(f"{column} IN ({', '.join('?' * len(wanted))})" for column, wanted in keys)
        cursor = db.execute(f"SELECT * FROM {source} WHERE {where}", [v for _, wanted in keys for v in wanted])
        names = [c[0] for c in cursor.description]
        found = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        if found:
            out[name] = found
    return out
