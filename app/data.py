"""The queries behind the workbench pages, callable without Streamlit (the tests call them directly).

Everything is read-only and confined to the data root: every file is opened by its real path (symlinks followed),
and one whose real path leaves the root is refused, never read. Shards are memory-mapped Arrow and queried with
DuckDB, so a page reads only the rows it shows.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import duckdb
import pyarrow.parquet as pq
import yaml
from PIL import Image

from curation.build_dir import (
    BENCHMARK_IMAGES,
    BENCHMARK_REJECTS,
    CONTAMINATION,
    IMAGES,
    MANIFEST,
    REJECTS,
    REMOVED_PAIRS,
    BuildDir,
    BuildError,
    confined,
    manifest_recipe,
)
from curation.lookup import MIN_PREFIX, pair_signals
from curation.reviews import REVIEWS, review_time
from curation.schema import NO_IMAGES_SQL
from curation.shards import ID_BEFORE_SWAP_SQL, id_before_swap
from curation.sql import ROW_ORDER, parquet_relation, sql_literal
from curation.words import quantity
from trainer.reports import EVALS, LEGACY_REPORT, report_names, report_problem
from trainer.run_summary import Reach, read_data_report, steps_text

DATA_ENV = "WORKBENCH_DATA"


def looks_like_an_id(search: str) -> bool:
    """A search of hex characters as long as `curate show` takes (6 to 32) also matches pair ids (and ids before a
    swap) that begin with it."""
    return re.fullmatch(rf"[0-9a-f]{{{MIN_PREFIX},32}}", search.strip().lower()) is not None


INPUT_ORDER = f"source, {ROW_ORDER}"  # rows in the order their files give them, the source first
SORTS = {
    "input order": INPUT_ORDER,
    "longest chosen": "length(chosen) DESC",
    "highest label margin": "margin DESC NULLS LAST",
    "largest length ratio": "length(chosen) / greatest(length(rejected), 1) DESC",
    "most duplicates removed in its favour": "duplicates_removed DESC",
}


def _other_prompt(row: dict[str, Any], prompt_id: str) -> str:
    """The prompt a two-prompt signal row pairs this pair's prompt with."""
    return row["other_prompt_id"] if row.get("prompt_id") == prompt_id else row.get("prompt_id", "")


@dataclass(frozen=True)
class AppliedReviews:
    """What a build's `human_review` stage did with the reviews it read."""

    # by the pair id a review was recorded of: the review the stage took (action, note, reviewer, reviewed_at) and
    # its `outcome` there ("applied", "not applied: removed by an earlier stage", ...)
    taken: dict[str, dict[str, str]]
    files: list[str]  # the reviews files as its recipe names them
    paths: list[str]  # the files it read, as real paths (the manifest's `op_inputs`)

    def reads(self, path: Path) -> bool:
        """Whether the build read the reviews file `path` (by real path); an old build that did not record the
        files it read: whether its recipe names one of that file's name."""
        if self.paths:
            return str(path.resolve()) in self.paths
        return any(PurePath(str(name)).name == path.name for name in self.files)

    def outcome(self, review: dict[str, Any], path: Path, written: Sequence[dict[str, Any]]) -> str | None:
        """What the build did with `review`, the latest of its pair in the reviews file `path` (`written`: every
        review that file holds): the outcome of that review where it took it; `superseded by a newer review ...`
        where it read the file but took a review of the pair from another file (the newest across files applies);
        None where the next build reading the file applies it (saved since the build, or in a file the build did
        not read)."""
        taken = self.taken.get(review["pair_id"])
        if taken is None or not self.reads(path):
            return None
        keys = ("pair_id", "action", "note", "reviewer", "reviewed_at")
        if all(taken.get(k) == review[k] for k in keys):
            return taken["outcome"]
        from_this_file = any(all(taken.get(k) == row[k] for k in keys) for row in written)
        if not from_this_file and review_time(review["reviewed_at"]) <= review_time(taken["reviewed_at"]):
            return f"superseded by a newer review ({taken['action']} by {taken['reviewer']})"
        return None  # written after the one the build took (in this file, the last written applies)


class AppError(Exception):
    """Something the page shows as a message instead of a traceback."""


def data_root(argv: list[str] | None = None) -> Path:
    """`--data DIR` from the command line (after `streamlit run app/Home.py --`), else $WORKBENCH_DATA."""
    args = sys.argv[1:] if argv is None else argv
    value = args[args.index("--data") + 1] if "--data" in args[:-1] else os.environ.get(DATA_ENV)
    if not value:
        raise AppError("no data root: start with `streamlit run app/Home.py -- --data DIR`")
    root = Path(value).resolve()
    if not root.is_dir():
        raise AppError(f"data root {root} is not a folder")
    return root


def inside(root: Path, relative: str | PurePath) -> Path:
    """The real path of `root / relative` (symlinks followed); refused when it leaves the data root."""
    try:
        return confined(root.resolve(), PurePath(relative).as_posix(), "the data root")
    except BuildError as exc:
        raise AppError(str(exc)) from None


@dataclass(frozen=True)
class BuildEntry:
    name: str
    path: Path
    status: str  # ready | in progress | stopped: ... | broken(: why) | refused: ...


def review_file(root: Path, build: str) -> Path:
    """The reviews file of a build (`DATA_ROOT/reviews/<build>.parquet`), refused when it or its folder is a link
    (its real path must be that path: the workbench writes nowhere else)."""
    from curation.errors import InputError
    from curation.reviews import reviews_path

    try:
        relative = reviews_path(root, build).relative_to(root)
    except InputError as exc:
        raise AppError(str(exc)) from None
    real = inside(root, relative)
    if real != root.resolve() / relative:  # a link, in the path or the file: it could lead into a build
        raise AppError(f"{relative}: a link (to {real}); reviews are written only to {relative} itself")
    if (real.parent / "manifest.json").exists() or (real.parent / "shards").exists():
        raise AppError(f"{relative.parent}: a build's folder; reviews are never written into a build")
    return real


def read_review_file(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A build's reviews file read once: every review it holds, and each pair's latest (both empty while it does not
    exist); `InputError` for a file that is not a reviews table."""
    from curation.reviews import latest, read_reviews

    if not path.is_file():
        return [], []
    table = read_reviews(path)
    return table.to_pylist(), latest(table)


def _partial_status(root: Path, partial: Path) -> str:
    """A build's `.partial` folder: being written now (its build holds the lock), or left by a build that stopped."""
    from curation.build import build_lock
    from curation.io import held

    try:
        lock = inside(root, build_lock(partial.with_name(partial.name.removesuffix(".partial"))).name)
    except AppError:
        lock = None
    if lock is not None and held(lock):
        return "in progress"
    return "stopped: curate build ... --resume continues it"


@functools.lru_cache(maxsize=256)
def _shards_whole(path: Path, stamp: tuple[tuple[str, int, int], ...]) -> None:
    """`BuildError` where a shard of the build at `path` (its manifest and shards as `stamp` finds them) cannot be
    read with the rows the manifest lists; memory-mapped, no shard is read whole."""
    BuildDir.open(path).pairs(["pair_id"])


def _finished_status(path: Path) -> str:
    """ "ready", or "broken: why" for a build whose manifest cannot be read or whose shards are not all there and
    readable with the rows the manifest lists (memory-mapped: no shard is read whole; their texts are checked when
    the build is opened)."""
    try:
        shards = BuildDir.open(path).shard_paths  # each listed shard, confined and present
        # whole, with its rows: opened once while the files are unchanged (every page lists the builds on each run)
        files = (path / MANIFEST, *shards)  # the manifest too: it lists each shard's rows
        _shards_whole(path, tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    except BuildError as exc:
        # the build's own files by their path in it (one the manifest gives as absolute stays absolute: never
        # `name//tmp/...`), and the build by its name
        message = str(exc).replace(f"{path}/", "").replace(str(path), path.name)
        return f"broken: {message.removeprefix(f'{path.name}: ')}"
    return "ready"


def list_builds(root: Path) -> list[BuildEntry]:
    builds = []
    for path in sorted(p for p in root.iterdir() if p.is_dir() and p.name != REVIEWS):  # the reviews' folder
        try:
            inside(root, path.name)
            inside(root, f"{path.name}/manifest.json")
        except AppError:
            builds.append(BuildEntry(path.name, path, "refused: outside the data root"))
            continue
        if path.name.endswith(".partial"):
            builds.append(BuildEntry(path.name, path, _partial_status(root, path)))
        elif (path / "manifest.json").is_file():
            # `curate export`'s Hub layout carries a copy of its build's manifest beside the recipe, without shards
            if not ((path / "recipe.yaml").is_file() and not (path / "shards").exists()):
                builds.append(BuildEntry(path.name, path, _finished_status(path)))
        elif (path / "shards").is_dir():
            builds.append(BuildEntry(path.name, path, "broken: a shards folder without manifest.json"))
    return builds


MAX_SHOWN_PIXELS = 50_000_000  # the build's own limit at ingest (`validate.max_pixels`' default)

# Stand-ins for a build's optional tables when their file is absent or refused: empty, so each page still works.
EMPTY_VIEWS = {
    "rejects": "SELECT NULL::VARCHAR AS source, NULL::VARCHAR AS source_row, NULL::VARCHAR AS pair_id, "
    "NULL::VARCHAR AS stage, NULL::VARCHAR AS reason, NULL::VARCHAR AS detail WHERE false",
    "removed_pairs": "SELECT * FROM pairs WHERE false",
    "build_images": NO_IMAGES_SQL,
    "benchmark_images": NO_IMAGES_SQL,
}


class Build:
    """One finished build, opened read-only through `BuildDir`: the folder is confined to the data root, and every
    file in it to the build folder. A refused optional file is left out and kept in `refused` (its path in the
    build -> the message naming it and why) for the pages to show; `missing` says what the manifest counts that is
    not there."""

    def __init__(self, root: Path, name: str) -> None:
        self.root, self.name = root, name
        self.path = inside(root, name)
        try:
            self.dir = BuildDir.open(self.path)
            pairs = self.dir.pairs()  # memory-mapped; a damaged or changed shard is an error naming it
            images = self.dir.optional(IMAGES)
            if images is not None:  # refused or absent: said in `refused` or `missing`, the pages go on
                self.dir.images()  # of other columns: an error naming it, not a query's failure
        except BuildError as exc:
            raise AppError(str(exc).replace(str(self.path), name)) from None
        self.manifest = self.dir.manifest
        self.refused = self.dir.refused
        # absent, not refused (a refused file is named in `refused`), though the shards have images
        # (a build from before `images_in_shards` counts the images it stored: the shards' and the evidence's)
        in_shards = "images_in_shards" in self.manifest
        counted = self.manifest["images_in_shards" if in_shards else "images"]
        absent = images is None and IMAGES not in self.refused and counted > 0
        what = "in the shards" if in_shards else "stored (the shards' and the removed evidence's)"
        missing = f"{IMAGES} is missing: the manifest counts {counted} images {what}; images are not shown"
        self.missing = [missing] if absent else []
        self.images_unread = absent or IMAGES in self.refused  # no image can be shown: said once, above the page
        # One opened build (and its connection) serves every browser session: a DuckDB connection runs one query
        # at a time and refuses a second, so each query, from execute to fetch, holds this lock.
        self._lock = threading.Lock()
        self.db = duckdb.connect()
        self.db.register("pairs", pairs)
        views = (("rejects", REJECTS), ("removed_pairs", REMOVED_PAIRS), ("build_images", IMAGES),
                 ("benchmark_images", BENCHMARK_IMAGES))  # fmt: skip
        for view, relative in views:
            path = self.dir.optional(relative)
            source = EMPTY_VIEWS[view] if path is None else f"SELECT * FROM {self.table(path)}"
            self.db.execute(f"CREATE VIEW {view} AS {source}")
        # The build's images and the benchmark images its contamination evidence matched, looked up alike.
        self.db.execute("CREATE VIEW images AS SELECT * FROM build_images UNION ALL SELECT * FROM benchmark_images")
        # The rows a review swapped: their id before the swap, which the stages before it (contamination, the
        # dedupes) recorded. Made once (the build does not change); `meta` is read as JSON only where it names one.
        self.db.execute(f"""CREATE TABLE swaps AS  -- one row per input row (an upsampled pair's copies are one)
                            SELECT DISTINCT {ID_BEFORE_SWAP_SQL} AS before, pair_id, source, source_row
                            FROM pairs WHERE contains(meta, 'pair_id_before')
                            AND {ID_BEFORE_SWAP_SQL} IS NOT NULL""")  # fmt: skip
        # Tables found by listing a folder, by name (the file's stem) -> real path.
        self.dups = self.dir.dups()
        self.signal_files = self.dir.signals()
        self.contamination_file = self.dir.optional(CONTAMINATION)
        self.benchmark_rejects_file = self.dir.optional(BENCHMARK_REJECTS)  # a build from before it has none
        self._queue_counts: dict[tuple[str, str | None], tuple[int, int]] = {}

    def table(self, path: Path) -> str:
        """The SQL name of a confined parquet file of this build (read exactly: no glob patterns)."""
        with self._lock:
            return parquet_relation(self.db, path)

    def _dups_union(self) -> str | None:
        if not self.dups:
            return None
        return "(" + " UNION ALL BY NAME ".join(f"SELECT * FROM {self.table(p)}" for p in self.dups.values()) + ")"

    def rows(self, query: str, params: list[Any] | dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self._lock:
            cursor = self.db.execute(query, params or [])
            names = [c[0] for c in cursor.description]
            found = cursor.fetchall()
        return [dict(zip(names, values, strict=True)) for values in found]

    # -- pairs ---------------------------------------------------------------------------------------------
    def pairs(
        self,
        *,
        sources: list[str] | None = None,
        modalities: list[str] | None = None,
        categories: list[str] | None = None,
        search: str = "",
        min_margin: float | None = None,
        max_margin: float | None = None,
        min_chosen_chars: int | None = None,
        max_chosen_chars: int | None = None,
        sort: str = "input order",
        page: int = 0,
        page_size: int = 25,
    ) -> tuple[list[dict[str, Any]], int]:
        where, params = ["true"], []
        if sources:
            where.append(f"source IN ({', '.join('?' * len(sources))})")
            params += sources
        if modalities:
            where.append(f"modality IN ({', '.join('?' * len(modalities))})")
            params += modalities
        if search:
            # A plain substring, case-insensitive (no LIKE wildcards: "snake_case" means what it says).
            in_prompt = "list_contains(list_transform(prompt, lambda m: contains(lower(m.content), ?)), true)"
            texts = f"contains(lower(chosen), ?) OR contains(lower(rejected), ?) OR {in_prompt}"
            params += [search.lower()] * 3
            if looks_like_an_id(search):  # a pair id (prefix), or one before a swap
                texts += f" OR starts_with(pair_id, ?) OR starts_with({ID_BEFORE_SWAP_SQL}, ?)"
                params += [search.strip().lower()] * 2
            where.append(f"({texts})")
        if categories:
            where.append(f"category IN ({', '.join('?' * len(categories))})")
            params += categories
        for bound, expression, operator in (
            (min_margin, "margin", ">="),
            (max_margin, "margin", "<="),
            (min_chosen_chars, "length(chosen)", ">="),
            (max_chosen_chars, "length(chosen)", "<="),
        ):
            if bound is not None:
                where.append(f"{expression} {operator} ?")
                params.append(bound)
        clause = " AND ".join(where)
        total = self.rows(f"SELECT count(*) AS n FROM pairs WHERE {clause}", params)[0]["n"]
        rows = self.rows(
            f"""SELECT pair_id, source, source_row, modality, category, length(chosen) AS chosen_chars,
                       length(rejected) AS rejected_chars, margin, tie, coalesce(c.removed, 0) AS duplicates_removed,
                       k.copies
                FROM pairs LEFT JOIN ({self._duplicates_removed()}) c USING (pair_id)
                JOIN (SELECT pair_id, count(*) AS copies FROM pairs GROUP BY 1) k USING (pair_id)
                WHERE {clause} ORDER BY {SORTS[sort]}, pair_id LIMIT ? OFFSET ?""",
            [*params, page_size, page * page_size],
        )
        return rows, total

    def _duplicates_removed(self) -> str:
        """SQL: per surviving pair, how many duplicates (any dedupe op) were removed in its favour."""
        dups = self._dups_union()
        if dups is None:
            return "SELECT NULL::VARCHAR AS pair_id, 0 AS removed WHERE false"
        return f"SELECT survivor_pair_id AS pair_id, count(*) AS removed FROM {dups} GROUP BY 1"

    def pair(self, pair_id: str, source: str | None = None, source_row: str | None = None) -> dict[str, Any] | None:
        """A pair of the shards or, failing that, a removed pair, with its `fate` in words and `removed_at`
        (stage, reason, detail) when removed. With `source` and `source_row`, that input row of the pair: copies
        of one pair (an exact duplicate within a source) can meet different fates."""
        in_shards = self.rows(  # by its id, or the id it had before a review swapped it
            "SELECT * FROM pairs WHERE pair_id = ? OR pair_id IN (SELECT pair_id FROM swaps WHERE before = ?) "
            "ORDER BY source, source_row",
            [pair_id, pair_id],
        )
        removed = self.rows(
            """SELECT p.*, r.stage, r.reason, r.detail FROM removed_pairs p
               LEFT JOIN rejects r ON r.pair_id = p.pair_id AND r.source = p.source AND r.source_row = p.source_row
               WHERE p.pair_id = ? ORDER BY p.source, p.source_row""",
            [pair_id],
        )

        def kept(row: dict[str, Any]) -> dict[str, Any]:
            return {**row, "fate": "in the shards", "removed_at": None}

        def gone(row: dict[str, Any]) -> dict[str, Any]:
            removed_at = (row.pop("stage"), row.pop("reason"), row.pop("detail"))
            return {**row, "fate": f"removed at {removed_at[0]}: {removed_at[1]}", "removed_at": removed_at}

        wanted = (source, source_row)
        for row in in_shards:
            if source_row is None or (row["source"], row["source_row"]) == wanted:
                return kept(row)
        for row in removed:
            if (row["source"], row["source_row"]) == wanted:
                return gone(row)
        # the row asked for is not in this build: the pair's first row, the shards' first
        return kept(in_shards[0]) if in_shards else gone(removed[0]) if removed else None

    def signal_tables(self, pair: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """Per op that measured this pair (or its prompt or images), its signal rows as a table: what it measured
        (the signal's columns, keys left out), the recipe's thresholds for that op, and what the op decided (first
        of the columns)."""
        from curation.ops import OPS

        found = self.signals(pair["pair_id"], pair["prompt_id"], list(pair["images"]))
        before = id_before_swap(pair.get("meta"))
        if before:  # a pair whose labels a review swapped: the per-pair signals know it by its old id
            for stem, rows in self.signals(before, pair["prompt_id"], []).items():
                found.setdefault(stem, rows)
        thresholds = recipe_thresholds(self.manifest)
        removed_at = pair.get("removed_at")
        stages = list(OPS)
        tables = {}
        for stem, rows in sorted(found.items()):
            op = stem.split("-v")[0]
            if stem.startswith("rm_scores"):  # a reward model's scores beside the signals: no stage decides on them
                tables[f"{stem} (reward model scores: no stage decides on this file itself)"] = [
                    {k: v for k, v in row.items() if k != "row_key"} for row in rows
                ]
                continue
            keys = OPS[op].signal_keys if op in OPS else {}  # an op this version no longer has: its rows as stored
            hidden = {"row_key", *keys}
            # a signal between two prompts (near and semantic duplicates) names the other one
            other = "other_prompt_id" in keys and "prompt_id" in keys
            limits = ", ".join(f"{k} {v}" for k, v in thresholds.get(op, {}).items()) or "-"
            if removed_at is not None and removed_at[0] == op:
                decision = f"removed: {removed_at[1]} ({removed_at[2]})"
            elif removed_at is not None and op in stages and removed_at[0] in stages:
                later = stages.index(op) > stages.index(removed_at[0])
                decision = f"not decided (removed earlier, at {removed_at[0]})" if later else "kept by this op"
            elif removed_at is not None:
                decision = f"removed at {removed_at[0]}"
            else:
                decision = "kept"
            # what the op decided first: a wide signal table never hides it
            tables[f"{op} (signal {stem})"] = [
                {
                    "decision": decision,
                    "thresholds": limits,
                    **({"with prompt": _other_prompt(row, pair["prompt_id"])} if other else {}),
                    **{k: v for k, v in row.items() if k not in hidden},
                }
                for row in rows
            ]
        return tables

    def image(self, sha256: str, max_side: int = 512) -> tuple[Image.Image | None, dict[str, Any]] | None:
        """One image, decoded and downscaled only when it is shown, with what the build stored of it (width,
        height, format, KiB); None for the image where its bytes cannot be shown (`error` says why)."""
        found = self.rows("SELECT bytes, width, height, format FROM images WHERE sha256 = ?", [sha256])
        if not found:
            return None
        data = found[0].pop("bytes") or b""
        info = {**found[0], "kib": round(len(data) / 1024, 1)}
        try:
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_SHOWN_PIXELS:  # read from the header: nothing decoded yet
                return None, {**info, "error": f"{image.width}x{image.height} pixels, too many to show"}
            image.thumbnail((max_side, max_side))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # what Pillow raises
            return None, {**info, "error": f"cannot be decoded ({type(exc).__name__}: {exc})"}
        return image, info

    def signals(self, pair_id: str, prompt_id: str, images: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            return pair_signals(self.db, self.signal_files, pair_id, prompt_id, images or [])

    def cluster(self, pair_id: str) -> list[dict[str, Any]]:
        """Duplicates removed in favour of this pair, or the survivor this pair lost to."""
        out = []
        for op, path in self.dups.items():
            out += self.rows(
                f"SELECT *, {sql_literal(op)} AS op FROM {self.table(path)} WHERE pair_id = ? OR survivor_pair_id = ?",
                [pair_id, pair_id],
            )
        return out

    # -- review queues ---------------------------------------------------------------------------------------
    def applied_reviews(self) -> AppliedReviews:
        """The reviews this build applied (its `human_review` stage, `flags/human_review.parquet`). `AppError` for
        the record damaged or not the stage's table."""
        relative = "flags/human_review.parquet"
        flags = self.dir.optional(relative)
        if flags is None:
            if relative in self.dir.refused:  # there, but cut short, damaged or a link leaving the build
                raise AppError(self.dir.refused[relative])
            return AppliedReviews({}, [], [])
        columns = ("pair_id", "action", "note", "reviewer", "reviewed_at", "outcome")
        missing = set(columns) - set(pq.read_schema(flags).names)
        if missing:
            raise AppError(f"{self.name}/{relative}: not the table the human_review stage writes (no column "
                           f"{', '.join(sorted(missing))})")  # fmt: skip
        taken = self.rows(f"SELECT {', '.join(columns)} FROM {self.table(flags)}")
        files = (manifest_recipe(self.manifest).get("ops") or {}).get("human_review", {}).get("reviews", [])
        read = [e["path"] for e in (self.manifest.get("op_inputs") or {}).get("human_review", [])
                if isinstance(e, dict) and isinstance(e.get("path"), str)]  # fmt: skip
        return AppliedReviews({r["pair_id"]: r for r in taken}, [files] if isinstance(files, str) else list(files),
                              read)  # fmt: skip

    def review_queues(self) -> list[str]:
        """The queues this build has, flagged pairs first."""
        queues = []
        flags = self.dir.optional("flags/rm_margin.parquet")
        if flags is not None and pq.read_metadata(flags).num_rows:  # `swap` writes the file even when none is listed
            queues.append("rm_margin flags")
        if self.contamination_file is not None:
            queues.append("contamination matches")
        if self.dups:
            queues.append("duplicate clusters")
        return [*queues, "random sample"]

    def review_queue(self, queue: str, source: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """The pairs of a review queue, each once (pair_id: its id in this build, source, source_row, why,
        in_shards; `reviewed_as`: the id a review of it is recorded under, its id before a review swapped it in
        this build (`swapped`), else its own), at most `limit`: those in the shards first (a review changes only
        them: reviews apply after the other ops, so a removed pair stays removed)."""
        where = "WHERE source = ?" if source else ""
        params: list[Any] = [source] if source else []
        query, order = self._queue_query(queue, where)
        # A queue's row names its pair by the id its stage recorded: the swap, if any, is that input row's. The row
        # shows the pair's id in this build (after a swap, its new one, as the pair view does).
        rows = self.rows(
            f"""SELECT coalesce(swapped_id, pair_id) AS shown_id, source, source_row, why,
                       {self._in_shards("pair_id")} AS in_shards, coalesce(before, pair_id) AS reviewed_as,
                       before IS NOT NULL AS swapped
                FROM (SELECT DISTINCT ON (pair_id) * FROM ({query}) ORDER BY pair_id, {order})
                LEFT JOIN (SELECT before, pair_id AS swapped_id, source AS swapped_source,
                                  source_row AS swapped_row FROM swaps)
                     ON (before = pair_id OR swapped_id = pair_id) AND swapped_source = source
                     AND swapped_row = source_row
                ORDER BY in_shards DESC, {order} LIMIT ?""",
            [*params, limit],
        )
        return [{"pair_id": row.pop("shown_id"), **row} for row in rows]

    @staticmethod
    def _in_shards(pair_id: str) -> str:
        """SQL: whether the pair `pair_id` names is in the shards, by its id or by the id it had before a swap."""
        return f"({pair_id} IN (SELECT pair_id FROM pairs) OR {pair_id} IN (SELECT before FROM swaps))"

    def review_queue_counts(self, queue: str, source: str | None = None) -> tuple[int, int]:
        """(pairs in the queue, those of them in the shards), counted once per opened build (its files do not
        change; a review changes the next build)."""
        if (queue, source) not in self._queue_counts:
            self._queue_counts[queue, source] = self._count_queue(queue, source)
        return self._queue_counts[queue, source]

    def _count_queue(self, queue: str, source: str | None) -> tuple[int, int]:
        where = "WHERE source = ?" if source else ""
        query, _ = self._queue_query(queue, where)
        found = self.rows(
            f"""SELECT count(DISTINCT pair_id) AS n,
                       count(DISTINCT pair_id) FILTER ({self._in_shards("pair_id")}) AS live
                FROM ({query})""",
            [source] if source else [],
        )[0]
        return found["n"], found["live"]

    def _queue_query(self, queue: str, where: str) -> tuple[str, str]:
        """SQL for a queue's rows (pair_id, source, source_row, why) and the order they are reviewed in."""
        if queue == "rm_margin flags":
            path = self.dir.file("flags/rm_margin.parquet")
            # the decision's own words (the rule, or why a pair was left as it is; builds of older versions have
            # none), else the margin
            margin = "'margin ' || round(margin, 3)"
            why = f"coalesce(detail, {margin})" if "detail" in pq.read_schema(path).names else margin
            query = f"SELECT pair_id, source, source_row, {why} AS why, margin FROM {self.table(path)} {where}"
            return query, "margin, pair_id"
        if queue == "contamination matches":
            assert self.contamination_file is not None
            # the stage's decision named as its own (a review may overrule it: the pair's fate is beside it)
            query = f"""SELECT pair_id, source, source_row, 'decontaminate ' || action || ' it: ' || rule
                                 || ' match with ' || benchmark || ' ' || benchmark_row AS why
                        FROM {self.table(self.contamination_file)} {where}"""
            return query, f"{INPUT_ORDER}, source_row, why"
        if queue == "duplicate clusters":
            # the removed duplicates of other pairs (an exact copy of a pair is that pair, its review the same)
            query = f"""SELECT pair_id, source, source_row, survivor_pair_id,
                               method || ' similarity ' || round(similarity, 3) || ' to ' || survivor_source || ' '
                                 || survivor_row AS why
                        FROM {self._dups_union()} {where or "WHERE true"} AND pair_id <> survivor_pair_id"""
            return query, f"survivor_pair_id, {INPUT_ORDER}, source_row"
        if queue == "random sample":
            # A stable sample: hash order over the pair id and the build's seed.
            seed = sql_literal(str(self.manifest.get("seed", 0)))
            query = f"""SELECT DISTINCT ON (pair_id) pair_id, source, source_row, 'sample' AS why
                        FROM pairs {where} ORDER BY pair_id, {ROW_ORDER}, source_row"""
            return query, f"md5(pair_id || ':' || {seed}), pair_id"
        raise AppError(f"no review queue {queue!r}")

    # -- removed, bias, mixture -----------------------------------------------------------------------------

    def removed_summary(self) -> list[dict[str, Any]]:
        """Removed rows by stage (in the order the stages run), reason and source: input rows rejected at ingest,
        pair rows (copies counted) later."""
        from curation.build_card import stage_order

        return self.rows(
            "SELECT * FROM (SELECT stage, reason, source, count(*) AS rows FROM rejects GROUP BY ALL) "
            "ORDER BY coalesce(list_position(?, stage), 1000), stage, reason, source",
            [stage_order()],
        )

    def removed_count(self, stage: str, reason: str) -> int:
        """The removed rows of one stage and reason (`removed_examples` lists the first of them)."""
        return self.rows("SELECT count(*) AS n FROM rejects WHERE stage = ? AND reason = ?", [stage, reason])[0]["n"]

    def removed_examples(self, stage: str, reason: str, limit: int = 20) -> list[dict[str, Any]]:
        return self.rows(
            "SELECT source, source_row, pair_id, detail FROM rejects WHERE stage = ? AND reason = ? "
            f"ORDER BY {INPUT_ORDER}, source_row LIMIT ?",
            [stage, reason, limit],
        )

    def duplicates_count(self) -> int:
        """The removed duplicates of every dedupe op (`duplicates` lists the first of them)."""
        dups = self._dups_union()
        return 0 if dups is None else self.rows(f"SELECT count(*) AS n FROM {dups}")[0]["n"]

    def duplicates(self, limit: int = 200) -> list[dict[str, Any]]:
        """Removed duplicates beside their kept survivors (prompt and chosen of both), with the similarity."""
        dups = self._dups_union()
        if dups is None:
            return []
        text = "array_to_string(list_transform({0}.prompt, lambda m: m.content), chr(10))"
        return self.rows(
            f"""SELECT d.method, round(d.similarity, 3) AS similarity, d.source, d.source_row,
                       {text.format("r")} AS removed_prompt, r.chosen AS removed_chosen, r.images AS removed_images,
                       d.survivor_source, d.survivor_row, coalesce(k.images, g.images) AS survivor_images,
                       coalesce({text.format("k")}, {text.format("g")}) AS survivor_prompt,
                       coalesce(k.chosen, g.chosen) AS survivor_chosen,
                       CASE WHEN k.pair_id IS NOT NULL AND w.now IS NOT NULL
                                 THEN 'in the shards, chosen and rejected swapped'
                            WHEN k.pair_id IS NOT NULL THEN 'in the shards'
                            ELSE coalesce('removed later: ' || x.stage || ': ' || x.reason, 'removed') END
                         AS survivor_fate
                FROM {dups} d
                LEFT JOIN (SELECT DISTINCT ON (pair_id, source, source_row) * FROM removed_pairs
                           ORDER BY pair_id, source, source_row) r
                     ON r.pair_id = d.pair_id AND r.source = d.source AND r.source_row = d.source_row
                LEFT JOIN (SELECT before, any_value(pair_id) AS now FROM swaps GROUP BY before) w
                     ON w.before = d.survivor_pair_id  -- a survivor a review swapped: in the shards by its new id
                LEFT JOIN (SELECT DISTINCT ON (pair_id) * FROM pairs ORDER BY pair_id, source, source_row) k
                     ON k.pair_id = coalesce(w.now, d.survivor_pair_id)
                LEFT JOIN (SELECT DISTINCT ON (pair_id, source, source_row) * FROM removed_pairs
                           ORDER BY pair_id, source, source_row) g
                     ON g.pair_id = d.survivor_pair_id AND g.source = d.survivor_source
                     AND g.source_row = d.survivor_row
                LEFT JOIN (SELECT DISTINCT ON (pair_id, source, source_row) pair_id, source, source_row, stage, reason
                           FROM rejects ORDER BY pair_id, source, source_row, stage) x
                     ON x.pair_id = d.survivor_pair_id AND x.source = d.survivor_source
                     AND x.source_row = d.survivor_row
                ORDER BY d.method, d.source, d.source_row LIMIT ?""",
            [limit],
        )

    def contamination(self, limit: int = 50) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Benchmark matches, the removed ones first (the others were only recorded), and the count per action."""
        if self.contamination_file is None:
            return [], {}
        table = self.table(self.contamination_file)
        counts = {r["action"]: r["n"] for r in self.rows(f"SELECT action, count(*) AS n FROM {table} GROUP BY 1")}
        # With the training pair's images (from the shards or the removed pairs), to set beside the benchmark's.
        rows = self.rows(
            f"""SELECT c.*, coalesce(k.images, w.images, r.images) AS pair_images FROM {table} c
                LEFT JOIN (SELECT DISTINCT ON (pair_id) pair_id, images FROM pairs ORDER BY pair_id) k USING (pair_id)
                LEFT JOIN (SELECT DISTINCT ON (s.before) s.before AS pair_id, p.images FROM swaps s
                           JOIN pairs p USING (pair_id) ORDER BY s.before) w USING (pair_id)
                LEFT JOIN (SELECT DISTINCT ON (pair_id) pair_id, images FROM removed_pairs ORDER BY pair_id) r
                     USING (pair_id)
                ORDER BY c.action = 'removed' DESC, c.source, c.source_row LIMIT ?""",
            [limit],
        )
        return rows, counts

    def benchmark_rejects(self, limit: int = 50) -> tuple[list[dict[str, Any]], int]:
        """The benchmark rows rejected at ingest (the items this build was not checked against), the first `limit`
        in benchmark and row order, and how many there are."""
        if self.benchmark_rejects_file is None:
            return [], 0
        table = self.table(self.benchmark_rejects_file)
        total = self.rows(f"SELECT count(*) AS n FROM {table}")[0]["n"]
        return self.rows(f"SELECT * FROM {table} ORDER BY benchmark, {ROW_ORDER}, source_row LIMIT ?", [limit]), total

    def length_bias(self) -> list[dict[str, Any]]:
        return self.rows(
            """SELECT source, count(*) AS rows, round(avg(length(chosen)), 1) AS mean_chosen_chars,
                      round(avg(length(rejected)), 1) AS mean_rejected_chars,
                      round(100 * avg((length(chosen) > length(rejected))::INT), 1) AS chosen_longer_pct,
                      round(median(length(chosen) / greatest(length(rejected), 1)), 3) AS median_length_ratio
               FROM pairs GROUP BY source ORDER BY source"""
        )

    def length_histogram(self, source: str, bins: int = 30) -> list[dict[str, Any]]:
        """Counts of chosen and rejected answers per length bin (equal-width bins up to the 99th percentile)."""
        top = self.rows(
            "SELECT quantile_cont(greatest(length(chosen), length(rejected)), 0.99) AS q FROM pairs WHERE source = ?",
            [source],
        )[0]["q"]
        width = max(1, int((top or 1) / bins) + 1)
        # `length_end`: the bin's end (exclusive), the last bin's as wide as the others though it holds every longer
        # answer (`longest`: its longest), so that one very long answer does not stretch the axis
        return self.rows(
            f"""SELECT bin * {width} AS length_bin, (bin + 1) * {width} AS length_end, max(n) AS longest,
                       sum(side = 'c')::INT AS chosen, sum(side = 'r')::INT AS rejected
                FROM (SELECT length(chosen) AS n, least(length(chosen) // {width}, {bins}) AS bin, 'c' AS side
                      FROM pairs WHERE source = ?
                      UNION ALL
                      SELECT length(rejected), least(length(rejected) // {width}, {bins}), 'r'
                      FROM pairs WHERE source = ?)
                GROUP BY bin ORDER BY bin""",
            [source, source],
        )

    def histogram(self, column: str, source: str, bins: int = 20) -> list[dict[str, Any]]:
        """Counts per equal-width bin of a numeric pair column (margin, scores) for one source, each bin from `bin` to
        `bin_end` (the same where every value is one); [] when unknown."""
        if column not in ("margin", "chosen_score", "rejected_score"):
            raise AppError(f"no histogram for {column!r}")
        bounds = self.rows(f"SELECT min({column}) AS lo, max({column}) AS hi FROM pairs WHERE source = ?", [source])
        low, high = bounds[0]["lo"], bounds[0]["hi"]
        if low is None:
            return []
        # Divided before subtracted, so scores of +-1e308 do not overflow to inf; a bin is labelled by its lower
        # edge, a weighted mean of the two ends (never beyond them), and grouped by its index.
        width = high / bins - low / bins or 1.0
        return self.rows(
            f"""SELECT $low * (1 - k / $bins) + $high * (k / $bins) AS bin,
                       $low * (1 - (k + 1) / $bins) + $high * ((k + 1) / $bins) AS bin_end, count(*) AS rows
                FROM (SELECT least(floor(({column} / $bins - $low / $bins) / $width * $bins), $last) AS k
                      FROM pairs WHERE source = $source AND {column} IS NOT NULL)
                GROUP BY k ORDER BY k""",
            {
                "low": float(low),
                "high": float(high),
                "width": float(width),
                "bins": float(bins),
                "last": bins - 1,
                "source": source,
            },
        )

    def signal_file(self, op: str) -> Path | None:
        found = sorted(stem for stem in self.signal_files if stem.startswith(f"{op}-"))
        return self.signal_files[found[0]] if found else None

    def mixture(self) -> list[dict[str, Any]]:
        total = sum(s["in_shards"] for s in self.manifest["sources"].values()) or 1
        target_total = sum(s["mix"]["target"] for s in self.manifest["sources"].values()) or 1
        rows = []
        for name, entry in self.manifest["sources"].items():
            mix = entry["mix"]
            rows.append(
                {
                    "source": name,
                    "available": mix["available"],
                    "target": mix["target"],
                    "rows_in_shards": entry["in_shards"],
                    "target_share_pct": round(100 * mix["target"] / target_total, 2),
                    "share_pct": round(100 * entry["in_shards"] / total, 2),
                    # Rows the recipe asked for per pair available: below 1 subsampled, above 1 upsampled.
                    "sampling_factor": mix["factor"],
                }
            )
        return rows


def recipe_thresholds(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per op the recipe ran, its thresholds' values (the recipe's, or the defaults)."""
    import dataclasses

    from curation.ops import OPS

    given = manifest_recipe(manifest).get("ops") or {}
    out = {}
    for name, op in OPS.items():
        if name not in given and not op.default_on:
            continue
        values = {**{f.name: f.default for f in dataclasses.fields(op.Params)}, **(given.get(name) or {})}
        out[name] = {k: values[k] for k in sorted(op.thresholds) if k in values}
    return out


def funnel(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    from curation.build_card import funnel_rows

    return [{"source": s, "step": step, "count": n} for s, step, n in funnel_rows(manifest)]


def funnel_steps(rows: list[dict[str, Any]]) -> list[str]:
    """The funnel's steps over all sources in pipeline order (`curation.build_card.funnel_step_order`)."""
    from curation.build_card import funnel_step_order

    return funnel_step_order([r["step"] for r in rows])


def diff_builds(a: dict[str, Any], b: dict[str, Any], name_a: str = "a", name_b: str = "b") -> list[dict[str, Any]]:
    """Per source and step (in pipeline order), the counts of two builds, named by their builds, and the
    difference `a - b` under a name that says so."""
    left = {(r["source"], r["step"]): r["count"] for r in funnel(a)}
    right = {(r["source"], r["step"]): r["count"] for r in funnel(b)}
    keys = list(dict.fromkeys([*left, *right]))
    rows = []
    for s, step in keys:
        before, after = left.get((s, step), 0), right.get((s, step), 0)
        if before != after:
            rows.append(
                {"source": s, "step": step, name_a: before, name_b: after, f"{name_a} − {name_b}": before - after}
            )
    return rows


def list_runs(root: Path) -> tuple[dict[Path, tuple[int, int] | None], list[str]]:
    """Training runs under the data root (folders with a metrics.jsonl), plain runs first and the fold runs of
    audits after them, each with its (fold, folds) or None (`audit_fold`); and the refusals of those whose folder
    or metrics.jsonl has its real path outside it."""
    runs, refused = [], []
    found = []
    for folder, dirs, names in os.walk(root):  # links to folders are not walked: they are named below
        here = Path(folder)
        if "metrics.jsonl" in names:
            found.append(here / "metrics.jsonl")
        for name in dirs:
            link = here / name
            if link.is_symlink() and (link / "metrics.jsonl").exists():  # a run reached through a link
                found.append(link / "metrics.jsonl")
    for metrics in sorted(found):
        relative = metrics.relative_to(root)
        try:
            inside(root, relative.parent)
            inside(root, relative)
        except AppError as exc:
            refused.append(str(exc))
            continue
        runs.append(metrics.parent)
    folds = {run: audit_fold(root, run) for run in runs}
    return {run: folds[run] for run in sorted(runs, key=lambda run: (folds[run] is not None, run))}, refused


def audit_fold(root: Path, run: Path) -> tuple[int, int] | None:
    """(fold, folds) of a run `trainer audit` trained (its config.yaml's `folds` above 0), or None: a plain run, or
    a config that cannot be read."""
    try:
        config = yaml.safe_load(inside(root, run.relative_to(root) / "config.yaml").read_text(encoding="utf-8"))
        fold, folds = config["fold"], config["folds"]
    except (AppError, OSError, ValueError, yaml.YAMLError, KeyError, TypeError):
        return None
    return (fold, folds) if type(fold) is int and type(folds) is int and folds > 0 else None


def read_metrics(root: Path, run: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """A run's metrics.jsonl: one object per logged step (those with a whole-number `step`), and the numbers (from
    1) of the lines left out (not JSON, as a line still being written is, or not such an object); AppError when it
    is refused, not a plain file or not UTF-8."""
    path = inside(root, run.relative_to(root) / "metrics.jsonl")
    if not path.is_file():  # a folder, or a pipe that would block the page
        raise AppError(f"{run.name}/metrics.jsonl is not a plain file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise AppError(f"{run.name}/metrics.jsonl cannot be read as UTF-8 text ({exc})") from None
    steps, left_out = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and type(record.get("step")) is int:
            steps.append(record)
        else:
            left_out.append(number)
    return steps, left_out


def data_report(root: Path, run: Path) -> dict[str, Any] | str:
    """A run's data.json (`trainer fit` writes it), {} when it has none (still training) or it cannot be read;
    "not read: why" when its real path leaves the data root."""
    try:
        path = inside(root, run.relative_to(root) / "data.json")
    except AppError as exc:
        return f"not read: {exc}"
    if not path.is_file():  # absent, or a pipe that would block the page
        return {}
    return read_data_report(run)


def trained_on(report: dict[str, Any] | str) -> str | None:
    """What a run trained on (its `data_report`): each build with its training draws and held-out pairs."""
    if not isinstance(report, dict):
        return report
    try:
        return "; ".join(f"{name} ({b['train_draws']} training draws from {_rows_text(b)}, {_held_text(b)} held "
                         f"out{_left_out_text(b)})" for name, b in report["builds"].items())  # fmt: skip
    except (KeyError, TypeError, AttributeError):
        return None


def training_reach(report: dict[str, Any] | str) -> tuple[str, bool] | None:
    """How far a run's steps went through its training draws and what they skipped (its `data_report`), and
    whether that is worth a warning (more than a tenth skipped); None for a run that does not record it."""
    reach = Reach.of(report) if isinstance(report, dict) else None
    if reach is None:
        return None
    text = f"training: {steps_text(report)}{reach.text()}"
    return text, reach.skipped_total * 10 > reach.reached


def _left_out_text(build: dict[str, Any]) -> str:
    """`, 7 rows left out (...)` for a fold run (its shard rows, upsampled copies counted); nothing for a plain
    one."""
    left_out = build.get("left_out") or 0
    if not left_out:
        return ""
    return (f", {left_out} rows of the shards left out (the audit's fold, upsampled copies counted: the pairs this "
            "run's model judges)")  # fmt: skip


def _held_text(build: dict[str, Any]) -> str:
    """`6 pairs (8 rows)`: the held-out pairs, and the rows of the shards they are where upsampled copies make
    more (a run from before those rows were counted: the pairs only)."""
    rows = build.get("eval_rows")
    held = quantity(build["eval"], "pair")
    return held + (f" ({quantity(rows, 'row')})" if isinstance(rows, int) and rows != build["eval"] else "")


def _rows_text(build: dict[str, Any]) -> str:
    """`43 rows (36 distinct pairs)`; a run from before rows were counted has its rows as `pairs`."""
    if "rows" not in build:
        return f"{build['pairs']} rows"
    distinct = f" ({build['pairs']} distinct pairs)" if build["pairs"] != build["rows"] else ""
    return f"{build['rows']} rows{distinct}"


def list_evaluations(root: Path, run: Path) -> tuple[list[str], list[str]]:
    """A run's evaluation reports, oldest first, as paths relative to the run (`evals/<time>-<benchmarks>.json`,
    and the `eval.json` of a run evaluated before per-report files), and the refusals of `eval.json` and `evals/`
    whose real path leaves the data root. Both are checked before they are looked at: a refused folder is not listed
    (the names of the files out there are not the run's). Reading a report checks its own confinement."""
    refused = {}
    for name in (LEGACY_REPORT, EVALS):
        try:
            inside(root, run.relative_to(root) / name)
        except AppError as exc:
            refused[name] = str(exc)
    return report_names(run, leave_out=refused.keys()), list(refused.values())


def read_evaluation(root: Path, run: Path, name: str | None = None) -> dict[str, Any] | None:
    """One report of a run by its name (`list_evaluations`), else its newest; None when it has not been evaluated;
    AppError when the report is refused (without a name: when any of them is) or not JSON."""
    if name is None:
        names, refused = list_evaluations(root, run)
        if refused:  # the newest may be among them
            raise AppError("; ".join(refused))
        if not names:
            return None
        name = names[-1]
    path = inside(root, run.relative_to(root) / name)
    try:
        if not path.is_file():
            raise OSError("not a plain file")
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise AppError(f"{run.name}/{name} is not a readable JSON report ({exc})") from None
    problem = report_problem(report)
    if problem is not None:
        raise AppError(f"{run.name}/{name}: {problem}")
    return report
