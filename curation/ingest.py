"""Ingest one source: native rows -> canonical pairs, content-addressed images and rejects.

Every native row is accounted for: it yields one or more pairs or exactly one reject
(`rows_read == rows_paired + rows_rejected`, checked before anything is published). The three files are written
into `DIR.partial/`, which is renamed to `DIR` once all three are complete; any failure removes it, so `DIR` holds
either a whole ingest or nothing.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import tempfile
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation import columnar
from curation.build_dir import enclosing_build
from curation.errors import InputError, RowError
from curation.images import DEFAULT_MAX_PIXELS, ImageRow, ImagesRoot
from curation.io import (
    ArrowBatchWriter,
    BatchWriter,
    ParquetBatchWriter,
    fsync_folder,
    read_json_state,
    sha256_file,
    write_json,
)
from curation.processes import waited, worker_pool
from curation.readers import Record, iter_file_isolated, printable
from curation.schema import IMAGE_SCHEMA, PAIR_SCHEMA, REJECT_SCHEMA
from curation.sources import REGISTRY, closest_adapter
from curation.sources.base import Adapter, RowContext

STAGE = "ingest"


@dataclass(frozen=True)
class Conversion:
    """How native rows become pairs: the image pixel limit, and whether texts are stored in canonical form
    (`canonical_text`; False keeps them as published, for scoring a benchmark as its authors do)."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    canonical: bool = True


@dataclass(frozen=True)
class Outputs:
    """How the ingest's files are written: the parquet codec, the pairs' format ("parquet", or "arrow": an Arrow
    IPC file, `pairs.arrow`, which a build maps), and whether each file is fsynced before it is renamed into
    place (`durable`). A build's work files are read back at once and deleted with the build, so they skip
    both compression and fsync; the build checks their sizes and sha256 before resuming from them."""

    compression: str = "zstd"
    pairs_format: str = "parquet"
    durable: bool = True


WORK_FILES = Outputs("none", "arrow", durable=False)


@dataclass
class RowOutcome:
    ref: str
    pairs: list[dict[str, Any]]
    reject: dict[str, Any] | None
    images: list[ImageRow]
    fields: tuple[str, ...] | None = None  # of a row missing a field: the fields it has (`_fields`)


@dataclass
class IngestSummary:
    source: str
    rows_read: int = 0
    rows_paired: int = 0
    rows_rejected: int = 0
    pairs: int = 0
    ties: int = 0
    images: int = 0
    rejects_by_reason: Counter[str] = field(default_factory=Counter)
    pairs_per_row: Counter[int] = field(default_factory=Counter)
    first_reject: str | None = None  # the first rejected row's reason and detail (which names the row and field)

    def add_single_pairs(self, rows: int, ties: int) -> None:
        """Rows that each gave one pair (the columnar ingest's clean rows)."""
        self.rows_read += rows
        self.rows_paired += rows
        self.pairs += rows
        self.ties += ties
        self.pairs_per_row[1] += rows

    def add(self, outcome: RowOutcome) -> None:
        self.rows_read += 1
        if outcome.reject is not None:
            self.rows_rejected += 1
            self.rejects_by_reason[outcome.reject["reason"]] += 1
            if self.first_reject is None:
                has = _fields_text(outcome.reject["source"], outcome.fields) if outcome.fields is not None else ""
                self.first_reject = f"{outcome.reject['reason']}: {outcome.reject['detail']}{has}"
        else:
            self.rows_paired += 1
            self.pairs += len(outcome.pairs)
            self.ties += sum(1 for p in outcome.pairs if p["tie"])
            self.pairs_per_row[len(outcome.pairs)] += 1

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IngestSummary:
        summary = cls(data["source"])
        for key in ("rows_read", "rows_paired", "rows_rejected", "pairs", "ties", "images"):
            setattr(summary, key, data[key])
        summary.rejects_by_reason = Counter(data["rejects_by_reason"])
        summary.pairs_per_row = Counter({int(k): v for k, v in data["pairs_per_row"].items()})
        summary.first_reject = data.get("first_reject")
        return summary

    def merge(self, other: IngestSummary) -> None:
        """Add another part's counts (images are counted by the caller, across parts)."""
        for key in ("rows_read", "rows_paired", "rows_rejected", "pairs", "ties"):
            setattr(self, key, getattr(self, key) + getattr(other, key))
        self.rejects_by_reason.update(other.rejects_by_reason)
        self.pairs_per_row.update(other.pairs_per_row)
        self.first_reject = self.first_reject or other.first_reject  # parts merge in input order

    @property
    def balanced(self) -> bool:
        return self.rows_read == self.rows_paired + self.rows_rejected

    def no_pairs(self, name: str) -> str | None:
        """The warning for a source (`name`) that gave no pair, with its most frequent reject reasons; None when it
        gave some."""
        if self.pairs:
            return None
        if not self.rows_read:
            return f"source {name!r} gave 0 pairs: no rows read"
        reasons = sorted(self.rejects_by_reason.items(), key=lambda kv: (-kv[1], kv[0]))
        top = ", ".join(f"{reason}: {n}" for reason, n in reasons[:3])
        if len(reasons) > 3:
            top += f", and {len(reasons) - 3} other reason{'s' if len(reasons) > 4 else ''}"
        said = f"source {name!r} gave 0 pairs: {self.rows_rejected} of {self.rows_read} rows rejected"
        said = f"{said} ({top})" if top else said
        # the first reject names its row and field: what a wrong adapter or a changed format shows first
        return f"{said}; the first: {self.first_reject}" if self.first_reject else said

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows_read": self.rows_read,
            "rows_paired": self.rows_paired,
            "rows_rejected": self.rows_rejected,
            "pairs": self.pairs,
            "ties": self.ties,
            "images": self.images,
            "rejects_by_reason": dict(sorted(self.rejects_by_reason.items())),
            "pairs_per_row": {str(k): v for k, v in sorted(self.pairs_per_row.items())},
            "first_reject": self.first_reject,
        }


def reject_row(source: str, ref: str, reason: str, detail: str, stage: str = STAGE) -> dict[str, Any]:
    # Details quote native values; a lone surrogate among them could not be written as UTF-8.
    return {
        "source": source,
        "source_row": printable(ref),
        "stage": stage,
        "reason": reason,
        "detail": printable(detail),
    }


def convert_record(adapter: Adapter, record: Record, root: ImagesRoot, conversion: Conversion) -> RowOutcome:
    """One native row to its pairs (checked) or to one reject."""
    key = adapter.info.key
    if record.error is not None:
        return RowOutcome(record.ref, [], reject_row(key, record.ref, record.error.reason, record.error.detail), [])
    assert record.data is not None
    ctx = RowContext(record.ref, root, conversion.max_pixels)
    try:
        row = adapter.normalize(record.data)
        pairs = adapter.convert(row, ctx)
        if not pairs:
            raise RowError("no pairs", "the row yields no preference pair")
        for pair in pairs:
            pair.check()
        meta = adapter.meta(row)
        rows = [p.to_row(key, record.ref, meta, adapter.info.license, conversion.canonical) for p in pairs]
    except RowError as exc:
        reject = reject_row(key, record.ref, exc.reason, f"{record.ref}: {exc.detail}")
        # The fields the row does have: what a wrong adapter shows first (said in a source's no-pair warning).
        fields = _fields(record.data) if exc.reason == "missing field" and isinstance(record.data, dict) else None
        return RowOutcome(record.ref, [], reject, [], fields)
    except Exception as exc:  # an adapter bug on odd data must not end the whole ingest silently or loudly
        detail = f"{record.ref}: {type(exc).__name__}: {exc}"
        return RowOutcome(record.ref, [], reject_row(key, record.ref, "adapter error", detail), [])
    return RowOutcome(record.ref, rows, None, list(ctx.new_images.values()))


def _fields(data: dict[str, Any]) -> tuple[str, ...]:
    """A native row's top-level fields that hold a value, sorted (each name cut to 40 characters)."""
    return tuple(sorted(printable(str(k))[:40] for k, v in data.items() if v is not None and v != ""))


def _fields_text(adapter: str, names: tuple[str, ...], shown: int = 12) -> str:
    """` (fields with a value: 'answer', 'question')`, the first `shown` of them, and the adapter whose fields these
    are closest to, where another one's are (`closest_adapter`): what a wrong adapter shows first."""
    more = f", and {len(names) - shown} more" if len(names) > shown else ""
    text = (", ".join(repr(n) for n in names[:shown]) + more) if names else "none"
    closest = closest_adapter(set(names), adapter)
    if closest is not None:
        reads = ", ".join(repr(f) for f in sorted(REGISTRY[closest].mapped_fields))
        text += f"; closest by field names: adapter {closest!r}, which reads {reads}"
    return f" (fields with a value: {text})"


def convert_rows(
    adapter: Adapter,
    location: str,
    images_root: ImagesRoot | None = None,
    *,
    limit: int | None = None,
    conversion: Conversion = Conversion(),
    workers: int = 1,
) -> Iterator[RowOutcome]:
    """One outcome per native row of `location`, in input order (with `workers` > 1, converted in processes)."""
    root = images_root or ImagesRoot(None)
    records = itertools.islice(adapter.records(location, root), limit)
    if workers <= 1:
        for record in records:
            yield convert_record(adapter, record, root, conversion)
        return
    with worker_pool(workers, _start_worker, (adapter, root.root, conversion)) as pool:
        pending: deque[Future[list[RowOutcome]]] = deque()
        while batch := list(itertools.islice(records, WORKER_BATCH)):
            pending.append(pool.submit(_convert_batch, batch))
            if len(pending) >= 2 * workers:  # a bounded window: memory stays flat, order is kept
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()


WORKER_BATCH = 500
CLEAN_BATCH = 20_000  # rows per batch of the columnar query
_worker: tuple[Adapter, ImagesRoot, Conversion] | None = None


def _start_worker(adapter: Adapter, root: Path | None, conversion: Conversion) -> None:
    global _worker
    _worker = (adapter, ImagesRoot(root), conversion)  # each process opens the images root itself


def _convert_batch(records: list[Record]) -> list[RowOutcome]:
    assert _worker is not None
    adapter, root, conversion = _worker
    return [convert_record(adapter, record, root, conversion) for record in records]


# Runs tasks (picklable functions) `workers` at a time: worker processes, or a Ray cluster's tasks (`curation.engine`).
Pool = Callable[[int], AbstractContextManager[Executor]]


@dataclass(frozen=True)
class _Job:
    """What every way of ingesting one source shares: where and how to write, how to convert."""

    out_dir: Path
    root: ImagesRoot
    conversion: Conversion
    workers: int
    outputs: Outputs
    on_row: Callable[[IngestSummary], None] | None
    pool: Pool = worker_pool
    parts: Path | None = None  # where finished file parts are kept for a rerun (None: scratch)
    per_file: bool = False  # one task per file also for a columnar layout (a cluster's way)


def ingest(
    adapter: Adapter,
    location: str,
    out_dir: Path,
    images_root: ImagesRoot | None = None,
    *,
    limit: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    canonical: bool = True,
    on_row: Callable[[IngestSummary], None] | None = None,
    workers: int = 1,
    columnar_path: bool = True,
    outputs: Outputs = Outputs(),
    replace: bool = False,
    strict: bool = False,
    pool: Pool = worker_pool,
    parts: Path | None = None,
    per_file: bool = False,
) -> IngestSummary:
    """Write `pairs.parquet`, `images.parquet` and `rejects.parquet` into the new folder `out_dir` and return the
    counts. The files are written into `out_dir.partial` and published by renaming the folder; an existing
    `out_dir` is refused (`InputError`) unless `replace`, and is then replaced only once the new one is complete.

    A local parquet layout the adapter can convert in DuckDB (`Adapter.sql_layout`) takes the columnar path
    (`curation.columnar`; `workers` are DuckDB's threads and the image-checking threads) unless `columnar_path`
    is false; input DuckDB cannot read (a corrupt page, invalid UTF-8) goes row by row instead, which isolates
    what is damaged. Otherwise, with `workers` > 1, a local folder of several files is ingested file by file in
    worker processes, each reading, converting and writing its own part (the main process only concatenates the
    parts, in file order); other inputs stream their rows through a pool of converting processes. `pool` runs the
    file tasks (processes here, Ray tasks on a cluster); `parts`, a folder kept across runs, keeps each finished
    file's part, which a rerun reuses (otherwise they are scratch, removed at the end); `per_file` makes a
    columnar layout of several files one task per file too (a file DuckDB cannot read goes row by row on its
    own, where one process falls back for the whole input). Every way gives
    the same pairs and rejects, byte for byte, and the same images (the columnar path may store them in another
    order).
    `canonical` false keeps texts as published; `outputs` says how the files are written. `strict` refuses a source
    that gives no pair (`InputError`, nothing published).
    """
    out_dir = Path(os.path.abspath(out_dir)) if out_dir.name in ("", ".", "..") else out_dir  # `--out .`
    if inside_input(out_dir, location):
        raise InputError(f"{out_dir}: the output is inside the input folder {location}, whose files a later read "
                         "would take for rows; write it outside")  # fmt: skip
    if (inside := enclosing_build(out_dir.absolute().parent)) is not None:
        raise InputError(f"{out_dir}: inside the build {inside}, which holds only what its build wrote; write it "
                         "outside")  # fmt: skip
    partial = _output_folder(out_dir, replace)
    job = _Job(
        partial,
        images_root or ImagesRoot(None),
        Conversion(max_pixels, canonical),
        workers,
        outputs,
        on_row,
        pool,
        parts,
        per_file,
    )
    try:
        summary = _ingest_into(adapter, location, job, limit, columnar_path and canonical)
        if strict and (empty := summary.no_pairs(adapter.info.key)):
            raise InputError(f"{empty} (--strict)")
        publish_folder(partial, out_dir, outputs.durable)
    except BaseException as exc:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(exc, OSError) and not exc.filename:  # pyarrow's write errors name no file
            exc.filename = str(out_dir)
        raise
    return summary


def _ingest_into(adapter: Adapter, location: str, job: _Job, limit: int | None, columnar_path: bool) -> IngestSummary:
    columnar_plan = columnar.plan(adapter, location) if columnar_path and limit is None else None
    if columnar_plan is not None and job.per_file and len(columnar_plan.files) > 1:
        # One task per file, each through the columnar path: the same rows, in file order.
        parts = [(path, name, dataclasses.replace(columnar_plan, files=[(path, name)]))
                 for path, name in columnar_plan.files]  # fmt: skip
        return _ingest_files(adapter, parts, job)
    if columnar_plan is not None:
        try:
            return _ingest_columnar(columnar_plan, job)
        except columnar.UnreadableInput:
            # DuckDB stops at the first damaged page or value; row by row, only the rows they hold are rejected
            _clear(job.out_dir)
    files = _partitions(adapter, location) if (job.workers > 1 or job.per_file) and limit is None else None
    if files:
        return _ingest_files(adapter, [(path, name, None) for path, name in files], job)
    outcomes = convert_rows(adapter, location, job.root, limit=limit, conversion=job.conversion, workers=job.workers)
    return write_outcomes(adapter.info.key, outcomes, job.out_dir, job.on_row, job.outputs)


def inside_input(out: Path, location: str | Path) -> bool:
    """Whether `out` is, or would be, inside the local input folder `location` (whose files it would add to)."""
    source = Path(location)
    return source.is_dir() and source.resolve() in (out.resolve(), *out.resolve().parents)


# Marks a folder as an unfinished output (an ingest's, an export's), which a later run may remove; `publish_folder`
# removes it.
PARTIAL_MARK = ".unfinished-output"
OLD_INGEST_MARK = ".unfinished-ingest"  # the mark of ingests before exports shared theirs: still an ingest's
OUTPUT_NAMES = frozenset({"pairs.parquet", "pairs.arrow", "images.parquet", "rejects.parquet", "done.json"})


def _output_folder(out_dir: Path, replace: bool) -> Path:
    """The empty `out_dir.partial` to write into, after checking that `out_dir` may be (re)placed: `replace`
    replaces only a folder an ingest wrote, and only a partial folder an ingest marked is removed."""
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise InputError(f"{out_dir}: exists and is not a folder; choose another --out")
    if out_dir.exists():
        if not replace:
            raise InputError(f"{out_dir}: already exists; choose another --out, remove it, or pass --replace")
        foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in OUTPUT_NAMES)
        if foreign:
            raise InputError(f"{out_dir}: not an ingest's output (it holds {', '.join(foreign[:3])}); not replaced")
    # what an interrupted run left is removed: an ingest is not resumable
    return fresh_partial(out_dir, "exists and is not the folder of an unfinished ingest; remove it")


def fresh_partial(final: Path, refusal: str) -> Path:
    """The new folder `final.partial`, marked (`PARTIAL_MARK`), that an output is written in before
    `publish_folder`. What an interrupted run left under that name (a marked folder, or an empty one: made before
    it was marked) is removed first; anything else there (a link, a file, a folder of the user's) is refused with
    `refusal`, never deleted nor followed."""
    partial = final.with_name(final.name + ".partial")
    ours = partial.is_dir() and not partial.is_symlink()
    if ours and any(partial.iterdir()):
        ours = any((partial / mark).exists() for mark in (PARTIAL_MARK, OLD_INGEST_MARK))
    if partial.exists() or partial.is_symlink():
        if not ours:
            raise InputError(f"{partial}: {refusal}")
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    (partial / PARTIAL_MARK).touch()
    return partial


def _clear(folder: Path) -> None:
    for path in folder.iterdir():
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def publish_folder(partial: Path, final: Path, durable: bool = True) -> None:
    """Rename the complete folder `partial` to `final`, replacing an older `final` only now (it is moved aside
    under a fresh name first, so a crash in between loses neither)."""
    (partial / PARTIAL_MARK).unlink(missing_ok=True)
    old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.replaced-")) if final.exists() else None
    if old is not None:
        os.replace(final, old)
    os.replace(partial, final)
    if durable:
        fsync_folder(final.parent)
    if old is not None:
        shutil.rmtree(old)


@contextmanager
def _open_outputs(out_dir: Path, outputs: Outputs) -> Iterator[dict[str, BatchWriter]]:
    """The three output files: published together on success, none of them on any failure."""
    codec, durable = outputs.compression, outputs.durable
    pairs: BatchWriter = (
        ArrowBatchWriter(out_dir / "pairs.arrow", PAIR_SCHEMA, durable=durable)
        if outputs.pairs_format == "arrow"
        else ParquetBatchWriter(out_dir / "pairs.parquet", PAIR_SCHEMA, compression=codec, durable=durable)
    )
    writers = {
        "pairs": pairs,
        "images": ParquetBatchWriter(out_dir / "images.parquet", IMAGE_SCHEMA, 100, codec, durable),
        "rejects": ParquetBatchWriter(out_dir / "rejects.parquet", REJECT_SCHEMA, compression=codec, durable=durable),
    }
    try:
        yield writers
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    for writer in writers.values():
        writer.close()


def _check(summary: IngestSummary, images: int) -> IngestSummary:
    summary.images = images
    if not summary.balanced:
        raise AssertionError(f"row accounting broken for {summary.source}: {summary.as_dict()}")
    return summary


def write_outcomes(
    source: str,
    outcomes: Iterator[RowOutcome],
    out_dir: Path,
    on_row: Callable[[IngestSummary], None] | None = None,
    outputs: Outputs = Outputs(),
) -> IngestSummary:
    summary = IngestSummary(source)
    seen_images: set[str] = set()
    with _open_outputs(out_dir, outputs) as writers:
        for outcome in outcomes:
            _write_outcome(writers, summary, seen_images, outcome)
            if on_row is not None:
                on_row(summary)
        return _check(summary, len(seen_images))


def _write_outcome(
    writers: dict[str, BatchWriter], summary: IngestSummary, seen_images: set[str], outcome: RowOutcome
) -> None:
    """One converted row: its pairs or its reject, and its images not stored yet."""
    summary.add(outcome)
    writers["pairs"].write(outcome.pairs)
    if outcome.reject is not None:
        writers["rejects"].write([outcome.reject])
    new = [img for img in outcome.images if img.sha256 not in seen_images]
    seen_images.update(img.sha256 for img in new)
    writers["images"].write(img.as_dict() for img in new)


def splits_into_files(adapter: Adapter, location: str) -> bool:
    """Whether an ingest with `per_file` and several workers reads `location` as one task per file: a local
    folder of several files, read row by row or through a columnar layout."""
    plan = columnar.plan(adapter, location)
    return len(plan.files) > 1 if plan is not None else _partitions(adapter, location) is not None


def _partitions(adapter: Adapter, location: str) -> list[tuple[Path, str]] | None:
    """The files of a local folder, when there are several and the adapter reads them row by row as they are."""
    folder = Path(location)
    if type(adapter).records is not Adapter.records or not folder.is_dir():
        return None
    files = adapter.local_files(location)
    return [(f, f.relative_to(folder).as_posix()) for f in files] if len(files) > 1 else None


# A part is read back once, right away: compressing it would only cost the workers time.
PART_FILES = Outputs("none", durable=False)


def _ingest_file(
    adapter: Adapter,
    path: Path,
    name: str,
    root: Path | None,
    conversion: Conversion,
    out: Path,
    plan: columnar.ColumnarPlan | None = None,
) -> dict:
    """One file of several into the part folder `out` (a task): through `plan` (a columnar plan of this file
    alone) where given and DuckDB can read the file, otherwise row by row."""
    images_root = ImagesRoot(root)  # each process opens the images root itself
    out.mkdir(parents=True, exist_ok=True)
    summary = None
    if plan is not None:
        try:
            summary = _ingest_columnar(plan, _Job(out, images_root, conversion, 1, PART_FILES, None)).as_dict()
        except columnar.UnreadableInput:
            _clear(out)
    if summary is None:
        records = iter_file_isolated(path, name, adapter.columns)
        outcomes = (convert_record(adapter, r, images_root, conversion) for r in records)
        summary = write_outcomes(adapter.info.key, outcomes, out, outputs=PART_FILES).as_dict()
    # Written last, with the files' sizes and sha256 (parts are not fsynced: a crash of the machine may cut one
    # short; a failing disk may damage one in place).
    write_json(out / PART_DONE, {"file": name, "summary": summary, "files": _part_files(out)}, durable=False)
    return summary


def _part_files(folder: Path) -> dict[str, list[Any]]:
    return {n: [(folder / n).stat().st_size, sha256_file(folder / n)] for n in PART_FILE_NAMES}


PART_FILE_NAMES = ("pairs.parquet", "images.parquet", "rejects.parquet")


PART_DONE = "part.json"


def _finished_part(folder: Path, name: str) -> dict | None:
    """A part an earlier run finished (its `part.json`, naming the same file), or None."""
    done = read_json_state(folder / PART_DONE)
    if not (isinstance(done, dict) and done.get("file") == name and isinstance(done.get("summary"), dict)):
        return None
    try:  # the sizes first (cheap), then the bytes
        sizes = {n: (folder / n).stat().st_size for n in PART_FILE_NAMES}
        recorded = done.get("files")
        whole = isinstance(recorded, dict) and {n: v[0] for n, v in recorded.items()} == sizes
        whole = whole and _part_files(folder) == recorded
    except (OSError, TypeError, IndexError, KeyError):
        return None
    return done["summary"] if whole else None


def _ingest_files(
    adapter: Adapter, files: list[tuple[Path, str, columnar.ColumnarPlan | None]], job: _Job
) -> IngestSummary:
    scratch = job.parts if job.parts is not None else job.out_dir / "parts.partial"
    if job.parts is None:
        shutil.rmtree(scratch, ignore_errors=True)
    summary = IngestSummary(adapter.info.key)
    seen_images: set[str] = set()
    try:
        with (
            _open_outputs(job.out_dir, job.outputs) as writers,
            job.pool(min(job.workers, len(files))) as pool,
        ):
            futures: list[Future[dict] | dict] = []
            for k, (path, name, plan) in enumerate(files):
                folder = scratch / f"{k:05d}"
                finished = _finished_part(folder, name) if job.parts is not None else None
                futures.append(finished if finished is not None else pool.submit(
                    _ingest_file, adapter, path, name, job.root.root, job.conversion, folder, plan))  # fmt: skip
            check = (lambda: job.on_row(summary)) if job.on_row is not None else (lambda: None)
            for k, future in enumerate(futures):  # in file order: the same rows, in the same order, as one process
                summary.merge(IngestSummary.from_dict(future if isinstance(future, dict) else waited(future, check)))
                written = scratch / f"{k:05d}"
                for name in ("pairs", "rejects"):
                    for batch in pq.ParquetFile(written / f"{name}.parquet").iter_batches():
                        writers[name].write_table(pa.Table.from_batches([batch]))
                for batch in pq.ParquetFile(written / "images.parquet").iter_batches():
                    table = pa.Table.from_batches([batch])
                    hashes = table.column("sha256").to_pylist()
                    fresh = [i for i, h in enumerate(hashes) if h not in seen_images]
                    seen_images.update(hashes)
                    writers["images"].write_table(table.take(pa.array(fresh, pa.int64())))
                if job.on_row is not None:
                    job.on_row(summary)
            return _check(summary, len(seen_images))
    finally:
        if job.parts is None:
            shutil.rmtree(scratch, ignore_errors=True)


def _ingest_columnar(plan: columnar.ColumnarPlan, job: _Job) -> IngestSummary:
    """Clean rows converted by DuckDB, the others by the adapter, merged in input order into the same pairs
    and rejects (the same bytes) as the row-by-row path writes, and the same images."""
    db = columnar.connect(job.workers, job.out_dir / "duckdb.tmp")
    try:
        return _merge_columnar(plan, db, job)
    finally:
        db.close()
        shutil.rmtree(job.out_dir / "duckdb.tmp", ignore_errors=True)


def _write_clean(writers: dict[str, BatchWriter], summary: IngestSummary, batch: pa.RecordBatch) -> None:
    """Clean rows of the columnar query: one pair each."""
    if batch.num_rows:
        writers["pairs"].write_table(pa.Table.from_batches([batch.drop_columns(["__row_key", "__clean"])]))
        summary.add_single_pairs(batch.num_rows, int(np.count_nonzero(batch.column("tie").to_numpy(False))))


def _merge_columnar(plan: columnar.ColumnarPlan, db: duckdb.DuckDBPyConnection, job: _Job) -> IngestSummary:
    adapter = plan.adapter
    summary = IngestSummary(adapter.info.key)
    seen_images: set[str] = set()
    with _open_outputs(job.out_dir, job.outputs) as writers:
        if plan.layout.image:

            def store(images: list[ImageRow]) -> None:
                seen_images.update(image.sha256 for image in images)
                columns = {name: [getattr(image, name) for image in images] for name in IMAGE_SCHEMA.names}
                writers["images"].write_table(pa.Table.from_pydict(columns, schema=IMAGE_SCHEMA))

            checked = columnar.checked_images(db, plan, job.conversion.max_pixels, job.workers, store)
            db.register(columnar.IMAGE_ROWS, checked)
        native = columnar.NativeRows(plan)
        try:
            for batch in columnar.batches(db, columnar.pairs_query(plan), CLEAN_BATCH):
                unclean = np.flatnonzero(~batch.column("__clean").to_numpy(zero_copy_only=False))
                keys = batch.column("__row_key").to_numpy()
                start = 0
                for row in unclean.tolist():  # converted by the adapter, in input order among the clean rows
                    _write_clean(writers, summary, batch.slice(start, row - start))
                    outcome = convert_record(adapter, native.record(int(keys[row])), job.root, job.conversion)
                    _write_outcome(writers, summary, seen_images, outcome)
                    start = row + 1
                _write_clean(writers, summary, batch.slice(start))
                if job.on_row is not None:
                    job.on_row(summary)
        finally:
            native.close()
        if summary.rows_read != (expected := columnar.row_count(plan)):
            raise AssertionError(f"columnar ingest of {summary.source}: {summary.rows_read} rows of {expected}")
        return _check(summary, len(seen_images))
