"""`trainer eval`: benchmark scores of one model or an ensemble, beside a length-only judge and published results.

Each benchmark is read from its native format by its benchmark adapter (`curation/sources/`), into the
canonical pairs; every pair is scored by every model and the rewards are averaged (the paper's ensemble rule).
Every item is accounted for: items whose image is not found (read with a stand-in image, so they keep their group
and prompt id), rows rejected at ingest and items the model cannot score (e.g. too long) are counted by reason, and
every score is given over the scored items and over all items (the unscored counted as wrong); the report format is
in `trainer.reports`. A benchmark none of whose items can be scored is an error, never a score of 0.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import math
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from curation.errors import InputError, RowError
from curation.images import ImagesRoot
from curation.ingest import IngestSummary, ingest
from curation.readers import hub_commit, is_hub_id
from curation.sources import get_adapter
from curation.sources.base import ReadOptions
from curation.storage import is_uri
from trainer.benchmarks import (
    SCORERS,
    Item,
    XstestWeights,
    length_judge,
    not_this_benchmark,
    outside_scores,
    rewardbench,
)
from trainer.data import collate, featurize
from trainer.model import RewardModel
from trainer.reports import VERSION


@dataclass(frozen=True)
class BenchSpec:
    name: str  # the benchmark adapter key
    location: str  # a local file/folder or a Hub id
    images_root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # adapter options (e.g. VL-RewardBench grouping)

    @classmethod
    def parse(cls, text: str, images: dict[str, str]) -> BenchSpec:
        """`NAME` (its Hub id) or `NAME=PATH`."""
        name, _, location = text.partition("=")
        if name not in SCORERS:
            close = difflib.get_close_matches(name, list(SCORERS), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"--bench {text!r}: unknown benchmark {name!r}; {hint}known: {', '.join(SCORERS)}")
        adapter = get_adapter(name)
        spec = cls(name, location or str(adapter.info.hub_id), images.get(name))
        # a missing file found now, not after an ablation has trained every variant
        if location and not Path(location).exists() and not is_hub_id(location):
            raise ValueError(f"--bench {text!r}: {location}: no such file or folder")
        if spec.images_root and not is_uri(spec.images_root) and not Path(spec.images_root).exists():
            raise ValueError(f"--images-root {name}={spec.images_root}: no such file or folder")
        return spec


IMAGE_NOT_FOUND = "image not found"  # the ingest's reason, kept for the items read with the stand-in
# Two equal answers to one prompt cannot be told apart: which reward is higher is rounding, never a judgement.
IDENTICAL_ANSWERS = "identical answers"


def _stand_in_image() -> bytes:
    """A 1x1 PNG marked as standing in for a benchmark image that was not found."""
    info = PngInfo()
    info.add_text("rm-workbench", "stand-in for a benchmark image that was not found")
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


STAND_IN = _stand_in_image()
STAND_IN_SHA256 = hashlib.sha256(STAND_IN).hexdigest()


class StandInImages(ImagesRoot):
    """An images root that serves `STAND_IN` for a file it cannot find: the row still becomes its pairs, with their
    group and prompt id, so an item whose image is missing counts in its group, as not scored."""

    def read(self, rel: str, by_basename: bool = False) -> bytes:
        try:
            return super().read(rel, by_basename)
        except RowError as exc:
            if exc.reason != IMAGE_NOT_FOUND:
                raise
            return STAND_IN

    def frames(self, rel_dir: str) -> list[str]:
        try:
            return super().frames(rel_dir)
        except RowError as exc:
            if exc.reason != IMAGE_NOT_FOUND:
                raise
            return [f"{rel_dir}/{IMAGE_NOT_FOUND}"]  # one frame, read as the stand-in


@dataclass
class BenchPairs:
    rows: list[dict[str, Any]]
    images: dict[str, bytes]
    rows_read: int = 0
    rejected_at_ingest: Counter[str] = field(default_factory=Counter)  # rows by reason

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejected_at_ingest.values())


def _ingest(spec: BenchSpec, work: Path, commit: str | None = None) -> tuple[Path, IngestSummary]:
    """The benchmark read into `work` (a Hub id at `commit`, where one was resolved)."""
    adapter = get_adapter(spec.name)(spec.options, ReadOptions(revision=commit))
    out = work / spec.name
    root = StandInImages(Path(spec.images_root) if spec.images_root else None)
    # In this process (one worker, texts as published: no columnar path), so the stand-in root is the one used.
    return out, ingest(adapter, spec.location, out, root, canonical=False)


def _scorable_rows(out: Path) -> int:
    """Pairs read with all their images (the ones a model may score)."""
    images = pq.read_table(out / "pairs.parquet", columns=["images"]).column("images").to_pylist()
    return sum(STAND_IN_SHA256 not in hashes for hashes in images)


def _load(out: Path, summary: IngestSummary) -> BenchPairs:
    images = {r["sha256"]: r["bytes"] for r in pq.read_table(out / "images.parquet").to_pylist()}
    rows = pq.read_table(out / "pairs.parquet").to_pylist()
    return BenchPairs(rows, images, summary.rows_read, Counter(summary.rejects_by_reason))


def read_benchmark(spec: BenchSpec, work: Path) -> BenchPairs:
    return _load(*_ingest(spec, work))


NON_FINITE_REWARD = "non-finite reward"


@torch.no_grad()
def model_rewards(
    model: RewardModel,
    pairs: BenchPairs,
    max_length: int,
    micro_batch: int,
    on_pair: Callable[[], None] | None = None,
) -> tuple[list[tuple[float, float] | None], list[str | None]]:
    """(chosen, rejected) rewards per pair, None where the model cannot score it; and per pair that reason."""
    model.eval()
    device = next(model.parameters()).device
    reasons: list[str | None] = [None] * len(pairs.rows)
    out: list[tuple[float, float] | None] = [None] * len(pairs.rows)
    pending: list[tuple[int, Any]] = []

    def flush() -> None:
        if not pending:
            return
        backbone = model.backbone
        batch = collate([f for _, f in pending], backbone.pad_token_id, layout=backbone.layout("shared_prefix"))
        batch = batch.to(device)
        rewards = model(**batch.model_inputs()).float().tolist()
        for k, (index, _) in enumerate(pending):
            chosen, rejected = rewards[k], rewards[batch.pairs + k]
            if math.isfinite(chosen) and math.isfinite(rejected):
                out[index] = (chosen, rejected)
            else:  # a diverged model: no score, rather than a NaN compared as if it were one
                reasons[index] = NON_FINITE_REWARD
        pending.clear()

    # Micro-batches of pairs of like size pad less: by image count, then by text length (the results keep the
    # pairs' order).
    order = sorted(range(len(pairs.rows)), key=lambda k: (size_key(pairs.rows[k]), k))
    for index in order:
        row = pairs.rows[index]
        if on_pair is not None:
            on_pair()
        feature = featurize(model.backbone, row, [pairs.images[h] for h in row["images"]], max_length)
        if isinstance(feature, str):
            reasons[index] = feature
            continue
        pending.append((index, feature))
        if len(pending) == micro_batch:
            flush()
    flush()
    return out, reasons


def size_key(row: dict[str, Any]) -> tuple[int, int]:
    """A pair's size before it is tokenized: its images, then the characters of its prompt's messages and answers."""
    prompt = sum(len(message.get("content") or "") for message in row["prompt"] or [])
    return len(row["images"]), prompt + len(row["chosen"] or "") + len(row["rejected"] or "")


def item_key(benchmark: str, row: dict[str, Any]) -> str | None:
    if benchmark == "mm_rlhf_rewardbench":  # Acc+ groups the pairs of one prompt id
        return str(json.loads(row["meta"]).get("id"))
    return None


def evaluate(
    models: list[RewardModel],
    specs: list[BenchSpec],
    *,
    max_length: int = 4096,
    micro_batch: int = 4,
    xstest: XstestWeights = "official",
    work: Path | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """The report (format in `trainer.reports`); `InputError` for a benchmark none of whose items can be scored.
    `on_progress(benchmark, pairs done, pairs to score)` is called as pairs are scored (for a progress bar)."""
    names = [s.name for s in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"--bench: {', '.join(twice)} given twice; evaluate one file per benchmark at a time")
    report: dict[str, Any] = {
        "version": VERSION,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "models": [m.source for m in models],
        "settings": {"max_length": max_length, "micro_batch": micro_batch},
        "benchmarks": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        # Every benchmark is read before any is scored: one that cannot be read fails before the models run.
        # A Hub id is read at the commit its default branch names now, which the report records.
        commits = {spec.name: hub_commit(spec.location, None) for spec in specs if is_hub_id(spec.location)}
        read = [(spec, *_ingest(spec, work or Path(tmp), commits.get(spec.name))) for spec in specs]
        for spec, out, summary in read:
            foreign = not_this_benchmark(spec.name, pq.read_table(out / "pairs.parquet", columns=["meta", "subset"])
                                         .to_pylist())  # fmt: skip
            if foreign:
                raise InputError(f"{spec.name}: {spec.location} reads as another benchmark's file: {foreign}; "
                                 "no report written")  # fmt: skip
            if not _scorable_rows(out):
                missing = Counter({IMAGE_NOT_FOUND: summary.pairs} if summary.pairs else {})
                rejected = Counter(summary.rejects_by_reason)
                raise InputError(_nothing_scored(spec.name, summary.rows_read, rejected, missing, spec.images_root,
                                                 summary.first_reject))  # fmt: skip
        for spec, out, summary in read:
            pairs = _load(out, summary)
            options = {**spec.options, **({"xstest_weights": xstest} if spec.name == "rewardbench" else {})}
            scorer = partial(rewardbench, xstest=xstest) if spec.name == "rewardbench" else SCORERS[spec.name]
            entry = {"location": spec.location, "commit": commits.get(spec.name), "images_root": spec.images_root,
                     "options": options}  # fmt: skip
            report["benchmarks"][spec.name] = entry | score_benchmark(
                models, spec.name, pairs, scorer, max_length, micro_batch, on_progress, spec.images_root
            )
    return report


def score_benchmark(
    models: list[RewardModel],
    name: str,
    pairs: BenchPairs,
    scorer: Callable[[list[Item], int], dict[str, float]],
    max_length: int,
    micro_batch: int,
    on_progress: Callable[[str, int, int], None] | None = None,
    images_root: str | None = None,
) -> dict[str, Any]:
    """One benchmark's counts, scores (over the scored items and over all) and items (`images_root`: the one given,
    for the error's hint)."""
    reasons = [IMAGE_NOT_FOUND if STAND_IN_SHA256 in r["images"] else IDENTICAL_ANSWERS
               if r["chosen"] == r["rejected"] else outside_scores(name, r["subset"]) for r in pairs.rows]  # fmt: skip
    found = [index for index, reason in enumerate(reasons) if reason is None]
    total, done = len(found) * len(models), [0]

    def tick() -> None:
        done[0] += 1
        if on_progress is not None:
            on_progress(name, done[0], total)

    readable = BenchPairs([pairs.rows[index] for index in found], pairs.images)
    per_model = [model_rewards(model, readable, max_length, micro_batch, tick) for model in models]
    means: list[list[float] | None] = [None] * len(pairs.rows)
    for k, index in enumerate(found):
        # An ensemble scores an item only if every member does: the average must be over the same models.
        reasons[index] = next((why[k] for _, why in per_model if why[k] is not None), None)
        if reasons[index] is None:
            means[index] = [sum(x) / len(x) for x in zip(*(rewards[k] for rewards, _ in per_model), strict=True)]
    items = [Item(row["pair_id"], row["subset"], item_key(name, row), mean[0] if mean else None,
                  mean[1] if mean else None) for row, mean in zip(pairs.rows, means, strict=True)]  # fmt: skip
    unscorable = Counter(r for r in reasons if r is not None)
    scored = [i for i, r in zip(items, reasons, strict=True) if r is None]
    if not scored:
        raise InputError(_nothing_scored(name, pairs.rows_read, pairs.rejected_at_ingest, unscorable, images_root))
    lengths = length_judge(items, [len(r["chosen"]) for r in pairs.rows], [len(r["rejected"]) for r in pairs.rows])
    groups: dict[str, dict[str, int]] = {}
    for item, reason in zip(items, reasons, strict=True):
        counts = groups.setdefault(item.group or "other", {"items_total": 0, "items_scored": 0})
        counts["items_total"] += 1
        counts["items_scored"] += reason is None
    unread = pairs.rows_rejected
    return {
        "rows_read": pairs.rows_read,
        "items_total": len(items) + unread,  # a rejected row is one item: every benchmark row is one pair
        "items_scored": len(scored),
        # items the same as an earlier one (prompt, images and answers): each counted, as the benchmark's rows are
        "items_repeated": len(items) - len({i.pair_id for i in items}),
        "not_scored": dict(sorted((pairs.rejected_at_ingest + unscorable).items())),
        "groups": dict(sorted(groups.items())),  # the rows rejected at ingest have no known group
        "scores_over_scored": scorer(scored, 0),
        "scores_over_all": scorer(items, unread),
        # The judge beside the model on the same terms: over the items the model scored, and over all with the
        # items the model did not score counted as wrong for the judge too.
        "length_judge": {
            "scores_over_scored": scorer([j for j, r in zip(lengths, reasons, strict=True) if r is None], 0),
            "scores_over_all": scorer(
                [j if r is None else replace(j, chosen=None) for j, r in zip(lengths, reasons, strict=True)], unread
            ),
        },
        "items": [
            {
                "pair_id": i.pair_id,
                "source_row": row["source_row"],
                "group": i.group,
                "key": i.key,
                "not_scored": reason,
                "reward_chosen": i.chosen,
                "reward_rejected": i.rejected,
                "correct": i.correct,
                "tie": i.tie,
                "length_judge_correct": j.correct,
            }
            for i, j, row, reason in zip(items, lengths, pairs.rows, reasons, strict=True)
        ],
    }


def _nothing_scored(
    name: str,
    rows_read: int,
    rejected: Counter[str],
    unscorable: Counter[str],
    images_root: str | None,
    first_reject: str | None = None,
) -> str:
    """The one-line error of a benchmark none of whose items can be scored: what was read, the top reasons and the
    first rejected row (it names its row and field: what a file of another format shows first)."""
    counts = [f"{rows_read} rows read"]
    if rejected:
        counts.append(f"{sum(rejected.values())} rejected at ingest")
    if unscorable:
        counts.append(f"{sum(unscorable.values())} not scorable")
    reasons = (rejected + unscorable).most_common(3)
    why = "; " + ", ".join(f"{reason}: {n}" for reason, n in reasons) if reasons else ""
    if rejected and first_reject:
        why += f"; the first rejected: {first_reject}"
    hint = ""
    if IMAGE_NOT_FOUND in rejected + unscorable:
        hint = (f"; is --images-root {name}={images_root} right?" if images_root else
                f"; give --images-root {name}=DIR, the folder its images are in")  # fmt: skip
    return f"{name}: no item can be scored ({', '.join(counts)}{why}){hint}; no report written"
