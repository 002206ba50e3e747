"""`trainer eval`: benchmark scores of one model or an ensemble, beside a length-only judge and published results.

Each benchmark is read from its native format by its benchmark adapter (`curation/sources/`), into the
canonical pairs; every pair is scored by every model and the rewards are averaged (the paper's ensemble rule).
Items a model cannot score stay in the denominators as wrong and are counted as skipped.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch

from curation.images import ImagesRoot
from curation.ingest import ingest
from curation.sources import get_adapter
from trainer.benchmarks import SCORERS, Item, XstestWeights, length_judge, rewardbench
from trainer.data import collate, featurize
from trainer.model import RewardModel


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
            raise ValueError(f"--bench {text!r}: unknown benchmark {name!r} (known: {', '.join(SCORERS)})")
        adapter = get_adapter(name)
        return cls(name, location or str(adapter.info.hub_id), images.get(name))


@dataclass
class BenchPairs:
    rows: list[dict[str, Any]]
    images: dict[str, bytes]
    rejected_at_ingest: int


def read_benchmark(spec: BenchSpec, work: Path) -> BenchPairs:
    adapter = get_adapter(spec.name)(spec.options)
    out = work / spec.name
    root = ImagesRoot(Path(spec.images_root) if spec.images_root else None)
    summary = ingest(adapter, spec.location, out, root, canonical=False)  # scored on the texts as published
    images = {r["sha256"]: r["bytes"] for r in pq.read_table(out / "images.parquet").to_pylist()}
    return BenchPairs(pq.read_table(out / "pairs.parquet").to_pylist(), images, summary.rows_rejected)


@torch.no_grad()
def model_rewards(
    model: RewardModel,
    pairs: BenchPairs,
    max_length: int,
    micro_batch: int,
    on_pair: Callable[[], None] | None = None,
) -> tuple[list[tuple[float, float] | None], Counter[str]]:
    """(chosen, rejected) rewards per pair, None where the model cannot score it (with the reason counted)."""
    model.eval()
    device = next(model.parameters()).device
    skipped: Counter[str] = Counter()
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
            out[index] = (rewards[k], rewards[batch.pairs + k])
        pending.clear()

    for index, row in enumerate(pairs.rows):
        if on_pair is not None:
            on_pair()
        feature = featurize(model.backbone, row, [pairs.images[h] for h in row["images"]], max_length)
        if isinstance(feature, str):
            skipped[feature] += 1
            continue
        pending.append((index, feature))
        if len(pending) == micro_batch:
            flush()
    flush()
    return out, skipped


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
    """`on_progress(benchmark, pairs done, pairs to score)` is called as pairs are scored (for a progress bar)."""
    report: dict[str, Any] = {"benchmarks": {}, "length_judge": {}, "skipped": {}, "rejected_at_ingest": {},
                              "items": {}, "models": [m.source for m in models]}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for spec in specs:
            pairs = read_benchmark(spec, work or Path(tmp))
            per_model = []
            skipped: Counter[str] = Counter()
            total, done = len(pairs.rows) * len(models), [0]

            def tick(name: str = spec.name, total: int = total, done: list[int] = done) -> None:
                done[0] += 1
                if on_progress is not None:
                    on_progress(name, done[0], total)

            for model in models:
                rewards, why = model_rewards(model, pairs, max_length, micro_batch, tick)
                per_model.append(rewards)
                skipped.update(why)
            items = []
            for index, row in enumerate(pairs.rows):
                scored = [m[index] for m in per_model]
                # An ensemble scores an item only if every member does: the average must be over the same models.
                mean = (
                    None
                    if any(s is None for s in scored)
                    else tuple(sum(x) / len(x) for x in zip(*scored, strict=True))
                )
                items.append(Item(row["pair_id"], row["subset"], item_key(spec.name, row),
                                  mean[0] if mean else None, mean[1] if mean else None))  # fmt: skip
            lengths = length_judge(
                items, [len(r["chosen"]) for r in pairs.rows], [len(r["rejected"]) for r in pairs.rows]
            )
            scorer = partial(rewardbench, xstest=xstest) if spec.name == "rewardbench" else SCORERS[spec.name]
            report["benchmarks"][spec.name] = scorer(items)
            report["length_judge"][spec.name] = scorer(lengths)
            report["skipped"][spec.name] = dict(sorted(skipped.items()))
            report["rejected_at_ingest"][spec.name] = pairs.rejected_at_ingest
            if spec.name == "rewardbench":
                report["rewardbench_xstest_weights"] = xstest
            report["items"][spec.name] = [
                {
                    "pair_id": i.pair_id,
                    "source_row": r["source_row"],
                    "group": i.group,
                    "key": i.key,
                    "reward_chosen": i.chosen,
                    "reward_rejected": i.rejected,
                    "correct": i.correct,
                    "tie": i.tie,
                    "length_judge_correct": j.correct,
                }
                for i, j, r in zip(items, lengths, pairs.rows, strict=True)
            ]
    return report
