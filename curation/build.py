"""`curate build`: ingest (and normalize) -> validate -> dedupe -> decontaminate -> filters -> mix -> shards.

Every ingested pair ends either in the shards or in `rejects/` with its stage and reason. The build is
written under `DIR.partial` and renamed when complete. With `resume`, finished ingests (marked `done.json`, of
inputs unchanged since: same files, sizes and modification times) and stored signals are reused; the global stages
(dedupe, mix, writing) rerun, which gives the same bytes. Stages run in DuckDB over files on disk, so memory does
not grow with the size of a source. The ingested pairs, whose texts are already in canonical form
(`canonical_text`), are Arrow files that every later stage reads memory-mapped (`pairs`, `curation.work`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import duckdb
import numba
import numpy as np
import pyarrow as pa

from curation import build_dir, storage
from curation.build_card import write_card
from curation.engine import Engine, call
from curation.errors import HubUnreadable, InputError
from curation.images import ImagesRoot
from curation.ingest import WORK_FILES, IngestSummary, Outputs, Pool, ingest, inside_input, splits_into_files
from curation.io import ParquetBatchWriter, only_writer, read_json_state, sha256_file, sha256_once, write_json
from curation.ops import OPS, BuildContext
from curation.ops.base import file_fields, files_of
from curation.ops.context import create_relations
from curation.ops.runner import run_op
from curation.processes import waited, worker_pool
from curation.readers import hub_commit, is_hub_id
from curation.recipe import Recipe, SourceSpec
from curation.schema import IMAGE_SCHEMA, PAIR_SCHEMA, SCHEMA_VERSION
from curation.shards import WorkTake, shard_jobs, shard_schema, swapping
from curation.sources import get_adapter
from curation.sources.base import Adapter, ReadOptions
from curation.sql import GLOB_CHARACTERS, ROW_ORDER, read_parquet, sql_literal
from curation.storage import is_uri
from curation.work import WorkPairs

PARALLEL_INGEST_BYTES = 64 * 2**20
CACHE_FOLDER = ".curate-cache"
CONCURRENT_INGESTS = 2
# Sorted by sha256 in small row groups, so a reader fetches one image by hash through the row-group statistics.
IMAGE_ROW_GROUP = 64
REMOVED_BATCH = 5_000  # rows of removed pairs gathered at once
# Stages whose removed pairs keep their images in the build's image table (their evidence shows both sides).
EVIDENCE_IMAGE_STAGES = ("exact_dedupe", "near_dedupe", "semantic_dedupe", "image_dedupe", "decontaminate")
# Work files are read back at once: encoding them cost more (zstd: 3x the write time) than it saved. The
# benchmarks' pairs are read through DuckDB's parquet reader.
BENCHMARK_WORK_FILES = Outputs("none", durable=False)


@dataclass
class StageLog:
    removed: dict[str, dict[str, int]] = field(default_factory=dict)  # source -> reason -> rows
    seconds: float = 0.0


def _run_jobs(jobs: list[Callable[[], Any]], threads: int, on_failure: Callable[[], None] | None = None) -> list[Any]:
    """Run `jobs` in `threads` threads, started in order, and return their results in order. When one fails, the
    jobs not started are cancelled, `on_failure` runs (to stop a running one early), and the error is raised once
    the running jobs have ended: nothing is left running behind the caller's back."""
    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(job) for job in jobs]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            if on_failure is not None:
                with contextlib.suppress(duckdb.ConnectionException):  # a connection its job closed already
                    on_failure()
            raise


class IngestStopped(Exception):
    """Another ingest failed, or Ctrl-C was pressed: this one stops rather than run on unseen."""


@dataclasses.dataclass
class _IngestWatch:
    """Called per row (per batch on the columnar path) of an ingest: stops it when `stop` is set, and reports the
    rows read every `every` rows."""

    name: str
    stop: threading.Event
    report: Callable[[str], None]
    every: int = 10_000
    reported: int = 0  # the rows read at the last report

    def __call__(self, summary: IngestSummary) -> None:
        self.stop_if_set()
        if summary.rows_read >= self.reported + self.every:
            self.reported = summary.rows_read
            self.report(f"ingest {self.name}: {summary.rows_read:,} rows read")

    def stop_if_set(self) -> None:
        if self.stop.is_set():
            raise IngestStopped("stopped: another ingest failed or the build was interrupted")


def _file_sizes(folder: Path) -> dict[str, int]:
    """The sizes of an ingest's output files (not of `done.json`, written after them)."""
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and p.name != "done.json"}


def _file_digests(folder: Path, stop: threading.Event) -> dict[str, str]:
    """The sha256 of an ingest's output files: a file damaged in place keeps its size, not its digest (hashing
    reads about a GiB in 0.75 s; `stop` set ends it, so Ctrl-C does not wait for it)."""
    return {name: sha256_file(folder / name, stop) for name in _file_sizes(folder)}


def _fingerprint(
    spec: SourceSpec, stop: threading.Event | None = None, commit: str | None = None, once: bool = False
) -> dict[str, Any]:
    """What a source's input is: its local files' sha256 (`once`: each hashed once per process while unchanged),
    an object store's listing, or a Hub id's coordinates with the `commit` read (None: not resolved)."""
    if is_uri(spec.path):
        return storage.listing(spec.path)
    path = Path(spec.path)
    if not path.exists():
        return {"hub_id": spec.path, "config": spec.config, "split": spec.split, "revision": spec.revision,
                "commit": commit, "data_dir": spec.data_dir, "data_files": _adapter(spec).hub_file()}  # fmt: skip
    return {"files": {name: _sha256_or_why(p, stop, once) for name, p in _local_inputs(spec)}}


def inputs_changed(recipe: Recipe, manifest: dict[str, Any]) -> list[str]:
    """What a build of `recipe` read that differs now from what its manifest records: the names of the local or
    object-store sources and benchmarks whose files (or listing) changed, and the op files (a reviews file, a
    model's scores) whose sha256 did. A Hub id is not compared (its commit is resolved when a build reads it), nor
    are images roots (the manifest records the images the build stored, not the folders it found them in)."""
    recorded = manifest.get("inputs") or {}
    local = [spec for spec in (*recipe.sources, *recipe.benchmarks) if is_uri(spec.path) or Path(spec.path).exists()]
    changed = [spec.name for spec in local if _fingerprint(spec, once=True) != recorded.get(spec.name)]
    for name, files in (manifest.get("op_inputs") or {}).items():
        for entry in files:
            path = Path(entry["path"])
            if not path.is_file() or sha256_once(path) != entry["sha256"]:
                changed.append(f"{name}'s {path.name}")
    return changed


def _sha256_or_why(path: Path, stop: threading.Event | None, once: bool = False) -> str:
    """A local input's sha256, or `unreadable: permission denied` for a file the build may not read: such a file
    gave one reject at ingest, and the build records it as it found it rather than failing after its work."""
    try:
        return sha256_once(path) if once else sha256_file(path, stop)
    except PermissionError as exc:  # another failure (the file gone since its ingest) still stops the build
        return f"unreadable: {(exc.strerror or str(exc)).lower()}"


def _local_inputs(spec: SourceSpec) -> list[tuple[str, Path]]:
    """The files a local source's rows are read from (those of its split, not the rest of a repository's
    snapshot), each named relative to the source's folder (a file: its own name)."""
    path = Path(spec.path)
    base = path if path.is_dir() else path.parent
    # A dangling link (or a folder named like a data file) gave no row but its reject: nothing to hash.
    files = [p for p in _adapter(spec).input_files(spec.path) if p.is_file()]
    return sorted((p.relative_to(base).as_posix() if p.is_relative_to(base) else p.as_posix(), p) for p in files)


def _input_stamp(
    spec: SourceSpec,
    inputs: list[tuple[str, Path]],
    skip: tuple[Path, ...] = (),
    commit: str | None = None,
) -> str:
    """What an ingest read, told apart cheaply: a digest of each local input file's size and modification and
    change times (the change time moves with a `chmod` that makes a file readable, or a `touch -r` that sets the
    modification time back; an object store's listing; a Hub id's coordinates), as the manifest's `inputs` cover
    the files its rows are read from (`inputs`, from `_local_inputs`; none for a Hub id or a URI), and of each file
    under a local images root (or the folder the adapter finds images in without one) but those under `skip` (the
    build's own folders, which may lie inside it). A resumed build ingests a source again when its stamp changed."""
    local = not is_uri(spec.path) and Path(spec.path).exists()
    stamp: Any = _stats(inputs) if local else _fingerprint(spec, commit=commit)
    if spec.images_root:
        images = None if is_uri(spec.images_root) else Path(spec.images_root)
    else:  # the rows' images may lie beside them (MMPR's folder)
        images = _adapter(spec).images_folder(spec.path) if local else None
    if images is not None:
        stamp = [stamp, _stats(_files_under(images, skip))]
    return hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()


def _stats(files: list[tuple[str, Path]]) -> list[list[Any]]:
    stats: list[list[Any]] = []
    for name, file in files:
        try:
            stat = file.stat()
        except FileNotFoundError:  # a file that went while listing is no input
            continue
        except OSError as exc:  # a link loop, a name too long, no permission: no row reads it; stamped as it is
            stats.append([name, None, exc.errno])
            continue
        stats.append([name, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns])
    return stats


def _files_under(root: Path, skip: tuple[Path, ...]) -> list[tuple[str, Path]]:
    """The files under `root` (a zip: itself), by relative name, leaving out the folders in `skip`."""
    if not root.is_dir():
        return [(root.name, root)]
    skipped = {p.resolve() for p in skip}
    real_root = root.resolve()
    seen = {real_root}
    files = []
    for folder, dirs, names in os.walk(root, followlinks=True):
        here = Path(folder)
        kept = []
        for name in sorted(dirs):
            # Links are followed inside the root only (the images are read there only), each folder once: a link
            # loop or a link to / would never end.
            real = (here / name).resolve()
            if real not in skipped and real not in seen and real.is_relative_to(real_root):
                seen.add(real)
                kept.append(name)
        dirs[:] = kept
        files += [((here / n).relative_to(root).as_posix(), here / n) for n in names]
    return sorted(files)


class Builder:
    def __init__(
        self,
        recipe: Recipe,
        out: Path,
        *,
        resume: bool = False,
        workers: int | None = None,
        memory_limit: str = "1500MB",
        on_stage: Callable[[str], None] | None = None,
        cache: Path | None = None,
        strict: bool = False,
        engine: Engine | None = None,
        replace: bool = False,
        on_reuse: Callable[[str], None] | None = None,
        on_start_over: Callable[[str], None] | None = None,
        on_progress: Callable[[str], None] | None = None,
    ) -> None:
        self.recipe = recipe
        self.replace = replace  # an existing build at `out` is replaced once the new one is complete
        self.engine = engine or Engine()  # where the tasks run; the stages and their results are the same
        out = out.absolute()  # tasks on a cluster run elsewhere: every path they are given is absolute
        cache = cache.absolute() if cache is not None else None
        self.out = out
        # Signals kept across builds (`Op.cache_path`): by default beside the build folder, shared by the builds
        # written next to each other.
        self.cache = cache if cache is not None else out.parent / CACHE_FOLDER
        self.reused: list[str] = []  # ops whose signals came from the cache
        self.signals: set[Path] = set()  # the signal files of this run's ops
        self.tmp = out.with_name(out.name + ".partial")
        self.resume = resume
        self.workers = workers
        self.memory_limit = memory_limit
        self.on_stage = on_stage or (lambda _: None)
        # Told what a resumed build takes from the interrupted one ("ingest NAME", "NAME signals"): not in the
        # manifest, which equals an uninterrupted build's.
        self.on_reuse = on_reuse or (lambda _: None)
        self.on_start_over = on_start_over or (lambda _: None)  # told why --resume finds nothing to continue
        # Told how far a long stage has come: "semantic_dedupe: 1,024 of 3,312 prompts embedded".
        self.on_progress = on_progress or (lambda _: None)
        self.current_stage = ""
        self.stages: dict[str, StageLog] = {}
        self.ingested: dict[str, IngestSummary] = {}
        self.strict = strict  # a source that gives no pair stops the build, rather than a warning in the manifest
        self.warnings: list[str] = []
        self.benchmarks: dict[str, IngestSummary] = {}
        self.estimate: dict[str, int] = {}
        self.mix: dict[str, dict[str, Any]] = {}
        self.shards: list[dict[str, Any]] = []
        self.work: WorkPairs | None = None  # the ingested pairs, once ingested
        # The commit each Hub id source is read at, resolved once before anything is read (None: not resolved)
        self.commits: dict[str, str | None] = {}

    # -- bookkeeping ---------------------------------------------------------------------------------------
    def _prepare(self) -> None:
        if self.out.exists() or self.out.is_symlink():
            if not self.replace:
                finished = self.resume and not self.out.is_symlink() and (self.out / "manifest.json").is_file()
                what = "already exists"
                if finished and self.tmp.is_dir():  # a --replace build interrupted beside it
                    what = (
                        f"a finished build (the unfinished {self.tmp.name} beside it continues with --resume --replace)"
                    )
                elif finished:
                    what = f"a finished build (--resume continues an unfinished one, {self.tmp.name}: there is none)"
                raise InputError(f"{self.out}: {what}; choose another --out, remove it, or --replace it")
            if self.out.is_symlink() or not (self.out / "manifest.json").is_file():
                raise InputError(f"{self.out}: not a build folder (no manifest.json); --replace replaces a build only")
            foreign = sorted(  # a hidden file a system leaves (.DS_Store, .nfs*) goes with the build; a folder never
                p.name for p in self.out.iterdir()
                if p.name not in build_dir.ENTRIES and not (p.name.startswith(".") and p.is_file())
            )  # fmt: skip
            if foreign:  # a manifest.json alone does not make a build: a project folder may have one
                shown = ", ".join(foreign[:3]) + (f", and {len(foreign) - 3} more" if len(foreign) > 3 else "")
                raise InputError(
                    f"{self.out}: not a build folder (it holds {shown}, which a build does not write); --replace "
                    "replaces a build only"
                )
            # What the recipe reads must outlive the build it replaces: `trainer score`'s scores are written into
            # the build they score, and a recipe may name them there.
            ops = [params for name in OPS if (params := self.recipe.op(name)) is not None]
            specs = (*self.recipe.sources, *self.recipe.benchmarks)
            read = [*(path for params in ops for path in files_of(params)),
                    *(str(where) for spec in specs for where in (spec.path, spec.images_root) if where)]  # fmt: skip
            local = [path for path in read if not is_uri(path) and Path(path).exists()]
            inside = [path for path in local if Path(path).resolve().is_relative_to(self.out.resolve())]
            if inside:
                raise InputError(f"{inside[0]}: the recipe reads it from inside {self.out}, which --replace would "
                                 "delete; move it out of the build first (beside it), and name it there")  # fmt: skip
        for spec in (*self.recipe.sources, *self.recipe.benchmarks):  # local paths were checked with the recipe
            for location in (spec.path, spec.images_root):
                if is_uri(location):
                    storage.check_exists(str(location))
            if is_hub_id(spec.path):
                self.commits[spec.name] = hub_commit(spec.path, spec.revision)
        if self.tmp.is_symlink() or (self.tmp.exists() and not self.tmp.is_dir()):
            raise InputError(f"{self.tmp}: exists and is not the folder of an unfinished build; remove it")
        if any(c in GLOB_CHARACTERS for c in str(self.tmp.absolute())):
            raise InputError(f"{self.out}: DuckDB reads file names as patterns; choose an --out without *, ? or [")
        if (self.cache.exists() or self.cache.is_symlink()) and not self.cache.is_dir():
            raise InputError(f"--cache {self.cache}: exists and is not a folder; name a folder for the build cache")
        if self.memory_limit.strip().startswith("-"):  # DuckDB reads a negative limit as none at all
            raise InputError(f"--memory-limit {self.memory_limit!r}: a size, e.g. 1500MB or 4GB, not a negative one")
        self.db = duckdb.connect()
        try:  # checked before anything is written
            self.db.execute(f"SET memory_limit = {sql_literal(self.memory_limit)}")
        except duckdb.Error as exc:
            self.db.close()
            raise InputError(f"--memory-limit {self.memory_limit!r}: {exc} (e.g. 1500MB or 4GB)") from None
        state = self.tmp / "work" / "state.json"
        found = read_json_state(state)
        resumed = self.resume and found == self._state()
        unknown = self.tmp.exists() and any(self.tmp.iterdir()) and not (self.tmp / "work").is_dir()
        if unknown and not resumed:
            self.db.close()
            raise InputError(f"{self.tmp}: exists and is not the folder of an unfinished build; remove it")
        if self.resume and not resumed:
            self.on_start_over(self._why_not_resumed(found))
        if self.tmp.exists() and not resumed:
            shutil.rmtree(self.tmp)  # not resumable (not asked, another recipe, or a damaged state): start over
        state.parent.mkdir(parents=True, exist_ok=True)
        write_json(state, self._state())
        db_dir = self.tmp / "work" / "duckdb"
        shutil.rmtree(db_dir, ignore_errors=True)
        db_dir.mkdir(parents=True)
        self.db.execute(f"SET temp_directory = {sql_literal(db_dir)}")  # beyond the memory limit, DuckDB spills here
        self.db.execute("SET preserve_insertion_order = true")
        if self.workers:
            self.db.execute(f"SET threads = {int(self.workers)}")
        # The compiled shingle loops' threads (set every build: the setting outlives it in this process).
        numba.set_num_threads(min(int(self.workers or os.cpu_count() or 1), numba.config.NUMBA_NUM_THREADS))
        self.cache.mkdir(parents=True, exist_ok=True)
        self.engine.reset()
        self.ctx = BuildContext(
            self.db,
            self.recipe.seed,
            self.tmp,
            workers=self.workers or os.cpu_count() or 1,
            cache=self.cache,
            engine=self.engine,
            progress=lambda text: self.on_progress(f"{self.current_stage}: {text}"),
        )

    def _why_not_resumed(self, found: Any) -> str:
        """Why --resume builds from the start: the unfinished build at `self.tmp` (its state `found`) is missing
        or not this recipe's."""
        if not self.tmp.exists():
            return f"no unfinished build at {self.tmp}"
        if not isinstance(found, dict):
            return f"{self.tmp} holds no readable state of an unfinished build"
        if found.get("recipe_sha256") != self.recipe.sha256:
            return f"the unfinished build at {self.tmp} is of another recipe (or of this one before a change)"
        return f"the unfinished build at {self.tmp} was written by another version of rm-workbench"

    def _state(self) -> dict[str, Any]:
        """What a resumed build must share with the interrupted one: the recipe and the schema (ids)."""
        return {"recipe_sha256": self.recipe.sha256, "schema_version": SCHEMA_VERSION, "work_files": "arrow"}

    def _stage(self, name: str, run: Callable[[], None]) -> None:
        self.on_stage(name)
        self.current_stage = name
        start = time.perf_counter()
        run()
        if self.work is not None:
            self.work.release()  # the work files' pages this stage touched (they stay in the page cache)
        self.stages.setdefault(name, StageLog()).seconds = round(time.perf_counter() - start, 3)

    def _remove(self, stage: str, query: str) -> None:
        self._log(stage, self.ctx.remove(stage, query))

    def _log(self, stage: str, counts: list[tuple[str, str, int]]) -> None:
        table = self.stages.setdefault(stage, StageLog()).removed
        for source, reason, n in counts:
            table.setdefault(source, {})[reason] = table.get(source, {}).get(reason, 0) + n

    # -- stages --------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        self._prepare()
        # The inputs' sha256 (about 0.6 s a GB) in a thread beside the stages: hashing releases the GIL.
        hashing, stop = ThreadPoolExecutor(1), threading.Event()
        specs = (*self.recipe.sources, *self.recipe.benchmarks)
        fingerprints = hashing.submit(lambda: {s.name: _fingerprint(s, stop, self.commits.get(s.name)) for s in specs})
        hashing.submit(shard_schema)  # it imports `datasets` (0.4 s), best done while the stages run
        try:
            self._stage("ingest", self._ingest)
            for name in OPS:
                self._run_op(name)
            self.ctx.clear_shared()  # the ops' shared intermediates, not needed to mix and write
            for stale in set((self.tmp / "signals").glob("*")) - self.signals:
                stale.unlink()  # an interrupted run's signal of inputs that have changed since (a reviews file)
            self._stage("mix", self._mix)
            self._stage("write", self._write)
            manifest = self._manifest(fingerprints.result(), round(time.perf_counter() - started, 3))
            (self.tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", "utf-8")
            write_card(self.tmp, manifest, self.db, self._length_stats())
        finally:
            stop.set()  # after a failure, the hashing stops at its next block
            hashing.shutdown(cancel_futures=True)
            self.db.close()  # also when a guard stops the build: its evidence stays in DIR.partial
            if self.work is not None:
                self.work.close()
        shutil.rmtree(self.tmp / "work")
        if self.replace and self.out.exists():  # the old build steps aside only now that the new one is complete
            old = self.out.with_name(f".{self.out.name}.replaced")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.out, old)
            os.replace(self.tmp, self.out)
            shutil.rmtree(old)
        else:
            os.replace(self.tmp, self.out)
        return manifest

    def _ingest_one(self, spec: SourceSpec, target: Path, outputs: Outputs, stop: threading.Event) -> IngestSummary:
        done = target / "done.json"
        finished = read_json_state(done) if self.resume and target.is_dir() else None
        # Work files are not fsynced: after a crash of the machine, one may be shorter than when it was done.
        # ... and its input may have changed since: then what it ingested is not what the manifest will hash
        commit = self.commits.get(spec.name)
        local = not is_uri(spec.path) and Path(spec.path).exists()
        inputs = _local_inputs(spec) if local else []  # listed once: the stamp and the worker count use them
        stamp = _input_stamp(spec, inputs, skip=(self.out, self.tmp, self.cache), commit=commit)
        if commit is not None:  # every task reads the commit the manifest records
            spec = dataclasses.replace(spec, revision=commit)
        if (
            isinstance(finished, dict)
            and finished.get("file_sizes") == _file_sizes(target)
            and finished.get("input") == stamp
            and finished.get("file_sha256") == _file_digests(target, stop)  # last: it reads the files
        ):
            with contextlib.suppress(KeyError, TypeError, ValueError):  # a damaged summary: ingest again
                summary = IngestSummary.from_dict(finished["summary"])
                self.on_reuse(f"ingest {spec.name}")
                return summary
        self.on_stage(f"ingest {spec.name}")
        watch = _IngestWatch(spec.name, stop, self.on_progress)
        try:
            summary = self._read(spec, target, outputs, inputs, watch)
        except HubUnreadable as exc:
            # a path with one '/' that is not beside the recipe is read as a Hub id: perhaps a mistyped local path
            kind = "source" if any(s.name == spec.name for s in self.recipe.sources) else "benchmark"
            beside = self.recipe.path.parent / spec.path
            raise InputError(f"{self.recipe.path}: {kind} '{spec.name}': {spec.path} is read as a Hub dataset id "
                             f"(there is no {beside} beside the recipe): {exc}") from exc  # fmt: skip
        write_json(done, {"summary": summary.as_dict(), "file_sizes": _file_sizes(target),
                          "file_sha256": _file_digests(target, stop), "input": stamp}, durable=False)  # fmt: skip
        return summary

    def _read(
        self, spec: SourceSpec, target: Path, outputs: Outputs, inputs: list[tuple[str, Path]], watch: _IngestWatch
    ) -> IngestSummary:
        """Ingest one source into `target`: here, or on a cluster per input file or in one task."""
        max_pixels = self.recipe.op("validate").max_pixels  # the recipe's limit applies from the first decode
        if not self.engine.distributed:
            return ingest_source(spec, target, outputs, max_pixels, self._ingest_workers(inputs), on_row=watch)
        if not is_uri(spec.path) and splits_into_files(_adapter(spec), spec.path):
            # One task per input file, merged here in file order; finished files are kept for a rerun.
            parts = self.tmp / "work" / "parts" / spec.name
            workers = self.engine.cpus(self.workers)
            return ingest_source(spec, target, outputs, max_pixels, workers, self.engine.pool, parts, per_file=True,
                                 on_row=watch)  # fmt: skip
        # one file, a Hub id or an object store's URI (read by the task's node): one task
        with self.engine.pool(1) as pool:  # a stop cancels the task
            return waited(pool.submit(ingest_source, spec, target, outputs, max_pixels, 1), watch.stop_if_set)

    def _ingest_workers(self, inputs: list[tuple[str, Path]]) -> int:
        """Processes for converting rows: all cores for large local inputs (start-up costs about a second); a Hub id
        or a URI (no local inputs) is read by one."""
        size = sum(p.stat().st_size for _, p in inputs)  # the rows' files, not a snapshot's archives
        return (self.workers or os.cpu_count() or 1) if size >= PARALLEL_INGEST_BYTES else 1

    def _ingested(self, spec: SourceSpec) -> Path:
        return self.tmp / "work" / "ingest" / spec.name

    def _ingest(self) -> None:
        sources, benchmarks = self.recipe.sources, self.recipe.benchmarks
        jobs = [(spec, self._ingested(spec), WORK_FILES) for spec in sources]
        jobs += [(spec, self.tmp / "work" / "benchmarks" / spec.name, BENCHMARK_WORK_FILES) for spec in benchmarks]
        # Two inputs at once: each leaves a core idle at times (its Python parts, its writes), which the other
        # fills (1M text and 50k image pairs: ingest 12.4 -> 11.8 s); more would only add memory.
        # On a cluster every source is ingested at once: the driver only waits for (or merges) the tasks' outputs.
        threads = len(jobs) if self.engine.distributed else CONCURRENT_INGESTS
        stop = threading.Event()  # set when one fails or Ctrl-C is pressed: a running ingest stops at its next row
        summaries = _run_jobs([functools.partial(self._ingest_one, *job, stop) for job in jobs], max(threads, 1),
                              on_failure=stop.set)  # fmt: skip
        self.ingested = {spec.name: summary for spec, summary in zip(sources, summaries[: len(sources)], strict=True)}
        self.warnings = [empty for spec in sources if (empty := self.ingested[spec.name].no_pairs(spec.name))]
        if self.strict and self.warnings:
            raise InputError(f"{'; '.join(self.warnings)} (--strict)")
        # a folder whose split (or config) left some of its data files unread: said, as the ingest says it
        self.warnings += [f"source '{spec.name}': {note}" for spec in sources
                          if not is_uri(spec.path) and (note := _adapter(spec).files_note(spec.path))]  # fmt: skip
        for name, commit in self.commits.items():
            if commit is None:
                kind = "source" if any(s.name == name for s in sources) else "benchmark"
                self.warnings.append(f"{kind} '{name}': read from the Hub without a resolved commit (offline, or the "
                                     "Hub was not reachable): `inputs` cannot name the commit read")  # fmt: skip
        if self.recipe.op("decontaminate") is not None and not benchmarks:  # it would run and find nothing
            self.warnings.append("decontaminate: the recipe lists no benchmarks, so no pair was matched against any "
                                 "(add them under `benchmarks:`)")  # fmt: skip
        self.benchmarks = dict(zip((s.name for s in benchmarks), summaries[len(sources) :], strict=True))
        for spec in benchmarks:
            summary = self.benchmarks[spec.name]
            if not summary.pairs:  # decontamination against it would silently do nothing
                reasons = ", ".join(f"{r}: {n}" for r, n in sorted(summary.rejects_by_reason.items())) or "none"
                first = f"; the first: {summary.first_reject}" if summary.first_reject else ""
                raise InputError(
                    f"benchmark {spec.name!r} ({spec.path}) gave no items: {summary.rows_read} rows read, "
                    f"{summary.rows_rejected} rejected ({reasons}{first}); check its path, adapter and images_root"
                )
        self.ctx.benchmarks = {spec.name: target for spec, target, _ in jobs[len(sources) :]}
        self.work = WorkPairs([self._ingested(s) / "pairs.arrow" for s in sources], [s.name for s in sources])
        selects = []
        for index, (spec, table) in enumerate(zip(sources, self.work.tables(), strict=True)):
            self.db.register(f"__pairs_{index}", table)  # memory-mapped: DuckDB reads the columns it needs
            selects.append(f"SELECT * REPLACE ({sql_literal(spec.name)} AS source) FROM __pairs_{index}")
        images = [self._ingested(s) / "images.parquet" for s in self.recipe.sources]
        create_relations(self.db, " UNION ALL ".join(selects), f"SELECT * FROM {read_parquet(images)}")

    def _run_op(self, name: str) -> None:
        op, params = OPS[name], self.recipe.op(name)
        if params is None:
            return

        def run() -> None:
            self.signals.add(op.signal_path(self.ctx, params))
            result = run_op(self.ctx, op, params)
            if result.reused:
                self.reused.append(name)
            if result.resumed:
                self.on_reuse(f"{name} signals")
            self._log(name, result.removed)
            self.warnings.extend(result.warnings)

        self._stage(name, run)

    def _mix(self) -> None:
        """Per source: `count` pairs or `weight` x the kept pairs, by hash(pair_id, seed); more means upsampling."""
        order = self.ctx.hash_order("pair_id")
        self.db.execute(
            f"""CREATE TEMP TABLE mix_rank AS SELECT row_key, source,
                  row_number() OVER (PARTITION BY source ORDER BY {order}, row_key) - 1 AS rank,
                  count(*) OVER (PARTITION BY source) AS available
                FROM live_pairs"""
        )
        self.db.execute("CREATE TABLE selected (row_key BIGINT, copy INTEGER)")
        self.db.execute("CREATE TEMP TABLE mix_target (source VARCHAR, target BIGINT)")
        available = dict(self.ctx.rows("SELECT source, any_value(available) FROM mix_rank GROUP BY source"))
        emptied: dict[str, str] = {}  # source -> why it has no pair in the shards, though it gave some at ingest
        for spec in self.recipe.sources:
            n = int(available.get(spec.name, 0))
            target = spec.count if spec.count is not None else round((1.0 if spec.weight is None else spec.weight) * n)
            ingested = self.ingested[spec.name].pairs
            wanted = spec.count if spec.count is not None else (spec.weight is None or spec.weight > 0)
            if not n and wanted and ingested:  # all it gave at ingest went in the ops (a count unmet, say): said
                asked = f"count {spec.count} asks for {spec.count} pairs, but " if spec.count is not None else ""
                emptied[spec.name] = (f"source '{spec.name}': {asked}the ops removed all {ingested:,} of its pairs: "
                                      "none is in the shards (`curate stats` shows where they went)")  # fmt: skip
            target = target if n else 0
            if target > spec.max_upsample * n:
                asked = f"count {spec.count}" if spec.count is not None else f"weight {spec.weight}"
                raise InputError(
                    f"source {spec.name!r}: {asked} asks for {target} pairs, {target / n:.1f}x its {n} kept pairs, "
                    f"above its max_upsample of {spec.max_upsample:g}x; lower it, or raise max_upsample for this "
                    "source in the recipe"
                )
            self.db.execute("INSERT INTO mix_target VALUES (?, ?)", [spec.name, target])
            copies = -(-target // n) if n else 0
            # Copy c of rank r is pair number c * n + r: whole passes first, then a remainder in hash order.
            self.db.execute(
                f"""INSERT INTO selected SELECT row_key, c.copy FROM mix_rank, range({copies}) AS c(copy)
                    WHERE source = ? AND c.copy * {n} + rank < {target}""",
                [spec.name],
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
            """SELECT row_key, 'not selected by mix' AS reason,
                      'hash rank ' || (rank + 1) || ' of ' || available
                      || ' pairs available to the mix; it takes the first ' || target AS detail
               FROM mix_rank JOIN mix_target USING (source) WHERE row_key NOT IN (SELECT row_key FROM selected)""",
        )
        duplicates = self._duplicates_of_sources_taken_none()
        self.warnings += [text for _, text in duplicates]
        said = {source for source, _ in duplicates}  # a source emptied as duplicates has its own, closer warning
        self.warnings += [text for source, text in emptied.items() if source not in said]
        empty = self._no_pair()
        if empty and self.strict:
            raise InputError(f"{empty} (--strict; without it the build is written)")
        self.warnings += [empty] if empty else []

    def _no_pair(self) -> str | None:
        """Why a build has no pair in its shards, or None when it has some."""
        if any(m["target"] for m in self.mix.values()):
            return None
        if any(m["available"] for m in self.mix.values()):
            return "the build has no pair in its shards: the mix takes none of the kept pairs (weights or counts 0)"
        return (
            "the build has no pair in its shards: every input row was rejected or removed (`curate stats` shows where)"
        )

    def _duplicates_of_sources_taken_none(self) -> list[tuple[str, str]]:
        """What the funnel does not show: duplicates removed in favour of a source the mix takes nothing from
        (weight or count 0; the survivor is the first-listed source's copy), so neither copy is in the shards: (the
        source, the warning)."""
        warnings = []
        taken_none = sorted(name for name, m in self.mix.items() if m["available"] and not m["target"])
        evidence = sorted((self.tmp / "dups").glob("*.parquet"))
        if taken_none and evidence:
            names = ", ".join(sql_literal(name) for name in taken_none)
            for source, survivor, n in self.ctx.rows(
                f"""SELECT source, survivor_source, count(*) FROM {read_parquet(evidence, "union_by_name = true")}
                    WHERE survivor_source IN ({names}) AND source NOT IN ({names}) GROUP BY ALL ORDER BY ALL"""
            ):
                text = (f"source '{source}': {n} pairs removed as duplicates of pairs of '{survivor}', which the mix "
                        "takes none of (its weight or count is 0): neither copy is in the shards; list "
                        f"'{source}' before '{survivor}' in the recipe to keep them")  # fmt: skip
                warnings.append((source, text))
        return warnings

    def _write(self) -> None:
        # Each selected copy's place in hash order, decided on narrow columns; the rows are then gathered.
        order = self.ctx.hash_order("p.pair_id", "s.copy::VARCHAR")
        placed = self.db.sql(
            f"""SELECT s.row_key FROM selected s JOIN pairs p USING (row_key)
                ORDER BY {order}, p.row_key, s.copy"""
        ).fetchnumpy()
        keys = np.asarray(placed["row_key"], np.int64)
        not_selected = self.db.sql(
            "SELECT row_key FROM pairs ANTI JOIN selected USING (row_key) ORDER BY row_key"
        ).fetchnumpy()
        # The image table holds the shards' images and those of the pairs removed as duplicates or as contaminated,
        # so the evidence can be looked at side by side.
        evidence = ", ".join(sql_literal(op) for op in EVIDENCE_IMAGE_STAGES)
        used = self.ctx.rows(
            f"""SELECT DISTINCT sha256 FROM (
                    SELECT unnest(p.images) AS sha256 FROM selected s JOIN pairs p USING (row_key)
                    UNION ALL
                    SELECT unnest(p.images) FROM removed r JOIN pairs p USING (source, source_row)
                    WHERE r.stage IN ({evidence}))"""
        )
        self.estimate = self._estimate_output([h for (h,) in used], len(not_selected["row_key"]))
        # what the shards hold, each thing once: the rows count upsampled copies, the images table evidence too
        ((self.pairs_in_shards, self.images_in_shards),) = self.ctx.rows(
            """SELECT count(DISTINCT p.pair_id), (SELECT count(DISTINCT h) FROM (
                      SELECT unnest(p.images) AS h FROM selected s JOIN pairs p USING (row_key)))
               FROM selected s JOIN pairs p USING (row_key)"""
        )
        assert self.work is not None
        swapped = self.db.sql("SELECT row_key FROM swapped ORDER BY row_key").fetchnumpy()["row_key"]
        swapped = np.asarray(swapped, np.int64)
        records = self.tmp / "work" / "shards"  # each finished shard, which a resumed build does not write again
        # What a shard's rows hold besides their keys: the work files (a source ingested again) and the swaps.
        work_files = [self._ingested(s) / "pairs.arrow" for s in self.recipe.sources]
        stats = [[p.stat().st_size, p.stat().st_mtime_ns] for p in work_files]
        identity = hashlib.md5(swapped.tobytes()).hexdigest() + json.dumps(stats)
        # Beside the shards, DuckDB writes the image table and the rejects (through a cursor, which can be
        # interrupted) and the removed pairs themselves are gathered (so "what did this match?" shows both sides).
        cursor = self.db.cursor()
        side = [
            functools.partial(self._write_removed, self.work, np.asarray(not_selected["row_key"], np.int64)),
            functools.partial(self._write_tables, dataclasses.replace(self.ctx, db=cursor), [h for (h,) in used]),
        ]
        folder, rows_per_shard = self.tmp / "shards", self.recipe.shards.rows_per_shard
        if self.engine.distributed:
            # Each shard is a task that opens the work files where it runs; the driver writes the side files.
            names = [s.name for s in self.recipe.sources]
            take = WorkTake(work_files, names, swapped)
            with self.engine.pool(self.ctx.workers) as pool:
                jobs = shard_jobs(take, keys, folder, rows_per_shard, records, identity)
                tasks = [pool.submit(call, job) for job in jobs]
                _run_jobs(side, 2, on_failure=cursor.interrupt)
                self.shards = [task.result() for task in tasks]
            return
        take = swapping(self.work.take, swapped) if len(swapped) else self.work.take
        shards = shard_jobs(take, keys, folder, rows_per_shard, records, identity)
        # One pool runs everything, the longest jobs first, so that no thread idles while another finishes; one
        # thread more than the cores, as the shards' direct writes wait for the disk.
        done = _run_jobs([*side, *shards], self.ctx.workers + 1, on_failure=cursor.interrupt)
        self.shards = done[len(side) :]

    def _estimate_output(self, used_images: list[str], removed: int) -> dict[str, int]:
        """Bytes the write stage is about to write (shards, images, removed pairs: uncompressed, so an upper bound
        for the compressed ones), checked against the free space before anything is written."""
        shards = removed_pairs = 0
        for spec in self.recipe.sources:
            pairs = self.ingested[spec.name].pairs
            per_pair = (self._ingested(spec) / "pairs.arrow").stat().st_size / pairs if pairs else 0
            shards += round(per_pair * self.mix[spec.name]["target"])
            removed_pairs += round(per_pair * (pairs - self.mix[spec.name]["selected"]))
        self.db.register("__used_images", pa.table({"sha256": pa.array(used_images, pa.string())}))
        (images,) = self.ctx.rows("SELECT coalesce(sum(octet_length(bytes)), 0) FROM images SEMI JOIN __used_images "
                                  "USING (sha256)")[0]  # fmt: skip
        self.db.unregister("__used_images")
        estimate = {"shards": shards, "images": int(images), "removed_pairs": removed_pairs}
        free = shutil.disk_usage(self.tmp).free
        if sum(estimate.values()) > free:
            raise InputError(
                f"{self.tmp}: the build would write about {_size(sum(estimate.values()))} (shards "
                f"{_size(shards)}, images {_size(int(images))}, removed pairs {_size(removed_pairs)}) but only "
                f"{_size(free)} is free; free some space or build elsewhere"
            )
        self.on_stage(f"write: about {_size(sum(estimate.values()))}")
        return estimate

    def _write_removed(self, work: WorkPairs, keys: np.ndarray) -> None:
        with ParquetBatchWriter(self.tmp / "rejects" / "removed_pairs.parquet", PAIR_SCHEMA) as writer:
            for batch in work.take(keys, REMOVED_BATCH):
                writer.write_table(pa.Table.from_batches([batch]))

    def _write_tables(self, ctx: BuildContext, used_images: list[str]) -> None:
        """The selected pairs' images (`used_images`: their hashes) and every reject, through `ctx.db` (a cursor
        of the build's connection, which does not see its registered work files; closed when done)."""
        ingest_rejects = [
            f"SELECT {sql_literal(s.name)} AS source, source_row, NULL AS pair_id, stage, reason, detail "
            f"FROM {read_parquet(self._ingested(s) / 'rejects.parquet')}"
            for s in self.recipe.sources
        ]
        try:
            # `images` is in sha256 order, which a plain scan keeps (a join or a sort would hold all the bytes);
            # the selected hashes are looked up in a sorted array (64 bytes each).
            wanted = np.sort(np.array(used_images, dtype="S64"))
            with ParquetBatchWriter(self.tmp / "images" / "images.parquet", IMAGE_SCHEMA, IMAGE_ROW_GROUP) as out:
                for batch in ctx.db.sql("SELECT * FROM images").to_arrow_reader(batch_size=IMAGE_ROW_GROUP * 16):
                    hashes = np.array(batch.column("sha256").to_pylist(), dtype="S64")
                    found = np.searchsorted(wanted, hashes)
                    keep = found < len(wanted)
                    keep[keep] = wanted[found[keep]] == hashes[keep]
                    out.write_table(pa.Table.from_batches([batch.filter(pa.array(keep))]))
            ctx.copy(
                f"SELECT * FROM ({' UNION ALL '.join([*ingest_rejects, 'SELECT * FROM removed'])}) "
                f"ORDER BY source, stage, reason, {ROW_ORDER}, source_row, pair_id",
                self.tmp / "rejects" / "rejects.parquet",
            )
            if self.recipe.benchmarks:  # the items decontamination could not match against, each named
                benchmark_rejects = " UNION ALL ".join(
                    f"SELECT {sql_literal(name)} AS benchmark, source_row, reason, detail "
                    f"FROM {read_parquet(folder / 'rejects.parquet')}"
                    for name, folder in self.ctx.benchmarks.items()
                )
                ctx.copy(f"SELECT * FROM ({benchmark_rejects}) ORDER BY benchmark, {ROW_ORDER}, source_row, reason",
                         self.tmp / build_dir.BENCHMARK_REJECTS)  # fmt: skip
        finally:
            ctx.db.close()

    def _length_stats(self) -> list[tuple[Any, ...]]:
        """The data card's length statistics of the pairs in the shards (each upsampled copy counts), from the
        lengths the ops measured (`text_stats`) rather than by reading the shards back."""
        return self.ctx.rows(
            f"""SELECT p.source, string_agg(DISTINCT p.license, ', ' ORDER BY p.license), count(*),
                       round(avg(t.chosen_chars), 1), round(avg(t.rejected_chars), 1),
                       round(100 * avg((t.chosen_chars > t.rejected_chars)::INT), 1)
                FROM selected s JOIN pairs p USING (row_key) JOIN {self.ctx.text_stats()} t USING (row_key)
                GROUP BY p.source ORDER BY p.source"""
        )

    def _manifest(self, inputs: dict[str, Any], seconds: float) -> dict[str, Any]:
        # Kept pairs swapped or flagged, by source, stage and reason (a pair a later stage removed is not counted)
        marks: dict[str, dict[str, dict[str, dict[str, int]]]] = {"swapped": {}, "flagged": {}}
        for kind, by_source in marks.items():
            for source, stage, reason, n in self.ctx.kept_marks(kind):
                by_source.setdefault(source, {}).setdefault(stage, {})[reason] = n
        per_source = {}
        for spec in self.recipe.sources:
            summary = self.ingested[spec.name]
            removed = {stage: log.removed[spec.name] for stage, log in self.stages.items() if spec.name in log.removed}
            removed_total = sum(sum(r.values()) for r in removed.values())
            mix = self.mix[spec.name]
            entry = {
                "adapter": spec.adapter,
                "rows_read": summary.rows_read,
                "rows_rejected_at_ingest": summary.rows_rejected,
                "rejects_at_ingest": dict(sorted(summary.rejects_by_reason.items())),
                "pairs_ingested": summary.pairs,
                "removed": {stage: dict(sorted(r.items())) for stage, r in removed.items()},
                # Kept pairs whose chosen and rejected the shards exchange (a label fix), by stage and reason.
                "swapped": marks["swapped"].get(spec.name, {}),
                # Kept pairs an op listed for a person to look at (in its flags/ file), by stage and reason.
                "flagged": marks["flagged"].get(spec.name, {}),
                "kept": summary.pairs - removed_total,
                "mix": mix,
                "in_shards": mix["selected"] + mix["upsampled_copies"],
            }
            # The invariant: rows read = paired + rejected; pairs ingested = kept + removed by reason.
            entry["balanced"] = summary.balanced and entry["kept"] == mix["selected"]
            per_source[spec.name] = entry
        images = self.ctx.rows(f"SELECT count(*) FROM {read_parquet(self.tmp / 'images' / 'images.parquet')}")
        benchmarks = {
            spec.name: {
                "adapter": spec.adapter,
                "rows_read": (summary := self.benchmarks[spec.name]).rows_read,
                "rows_rejected_at_ingest": summary.rows_rejected,
                "rejects_at_ingest": dict(sorted(summary.rejects_by_reason.items())),
                "items": summary.pairs,
                "balanced": summary.balanced,
            }
            for spec in self.recipe.benchmarks
        }
        return {
            "recipe": {"name": self.recipe.name, "sha256": self.recipe.sha256, "text": self.recipe.text},
            "benchmarks": benchmarks,
            "output_estimate_bytes": self.estimate,
            "seed": self.recipe.seed,
            "schema_version": int(PAIR_SCHEMA.metadata[b"schema_version"]),
            "inputs": inputs,
            # Files ops read besides the sources (a reviews file, a reward model's scores), by sha256.
            "op_inputs": {
                name: [{"path": path, "sha256": sha256_file(Path(path))} for path in files_of(params)]
                for name in OPS
                if (params := self.recipe.op(name)) is not None and file_fields(params)
            },
            "versions": {p: importlib.metadata.version(p) for p in ("rm-workbench", "duckdb", "pyarrow", "pillow")},
            "sources": per_source,
            "shards": self.shards,
            "images": images[0][0],  # stored: the shards' and the removed evidence's
            "images_in_shards": self.images_in_shards,
            "rows_in_shards": sum(s["rows"] for s in self.shards),  # upsampled copies counted
            "pairs_in_shards": self.pairs_in_shards,  # distinct
            "timings": {"total_seconds": seconds, **{k: v.seconds for k, v in self.stages.items()}},
            "signals_reused": self.reused,
            "warnings": self.warnings,
            "engine": self.engine.describe(),
        }


def _adapter(spec: SourceSpec) -> Adapter:
    return get_adapter(spec.adapter)(spec.options, ReadOptions(spec.config, spec.split, spec.revision, spec.data_dir))


def ingest_source(
    spec: SourceSpec,
    target: Path,
    outputs: Outputs,
    max_pixels: int,
    workers: int,
    pool: Pool = worker_pool,
    parts: Path | None = None,
    per_file: bool = False,
    on_row: Callable[[IngestSummary], None] | None = None,
) -> IngestSummary:
    """Ingest one source of a recipe into `target` (a task of its own on a cluster: it takes plain arguments).
    A source or images root at an object store's URI is first copied beside `target` (`TARGET.input/`). `on_row`
    is called after each row read row by row (in this process)."""
    location, images_root = spec.path, spec.images_root
    staged = target.with_name(target.name + ".input")
    if is_uri(location):
        location = str(storage.download(location, staged / "source"))
    if is_uri(images_root):
        images_root = str(storage.download(str(images_root), staged / "images"))
    root = ImagesRoot(Path(images_root) if images_root else None)
    summary = ingest(
        _adapter(spec), location, target, root, max_pixels=max_pixels, workers=workers, outputs=outputs,
        replace=True, pool=pool, parts=parts, per_file=per_file, on_row=on_row,
    )  # fmt: skip
    shutil.rmtree(staged, ignore_errors=True)
    return summary


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def build(recipe: Recipe, out: Path | str, *, stage: Path | None = None, **kwargs: Any) -> dict[str, Any]:
    """Build `recipe` into the new folder `out`, or into an object store's URI: then the build is written in the
    local folder `stage` (by default one named after the URI in the system's temporary folder, where --resume
    finds it) and uploaded when complete."""
    if not is_uri(out):
        if stage is not None:
            raise InputError("--stage is for an object store's --out (s3://..., gs://...)")
        above = next((p for p in Path(out).absolute().parents if p.exists() or p.is_symlink()), None)
        if above is not None and not above.is_dir():
            raise InputError(f"{out}: cannot be made, {above} is not a folder; choose another --out")
        for spec in (*recipe.sources, *recipe.benchmarks):  # before anything is written there, its lock too
            if not is_uri(spec.path) and inside_input(Path(out), spec.path):
                raise InputError(f"{out}: the build folder is inside {spec.name!r}'s input folder {spec.path}, "
                                 "whose files a later build would take for rows; write it outside")  # fmt: skip
        if (inside := build_dir.enclosing_build(Path(out).absolute().parent)) is not None:
            raise InputError(f"{out}: inside the build {inside}, which holds only what its build wrote; write it "
                             "outside")  # fmt: skip
        with only_writer(build_lock(Path(out)), f"{out}: {BUSY}"):
            return _build_local(recipe, Path(out), **kwargs)
    if kwargs.get("replace"):
        raise InputError("--replace is for a local --out (an object store's build is written as a new one)")
    uri = str(out)
    storage.check_destination(uri)
    local = staging_folder(uri, stage)
    # staging, building and uploading: one build of the URI at a time
    with only_writer(build_lock(local), f"{uri}: {BUSY}"):
        finished = read_json_state(local / "manifest.json") if local.is_dir() else None
        same_recipe = isinstance(finished, dict) and finished.get("recipe", {}).get("sha256") == recipe.sha256
        if kwargs.get("resume") and same_recipe:
            manifest = finished  # built before, its upload interrupted: uploaded now
        else:
            shutil.rmtree(local, ignore_errors=True)
            manifest = _build_local(recipe, local, **kwargs)
        storage.upload(local, uri)
        shutil.rmtree(local)
    return manifest


def staging_folder(uri: str, stage: Path | None = None) -> Path:
    """Where a build for the URI `uri` is written before its upload: a folder of its own for each URI, in `stage`
    as in the default (two URIs ending in the same name never share one, nor its lock)."""
    name = PurePosixPath(storage.open_uri(uri)[1]).name or "build"
    digest = hashlib.md5(uri.encode()).hexdigest()[:12]
    if stage is not None:
        return stage.absolute() / f"{name}-{digest}"
    return (Path(tempfile.gettempdir()) / f"curate-stage-{digest}").absolute() / name


BUSY = "another build is writing it now; wait for it or choose another --out"


def build_lock(out: Path) -> Path:
    """A hidden lock file beside a build folder: held while a build writes it."""
    return out.absolute().with_name(f".{out.absolute().name}.lock")


def _build_local(recipe: Recipe, out: Path, **kwargs: Any) -> dict[str, Any]:
    try:
        return Builder(recipe, out, **kwargs).run()
    except OSError as exc:
        if not exc.filename:  # pyarrow's write errors name no file
            exc.filename = str(out.with_name(out.name + ".partial"))
        raise
