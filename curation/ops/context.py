"""What the builder gives an op (`BuildContext`): the DuckDB relations it reads, work shared between ops (text
lengths, prompt units and their words, fingerprints), and the removal step the runner uses.

Relations (`create_relations`), all on `ctx.db`:
- `pairs`: every ingested pair in the canonical schema plus `row_key` (its order) and `source` (the recipe's name);
- `live`: the `row_key`s still in the build; `live_pairs`: `pairs` restricted to `live`;
- `images`: every ingested image once (`sha256`, `bytes`, `width`, `height`, `format`), in sha256 order;
- `removed`: the rows removed so far (`source`, `source_row`, `pair_id`, `stage`, `reason`, `detail`);
- `swapped`: the rows whose chosen and rejected the shards exchange (`row_key`, `stage`, `reason`, `detail`);
- `flagged`: the rows an op listed for a person to look at, kept as they are (`row_key`, `stage`, `reason`).

`context_for_rows` makes the same relations from a few inline rows: each op's unit tests run through it, with
`pairs`, `live_pairs` and `images` narrowed to the columns the op declares (`Op.reads`), so an op that reads a
column it does not declare fails its tests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from curation.engine import Engine
from curation.images import decode_image
from curation.io import sha256_file
from curation.pair import Pair
from curation.schema import IMAGE_SCHEMA, PAIR_SCHEMA, install_text_macros
from curation.shingles import Words, word_hashes
from curation.sql import sql_literal

# A prompt's text for matching: all turns, without the image placeholders (images are compared on their own).
PROMPT_TEXT = "array_to_string(list_transform(prompt, lambda m: replace(m.content, '<image>', '')), chr(10))"
# The relations an op may read, which `Op.reads` names (the context's own tables are listed by the helpers).
BASE_RELATIONS = ("pairs", "live_pairs", "images")


# A character a reader sees: not whitespace, a separator, a control or a format character (zero-width space, joiner,
# byte-order mark, bidi marks), a combining mark or variation selector on its own, or a blank letter (the Hangul
# fillers, the blank Braille pattern). RE2 stops at the first one, so a normal answer costs next to nothing.
VISIBLE = r"[^\s\p{Z}\p{Cc}\p{Cf}\p{M}\x{115F}\x{1160}\x{2800}\x{3164}\x{FFA0}]"


def create_relations(db: duckdb.DuckDBPyConnection, pairs: str, images: str) -> None:
    """Create the relations ops read: `pairs` as the query `pairs` (in row_key order), `images` from the query
    `images` (one row per sha256), every pair live, nothing removed."""
    db.execute(f"CREATE TEMP VIEW pairs AS {pairs}")
    db.execute("CREATE TABLE live AS SELECT row_key FROM pairs")
    db.execute("CREATE TEMP VIEW live_pairs AS SELECT p.* FROM pairs p SEMI JOIN live USING (row_key)")
    db.execute(
        "CREATE TABLE removed (source VARCHAR, source_row VARCHAR, pair_id VARCHAR, stage VARCHAR, "
        "reason VARCHAR, detail VARCHAR)"
    )
    db.execute(f"CREATE TABLE images AS SELECT DISTINCT ON (sha256) * FROM ({images}) ORDER BY sha256")
    db.execute("CREATE TABLE swapped (row_key BIGINT, stage VARCHAR, reason VARCHAR, detail VARCHAR)")
    db.execute("CREATE TABLE flagged (row_key BIGINT, stage VARCHAR, reason VARCHAR)")


@dataclass
class BuildContext:
    db: duckdb.DuckDBPyConnection
    seed: int  # the recipe's seed: every order that decides something derives from it
    root: Path  # the build folder being written
    benchmarks: dict[str, Path] = field(default_factory=dict)  # name -> folder with pairs/images parquet
    workers: int = 1  # processes an op may use for Python-bound work (image hashing)
    engine: Engine = field(default_factory=Engine)  # where that work runs: this machine, or a Ray cluster
    # Signals kept across builds, by what they were computed from (`Op.cache_path`); None: none kept.
    cache: Path | None = None
    fingerprints: dict[str, str] = field(default_factory=dict)
    # The full relations the context itself reads (an op's unit tests give the op narrowed views of them).
    all_pairs: str = "pairs"
    all_images: str = "images"
    # The words of prompts tokenized earlier in this build, by prompt_id (`prompt_words`).
    words: tuple[pl.Series, Words] | None = field(default=None, repr=False)
    # Told how far a long step of an op has come ("1,024 of 3,312 prompts embedded"), for a progress line.
    progress: Callable[[str], None] = field(default=lambda _: None, repr=False)

    def rows(self, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        return self.db.execute(query, params or []).fetchall()

    def copy(self, query: str, path: Path, row_group_size: int | None = None) -> None:
        """Write a query's result to parquet under a temporary name, then rename."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        groups = f", ROW_GROUP_SIZE {row_group_size}" if row_group_size else ""
        self.db.execute(f"COPY ({query}) TO {sql_literal(tmp)} (FORMAT parquet, COMPRESSION zstd{groups})")
        tmp.replace(path)

    def write_table(self, table: pa.Table, path: Path, order: str) -> None:
        """Write an Arrow table the way `copy` writes a query, its rows sorted by `order` (SQL)."""
        self.db.register("table_to_write", table)
        try:
            self.copy(f"SELECT * FROM table_to_write ORDER BY {order}", path)
        finally:
            self.db.unregister("table_to_write")

    def hash_order(self, *parts: str) -> str:
        """A stable, process-independent order: md5 over content and the seed (never DuckDB's hash())."""
        return "md5(" + " || ':' || ".join([*parts, f"{sql_literal(self.seed)}"]) + ")"

    # -- shared work -------------------------------------------------------------------------------------
    def text_stats(self) -> str:
        """The name of a table of every pair's text lengths (`chosen_chars`, `rejected_chars`, `prompt_chars`),
        whether its answers are `identical` and whether each, and the prompt, is blank (`chosen_blank`,
        `rejected_blank`, `prompt_blank`: no `VISIBLE` character), by `row_key`: validate, filters and the data
        card need them, and reading the texts is most of the work, so it is done once per build (a few bytes a
        pair). Answers are `identical` when their identities are (`same_identity`: canonical text keeps spacing
        that identity does not)."""
        install_text_macros(self.db)
        self.db.execute(
            f"""CREATE TEMP TABLE IF NOT EXISTS text_stats AS
                SELECT row_key, length(chosen) AS chosen_chars, length(rejected) AS rejected_chars,
                       list_sum(list_transform(prompt, lambda m: length(m.content)))::BIGINT AS prompt_chars,
                       same_identity(chosen, rejected) AS identical,
                       NOT regexp_matches(chosen, '{VISIBLE}') AS chosen_blank,
                       NOT regexp_matches(rejected, '{VISIBLE}') AS rejected_blank,
                       NOT list_bool_or(list_transform(prompt, lambda m: regexp_matches(m.content, '{VISIBLE}')))
                         AS prompt_blank
                FROM {self.all_pairs}"""
        )
        return "text_stats"

    def prompt_units(self, live: bool = True) -> pl.DataFrame:
        """The distinct prompts of the live pairs (or, `live=False`, of all ingested pairs, which the costly ops
        score): `prompt_id`, `text` (all turns, `PROMPT_TEXT`), `images` (their sha256s joined by commas) and
        `priority` (the first row_key), in priority order."""
        relation = f"(SELECT * FROM {self.all_pairs} SEMI JOIN live USING (row_key))" if live else self.all_pairs
        table = self.db.sql(
            f"""SELECT prompt_id, min({PROMPT_TEXT}) AS text,
                      min(array_to_string(images, ',')) AS images, min(row_key) AS priority
               FROM {relation} GROUP BY prompt_id ORDER BY priority"""
        ).to_arrow_table()
        return pl.from_arrow(table)  # type: ignore[return-value]

    def prompt_words(self, units: pl.DataFrame) -> Words:
        """The words of each unit's text. Tokenizing is much of near_dedupe's and decontaminate's work, and a
        prompt's words follow from its prompt_id (identity normalizes more than tokenizing does), so a later stage
        takes an earlier stage's words when it has them all."""
        if self.words is not None:
            known = pl.DataFrame({"prompt_id": self.words[0], "index": np.arange(len(self.words[0]))})
            index = units.select("prompt_id").join(known, on="prompt_id", how="left", maintain_order="left")["index"]
            if index.null_count() == 0:
                return self.words[1].take(index.to_numpy())
        words = word_hashes(units["text"].to_list(), threads=self.workers)
        self.words = (units["prompt_id"], words)
        return words

    def clear_shared(self) -> None:
        """Drop the shared intermediates (the prompts' words), once no later stage needs them."""
        self.words = None

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
                    "prompts": f"""SELECT md5(coalesce(string_agg(prompt_id, ',' ORDER BY priority), ''))
                                   FROM (SELECT prompt_id, min(row_key) AS priority FROM {self.all_pairs}
                                         GROUP BY prompt_id)""",
                    "images": f"""SELECT md5(coalesce(string_agg(sha256, ',' ORDER BY sha256), ''))
                                  FROM (SELECT DISTINCT unnest(images) AS sha256 FROM {self.all_pairs})""",
                }[what]
                self.fingerprints[what] = self.rows(query)[0][0]
        return self.fingerprints[what]

    # -- what the runner does --------------------------------------------------------------------------
    def live_counts(self) -> dict[str, int]:
        """Live pairs per source."""
        query = f"SELECT source, count(*) FROM {self.all_pairs} SEMI JOIN live USING (row_key) GROUP BY source"
        return dict(self.rows(query))

    def remove(self, stage: str, query: str) -> list[tuple[str, str, int]]:
        """Move the live rows selected by `query` (row_key, reason, detail) to `removed`; return how many per
        source and reason."""
        self._step(query)
        self.db.execute(
            f"""INSERT INTO removed SELECT p.source, p.source_row, p.pair_id, {sql_literal(stage)}, s.reason, s.detail
                FROM step s JOIN {self.all_pairs} p USING (row_key) ORDER BY p.row_key"""
        )
        self.db.execute("DELETE FROM live WHERE row_key IN (SELECT row_key FROM step)")
        return self._step_counts()

    def swap(self, stage: str, query: str) -> list[tuple[str, str, int]]:
        """Record the live rows selected by `query` (row_key, reason, detail) as swapped; return how many per
        source and reason."""
        self._step(query)
        self.db.execute(
            f"""INSERT INTO swapped SELECT s.row_key, {sql_literal(stage)}, s.reason, s.detail
                FROM step s ANTI JOIN swapped USING (row_key) ORDER BY s.row_key"""
        )
        return self._step_counts()

    def unswap(self, query: str) -> None:
        """Undo the swaps of the live rows selected by `query` (row_key, reason, detail): they are written the way
        their source gives them."""
        self._step(query)
        self.db.execute("DELETE FROM swapped WHERE row_key IN (SELECT row_key FROM step)")

    def flag(self, stage: str, query: str) -> list[tuple[str, str, int]]:
        """Record the live rows selected by `query` (row_key, reason, detail) as flagged; return how many per
        source and reason."""
        self._step(query)
        self.db.execute(f"INSERT INTO flagged SELECT row_key, {sql_literal(stage)}, reason FROM step ORDER BY row_key")
        return self._step_counts()

    def kept_marks(self, table: str) -> list[tuple[str, str, str, int]]:
        """(source, stage, reason, pairs) of the rows of `table` (`swapped` or `flagged`) still live: a pair a later
        stage removed is counted as removed only."""
        return self.rows(
            f"""SELECT p.source, m.stage, m.reason, count(*) FROM {table} m JOIN {self.all_pairs} p USING (row_key)
                SEMI JOIN live USING (row_key) GROUP BY ALL ORDER BY ALL"""
        )

    def _step(self, query: str) -> None:
        """The rows a removal, swap or flag query selects, one per row_key, as the table `step`."""
        self.db.execute(f"CREATE OR REPLACE TEMP TABLE step AS SELECT DISTINCT ON (row_key) * FROM ({query})")

    def _step_counts(self) -> list[tuple[str, str, int]]:
        return self.rows(
            f"""SELECT p.source, s.reason, count(*) FROM step s JOIN {self.all_pairs} p USING (row_key)
                GROUP BY ALL ORDER BY ALL"""
        )

    def create_relation(self, name: str, relation: str | pa.Table) -> None:
        """A temporary table `name` from a query or an Arrow table (an op's decision needs it)."""
        if isinstance(relation, pa.Table):
            self.db.register(f"{name}__arrow", relation)
            self.db.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM {name}__arrow")
            self.db.unregister(f"{name}__arrow")
        else:
            self.db.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {relation}")

    def drop_relation(self, name: str) -> None:
        self.db.execute(f"DROP TABLE IF EXISTS {name}")


def pair_tables(rows: list[dict[str, Any]]) -> tuple[pa.Table, pa.Table]:
    """Canonical pairs (with `row_key`) and their images from inline rows. Each row gives `prompt` (a string: one
    user turn, or a list of messages), `chosen`, `rejected`, optionally `images` (encoded image bytes, in
    placeholder order), `source` (default "s") and any other `Pair` field; row_keys follow the list."""
    pair_rows, image_rows = [], {}
    for key, row in enumerate(rows):
        fields = dict(row)
        source = fields.pop("source", "s")
        prompt = fields.pop("prompt")
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        shas = []
        for data in fields.pop("images", []):
            image = decode_image(data, f"row {key}")
            image_rows[image.sha256] = image.as_dict()
            shas.append(image.sha256)
        pair = Pair(messages, images=shas, **fields)
        pair.check()
        pair_rows.append({"row_key": key, **pair.to_row(source, f"{source}.jsonl:{key}", {}, "unknown")})
    schema = pa.schema([pa.field("row_key", pa.int64()), *PAIR_SCHEMA])
    images = pa.Table.from_pylist(list(image_rows.values()), schema=IMAGE_SCHEMA)
    return pa.Table.from_pylist(pair_rows, schema=schema), images


def context_for_rows(
    root: Path,
    rows: list[dict[str, Any]],
    *,
    reads: dict[str, tuple[str, ...]] | None = None,
    seed: int = 0,
    benchmarks: dict[str, Path] | None = None,
    cache: Path | None = None,
) -> BuildContext:
    """A context over a few inline pairs (`pair_tables`), for an op's unit tests: the first row is the survivor
    of its duplicates. With `reads` (an op's `Op.reads`), `pairs`, `live_pairs` and `images` show only the
    columns named there."""
    pairs, images = pair_tables(rows)
    db = duckdb.connect()
    db.execute("SET preserve_insertion_order = true")
    db.register("all_pairs_arrow", pairs)
    db.register("all_images_arrow", images)
    create_relations(db, "SELECT * FROM all_pairs_arrow", "SELECT * FROM all_images_arrow")
    ctx = BuildContext(db, seed, root, benchmarks or {}, cache=cache)
    if reads is not None:
        # The full relations move aside for the context's own use; the op sees the columns it declares.
        db.execute("ALTER VIEW pairs RENAME TO all_pairs")
        db.execute("ALTER TABLE images RENAME TO all_images")
        db.execute("DROP VIEW live_pairs")
        for name in BASE_RELATIONS:
            columns = ", ".join(reads.get(name, ())) or "NULL AS nothing_declared"
            base = "all_pairs SEMI JOIN live USING (row_key)" if name == "live_pairs" else f"all_{name}"
            db.execute(f"CREATE TEMP VIEW {name} AS SELECT {columns} FROM {base}")
        ctx.all_pairs, ctx.all_images = "all_pairs", "all_images"
    return ctx
