"""The generated data card of a build: recipe, sources and licenses, the funnel and length statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from curation.sql import sql_literal


def funnel_rows(manifest: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(source, step, count) rows: ingested, each removal reason by stage, kept, in shards."""
    rows = []
    for name, s in manifest["sources"].items():
        rows.append((name, "rows read", s["rows_read"]))
        for reason, n in s["rejects_at_ingest"].items():
            rows.append((name, f"ingest: {reason} (rows)", n))
        rows.append((name, "pairs ingested", s["pairs_ingested"]))
        for stage, reasons in s["removed"].items():
            for reason, n in reasons.items():
                rows.append((name, f"{stage}: {reason}", n))
        rows.append((name, "kept", s["kept"]))
        rows.append((name, "upsampled copies", s["mix"]["upsampled_copies"]))
        rows.append((name, "in shards", s["in_shards"]))
    return rows


def write_card(
    build_dir: Path, manifest: dict[str, Any], db: duckdb.DuckDBPyConnection, length_stats: list[tuple[Any, ...]]
) -> None:
    """`README.md` of a build; `length_stats`: per source, the licenses, pairs, mean chosen and rejected
    characters and the share of pairs whose chosen answer is longer, over the rows in the shards."""
    lines = [
        f"# Build `{manifest['recipe']['name']}`",
        "",
        f"Recipe sha256 `{manifest['recipe']['sha256']}`, seed {manifest['seed']}, "
        f"{manifest['rows_in_shards']} pairs in {len(manifest['shards'])} shard(s), {manifest['images']} images.",
        "",
        "## Sources, licenses and length statistics (in shards)",
        "",
        "| source | licenses | pairs | mean chosen chars | mean rejected chars | chosen longer (%) |",
        "|---|---|---|---|---|---|",
        *(f"| {' | '.join(str(v) for v in row)} |" for row in length_stats),
        "",
        "## Decontamination",
        "",
        *_contamination_lines(build_dir, db),
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


def _contamination_lines(build_dir: Path, db: duckdb.DuckDBPyConnection) -> list[str]:
    path = build_dir / "contamination" / "contamination.parquet"
    if not path.is_file():
        return ["The recipe does not decontaminate against any benchmark."]
    rows = db.execute(
        f"""SELECT benchmark, source, method, count(*), count(DISTINCT benchmark_row)
            FROM read_parquet({sql_literal(path)}) GROUP BY ALL ORDER BY ALL"""
    ).fetchall()
    if not rows:
        return ["No training pair matched a benchmark prompt."]
    return [
        "| benchmark | source | method | pairs removed | benchmark items matched |",
        "|---|---|---|---|---|",
        *(f"| {' | '.join(str(v) for v in row)} |" for row in rows),
    ]
