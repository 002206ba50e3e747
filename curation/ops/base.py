"""What an op is: score (write signals keyed by pair or prompt), then decide (select rows to remove).

Signals are stored under `signals/<op>-v<version>-<hash>.parquet`, where the hash covers only the parameters
that change the signals (`Op.scoring`), never the thresholds. Decisions are SQL over the signals and the live
pairs. A build resumed with `--resume` (the same recipe) reuses the signal files it already wrote; a fresh build
computes every signal again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import duckdb

from curation.sql import sql_literal

if TYPE_CHECKING:
    from curation.recipe import Recipe


@dataclass
class BuildContext:
    db: duckdb.DuckDBPyConnection
    recipe: Recipe
    root: Path  # the build folder being written
    benchmarks: dict[str, Path] = field(default_factory=dict)  # name -> folder with pairs/images parquet
    workers: int = 1  # processes an op may use for Python-bound work (image hashing)
    # What one stage computed that a later stage of the same build may reuse; a cache, never needed for results.
    memo: dict[str, Any] = field(default_factory=dict)

    def rows(self, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        return self.db.execute(query, params or []).fetchall()

    def copy(self, query: str, path: Path, row_group_size: int | None = None) -> None:
        """Write a query's result to parquet under a temporary name, then rename."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        groups = f", ROW_GROUP_SIZE {row_group_size}" if row_group_size else ""
        self.db.execute(f"COPY ({query}) TO {sql_literal(tmp)} (FORMAT parquet, COMPRESSION zstd{groups})")
        tmp.replace(path)

    def text_stats(self) -> str:
        """The name of a table of every pair's text lengths (characters) and whether its answers are identical:
        validate, filters and the data card need them, and reading the texts is most of the work, so it is done
        once per build (a few bytes a pair, kept until the build ends)."""
        self.db.execute(
            """CREATE TEMP TABLE IF NOT EXISTS text_stats AS
               SELECT row_key, length(chosen) AS chosen_chars, length(rejected) AS rejected_chars,
                      list_sum(list_transform(prompt, lambda m: length(m.content))) AS prompt_chars,
                      chosen = rejected AS identical
               FROM pairs"""
        )
        return "text_stats"

    def clear_memo(self) -> None:
        """Drop what the ops shared in `memo`, once no later stage needs it."""
        self.memo.clear()

    def hash_order(self, *parts: str) -> str:
        """A stable, process-independent order: md5 over content and the seed (never DuckDB's hash())."""
        return "md5(" + " || ':' || ".join([*parts, f"{sql_literal(self.recipe.seed)}"]) + ")"


class Op:
    name: ClassVar[str]
    version: ClassVar[int] = 1
    Params: ClassVar[type]
    default_on: ClassVar[bool] = False  # runs with default parameters when the recipe does not name it
    thresholds: ClassVar[frozenset[str]] = frozenset()  # parameters that only decide
    # The columns a signal row is keyed by and what each names ("pair", "prompt" or "image"): readers find a
    # pair's signals by them (`curation.lookup`).
    signal_keys: ClassVar[dict[str, str]] = {"pair_id": "pair"}

    def scoring(self, params: Any) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(params).items() if k not in self.thresholds}

    def signal_path(self, ctx: BuildContext, params: Any) -> Path:
        digest = hashlib.sha256(json.dumps(self.scoring(params), sort_keys=True).encode()).hexdigest()[:12]
        return ctx.root / "signals" / f"{self.name}-v{self.version}-{digest}.parquet"

    def score(self, ctx: BuildContext, params: Any, signals: Path) -> None:
        raise NotImplementedError

    def decide(self, ctx: BuildContext, params: Any, signals: Path) -> list[str]:
        """SQL queries selecting `row_key, reason, detail` among `live_pairs`."""
        raise NotImplementedError
