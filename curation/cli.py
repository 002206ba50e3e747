"""`curate`: the command line of the curation pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from curation.errors import InputError
from curation.images import DEFAULT_MAX_PIXELS, ImagesRoot
from curation.ingest import IngestSummary, ingest
from curation.sources import REGISTRY, get_adapter
from curation.sources.base import ReadOptions

app = typer.Typer(help="Curate multimodal preference data for reward models.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


def _fail(message: str) -> None:
    # Messages quote file names and data: print them as plain text, never as Rich markup.
    err_console.print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)
    raise typer.Exit(code=1)


def _parse_pairs(values: list[str]) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep:
            _fail(f"option {value!r} is not KEY=VALUE")
        out[key.strip()] = val
    return out


@app.command()
def sources() -> None:
    """List every source adapter: key, kind, modality, default Hub id, license."""
    from curation.cards import source_cards

    cards = source_cards()
    table = Table(title=f"{len(REGISTRY)} source adapters")
    for column in ("key", "kind", "modality", "hub id", "license", "size (card)"):
        table.add_column(column)
    for key, adapter in sorted(REGISTRY.items(), key=lambda kv: (kv[1].info.kind, kv[0])):
        info = adapter.info
        card = cards.get(key)
        size = str(card.front.get("size")) if card else "[red]no card[/]"
        table.add_row(key, info.kind, info.modality, info.hub_id or "-", info.license, size)
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
    max_pixels: Annotated[
        int, typer.Option("--max-pixels", help="reject images larger than this")
    ] = DEFAULT_MAX_PIXELS,
    json_summary: Annotated[bool, typer.Option("--json", help="print the counts as JSON")] = False,
) -> None:
    """Read one source in its native format and write canonical pairs, images and rejects."""
    try:
        adapter = get_adapter(source)(_parse_pairs(option or []), ReadOptions(config, split, revision))
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
