"""`curate`: the command line of the curation pipeline."""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from curation.build_dir import BuildDir
from curation.errors import InputError
from curation.failure import describe, print_error, run_cli
from curation.images import DEFAULT_MAX_PIXELS, ImagesRoot
from curation.ingest import IngestSummary, ingest
from curation.interrupt import stop_interrupted, was_interrupted
from curation.lookup import MIN_PREFIX, Found, PairRecord, find_pairs, pair_record, resolve
from curation.progress import ProgressLines
from curation.readers import hub_commit, is_hub_id
from curation.sources import REGISTRY, get_adapter
from curation.sources.base import ReadOptions
from curation.words import quantity, visible

app = typer.Typer(help="Curate multimodal preference data for reward models.", no_args_is_help=True)
# Piped or redirected, a table is printed at its natural width: cut to 80 columns, a script could not read it.
console = Console(width=None if sys.stdout.isatty() else 100_000)
err_console = Console(stderr=True)


def _fail(message: str) -> None:
    print_error(message)
    raise typer.Exit(code=1)


def _warn(message: str) -> None:
    # On stderr, so that `--json` output stays parseable; the message quotes data: never read as markup.
    err_console.print(Text("warning: ", style="bold yellow") + Text(message), soft_wrap=True)


def _in_range(value: int | None, minimum: int, maximum: int, flag: str) -> None:
    if value is not None and not minimum <= value <= maximum:
        _fail(f"{flag} must be {minimum} to {maximum}, got {value}")


def _at_least_1(value: int | None, flag: str) -> None:
    if value is not None and not 1 <= value <= sys.maxsize:
        _fail(f"{flag} must be at least 1, got {value}" if value < 1 else f"{flag} is too large, got {value}")


MAX_WORKERS = 1024  # beyond any machine's cores: a larger value is a typing mistake, and DuckDB would abort on it


def _parse_pairs(values: list[str]) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep:
            _fail(f"option {value!r} is not KEY=VALUE")
        if key.strip() in out:  # which one was meant is not for the command to guess
            _fail(f"option {key.strip()!r} given twice ({key.strip()}={out[key.strip()]} and {value})")
        out[key.strip()] = val
    return out


@app.command()
def sources(
    json_out: Annotated[
        bool, typer.Option("--json", help="print the adapters as JSON, for scripts", show_default="off")
    ] = False,
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
        table.add_column(column, overflow="fold")  # a narrow terminal wraps an id, never cuts it
    for row in rows:
        size = Text(row["size"]) if row["size"] is not None else Text("no card", style="red")
        table.add_row(row["key"], row["kind"], row["modality"], row["hub_id"] or "-", row["license"], size)
    console.print(table)


@app.command("ops")
def ops_command(
    json_out: Annotated[
        bool, typer.Option("--json", help="print the contracts as JSON, for scripts", show_default="off")
    ] = False,
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


@app.command("reviews")
def reviews_command(
    data_root: Annotated[Path, typer.Argument(help="the workbench's data root (its reviews/ folder)")],
    build_name: Annotated[
        str | None, typer.Option("--build", help="only the reviews of this build", show_default="every build")
    ] = None,
    all_rows: Annotated[
        bool,
        typer.Option("--all", help="every review as written, not only the latest of each pair", show_default="off"),
    ] = False,
    export: Annotated[
        Path | None,
        typer.Option(
            "--export", help="write the reviews to this .parquet, .jsonl or .csv file", show_default="no file"
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="print the reviews as JSON, for scripts", show_default="off")
    ] = False,
) -> None:
    """List curators' reviews (DATA_ROOT/reviews/<build>.parquet), export them, and say how a build applies them."""
    import pyarrow as pa

    from curation.reviews import REVIEW_SCHEMA, export_reviews, latest, list_review_files, read_reviews, reviews_path

    files = [reviews_path(data_root, build_name)] if build_name else list_review_files(data_root)
    files = [f for f in files if f.is_file()]
    if not files and build_name and not (data_root / build_name / "manifest.json").is_file():
        _fail(f"no build {build_name!r} under {data_root} (and no reviews of one)")
    if not files:
        _fail(f"no reviews under {data_root / 'reviews'}" + (f" for build {build_name!r}" if build_name else "")
              + " yet; review pairs on the workbench's Review page first")  # fmt: skip
    if export is not None and export.resolve() in {f.resolve() for f in files}:
        _fail(f"--export {export}: that is a reviews file this command reads; export elsewhere (it is append-only)")
    rows: list[dict[str, str]] = []
    summary = []
    for path in files:
        try:
            table = read_reviews(path)
        except InputError as exc:  # one damaged file does not hide the others' reviews
            _warn(str(exc))
            continue
        last = latest(table)
        rows += table.to_pylist() if all_rows else last
        actions = {a: sum(r["action"] == a for r in last) for a in ("keep", "drop", "swap")}
        summary.append((path, table.num_rows, len(last), actions))
    if export is not None:
        export_reviews(pa.Table.from_pylist(rows, schema=REVIEW_SCHEMA), export)
    if json_out:
        console.print_json(json.dumps(rows))
        return
    # Paths absolute (a recipe resolves a relative one against its own folder), as JSON strings, which YAML reads
    # as they are whatever characters they hold.
    for path, written, pairs, actions in summary:
        counts = ", ".join(f"{a} {n}" for a, n in actions.items())
        done = f"{quantity(written, 'review')} written, {quantity(pairs, 'pair')} reviewed"
        console.print(Text(f"{path}: {done} (latest: {counts})"))
        line = f"  apply in a build: ops: {{human_review: {{reviews: {json.dumps(str(path.resolve()))}}}}}"
        console.print(Text(line, style="dim"))
    if len(summary) > 1:  # each file's last review of a pair, then the newest across files (`newest`)
        every = ", ".join(json.dumps(str(path.resolve())) for path, *_ in summary)
        console.print(Text(f"apply them all in one build: ops: {{human_review: {{reviews: [{every}]}}}}"))
    title = "reviews" if all_rows else "latest reviews (of each pair in each file; a build applies the newest)"
    table = Table(title=f"{len(rows)} {title}")
    for column in ("pair", "build", "source", "row", "action", "reviewer", "reviewed at", "queue", "note"):
        table.add_column(column, no_wrap=column in {"pair", "row"})
    for r in rows:
        columns = ("pair_id", "build", "source", "source_row", "action", "reviewer", "reviewed_at", "queue", "note")
        table.add_row(*(Text(visible(str(r[k]))) for k in columns))
    console.print(table)
    if export is not None:
        console.print(Text(f"wrote {len(rows)} reviews to {export}"))


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
        Path | None,
        typer.Option(
            "--images-root",
            help="folder or zip that relative image paths resolve under",
            show_default="none: images at relative paths are rejected",
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="read at most N native rows", show_default="every row")
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="adapter option KEY=VALUE (repeatable)", show_default="none"),
    ] = None,
    config: Annotated[
        str | None, typer.Option("--config", help="Hub dataset config", show_default="the adapter's")
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(
            "--split", help="split (of a Hub id, or a local folder laid out in splits)", show_default="the adapter's"
        ),
    ] = None,
    revision: Annotated[
        str | None, typer.Option("--revision", help="Hub revision to pin", show_default="the default branch")
    ] = None,
    data_dir: Annotated[
        str | None,
        typer.Option(
            "--data-dir", help="a folder of the Hub repository (hh-rlhf's subsets, ...)", show_default="the adapter's"
        ),
    ] = None,
    max_pixels: Annotated[
        int, typer.Option("--max-pixels", help="reject images larger than this")
    ] = DEFAULT_MAX_PIXELS,
    json_summary: Annotated[bool, typer.Option("--json", help="print the counts as JSON", show_default="off")] = False,
    workers: Annotated[
        int, typer.Option("--workers", help="row-converting processes, or DuckDB threads for SQL layouts (same output)")
    ] = 1,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace", help="replace an existing --out folder (once the new ingest is complete)", show_default="off"
        ),
    ] = False,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="fail, writing nothing, when the source gives no pair", show_default="warn"),
    ] = False,
) -> None:
    """Read one source in its native format and write canonical pairs, images and rejects."""
    _at_least_1(limit, "--limit")
    _at_least_1(max_pixels, "--max-pixels")
    _in_range(workers, 1, MAX_WORKERS, "--workers")
    commit = hub_commit(path, revision) if is_hub_id(path) else None  # read at one commit, said below
    try:
        read = ReadOptions(config, split, commit or revision, data_dir)
        adapter = get_adapter(source)(_parse_pairs(option or []), read)
        root = ImagesRoot(images_root)
        with (
            ProgressLines() as lines,
            Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed} rows"),
                TimeElapsedColumn(),
                console=err_console,
                transient=True,
                disable=json_summary or not err_console.is_terminal,  # off a terminal: `ProgressLines`
            ) as progress,
        ):
            task = progress.add_task(f"ingest {source}", total=limit)

            def show(state: IngestSummary) -> None:
                progress.update(task, completed=state.rows_read)
                lines.set(f"ingest {source}: {state.rows_read:,} rows read")

            summary = ingest(
                adapter,
                path,
                out,
                root,
                limit=limit,
                max_pixels=max_pixels,
                on_row=show,
                workers=workers,
                replace=replace,
                strict=strict,
            )
    except InputError as exc:
        _fail(str(exc))
        return
    if json_summary:
        console.print_json(json.dumps(summary.as_dict()))
    else:
        print_summary(summary, out)
    note = adapter.files_note(path)
    if is_hub_id(path):
        note = f"read {path} at commit {commit}" if commit else f"read {path} unpinned: its commit was not resolved"
    if note:
        err_console.print(f"note: {note}", markup=False, highlight=False)
    empty = summary.no_pairs(source)
    if empty:
        missing = images_root is None and summary.rejects_by_reason.get("image not found")
        _warn(f"{empty}; the rows name image files: give their folder or zip with --images-root" if missing else empty)


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
    out: Annotated[
        str, typer.Option("--out", help="build folder to create, or an object store's URI (s3://..., gs://...)")
    ],
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="reuse what an interrupted build of this recipe finished", show_default="start over"
        ),
    ] = False,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace", help="replace the build already at --out, once the new one is complete", show_default="off"
        ),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="DuckDB threads and ingest processes", show_default="all cores"),
    ] = None,
    memory_limit: Annotated[
        str, typer.Option("--memory-limit", help="DuckDB memory limit; beyond it, spill")
    ] = "1500MB",
    cache: Annotated[
        Path | None,
        typer.Option(
            "--cache", help="where costly signals are kept across builds", show_default=".curate-cache beside --out"
        ),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="fail, publishing nothing, when a source gives no pair or the build has none",
            show_default="warn, and record it in the manifest",
        ),
    ] = False,
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="where tasks run: embedded (this machine) or ray (a Ray cluster; needs the 'distributed' extra); "
            "the output is the same",
        ),
    ] = "embedded",
    address: Annotated[
        str | None,
        typer.Option(
            "--address", help="the Ray cluster to join (e.g. ray://head:10001 or auto)", show_default="a local Ray"
        ),
    ] = None,
    stage: Annotated[
        Path | None,
        typer.Option(
            "--stage",
            help="with an object store's --out: the folder the build is written in before its upload (on a cluster, "
            "one every node mounts)",
            show_default="the system's temporary folder",
        ),
    ] = None,
) -> None:
    """Build a mixture: ingest (and normalize), validate, dedupe, decontaminate, filter, mix, write Arrow shards."""
    from curation.build import BUSY, build, staging_folder
    from curation.engine import make_engine
    from curation.recipe import load_recipe
    from curation.storage import is_uri

    _in_range(workers, 1, MAX_WORKERS, "--workers")
    try:
        recipe = load_recipe(mix)
        runner = make_engine(engine, address, workers)
        on_terminal = err_console.is_terminal  # off one, `ProgressLines` write the state instead
        with ProgressLines() as lines, Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err_console,
                                                transient=True, disable=not on_terminal) as bar:  # fmt: skip
            task = bar.add_task("build")
            reused: list[str] = []

            def show(text: str) -> None:
                bar.update(task, description=f"stage: {text}")
                lines.set(f"stage: {text}")

            manifest = build(
                recipe, out, resume=resume, workers=workers, memory_limit=memory_limit, cache=cache, strict=strict,
                engine=runner, stage=stage, replace=replace, on_reuse=reused.append,
                on_start_over=lambda why: err_console.print(
                    f"note: --resume: {why}; building from the start", markup=False, highlight=False, soft_wrap=True),
                on_stage=show, on_progress=show,
            )  # fmt: skip
    except (Exception, KeyboardInterrupt) as exc:
        interrupted = was_interrupted(exc)
        message = describe(exc)
        if message is None and not interrupted:
            raise  # a bug: `main` prints its traceback
        try:
            local = staging_folder(out, stage) if is_uri(out) else Path(out)
        except InputError:
            local = Path(tempfile.gettempdir()) / "no-such-build"  # a URI that cannot be opened: no work was done
        partial = local.with_name(local.name + ".partial")
        # a build refused for another one writing there did no work: what is in the folder is the other's
        worked = (partial / "work").is_dir() and BUSY not in str(message)
        again = "--resume --replace" if replace else "--resume"
        kept = (f"the work so far is kept in {partial}: {again} continues it while the recipe is unchanged"
                f"{'; if it fails again, remove the folder' if resume and not interrupted else ''}; a build without "
                "--resume replaces it")  # fmt: skip
        if interrupted:
            stop_interrupted(kept if worked else "stopped before any work was kept")
        if not worked:
            _fail(str(message))  # stopped before any work: nothing is kept to continue
        _fail(f"{message} [{kept}]")
        return
    print_funnel(manifest, str(out))
    if reused:  # the ingests (finished in any order) by name, then the signals in stage order
        ingests = sorted(r for r in reused if r.startswith("ingest "))
        taken = ingests + [r for r in reused if r not in ingests]
        console.print(f"resumed: taken from the interrupted build: {', '.join(taken)}", markup=False)
    if manifest["signals_reused"]:
        console.print(f"signals reused from the cache (not computed again): {', '.join(manifest['signals_reused'])}")
    from curation.build_card import shards_text

    console.print(f"{shards_text(manifest)} -> {out}", markup=False, highlight=False)
    if not is_uri(out) and (flags := Path(out) / "flags" / "human_review.parquet").is_file():
        from curation.ops.human_review import outcome_text

        console.print(outcome_text(flags), markup=False, highlight=False)
    for warning in manifest["warnings"]:
        _warn(warning)


def print_funnel(manifest: dict, folder: str) -> None:
    """The funnel of the build in `folder`, titled by the folder (and its recipe, where that is named otherwise)."""
    from curation.build_card import funnel_rows, sources_in_order
    from curation.storage import is_uri

    name = manifest["recipe"]["name"]
    named = Path(folder.rstrip("/")).name if is_uri(folder) else Path(folder).resolve().name  # `.` is its folder
    recipe = "" if named == name else f" (recipe {name})"
    table = Table(title=Text(f"build {named}{recipe}: every row accounted for"), caption=Text(folder))
    for column in ("source", "step", "count"):
        table.add_column(column)
    for source, step, count in funnel_rows(manifest):  # names and reasons as text, never Rich markup
        table.add_row(Text(str(source)), Text(str(step)), str(count))
    console.print(table)
    for name, entry in sources_in_order(manifest):
        status = "OK" if entry["balanced"] else "BROKEN"
        removed = sum(sum(r.values()) for r in entry["removed"].values())
        line = (f"{name}: accounting {status}: {entry['pairs_ingested']} pairs = {entry['kept']} kept + {removed} "
                f"removed; {entry['mix']['upsampled_copies']} upsampled copies")  # fmt: skip
        console.print(Text(line))
    for name, entry in manifest.get("benchmarks", {}).items():
        reasons = ", ".join(f"{reason}: {n}" for reason, n in entry["rejects_at_ingest"].items())
        line = (f"benchmark {name}: {entry['items']} items decontaminated against, from {entry['rows_read']} rows "
                f"read; {entry['rows_rejected_at_ingest']} rejected")  # fmt: skip
        console.print(Text(line + (f" ({reasons})" if reasons else "")))


@app.command()
def stats(
    build_dir: Annotated[Path, typer.Argument(help="a build folder")],
    json_out: Annotated[
        bool, typer.Option("--json", help="print the funnel as JSON, for scripts", show_default="off")
    ] = False,
) -> None:
    """Print a build's funnel from its manifest (once its shards are where the manifest lists them)."""
    from curation.build_card import funnel_rows

    opened = BuildDir.open(build_dir)
    shards = opened.shard_paths  # a shard missing is an error here, as in every reader of the build
    manifest = opened.manifest
    if json_out:
        funnel = [{"source": s, "step": step, "count": n} for s, step, n in funnel_rows(manifest)]
        summary = {
            "build": manifest["recipe"]["name"],
            "rows_in_shards": manifest["rows_in_shards"],
            "shard_files": len(shards),
            "funnel": funnel,
            "sources": manifest["sources"],
            "benchmarks": manifest.get("benchmarks", {}),
        }
        console.print_json(json.dumps(summary))
        return
    print_funnel(manifest, str(build_dir))


def _text(value: object) -> Text:
    """A value from a build, printed as it is: never read as Rich markup, control characters spelled out."""
    return Text(visible(str(value)))


def _value(value: object) -> Text:
    if value is None:
        return Text("-", style="dim")
    if isinstance(value, float):
        return Text(f"{value:.6g}")
    return _text(", ".join(map(str, value)) if isinstance(value, list) else value)


# The metadata block of `curate show`, in this order (the ids, source and texts are printed above it).
META_FIELDS = ("modality", "subset", "chosen_score", "rejected_score", "margin", "tie", "chosen_model",
               "rejected_model", "category", "language", "license", "binarization", "meta")  # fmt: skip


@app.command()
def show(
    build_dir: Annotated[Path, typer.Argument(help="a build folder")],
    key: Annotated[
        str,
        typer.Argument(
            metavar="ID",
            help=f"a pair id, a unique prefix of one (at least {MIN_PREFIX} hex characters), or a source row such as "
            "uf.jsonl:12",
        ),
    ],
    json_out: Annotated[
        bool, typer.Option("--json", help="print the same content as JSON, for scripts", show_default="off")
    ] = False,
) -> None:
    """Print one pair: the source rows that gave it and their fate (in the shards, or removed at which stage and
    why), its prompt and answers, its metadata and images, and what each op measured on it."""
    import duckdb

    try:
        build = BuildDir.open(build_dir)
        record = pair_record(build, duckdb.connect(), resolve(build, key))
    except InputError as exc:
        _fail(str(exc))
        return
    if json_out:
        pair = dict(record.pair, meta=json.loads(record.pair["meta"]))
        occurrences = [{**dataclasses.asdict(o), "kept": o.kept} for o in record.occurrences]
        out = {"pair": pair, "occurrences": occurrences, "images": record.images, "signals": record.signals}
        console.print_json(json.dumps(out, default=str))
    else:
        print_pair(record)
    _print_refused(build)


def _print_refused(build: BuildDir) -> None:
    for why in build.refused.values():
        err_console.print(Text(f"not read: {why}", style="yellow"))


def _folding(*columns: str, show_header: bool = True) -> Table:
    """A table whose long values (hashes, source rows) wrap in a narrow terminal rather than being cut."""
    table = Table(show_header=show_header)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def print_pair(record: PairRecord) -> None:
    pair = record.pair
    console.print(Text(f"pair {pair['pair_id']}", style="bold") + Text(f"   prompt {pair['prompt_id']}", style="dim"))
    for occurrence in record.occurrences:
        line = _text(f"{occurrence.source} {occurrence.source_row}: ")
        line.append(occurrence.fate(), style="green" if occurrence.kept else "yellow")
        console.print(line + (_text(f" ({occurrence.detail})") if occurrence.detail else Text()))
    turns = pair["prompt"]
    console.print(Text(f"\nprompt ({len(turns)} turn{'' if len(turns) == 1 else 's'})", style="bold underline"))
    for turn in turns:
        console.print(Text(visible(f"[{turn['role']}] "), style="bold") + _text(turn["content"]))
    for side, style in (("chosen", "green"), ("rejected", "red")):
        console.print(Text(f"\n{side}", style=f"bold underline {style}"))
        console.print(_text(pair[side]))
    console.print(Text("\nmetadata", style="bold underline"))
    table = _folding("field", "value", show_header=False)
    for name in META_FIELDS:
        table.add_row(name, _value(pair[name]))
    console.print(table)
    if record.images:
        console.print(Text(f"\nimages ({len(record.images)})", style="bold underline"))
        table = _folding("sha256", "size", "format", "bytes")
        for image in record.images:
            if image["bytes"] is None:  # a removed pair's image, which the build may not keep
                table.add_row(image["sha256"], Text("not in this build's images", style="dim"), "-", "-")
            else:
                size = f"{image['width']}x{image['height']}"
                table.add_row(image["sha256"], size, _text(image["format"]), str(image["bytes"]))
        console.print(table)
    console.print(Text(f"\nsignals ({len(record.signals) or 'none'})", style="bold underline"))
    for name, found in record.signals.items():
        # Without the build's internal row number, not a measurement; the pair's copies measure the same.
        columns = [c for c in found[0] if c != "row_key"]
        rows = list({tuple(map(str, (row[c] for c in columns))): row for row in found}.values())
        console.print(Text(f"signals/{name}", style="bold"))
        if len(rows) == 1:
            table = _folding("column", "value")
            for column in columns:
                table.add_row(column, _value(rows[0][column]))
        else:
            table = _folding(*columns)
            for row in rows:
                table.add_row(*(_value(row[c]) for c in columns))
        console.print(table)


SHORT_ID = 12  # characters of a pair id in `curate find`'s table: unique, for `curate show`, among millions


@app.command()
def find(
    build_dir: Annotated[Path, typer.Argument(help="a build folder")],
    text: Annotated[
        str, typer.Argument(metavar="TEXT", help="the text to look for, ignoring case, in prompts and answers")
    ],
    source: Annotated[
        str | None, typer.Option("--source", help="only this source's pairs", show_default="every source")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="show at most N matches")] = 20,
    json_out: Annotated[
        bool, typer.Option("--json", help="print the matches as JSON, for scripts", show_default="off")
    ] = False,
) -> None:
    """Find pairs by text, in the shards and among the removed pairs: each match's id, source row, fate and the
    text around the match (a pair's upsampled copies count once)."""
    _at_least_1(limit, "--limit")
    if not text:
        _fail("TEXT is empty: give the text to look for")
    try:
        build = BuildDir.open(build_dir)
        names = build.manifest["sources"]
        if source is not None and source not in names:
            raise InputError(f"no source {source!r} in {build_dir} (its sources: {', '.join(names)})")
        found = find_pairs(build, text, source, limit)
    except InputError as exc:
        _fail(str(exc))
        return
    if json_out:
        rows = [
            {"pair_id": m.pair_id, **dataclasses.asdict(m.occurrence), "kept": m.occurrence.kept, "field": m.field,
             "snippet": m.snippet, "match": [m.start, m.end]}
            for m in found.shown
        ]  # fmt: skip
        console.print_json(json.dumps({"text": text, "matches": found.matches, "source_rows": found.rows,
                                       "pairs": found.pairs, "shown": len(found.shown), "rows": rows}))  # fmt: skip
    else:
        print_matches(found)
    _print_refused(build)


def print_matches(found: Found) -> None:
    if found.shown:
        table = _folding("pair", "source", "row", "fate", "in", "match")
        for m in found.shown:
            snippet = Text(m.snippet)
            snippet.stylize("bold reverse", m.start, m.end)
            fate = Text(m.occurrence.fate(), style="green" if m.occurrence.kept else "yellow")
            row = m.occurrence.source_row
            table.add_row(m.pair_id[:SHORT_ID], _text(m.occurrence.source), _text(row), fate, m.field, snippet)
        console.print(table)
    more = " (raise --limit to see more)" if found.matches > len(found.shown) else ""
    pairs, rows = quantity(found.pairs, "distinct pair"), quantity(found.rows, "source row")
    shown = f"{len(found.shown)} of {found.matches} matches shown ({pairs} from {rows}){more}"
    console.print(shown if found.matches else "no pair holds the text", markup=False, highlight=False)


@app.command("export")
def export_cmd(
    build_dir: Annotated[Path, typer.Argument(help="a build folder")],
    repo: Annotated[str, typer.Option(help="the Hub dataset repo, USER/NAME")],
    private: Annotated[bool, typer.Option(help="create the repo private")] = False,
    local_dir: Annotated[
        Path | None, typer.Option(help="where the Hub layout is written", show_default="DIR-hub beside the build")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="write locally and list what would be sent; send nothing")] = False,
    license: Annotated[
        str | None,
        typer.Option(help="the license to declare on the card", show_default="the sources', or other if they differ"),
    ] = None,
    force_license: Annotated[bool, typer.Option(help="declare --license even over restrictive sources")] = False,
    replace: Annotated[
        bool, typer.Option(help="replace an earlier export in --local-dir once the new one is complete")
    ] = False,
) -> None:
    """Write a build in the Hub's dataset layout (parquet configs, card, recipe), then upload it in one commit."""
    from curation.export import check_repo_id, export_build, upload

    folder = build_dir.absolute()  # `.` has no name to put -hub after
    local = local_dir or folder.with_name(folder.name + "-hub")
    try:
        check_repo_id(repo)
        plan = export_build(build_dir, local, license=license, force_license=force_license, replace=replace,
                            need_token=not dry_run)  # fmt: skip
        typer.echo(f"wrote {len(plan.files)} files to {local} (configs: {', '.join(plan.configs)})")
        if plan.local_paths:  # they name this machine's folders (a user's home, say) to whoever reads the repo
            shown = ", ".join(plan.local_paths[:3]) + (
                f", and {len(plan.local_paths) - 3} more" if len(plan.local_paths) > 3 else ""
            )
            typer.echo(f"note: recipe.yaml and manifest.json are published as the build wrote them, with the local "
                       f"paths they name: {shown}", err=True)  # fmt: skip
        for line in upload(local, repo, private=private, dry_run=dry_run):
            typer.echo(line)
    except InputError as exc:
        _fail(str(exc))


def main() -> None:
    run_cli(app)


if __name__ == "__main__":  # `python -m curation.cli`: as the `curate` console script, Ctrl-C handled the same way
    from curation.entry import curate

    curate()
