"""`curate build`: ingest -> validate -> normalize -> exact dedupe -> filters -> mix -> shards.

Each stage writes its signals (per `pair_id`, under `signals/`) and then decides with the recipe's thresholds,
so the decisions are a cheap query over stored evidence. Every ingested pair ends either in the shards or in
`rejects/` with its stage and reason; the build is written under `DIR.partial` and renamed when complete.
Stages run in DuckDB over parquet files on disk, so memory does not grow with the size of a source.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.ipc as ipc

from curation.errors import InputError
from curation.images import ImagesRoot
from curation.ingest import IngestSummary, ingest
from curation.io import fsync_rename
from curation.recipe import ExactDedupeOp, FiltersOp, Recipe, SourceSpec, ValidateOp
from curation.schema import PAIR_SCHEMA
from curation.sources import get_adapter
from curation.sources.base import ReadOptions

REJECT_COLUMNS = "source, source_row, pair_id, stage, reason, detail"
# NFC; runs of spaces/tabs to one space; no spaces around newlines; at most one blank line; ends trimmed.
NORMALIZE_SQL = (
    "trim(regexp_replace(regexp_replace(regexp_replace(nfc_normalize({x}), '[ \\t\\r\\f\\v]+', ' ', 'g'),"
    " ' ?\\n ?', chr(10), 'g'), '\\n{{3,}}', chr(10) || chr(10), 'g'))"
)


@dataclass
class StageLog:
    """What a stage removed, per source and reason, and how long it took."""

    removed: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0


def _hash_order(seed: int, *parts: str) -> str:
    # md5 over content and the seed: a stable, process-independent order (never DuckDB's own hash()).
    return "md5(" + " || ':' || ".join([*parts, f"'{seed}'"]) + ")"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fingerprint(spec: SourceSpec) -> dict[str, Any]:
    path = Path(spec.path)
    if not path.exists():
        return {"hub_id": spec.path, "config": spec.config, "split": spec.split, "revision": spec.revision}
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {"files": {p.relative_to(path if path.is_dir() else path.parent).as_posix(): _sha256(p) for p in files}}


class Builder:
    def __init__(self, recipe: Recipe, out: Path, on_stage: Callable[[str], None] | None = None) -> None:
        self.recipe = recipe
        self.out = out
        self.tmp = out.with_name(out.name + ".partial")
        self.on_stage = on_stage or (lambda _: None)
        self.stages: dict[str, StageLog] = {}
        self.ingest: dict[str, IngestSummary] = {}
        self.db: duckdb.DuckDBPyConnection

    # -- helpers -------------------------------------------------------------------------------------------
    def _rows(self, query: str) -> list[tuple[Any, ...]]:
        return self.db.execute(query).fetchall()

    def _copy(self, query: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db.execute(f"COPY ({query}) TO '{path}' (FORMAT parquet, COMPRESSION zstd)")

    def _remove(self, stage: str, query: str) -> None:
        """Move the rows selected by `query` (columns: row_key, reason, detail) from `live` to `removed`."""
        self.db.execute(f"CREATE OR REPLACE TEMP TABLE step AS {query}")
        self.db.execute(
            f"""INSERT INTO removed SELECT p.source, p.source_row, p.pair_id, '{stage}', s.reason, s.detail
                FROM step s JOIN pairs p USING (row_key)"""
        )
        self.db.execute("DELETE FROM live WHERE row_key IN (SELECT row_key FROM step)")
        counts = self._rows(
            "SELECT p.source, s.reason, count(*) FROM step s JOIN pairs p USING (row_key) GROUP BY ALL ORDER BY ALL"
        )
        log = self.stages.setdefault(stage, StageLog())
        for source, reason, n in counts:
            log.removed.setdefault(source, {})[reason] = n

    def _stage(self, name: str, run: Callable[[], None]) -> None:
        self.on_stage(name)
        start = time.perf_counter()
        run()
        self.stages.setdefault(name, StageLog()).seconds = round(time.perf_counter() - start, 3)

    # -- stages --------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        if self.out.exists():
            raise InputError(f"{self.out}: already exists; choose another --out or remove it")
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        started = time.perf_counter()
        self.db = duckdb.connect()
        self.db.execute(f"SET temp_directory = '{self.tmp / 'work' / 'duckdb'}'")
        self._stage("ingest", self._ingest)
        self._stage("normalize", self._normalize)
        self._stage("validate", self._validate)
        self._stage("exact_dedupe", self._exact_dedupe)
        self._stage("filters", self._filters)
        self._stage("mix", self._mix)
        self._stage("write", self._write)
        manifest = self._manifest(round(time.perf_counter() - started, 3))
        (self.tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", "utf-8")
        from curation.build_card import write_card

        write_card(self.tmp, manifest, self.db)
        self.db.close()
        shutil.rmtree(self.tmp / "work")
        os.replace(self.tmp, self.out)
        return manifest

    def _ingest(self) -> None:
        selects = []
        for index, spec in enumerate(self.recipe.sources):
            target = self.tmp / "work" / "ingest" / spec.name
            adapter = get_adapter(spec.adapter)(spec.options, ReadOptions(spec.config, spec.split, spec.revision))
            root = ImagesRoot(Path(spec.images_root) if spec.images_root else None)
            self.on_stage(f"ingest {spec.name}")
            self.ingest[spec.name] = ingest(adapter, spec.path, target, root)
            selects.append(
                f"""SELECT ({index}::BIGINT << 40) + file_row_number AS row_key, {index} AS source_index,
                    * REPLACE ('{spec.name}' AS source)
                    FROM read_parquet('{target / "pairs.parquet"}', file_row_number = true)"""
            )
        self.db.execute(f"CREATE TABLE pairs AS {' UNION ALL '.join(selects)}")
        self.db.execute("CREATE TABLE live AS SELECT row_key FROM pairs")
        self.db.execute(
            "CREATE TABLE removed (source VARCHAR, source_row VARCHAR, pair_id VARCHAR, stage VARCHAR, "
            "reason VARCHAR, detail VARCHAR)"
        )
        images = [f"'{self.tmp / 'work' / 'ingest' / s.name / 'images.parquet'}'" for s in self.recipe.sources]
        self.db.execute(
            f"CREATE TABLE images AS SELECT DISTINCT ON (sha256) * FROM read_parquet([{', '.join(images)}])"
        )

    def _normalize(self) -> None:
        chosen, rejected = NORMALIZE_SQL.format(x="chosen"), NORMALIZE_SQL.format(x="rejected")
        content = NORMALIZE_SQL.format(x="m.content")
        self.db.execute(
            f"""UPDATE pairs SET chosen = {chosen}, rejected = {rejected},
                prompt = list_transform(prompt, lambda m: {{'role': m.role, 'content': {content}}})"""
        )

    def _validate(self) -> None:
        op: ValidateOp = self.recipe.op("validate") or ValidateOp()
        self._copy(
            """SELECT p.pair_id, any_value(length(p.chosen)) AS chosen_chars,
                      any_value(length(p.rejected)) AS rejected_chars,
                      max(i.width::BIGINT * i.height) AS max_image_pixels
               FROM pairs p LEFT JOIN (SELECT row_key, unnest(images) AS sha256 FROM pairs) u USING (row_key)
               LEFT JOIN images i USING (sha256) GROUP BY p.pair_id ORDER BY p.pair_id""",
            self.tmp / "signals" / "validate.parquet",
        )
        self._remove(
            "validate",
            f"""SELECT p.row_key,
                  CASE WHEN s.chosen_chars < {op.min_answer_chars} THEN 'empty chosen'
                       WHEN s.rejected_chars < {op.min_answer_chars} THEN 'empty rejected'
                       ELSE 'image too large' END AS reason,
                  'chosen ' || s.chosen_chars || ' chars, rejected ' || s.rejected_chars || ' chars, largest image '
                    || coalesce(s.max_image_pixels::VARCHAR, '-') || ' px' AS detail
               FROM pairs p JOIN live USING (row_key)
               JOIN read_parquet('{self.tmp / "signals" / "validate.parquet"}') s USING (pair_id)
               WHERE s.chosen_chars < {op.min_answer_chars} OR s.rejected_chars < {op.min_answer_chars}
                  OR coalesce(s.max_image_pixels, 0) > {op.max_pixels}""",
        )

    def _exact_dedupe(self) -> None:
        op: ExactDedupeOp = self.recipe.op("exact_dedupe") or ExactDedupeOp()
        # Survivor rule: the copy from the source listed first in the recipe, then the earliest row.
        self.db.execute(
            """CREATE TEMP TABLE ranked AS SELECT p.row_key, p.pair_id, p.source, p.source_row,
                 first_value(p.source) OVER w AS survivor_source, first_value(p.source_row) OVER w AS survivor_row,
                 first_value(p.pair_id) OVER w AS survivor_pair_id, row_number() OVER w AS copy
               FROM pairs p JOIN live USING (row_key)
               WINDOW w AS (PARTITION BY p.pair_id ORDER BY p.row_key)"""
        )
        self._copy(
            """SELECT pair_id, source, source_row, survivor_pair_id, survivor_source, survivor_row,
                      'exact' AS method, 1.0 AS similarity
               FROM ranked WHERE copy > 1 ORDER BY pair_id, source, source_row""",
            self.tmp / "dups" / "exact.parquet",
        )
        self._remove(
            "exact_dedupe",
            """SELECT row_key, 'exact duplicate' AS reason,
                      'same pair as ' || survivor_source || ' ' || survivor_row AS detail FROM ranked WHERE copy > 1""",
        )
        if op.max_pairs_per_prompt is not None:
            order = _hash_order(self.recipe.seed, "p.pair_id")
            self._remove(
                "exact_dedupe",
                f"""SELECT row_key, 'prompt cap' AS reason,
                          'more than {op.max_pairs_per_prompt} pairs for prompt ' || prompt_id AS detail
                   FROM (SELECT p.row_key, p.prompt_id,
                                row_number() OVER (PARTITION BY p.prompt_id ORDER BY {order}, p.row_key) AS rank
                         FROM pairs p JOIN live USING (row_key))
                   WHERE rank > {op.max_pairs_per_prompt}""",
            )

    def _filters(self) -> None:
        op: FiltersOp = self.recipe.op("filters") or FiltersOp()
        regex_hit = "NULL::VARCHAR"
        for pattern in reversed(op.regex):
            quoted = pattern.replace("'", "''")
            regex_hit = (
                f"CASE WHEN regexp_matches(chosen, '{quoted}') OR regexp_matches(rejected, '{quoted}') "
                f"THEN '{quoted}' ELSE {regex_hit} END"
            )
        self._copy(
            f"""SELECT pair_id, any_value(chosen = rejected) AS identical, any_value(tie) AS tie,
                       any_value(margin) AS margin,
                       any_value(length(chosen)) AS chosen_chars, any_value(length(rejected)) AS rejected_chars,
                       any_value(list_sum(list_transform(prompt, lambda m: length(m.content)))) AS prompt_chars,
                       any_value(length(chosen) / greatest(length(rejected), 1)) AS length_ratio,
                       any_value({regex_hit}) AS regex_hit
                FROM pairs GROUP BY pair_id ORDER BY pair_id""",
            self.tmp / "signals" / "filters.parquet",
        )
        rules = []
        if op.drop_identical:
            rules.append(("s.identical", "'chosen == rejected'", "'identical answers'"))
        if op.drop_ties:
            rules.append(("s.tie", "'tie'", "'tie'"))
        if op.min_margin is not None:
            rules.append((f"s.margin < {op.min_margin}", "'margin below minimum'", "'margin ' || s.margin"))
        if op.max_chars is not None:
            longest = "greatest(s.chosen_chars, s.rejected_chars, s.prompt_chars)"
            rules.append((f"{longest} > {op.max_chars}", "'too long'", f"'longest part ' || {longest} || ' chars'"))
        if op.min_length_ratio is not None:
            rules.append((f"s.length_ratio < {op.min_length_ratio}", "'length ratio'", "'ratio ' || s.length_ratio"))
        if op.max_length_ratio is not None:
            rules.append((f"s.length_ratio > {op.max_length_ratio}", "'length ratio'", "'ratio ' || s.length_ratio"))
        if op.regex:
            rules.append(("s.regex_hit IS NOT NULL", "'regex match'", "'pattern ' || s.regex_hit"))
        if not rules:
            return
        reason = "CASE " + " ".join(f"WHEN {cond} THEN {r}" for cond, r, _ in rules) + " END"
        detail = "CASE " + " ".join(f"WHEN {cond} THEN {d}" for cond, _, d in rules) + " END"
        where = " OR ".join(f"coalesce({cond}, false)" for cond, _, _ in rules)
        self._remove(
            "filters",
            f"""SELECT p.row_key, {reason} AS reason, {detail} AS detail FROM pairs p JOIN live USING (row_key)
                JOIN read_parquet('{self.tmp / "signals" / "filters.parquet"}') s USING (pair_id) WHERE {where}""",
        )

    def _mix(self) -> None:
        """Per source: keep `count` pairs or `weight` x the kept pairs, by hash(pair_id, seed); upsample if more."""
        self.mix: dict[str, dict[str, Any]] = {}
        order = _hash_order(self.recipe.seed, "p.pair_id")
        self.db.execute(
            f"""CREATE TEMP TABLE mix_rank AS SELECT p.row_key, p.source,
                  row_number() OVER (PARTITION BY p.source ORDER BY {order}, p.row_key) - 1 AS rank,
                  count(*) OVER (PARTITION BY p.source) AS available
                FROM pairs p JOIN live USING (row_key)"""
        )
        self.db.execute("CREATE TABLE selected (row_key BIGINT, copy INTEGER)")
        available = dict(self._rows("SELECT source, any_value(available) FROM mix_rank GROUP BY source"))
        for spec in self.recipe.sources:
            n = int(available.get(spec.name, 0))
            if spec.count is not None:
                target = spec.count
            else:
                target = round((1.0 if spec.weight is None else spec.weight) * n)
            target = target if n else 0
            copies = (target + n - 1) // n if n else 0
            # Copy c of rank r is pair number c * n + r: whole passes first, then the remainder by hash order.
            self.db.execute(
                f"""INSERT INTO selected SELECT row_key, c.copy FROM mix_rank,
                      range({copies}) AS c(copy) WHERE source = '{spec.name}' AND c.copy * {n} + rank < {target}"""
            )
            self.mix[spec.name] = {
                "available": n,
                "target": target,
                "selected": min(target, n),
                "upsampled_copies": max(target - n, 0),
                "factor": round(target / n, 4) if n else None,
            }
        self._remove(
            "mix",
            """SELECT m.row_key, 'not selected by mix' AS reason, 'rank ' || m.rank || ' of ' || m.available AS detail
               FROM mix_rank m WHERE m.row_key NOT IN (SELECT row_key FROM selected)""",
        )

    def _write(self) -> None:
        order = _hash_order(self.recipe.seed, "p.pair_id", "s.copy::VARCHAR")
        columns = ", ".join(f"p.{name}" for name in PAIR_SCHEMA.names)
        table = self.db.sql(
            f"SELECT {columns} FROM selected s JOIN pairs p USING (row_key) ORDER BY {order}, p.row_key, s.copy"
        ).to_arrow_table()
        table = table.cast(PAIR_SCHEMA) if table.num_rows else PAIR_SCHEMA.empty_table()
        self.shards = write_shards(table, self.tmp / "shards", self.recipe.shards.rows_per_shard)
        self._copy(
            """SELECT * FROM images
               WHERE sha256 IN (SELECT unnest(p.images) FROM selected s JOIN pairs p USING (row_key))
               ORDER BY sha256""",
            self.tmp / "images" / "images.parquet",
        )
        ingest_rejects = [
            f"SELECT '{s.name}' AS source, source_row, NULL AS pair_id, stage, reason, detail "
            f"FROM read_parquet('{self.tmp / 'work' / 'ingest' / s.name / 'rejects.parquet'}')"
            for s in self.recipe.sources
        ]
        self._copy(
            f"SELECT {REJECT_COLUMNS} FROM ({' UNION ALL '.join([*ingest_rejects, 'SELECT * FROM removed'])}) "
            "ORDER BY source, stage, reason, source_row",
            self.tmp / "rejects" / "rejects.parquet",
        )

    def _manifest(self, seconds: float) -> dict[str, Any]:
        per_source = {}
        for spec in self.recipe.sources:
            summary = self.ingest[spec.name]
            removed = {stage: log.removed.get(spec.name, {}) for stage, log in self.stages.items() if log.removed}
            removed_total = sum(sum(r.values()) for r in removed.values())
            mix = self.mix[spec.name]
            entry = {
                "adapter": spec.adapter,
                "rows_read": summary.rows_read,
                "rows_rejected_at_ingest": summary.rows_rejected,
                "rejects_at_ingest": dict(sorted(summary.rejects_by_reason.items())),
                "pairs_ingested": summary.pairs,
                "removed": {stage: dict(sorted(r.items())) for stage, r in removed.items() if r},
                "kept": summary.pairs - removed_total,
                "mix": mix,
                "in_shards": mix["selected"] + mix["upsampled_copies"],
            }
            # The invariant: every ingested pair is kept or removed with a reason; every row paired or rejected.
            entry["balanced"] = summary.balanced and entry["kept"] == mix["selected"]
            per_source[spec.name] = entry
        return {
            "recipe": {"name": self.recipe.name, "sha256": self.recipe.sha256, "text": self.recipe.text},
            "seed": self.recipe.seed,
            "schema_version": int(PAIR_SCHEMA.metadata[b"schema_version"]),
            "inputs": {s.name: _fingerprint(s) for s in self.recipe.sources},
            "versions": {p: importlib.metadata.version(p) for p in ("rm-workbench", "duckdb", "pyarrow", "pillow")},
            "sources": per_source,
            "shards": self.shards,
            "images": self._rows(f"SELECT count(*) FROM read_parquet('{self.tmp / 'images' / 'images.parquet'}')")[0][
                0
            ],
            "rows_in_shards": sum(s["rows"] for s in self.shards),
            "timings": {"total_seconds": seconds, **{k: v.seconds for k, v in self.stages.items()}},
        }


def write_shards(table: pa.Table, folder: Path, rows_per_shard: int) -> list[dict[str, Any]]:
    """Arrow IPC stream files in the layout `datasets` writes (`Dataset.from_file` opens them as they are)."""
    from datasets import Features

    folder.mkdir(parents=True, exist_ok=True)
    features = Features.from_arrow_schema(PAIR_SCHEMA)
    metadata = {**PAIR_SCHEMA.metadata, b"huggingface": json.dumps({"info": {"features": features.to_dict()}}).encode()}
    schema = PAIR_SCHEMA.with_metadata(metadata)
    count = max(1, -(-table.num_rows // rows_per_shard))
    shards = []
    for index in range(count):
        part = table.slice(index * rows_per_shard, rows_per_shard)
        path = folder / f"train-{index:05d}-of-{count:05d}.arrow"
        tmp = path.with_name(path.name + ".partial")
        with pa.OSFile(str(tmp), "wb") as sink, ipc.new_stream(sink, schema) as writer:
            for batch in part.to_batches(max_chunksize=1000):
                writer.write_batch(batch)
        fsync_rename(tmp, path)
        shards.append({"file": f"shards/{path.name}", "rows": part.num_rows, "sha256": _sha256(path)})
    return shards


def build(recipe: Recipe, out: Path, on_stage: Callable[[str], None] | None = None) -> dict[str, Any]:
    return Builder(recipe, out, on_stage).run()
