"""What an op is: score (write signals keyed by pair, prompt or image), then decide (select rows to remove).

Signals are stored under `signals/<op>-v<version>-<hash>.parquet`, where the hash covers only the parameters
that change the signals (`Op.scoring`), never the thresholds. Decisions are SQL over the signals and the live
pairs. A build resumed with `--resume` reuses the signal files it already wrote. The costly ops (near, semantic
and image dedupe, decontamination) score all ingested pairs, not only the live ones, so their signals do not
depend on earlier decisions: they are also kept in a cache folder across builds, by op, version, scoring
parameters and the fingerprint of their input (`Op.cache_path`), and a build whose change is a threshold, a
cheaper stage or the mix reuses them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import duckdb

from curation.io import sha256_file
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
    # Signals kept across builds, by what they were computed from (`Op.cache_path`); None: none kept.
    cache: Path | None = None
    fingerprints: dict[str, str] = field(default_factory=dict)

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

    def fingerprint(self, what: str) -> str:
        """An md5 of the content a signal is computed from, across all ingested pairs: "prompts" (the distinct
        prompts in first-use order: prompt-keyed signals depend on the order for their candidate search),
        "images" (the distinct images) or "benchmarks" (the benchmark work files). Ids are content hashes, so
        equal fingerprints mean equal input."""
        if what not in self.fingerprints:
            if what == "benchmarks":
                files = sorted((name, folder / f) for name, folder in self.benchmarks.items()
                               for f in ("pairs.parquet", "images.parquet"))  # fmt: skip
                digest = hashlib.sha256()
                for name, path in files:
                    digest.update(f"{name}:{path.name}:".encode() + sha256_file(path).encode())
                self.fingerprints[what] = digest.hexdigest()
            else:
                query = {
                    "prompts": """SELECT md5(coalesce(string_agg(prompt_id, ',' ORDER BY priority), ''))
                                  FROM (SELECT prompt_id, min(row_key) AS priority FROM pairs GROUP BY prompt_id)""",
                    "images": """SELECT md5(coalesce(string_agg(sha256, ',' ORDER BY sha256), ''))
                                 FROM (SELECT DISTINCT unnest(images) AS sha256 FROM pairs)""",
                }[what]
                self.fingerprints[what] = self.rows(query)[0][0]
        return self.fingerprints[what]

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

    def input_fingerprint(self, ctx: BuildContext) -> str | None:
        """What `score` reads besides its parameters, as `ctx.fingerprint`s: an op whose signals are computed over
        all ingested pairs (never only the live ones, which earlier decisions change) says so here, and its
        signals are kept across builds. None (the default): cheap ops, recomputed by every build."""
        return None

    def cache_path(self, ctx: BuildContext, params: Any) -> Path | None:
        """Where the signals of these parameters over this input are kept across builds (None: not kept)."""
        fingerprint = self.input_fingerprint(ctx)
        if ctx.cache is None or fingerprint is None:
            return None
        key = json.dumps([self.scoring(params), fingerprint], sort_keys=True).encode()
        return ctx.cache / f"{self.name}-v{self.version}-{hashlib.sha256(key).hexdigest()[:16]}.parquet"

    def score(self, ctx: BuildContext, params: Any, signals: Path) -> None:
        raise NotImplementedError

    def decide(self, ctx: BuildContext, params: Any, signals: Path) -> list[str]:
        """SQL queries selecting `row_key, reason, detail` among `live_pairs`."""
        raise NotImplementedError
