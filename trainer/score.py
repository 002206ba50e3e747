"""`trainer score`: a reward model's rewards for every pair of a build, as a signal table the `rm_margin` op reads.

Output: `BUILD/signals/rm_scores-<model digest>.parquet` with `pair_id, reward_chosen, reward_rejected, margin`
and `not_scored` (one row per distinct pair: the shards and the removed pairs, so a rebuild finds scores for pairs
that an earlier stage or the mix left out). Work is done in parts of `part_pairs` pairs, each written under a temporary
name and renamed, so an interrupted run resumes where it stopped; the parts are joined (in pair_id order) and
the partial folder removed at the end. Pairs the model cannot score (video, too long) get null rewards and the
reason in `not_scored`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.build_dir import BuildDir, ImageTable
from curation.errors import InputError
from curation.io import only_writer, read_json_state, readable_parquet, write_json
from trainer.evaluate import BenchPairs, model_rewards
from trainer.model import RewardModel

SCORES_SCHEMA = pa.schema(
    [
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("reward_chosen", pa.float64()),
        pa.field("reward_rejected", pa.float64()),
        pa.field("margin", pa.float64()),
    ]
)
# What `trainer score` writes: the scores and, for a pair without them, why (`trainer audit` adds its own columns).
SCORE_FILE_SCHEMA = pa.schema([*SCORES_SCHEMA, pa.field("not_scored", pa.string())])
SCORE_PLAN = "rm_workbench.score_plan"  # a scores file's metadata: the plan it was scored under, so a rerun keeps it
COLUMNS = ["pair_id", "prompt_id", "modality", "prompt", "chosen", "rejected", "images", "margin"]


def model_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    with open(folder / "model.safetensors", "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def build_pairs(build: BuildDir) -> pa.Table:
    """Distinct pairs of the shards and of the removed pairs, in pair_id order."""
    tables = [build.pairs(COLUMNS, check_text=True)]
    build.check_shards_unchanged()  # scores are keyed by the content ids: of text edited since, they would lie
    removed = build.removed_pairs(COLUMNS, required=True)  # every pair scored, or the command says which file is wrong
    if removed is not None:
        tables.append(removed.cast(tables[0].schema))
    table = pa.concat_tables(tables).sort_by("pair_id")
    ids = table.column("pair_id").to_pylist()
    first = [k for k, pid in enumerate(ids) if k == 0 or pid != ids[k - 1]]
    return table.take(first)


def score_build(
    model: RewardModel,
    model_folder: Path,
    build: Path,
    *,
    part_pairs: int = 2048,
    max_length: int = 4096,
    micro_batch: int = 8,
    on_progress: Callable[[int, int], None] | None = None,
    on_parts: Callable[[Path, int, int], None] | None = None,
) -> Path:
    """Score every distinct pair of `build` into its signals folder; `on_progress(pairs done, pairs)` is called as
    pairs are scored (and for the parts an interrupted run finished), `on_parts(parts folder, pairs in the parts an
    interrupted run finished, pairs)` once, before scoring."""
    opened = BuildDir.open(build)
    signals = opened.path / "signals"
    if signals.is_symlink() or (signals.exists() and not signals.resolve().is_relative_to(opened.path.resolve())):
        raise InputError(f"{signals}: a link; scores are written into the build's own signals folder only")
    out = scores_file(opened, model_folder)
    busy = f"{out}: another `trainer score` of this model is writing it now; wait for it"
    with only_writer(signals / f".{out.stem}.lock", busy):
        return _score_into(out, opened, model, part_pairs, max_length, micro_batch, on_progress, on_parts)


def scores_file(build: BuildDir, model_folder: Path) -> Path:
    """Where `trainer score` writes a model's scores of a build (its finished parts beside it, in `NAME.partial/`)."""
    return build.path / "signals" / f"rm_scores-{model_digest(model_folder)}.parquet"


def kept_scores(parts: Path, pairs: int) -> str:
    """What an interrupted `trainer score` kept in its parts folder: the pairs of its finished parts, of all."""
    done = _pairs_in_parts(parts)
    if not done:
        shutil.rmtree(parts, ignore_errors=True)  # its plan alone: nothing left in the build
        return "no part of the scores was finished; nothing kept"
    return f"{done} of {pairs} pairs' scores are kept in {parts}: the same command continues from them"


def _pairs_in_parts(parts: Path) -> int:
    """The pairs of the whole parts (a part cut short, emptied or damaged in place is scored again)."""
    whole = [_whole(path) for path in sorted(parts.glob("part-*.parquet"))]
    return sum(table.num_rows for table in whole if table is not None)


def _whole(path: Path, ids: list[str] | None = None) -> pa.Table | None:
    """The scores in `path` if the file is whole: it reads to the end with every page's checksum verified (scores
    are written with them, so a block damaged in place is found without a digest kept elsewhere) and holds
    exactly the pairs `ids`, in order (None: any pairs). None for a file absent, cut short, damaged or of other
    pairs."""
    try:
        table = pq.read_table(path, page_checksum_verification=True)
    except (OSError, ValueError, pa.ArrowException):
        return None
    if ids is not None and table.column("pair_id").to_pylist() != ids:
        return None
    return table


def _score_into(
    out: Path,
    opened: BuildDir,
    model: RewardModel,
    part_pairs: int,
    max_length: int,
    micro_batch: int,
    on_progress: Callable[[int, int], None] | None,
    on_parts: Callable[[Path, int, int], None] | None,
) -> Path:
    parts_dir = out.with_name(out.name + ".partial")
    pairs = build_pairs(opened)
    # Parts are reused only for the same pairs cut the same way (a rebuilt build or another --part-pairs restarts).
    ids = pairs.column("pair_id").to_pylist()
    plan = {"part_pairs": part_pairs, "max_length": max_length, "columns": SCORE_FILE_SCHEMA.names,
            "pairs_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()}  # fmt: skip
    whole = {**plan, "micro_batch": micro_batch}  # the finished file's plan: micro-batches change float rounding
    # Scored before, by this model, of these pairs, the same way, and whole: kept.
    if _plan_of(out) == whole and _whole(out, ids) is not None:
        shutil.rmtree(parts_dir, ignore_errors=True)  # an interrupted run's parts of another plan
        if on_parts is not None:
            on_parts(out, pairs.num_rows, pairs.num_rows)
        return out
    images = opened.images()  # a missing or damaged image table is an error before anything is written
    plan_path = parts_dir / "plan.json"
    if parts_dir.exists() and read_json_state(plan_path) != plan:  # another plan, or its record cut short: start over
        shutil.rmtree(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    write_json(plan_path, plan)
    if on_parts is not None:
        on_parts(parts_dir, _pairs_in_parts(parts_dir), pairs.num_rows)
    total = -(-pairs.num_rows // part_pairs)
    progress = on_progress or (lambda done, of: None)
    parts = []
    for part in range(total):
        path = parts_dir / f"part-{part:05d}.parquet"
        start = part * part_pairs
        rows = pairs.slice(start, part_pairs)
        table = _whole(path, rows.column("pair_id").to_pylist())  # whole parts are kept across interruptions
        if table is None:
            counting = _counting(start + 1, pairs.num_rows, progress)
            table = _write_part(model, rows.to_pylist(), images, path, max_length, micro_batch, counting)
        parts.append(table)
        progress(min(start + part_pairs, pairs.num_rows), pairs.num_rows)
    joined = pa.concat_tables(parts) if parts else SCORE_FILE_SCHEMA.empty_table()
    if joined.num_rows and joined.column("not_scored").null_count == 0:  # no pair has a score: no scores file
        shutil.rmtree(parts_dir)
        reasons = Counter(joined.column("not_scored").to_pylist()).most_common()
        raise InputError(f"none of the {joined.num_rows} pairs could be scored ("
                         f"{', '.join(f'{reason}: {n}' for reason, n in reasons)}); no scores written")  # fmt: skip
    tmp = out.with_name(out.name + ".tmp")
    metadata = {SCORE_PLAN: json.dumps(whole)}
    pq.write_table(joined.cast(SCORE_FILE_SCHEMA).replace_schema_metadata(metadata), tmp, write_page_checksum=True)
    tmp.replace(out)
    shutil.rmtree(parts_dir)
    return out


def _plan_of(scores: Path) -> Any:
    """The plan a scores file was written under (its metadata), or None (absent, damaged, or written otherwise)."""
    if not readable_parquet(scores):
        return None
    stored = (pq.read_schema(scores).metadata or {}).get(SCORE_PLAN.encode())
    try:
        return json.loads(stored) if stored is not None else None
    except ValueError:
        return None


def _counting(first: int, total: int, progress: Callable[[int, int], None]) -> Callable[[], None]:
    """A callback that reports `first`, then `first + 1`, ... of `total` done, one call each."""
    ticks = itertools.count(first)
    return lambda: progress(next(ticks), total)


def _write_part(
    model: RewardModel,
    rows: list[dict],
    images: ImageTable,
    path: Path,
    max_length: int,
    micro_batch: int,
    on_pair: Callable[[], None],
) -> pa.Table:
    # Only kept images are in the build's image table: a removed pair whose image went with it gets no score.
    found = {h: data for h in {h for r in rows for h in r["images"]} if (data := images.get(h)) is not None}
    scoreable = [k for k, r in enumerate(rows) if all(h in found for h in r["images"])]
    scoring = BenchPairs([rows[k] for k in scoreable], found)
    rewards, reasons = model_rewards(model, scoring, max_length, micro_batch, on_pair)
    by_row: dict[int, tuple[float, float] | None] = dict(zip(scoreable, rewards, strict=True))
    why = dict(zip(scoreable, reasons, strict=True))
    scored = [by_row.get(k) for k in range(len(rows))]
    not_scored = [None if s is not None else why.get(k) or "image not in the build" for k, s in enumerate(scored)]
    table = pa.table(
        {
            "pair_id": [r["pair_id"] for r in rows],
            "reward_chosen": [None if s is None else s[0] for s in scored],
            "reward_rejected": [None if s is None else s[1] for s in scored],
            "margin": [None if s is None else s[0] - s[1] for s in scored],
            "not_scored": not_scored,
        },
        schema=SCORE_FILE_SCHEMA,
    )
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, write_page_checksum=True)
    tmp.replace(path)
    return table
