"""The generated data card of a build: recipe, sources and licenses, the funnel and length statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from curation.build_dir import manifest_recipe
from curation.sql import read_parquet


def sources_in_order(manifest: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The manifest's sources in the recipe's order (a manifest read back from its file has its keys sorted)."""
    in_recipe = list(manifest_recipe(manifest).get("sources") or {})
    rank = {name: i for i, name in enumerate(in_recipe)}
    return sorted(manifest["sources"].items(), key=lambda item: rank.get(item[0], len(rank)))


def stage_order() -> list[str]:
    """Every stage that removes rows, in the order they run: ingest, the ops, the mix."""
    from curation.ops import OPS

    return ["ingest", *OPS, "mix"]


def _stage_rank(stage: str) -> int:
    order = stage_order()
    return order.index(stage) if stage in order else len(order)


def funnel_rows(manifest: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(source, step, count) rows: ingested, each removal reason by stage, kept, in shards; sources in the recipe's
    order and stages in the order they run."""

    def by_stage(stages: dict[str, Any]) -> list[tuple[str, Any]]:
        return sorted(stages.items(), key=lambda item: _stage_rank(item[0]))

    rows = []
    for name, s in sources_in_order(manifest):
        rows.append((name, "rows read", s["rows_read"]))
        for reason, n in s["rejects_at_ingest"].items():
            rows.append((name, f"ingest: {reason} (rows)", n))
        rows.append((name, "pairs ingested", s["pairs_ingested"]))
        for stage, reasons in by_stage(s["removed"]):
            for reason, n in reasons.items():
                rows.append((name, f"{stage}: {reason}", n))
        rows.append((name, "kept", s["kept"]))
        for stage, reasons in by_stage(s.get("swapped", {})):  # kept pairs whose labels a review fixed
            for reason, n in reasons.items():
                rows.append((name, f"{stage}: {reason} (of the kept pairs)", n))
        for stage, reasons in by_stage(s.get("flagged", {})):  # kept pairs an op listed for a person to look at
            for reason, n in reasons.items():
                rows.append((name, f"{stage}: {reason} (flagged, of the kept pairs)", n))
        rows.append((name, "upsampled copies", s["mix"]["upsampled_copies"]))
        rows.append((name, "in shards", s["in_shards"]))
    return rows


def shards_text(manifest: dict[str, Any], evidence: bool = True) -> str:
    """`43 rows in 1 shard(s): 36 distinct pairs (the mix's upsampled copies are rows too), 14 images (15 stored
    with the removed pairs' evidence)`; a build from before the distinct counts says what it has. Without
    `evidence` (an export, which publishes the shards' pairs only), the images stored beside are not counted."""
    rows, shards, stored = manifest["rows_in_shards"], len(manifest["shards"]), manifest["images"]
    if "pairs_in_shards" not in manifest:
        return f"{rows} rows in {shards} shard(s), {stored} images stored"
    pairs, images = manifest["pairs_in_shards"], manifest["images_in_shards"]
    copies = " (the mix's upsampled copies are rows too)" if pairs != rows else ""
    beside = f" ({stored} stored with the removed pairs' evidence)" if evidence and stored != images else ""
    return f"{rows} rows in {shards} shard(s): {pairs} distinct pairs{copies}, {images} images{beside}"


def write_card(
    build_dir: Path, manifest: dict[str, Any], db: duckdb.DuckDBPyConnection, length_stats: list[tuple[Any, ...]]
) -> None:
    """`README.md` of a build; `length_stats`: per source, the licenses, pairs, mean chosen and rejected
    characters and the share of pairs whose chosen answer is longer, over the rows in the shards."""
    lines = [
        f"# Build `{manifest['recipe']['name']}`",
        "",
        f"Recipe sha256 `{manifest['recipe']['sha256']}`, seed {manifest['seed']}, {shards_text(manifest)}.",
        "",
        *(line for warning in manifest.get("warnings", []) for line in (f"> **Warning:** {warning}", "")),
        "## Sources, licenses and length statistics (in shards)",
        "",
        "| source | licenses | rows | mean chosen chars | mean rejected chars | chosen longer (%) |",
        "|---|---|---|---|---|---|",
        *(f"| {' | '.join(str(v) for v in row)} |" for row in length_stats),
        "",
        "## Decontamination",
        "",
        *_benchmark_lines(manifest),
        *_contamination_lines(build_dir, db, manifest),
        "",
        "## Funnel",
        "",
        "| source | step | count |",
        "|---|---|---|",
        *(f"| {s} | {step} | {n} |" for s, step, n in funnel_rows(manifest)),
        "",
        "## Recipe",
        "",
        "```yaml",
        manifest["recipe"]["text"].rstrip(),
        "```",
        "",
    ]
    (build_dir / "README.md").write_text("\n".join(lines), encoding="utf-8")


def _benchmark_lines(manifest: dict[str, Any]) -> list[str]:
    """What each benchmark gave: a benchmark's rejected rows are items this build was not checked against."""
    benchmarks = manifest.get("benchmarks") or {}
    if not benchmarks:
        return []
    rows = [
        f"| {name} | {b['rows_read']} | {b['items']} | {b['rows_rejected_at_ingest']} | "
        f"{', '.join(f'{reason}: {n}' for reason, n in b['rejects_at_ingest'].items()) or '-'} |"
        for name, b in benchmarks.items()
    ]
    rejected = any(b["rows_rejected_at_ingest"] for b in benchmarks.values())
    where = ["Each rejected row is listed, with its file, row and reason, in the build folder's "
             "`rejects/benchmark_rejects.parquet`.", ""]  # fmt: skip
    return [
        "| benchmark | rows read | items checked against | rows rejected at ingest | reasons |",
        "|---|---|---|---|---|",
        *rows,
        "",
        *(where if rejected else []),
    ]


def funnel_step_order(steps: list[str]) -> list[str]:
    """The distinct steps of `funnel_rows` over all sources in pipeline order (each source has only the steps it
    has): read, rejected at ingest, ingested, removed by stage, kept, swapped, upsampled, in shards."""
    fixed = {"rows read": 0, "pairs ingested": 2, "kept": 4, "upsampled copies": 6, "in shards": 7}

    def rank(step: str) -> tuple[int, int, str]:
        if step in fixed:
            return fixed[step], 0, step
        if step.startswith("ingest: "):
            return 1, 0, step
        return (5 if step.endswith("of the kept pairs)") else 3), _stage_rank(step.partition(":")[0]), step

    return sorted(set(steps), key=rank)


def _contamination_lines(build_dir: Path, db: duckdb.DuckDBPyConnection, manifest: dict[str, Any]) -> list[str]:
    path = build_dir / "contamination" / "contamination.parquet"
    if not path.is_file():
        return ["The recipe does not decontaminate against any benchmark."]
    rows = db.execute(
        f"""SELECT benchmark, source, rule, method, action, count(*), count(DISTINCT benchmark_row)
            FROM {read_parquet(path)} GROUP BY ALL ORDER BY ALL"""
    ).fetchall()
    lines = [*_decontamination_rule(manifest), ""]
    if not rows:
        return [*lines, "No training pair matched a benchmark prompt."]
    return [
        *lines,
        "Each pair is listed with one benchmark item it matched: the one its decision rests on (one that removes it "
        "first, then the strongest match); in the build folder, the decontaminate signal "
        "(`signals/decontaminate-*.parquet`) holds every match (an export to the Hub carries the pairs, not the "
        "build's signals).",
        "",
        "| benchmark | source | rule | method | action | pairs | benchmark items listed |",
        "|---|---|---|---|---|---|---|",
        *(f"| {' | '.join(str(v) for v in row)} |" for row in rows),
    ]


def _decontamination_rule(manifest: dict[str, Any]) -> list[str]:
    """The decision rule with this build's parameters (the recipe's, else the defaults)."""
    from curation.ops.decontaminate import DecontaminateParams

    ops = manifest_recipe(manifest).get("ops") or {}
    p, default = DecontaminateParams(**(ops.get("decontaminate") or {})), DecontaminateParams()
    embedding = f", or at cosine >= {p.min_cosine} (`{p.embedding_model}`)" if p.embedding_model else ""
    alone = "; an image match alone also removes (`image_alone`)" if p.image_alone else ""
    if p.text_only == "remove":
        text_only = (
            "it is removed where the pair has no image and the benchmark prompt is distinctive: at least "
            f"{p.text_only_min_words} words, unique in its benchmark, and matched on >= {p.min_overlap} of its "
            "n-grams weighted by rarity (`distinct_overlap`: each n-gram counts 1 / the number of the benchmark's "
            "items that have it, so a shared instruction template counts little; an exact copy is 1); otherwise "
            "it is kept"
        )
    else:
        text_only = "this build keeps them all"
    return [
        "Prompts (and images) are matched, never answers. A pair is removed when its prompt matches a benchmark "
        f"item exactly or on >= {p.min_overlap} of the item's word {p.ngram}-grams{embedding}, and the item has no "
        f"image or its image matches (perceptual-hash distance <= {p.image_distance}){alone}.",
        "",
        f"Text-only rule (`text_only: {p.text_only}`, default `{default.text_only}`; `text_only_min_words: "
        f"{p.text_only_min_words}`, default {default.text_only_min_words}): a training pair whose text matches an "
        "image item but whose image does not (or that has none) is always recorded below as `text only`; "
        f"{text_only}. The build stops when a source would lose more than {p.max_removal_rate} of its pairs "
        "(`max_removal_rate`, all rules together). In the table, `removed` pairs left the build and `kept` ones "
        "are recorded only.",
    ]
