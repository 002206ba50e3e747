"""`curate`: the command line of the curation pipeline."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from curation.build_dir import REJECTS, BuildDir
from curation.errors import InputError
from curation.failure import describe, print_error, run_cli
from curation.images import DEFAULT_MAX_PIXELS, ImagesRoot
from curation.ingest import IngestSummary, ingest
from curation.lookup import pair_signals
from curation.sources import REGISTRY, get_adapter
from curation.sources.base import ReadOptions
from curation.sql import parquet_relation

app = typer.Typer(help="Curate multimodal preference data for reward models.", no_args_is_help=True)
# Piped or redirected, a table is printed at its natural width: cut to 80 columns, a script could not read it.
console = Console(width=None if sys.stdout.isatty() else 100_000)
err_console = Console(stderr=True)


def _fail(message: str) -> None:
    print_error(message)
    raise typer.Exit(code=1)


def _in_range(value: int | None, minimum: int, maximum: int, flag: str) -> None:
    if value is not None and not minimum <= value <= maximum:
        _fail(f"{flag} must be {minimum} to {maximum}, got {value}")


MAX_WORKERS = 1024  # beyond any machine's cores: a larger value is a typing mistake, and DuckDB would abort on it


def _parse_pairs(values: list[str]) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep:
            _fail(f"option {value!r} is not KEY=VALUE")
        out[key.strip()] = val
    return out


@app.command()
def sources(
    json_out: Annotated[bool, typer.Option("--json", help="print the adapters as JSON, for scripts")] = False,
) -> None:
    """List every source adapter: key, kind, modality, default Hub id, license."""
    from curation.cards import source_cards

    cards = source_cards()
    rows = []
    for key, adapter in sorted(REGISTRY.items(), key=lambda kv: (kv[1].info.kind, kv[0])):
        info, card = adapter.info, cards.get(key)
        rows.append(
            {
                "key": key, "kind": info.kind, "modality": info.modality, "hub_id": info.hub_id,
                "license": info.license, "size": str(card.front.get("size")) if card else None,
                "features_verified": card.front.get("features", {}).get("verified") if card else None,
            }
        )  # fmt: skip
    if json_out:
        console.print_json(json.dumps(rows))
        return
    table = Table(title=f"{len(rows)} source adapters")
    table.add_column("key", no_wrap=True)  # never cut: it is what every command takes
    for column in ("kind", "modality", "hub id", "license", "size (card)"):
        table.add_column(column)
    for row in rows:
        size = Text(row["size"]) if row["size"] is not None else Text("no card", style="red")
        table.add_row(row["key"], row["kind"], row["modality"], row["hub_id"] or "-", row["license"], size)
    console.print(table)


@app.command("ops")
def ops_command(
    json_out: Annotated[bool, typer.Option("--json", help="print the contracts as JSON, for scripts")] = False,
) -> None:
    """List the build's ops in stage order: what each reads, the signal it writes and its key, its evidence files,
    its parameters (thresholds only decide) and whether its signals are kept across builds."""
    from curation.ops import OPS

    described = [op.describe() for op in OPS.values()]
    if json_out:
        console.print_json(json.dumps(described, default=list))
        return
    table = Table(title=f"{len(described)} ops, in stage order")
    table.add_column("op", no_wrap=True)
    for column in ("reads", "signal key", "evidence", "thresholds", "scoring parameters", "kept across builds"):
        table.add_column(column)
    for op in described:
        name = op["name"] + (" (default on)" if op["default_on"] else "")
        reads = "; ".join(f"{relation}: {', '.join(columns)}" for relation, columns in op["reads"].items())
        reads += "".join(f"; ctx.{shared}" for shared in op["uses"])
        keys = ", ".join(f"{column} ({kind})" for column, kind in op["signal_keys"].items())
        params = op["parameters"]
        thresholds = ", ".join(n for n, p in params.items() if p["threshold"]) or "-"
        scoring = ", ".join(n for n, p in params.items() if not p["threshold"]) or "-"
        cached = "yes" if op["cached_across_builds"] else "no"
        table.add_row(name, reads, keys, ", ".join(op["evidence"]) or "-", thresholds, scoring, cached)
    console.print(table)


def print_summary(summary: IngestSummary, out: Path | None = None) -> None:
    table = Table(title=f"ingest {summary.source}" + (f" -> {out}" if out else ""), show_header=False)
    table.add_row("native rows read", str(summary.rows_read))
    table.add_row("rows that gave pairs", str(summary.rows_paired))
    table.add_row("rows rejected", str(summary.rows_rejected))
    table.add_row("pairs", str(summary.pairs))
    table.add_row("  of which ties", str(summary.ties))
    spread = ", ".join(f"{k} pair(s): {v} rows" for k, v in sorted(summary.pairs_per_row.items()))
    table.add_row("pairs per row", spread or "-")
    table.add_row("distinct images", str(summary.images))
    for reason, count in sorted(summary.rejects_by_reason.items()):
        table.add_row(f"  rejected: {reason}", str(count))
    console.print(table)
    status = "OK" if summary.balanced else "BROKEN"
    console.print(
        f"accounting {status}: {summary.rows_read} read = "
        f"{summary.rows_paired} paired + {summary.rows_rejected} rejected"
    )


@app.command("ingest")
def ingest_cmd(
    source: Annotated[str, typer.Option("--source", help="adapter key (see `curate sources`)")],
    path: Annotated[str, typer.Option("--path", help="local file or folder, or a Hugging Face dataset id")],
    out: Annotated[Path, typer.Option("--out", help="output folder for pairs/images/rejects parquet")],
    images_root: Annotated[
        Path | None, typer.Option("--images-root", help="folder or zip that relative image paths resolve under")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="read at most N native rows")] = None,
    option: Annotated[
        list[str] | None, typer.Option("--option", "-o", help="adapter option KEY=VALUE (repeatable)")
    ] = None,
    config: Annotated[str | None, typer.Option("--config", help="Hub dataset config")] = None,
    split: Annotated[str | None, typer.Option("--split", help="Hub split (default: the adapter's)")] = None,
    revision: Annotated[str | None, typer.Option("--revision", help="Hub revision to pin")] = None,
    data_dir: Annotated[
        str | None, typer.Option("--data-dir", help="a folder of the Hub repository (hh-rlhf's subsets, ...)")
    ] = None,
    max_pixels: Annotated[
        int, typer.Option("--max-pixels", help="reject images larger than this")
    ] = DEFAULT_MAX_PIXELS,
    json_summary: Annotated[bool, typer.Option("--json", help="print the counts as JSON")] = False,
    workers: Annotated[
        int, typer.Option("--workers", help="row-converting processes, or DuckDB threads for SQL layouts (same output)")
    ] = 1,
    replace: Annotated[
        bool, typer.Option("--replace", help="replace an existing --out folder (once the new ingest is complete)")
    ] = False,
) -> None:
    """Read one source in its native format and write canonical pairs, images and rejects."""
    _in_range(limit, 1, sys.maxsize, "--limit")
    _in_range(max_pixels, 1, sys.maxsize, "--max-pixels")
    _in_range(workers, 1, MAX_WORKERS, "--workers")
    try:
        adapter = get_adapter(source)(_parse_pairs(option or []), ReadOptions(config, split, revision, data_dir))
        root = ImagesRoot(images_root)
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed} rows"),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
            disable=json_summary,
        ) as progress:
            task = progress.add_task(f"ingest {source}", total=limit)
            summary = ingest(
                adapter,
                path,
                out,
                root,
                limit=limit,
                max_pixels=max_pixels,
                on_row=lambda s: progress.update(task, completed=s.rows_read),
                workers=workers,
                replace=replace,
            )
    except InputError as exc:
        _fail(str(exc))
        return
    if json_summary:
        console.print_json(json.dumps(summary.as_dict()))
    else:
        print_summary(summary, out)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="folder for the demo collection")] = Path("demo_data"),
) -> None:
    """Write the small offline DEMO collection (several native formats, real sample photos) and ingest it."""
    from curation.demo import DEMO_NOTE, run_demo

    console.print(Text(DEMO_NOTE, style="bold yellow"))
    try:
        results = run_demo(out)
    except InputError as exc:
        _fail(str(exc))
        return
    for target, summary in results:
        print_summary(summary, target)


@app.command("build")
def build_cmd(
    mix: Annotated[Path, typer.Option("--mix", help="recipe YAML (see mixes/)")],
    out: Annotated[Path, typer.Option("--out", help="build folder to create")],
    resume: Annotated[
        bool, typer.Option("--resume", help="reuse what an interrupted build of this recipe finished")
    ] = False,
    workers: Annotated[
        int | None, typer.Option("--workers", help="DuckDB threads and ingest processes (default: all cores)")
    ] = None,
    memory_limit: Annotated[
        str, typer.Option("--memory-limit", help="DuckDB memory limit; beyond it, spill")
    ] = "1500MB",
    cache: Annotated[
        Path | None,
        typer.Option(
            "--cache", help="where costly signals are kept across builds (default: .curate-cache beside --out)"
        ),
    ] = None,
) -> None:
    """Build a mixture: ingest (and normalize), validate, dedupe, decontaminate, filter, mix, write Arrow shards."""
    from curation.build import build
    from curation.recipe import load_recipe

    _in_range(workers, 1, MAX_WORKERS, "--workers")
    try:
        recipe = load_recipe(mix)
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err_console, transient=True) as bar:
            task = bar.add_task("build")
            manifest = build(
                recipe, out, resume=resume, workers=workers, memory_limit=memory_limit, cache=cache,
                on_stage=lambda name: bar.update(task, description=f"stage: {name}"),
            )  # fmt: skip
    except Exception as exc:
        message = describe(exc)
        if message is None:
            raise  # a bug: `main` prints its traceback
        partial = out.with_name(out.name + ".partial")
        if isinstance(exc, InputError) and not (partial / "work").is_dir():
            _fail(message)  # stopped before any work
        _fail(
            f"{message} [the work so far is kept in {partial}: --resume continues it while the recipe is unchanged"
            f"{'; if it fails again, remove the folder' if resume else ''}; a build without --resume replaces it]"
        )
        return
    print_funnel(manifest)
    if manifest["signals_reused"]:
        console.print(f"signals reused from the cache (not computed again): {', '.join(manifest['signals_reused'])}")
    console.print(f"{manifest['rows_in_shards']} pairs in {len(manifest['shards'])} shard(s) -> {out}")


def print_funnel(manifest: dict) -> None:
    from curation.build_card import funnel_rows

    table = Table(title=f"build {manifest['recipe']['name']}: every row accounted for")
    for column in ("source", "step", "count"):
        table.add_column(column)
    for source, step, count in funnel_rows(manifest):
        table.add_row(source, step, str(count))
    console.print(table)
    for name, entry in manifest["sources"].items():
        status = "OK" if entry["balanced"] else "BROKEN"
        removed = sum(sum(r.values()) for r in entry["removed"].values())
        console.print(
            f"{name}: accounting {status}: {entry['pairs_ingested']} pairs = {entry['kept']} kept + {removed} removed;"
            f" {entry['mix']['upsampled_copies']} upsampled copies"
        )
    for name, entry in manifest.get("benchmarks", {}).items():
        reasons = ", ".join(f"{reason}: {n}" for reason, n in entry["rejects_at_ingest"].items())
        console.print(
            f"benchmark {name}: {entry['items']} items decontaminated against, from {entry['rows_read']} rows read;"
            f" {entry['rows_rejected_at_ingest']} rejected" + (f" ({reasons})" if reasons else "")
        )


@app.command()
def stats(
    build_dir: Annotated[Path, typer.Argument(help="a build folder")],
    json_out: Annotated[bool, typer.Option("--json", help="print the funnel as JSON, for scripts")] = False,
) -> None:
    """Print a build's funnel from its manifest."""
    from curation.build_card import funnel_rows

    manifest = BuildDir.open(build_dir).manifest
    if json_out:
        funnel = [{"source": s, "step": step, "count": n} for s, step, n in funnel_rows(manifest)]
        summary = {
            "build": manifest["recipe"]["name"],
            "rows_in_shards": manifest["rows_in_shards"],
            "funnel": funnel,
            "sources": manifest["sources"],
            "benchmarks": manifest.get("benchmarks", {}),
        }
        console.print_json(json.dumps(summary))
        return
    print_funnel(manifest)


@app.command()
def show(
    build_dir: Annotated[Path, typer.Argument(help="a build folder")],
    pair_id: Annotated[str, typer.Argument(help="the pair's id")],
) -> None:
    """Print one pair with its signals and its fate (in the shards or removed, and why)."""
    import duckdb
    import pyarrow.compute as pc

    build = BuildDir.open(build_dir)
    db = duckdb.connect()
    table = build.pairs()
    rows = table.filter(pc.equal(table["pair_id"], pair_id)).to_pylist()
    rejects = build.optional(REJECTS)
    removed = [] if rejects is None else db.execute(
        f"SELECT * FROM {parquet_relation(db, rejects)} WHERE pair_id = ?", [pair_id]
    ).fetchall()  # fmt: skip
    if not rows and not removed:
        _fail(f"no pair {pair_id} in {build_dir}")
    if rows:
        pair = rows[0]
        console.print(Text(f"in shards ({len(rows)} cop{'y' if len(rows) == 1 else 'ies'})", style="bold green"))
        for message in pair["prompt"]:
            console.print(Text(f"[{message['role']}] ", style="bold") + Text(message["content"]))
        console.print(Text("chosen: ", style="bold green") + Text(pair["chosen"]))
        console.print(Text("rejected: ", style="bold red") + Text(pair["rejected"]))
        console.print(Text(f"source {pair['source']} {pair['source_row']}, images {pair['images']}"))
    for source, source_row, _, stage, reason, detail in removed:
        console.print(Text(f"removed from {source} {source_row} at {stage}: {reason} ({detail})", style="yellow"))
    prompt_id, images = (rows[0]["prompt_id"], rows[0]["images"]) if rows else (None, [])
    removed_pairs = build.removed_pairs(["pair_id", "prompt_id", "images"])
    if prompt_id is None and removed_pairs is not None:
        found = removed_pairs.filter(pc.equal(removed_pairs["pair_id"], pair_id)).slice(0, 1).to_pylist()
        prompt_id, images = (found[0]["prompt_id"], found[0]["images"]) if found else (None, [])
    for name, signal_rows in pair_signals(db, build.signals(), pair_id, prompt_id, images).items():
        for signal in signal_rows:
            console.print(Text(f"signals/{name}: ", style="bold") + Text(str(signal)))
    for why in build.refused.values():
        err_console.print(Text(f"not read: {why}", style="yellow"))


@app.command("export")
def export_cmd(
    build_dir: Annotated[Path, typer.Argument(help="a build folder")],
    repo: Annotated[str, typer.Option(help="the Hub dataset repo, USER/NAME")],
    private: Annotated[bool, typer.Option(help="create the repo private")] = False,
    local_dir: Annotated[Path | None, typer.Option(help="where the Hub layout is written (default: DIR-hub)")] = None,
    dry_run: Annotated[bool, typer.Option(help="write locally and list what would be sent; send nothing")] = False,
    license: Annotated[str | None, typer.Option(help="the license to declare on the card")] = None,
    force_license: Annotated[bool, typer.Option(help="declare --license even over restrictive sources")] = False,
) -> None:
    """Write a build in the Hub's dataset layout (parquet configs, card, recipe), then upload it in one commit."""
    from curation.export import export_build, upload

    local = local_dir or build_dir.with_name(build_dir.name + "-hub")
    try:
        plan = export_build(build_dir, local, license=license, force_license=force_license)
        typer.echo(f"wrote {len(plan.files)} files to {local} (configs: {', '.join(plan.configs)})")
        for line in upload(local, repo, private=private, dry_run=dry_run):
            typer.echo(line)
    except InputError as exc:
        _fail(str(exc))


def main() -> None:
    run_cli(app)


if __name__ == "__main__":
    main()
