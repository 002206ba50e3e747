"""`trainer audit`: a cross-fitted noise audit of a build. Every pair is judged by a reward model that did not train
on it but learned from the rest of the build.

The build's distinct pairs (the shards' and the removed ones, as `trainer score` takes them) fall in K folds by a
hash of their prompt's id and the seed (`trainer.data.fold_of`: a prompt's pairs share a fold). Model k trains on
the build without fold k (plus any other builds given with `shards`), then judges the pairs of fold k. A pair whose
answers do not fit `max_length` is judged on answers cut to fit (`truncated`); a pair no model can judge (a video on
a text backbone) is counted by reason, never dropped silently.

Run folder: `OUT/fold-K/` per fold (the fold's run: metrics, model; `scores.parquet` and `fold.json` once judged:
a rerun skips a judged fold and resumes an interrupted one from its checkpoints), `OUT/audit.json` (per fold its
held-out accuracy and counts; pooled, that accuracy with its 95% interval and whether it beats chance: an audit
whose models do not is no evidence of label noise) and `OUT/scores.parquet`, which is also written into the build
as `BUILD/signals/rm_scores-audit-<digest>.parquet` in the form `trainer score` writes (so `rm_margin` and the
workbench read it as they read any scores), with the columns `probability` (sigmoid(margin): how likely the model
finds chosen better), `fold` and `truncated`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from curation.build_dir import BuildDir, within_build
from curation.errors import InputError
from curation.io import atomic_file, sha256_file, write_text
from curation.ops.rm_margin import AUDIT_METADATA
from curation.ops.runner import copy_file
from trainer.config import FitConfig
from trainer.data import SKIP_TOO_LONG, SPLIT_BY, featurize, fold_of
from trainer.evaluate import BenchPairs, model_rewards
from trainer.fit import HOW_IT_RUNS, fit
from trainer.model import RewardModel
from trainer.score import SCORES_SCHEMA, build_pairs

AUDIT_SCHEMA = pa.schema(
    [
        *SCORES_SCHEMA,
        pa.field("probability", pa.float64()),
        pa.field("fold", pa.int32(), nullable=False),
        pa.field("truncated", pa.bool_(), nullable=False),
        pa.field("not_scored", pa.string()),  # why a pair has no margin (None: it has one)
    ]
)
MIN_ANSWER_CHARS = 16  # answers are not cut shorter than this to fit


def fit_to_length(model: RewardModel, row: dict[str, Any], images: list[bytes], max_length: int) -> dict | None:
    """`row` with both answers cut to the longest length (in characters, halving) at which the pair fits
    `max_length`, or None when even short answers do not fit (the prompt alone is too long)."""
    longest = max(len(row["chosen"]), len(row["rejected"]))
    keep = longest // 2
    while keep >= MIN_ANSWER_CHARS:
        cut = {**row, "chosen": row["chosen"][:keep], "rejected": row["rejected"][:keep]}
        if not isinstance(featurize(model.backbone, cut, images, max_length), str):
            return cut
        keep //= 2
    return None


def judge(
    model: RewardModel, rows: list[dict], images: dict[str, bytes], max_length: int, micro_batch: int
) -> list[tuple[tuple[float, float] | None, bool, str | None]]:
    """Per row: (chosen, rejected) rewards or None, whether the answers were cut to fit, and why it has none."""
    found = [all(h in images for h in r["images"]) for r in rows]
    scorable = [r for r, ok in zip(rows, found, strict=True) if ok]
    rewards, reasons = model_rewards(model, BenchPairs(scorable, images), max_length, micro_batch)
    results: list[tuple[tuple[float, float] | None, bool, str | None]] = []
    index = 0
    cut_rows, cut_at = [], []
    for row, ok in zip(rows, found, strict=True):
        if not ok:
            results.append((None, False, "image not in the build"))
            continue
        reward, reason = rewards[index], reasons[index]
        index += 1
        if reason == SKIP_TOO_LONG:
            cut = fit_to_length(model, row, [images[h] for h in row["images"]], max_length)
            if cut is not None:
                cut_rows.append(cut)
                cut_at.append(len(results))
        results.append((reward, False, reason))
    if cut_rows:
        cut_rewards, cut_reasons = model_rewards(model, BenchPairs(cut_rows, images), max_length, micro_batch)
        for position, reward, reason in zip(cut_at, cut_rewards, cut_reasons, strict=True):
            results[position] = (reward, True, reason) if reward is not None else results[position]
    return results


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


FOLD_PLAN = "rm_workbench.audit_plan"  # a fold's scores: the digest of the plan they were judged under


def _judge_fold(
    model: RewardModel | None,
    rows: list[dict],
    images: dict[str, bytes],
    fold: int,
    config: FitConfig,
) -> pa.Table:
    """The fold's scores (`fold_report` counts them); a fold with no pairs (the hash gave it none) has no model."""
    results = judge(model, rows, images, config.max_length, config.micro_batch) if model is not None else []
    margins = [None if r is None else r[0] - r[1] for r, _, _ in results]
    table = pa.table(
        {
            "pair_id": [row["pair_id"] for row in rows],
            "reward_chosen": [None if r is None else r[0] for r, _, _ in results],
            "reward_rejected": [None if r is None else r[1] for r, _, _ in results],
            "margin": margins,
            "probability": [None if m is None else _sigmoid(m) for m in margins],
            "fold": [fold] * len(rows),
            "truncated": [cut for _, cut, _ in results],
            "not_scored": [reason if r is None else None for r, _, reason in results],
        },
        schema=AUDIT_SCHEMA,
    )
    return table


def fold_report(table: pa.Table, fold: int, in_shards: set[str]) -> dict[str, Any]:
    """A fold's counts, from its scores alone (so a stored report is never trusted over them). Held-out accuracy:
    over the fold's pairs in the shards (the build's training pairs) that have a margin."""
    rows = table.select(["pair_id", "margin", "truncated", "not_scored"]).to_pylist()
    agree = [r["margin"] > 0 for r in rows if r["margin"] is not None and r["pair_id"] in in_shards]
    return {
        "fold": fold,
        "pairs": len(rows),
        "scored": sum(r["margin"] is not None for r in rows),
        "truncated": sum(r["truncated"] for r in rows),
        "not_scored": dict(Counter(r["not_scored"] for r in rows if r["margin"] is None)),
        "held_out_pairs": len(agree),
        "held_out_agreeing": sum(agree),
        "held_out_accuracy": round(sum(agree) / len(agree), 4) if agree else None,
    }


def held_out(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The folds' held-out accuracy pooled, with its 95% Wilson interval. `beats_chance` is false when the interval
    reaches 0.5: then the models agree with the labels no more than a coin does, and a pair they reverse is no
    evidence that its label is wrong."""
    pairs = sum(r["held_out_pairs"] for r in reports)
    agreeing = sum(r["held_out_agreeing"] for r in reports)
    if not pairs:
        return {"pairs": 0, "agreeing": 0, "accuracy": None, "interval_95": None, "beats_chance": False}
    from scipy.stats import binomtest

    low, high = binomtest(agreeing, pairs).proportion_ci(0.95, method="wilson")
    return {
        "pairs": pairs,
        "agreeing": agreeing,
        "accuracy": round(agreeing / pairs, 4),
        "interval_95": [round(float(low), 4), round(float(high), 4)],
        "beats_chance": bool(low > 0.5),
    }


def _free(path: Path) -> Path:
    if path.is_dir():
        raise InputError(f"{path}: a folder where the audit writes a file; choose another --out")
    return path


def _write(table: pa.Table, path: Path) -> None:
    with atomic_file(_free(path)) as file:
        pq.write_table(table, file, write_page_checksum=True)  # `rm_margin` verifies them as it reads the scores


def _write_json(data: dict[str, Any], path: Path) -> None:
    write_text(_free(path), json.dumps(data, indent=2, sort_keys=True) + "\n")


def _read_plan(path: Path) -> dict[str, Any]:
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not an audit plan ({exc}); choose another --out") from None
    if not isinstance(stored, dict) or not isinstance(stored.get("config"), dict):
        raise InputError(f"{path}: not an audit plan; choose another --out")
    return stored


def _written_digest(path: Path) -> str | None:
    """The scores' sha256 that `fold.json` recorded, or None (a marker from before digests, or unreadable: its
    counts are never read back, only what it says of the scores)."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    digest = found.get("scores_sha256") if isinstance(found, dict) else None
    return digest if isinstance(digest, str) else None


def _judged(folder: Path, fold: int, expected: list[str], plan: str) -> pa.Table | None:
    """A fold's stored scores, if they are whole: judged to the end (`fold.json` written after them, with their
    sha256) under this plan, exactly the fold's pairs under its number, every margin finite or null with its
    reason. Anything else (a damaged, foreign or edited file) is judged again."""
    if not (folder / "fold.json").is_file() or not (folder / "scores.parquet").is_file():
        return None
    if _written_digest(folder / "fold.json") not in (None, sha256_file(folder / "scores.parquet")):
        return None  # changed since it was judged (by hand, say): judged again
    try:
        stored = pq.read_table(folder / "scores.parquet")
        table = stored.cast(AUDIT_SCHEMA)
    except (OSError, ValueError, pa.ArrowException):
        return None
    if (stored.schema.metadata or {}).get(FOLD_PLAN.encode()) != plan.encode() or table.column("truncated").null_count:
        return None
    if sorted(table.column("pair_id").to_pylist()) != sorted(expected):
        return None
    if set(table.column("fold").to_pylist()) - {fold}:
        return None
    margin = table.column("margin")
    if (
        pc.sum(pc.invert(pc.is_finite(margin))).as_py()
        or margin.null_count != len(margin) - table.column("not_scored").null_count
    ):
        return None
    return table


def _learned(settings: dict[str, Any]) -> dict[str, Any]:
    """Fit settings of what a run learns: without where their builds lie (each `--shards` spec's weight kept: the
    builds are known by their contents, the plan's digests, so an audit resumes after its builds moved), and
    without how it runs (`HOW_IT_RUNS`: checkpoints, kernels, workers, which may change as on `fit --resume`); a
    setting added to FitConfig since a stored one was written compares at its default."""
    full = {**FitConfig().as_dict(), **settings}
    learned = {key: value for key, value in full.items() if key not in HOW_IT_RUNS}
    return {**learned, "shards": [spec.partition("=")[2] for spec in full.get("shards", [])]}


_PLAN_PARTS = {"pairs_sha256": "the build's pairs differ", "shards_sha256": "the shards the folds train on differ",
               "folds": "--folds"}  # fmt: skip


def _plan_differences(stored: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    """What differs between the plan an earlier run of this audit wrote and `plan`, but for where the builds lie
    and how the fold runs run (nothing: the audit resumes, under its own plan and name); `_learned` says what
    counts."""
    then, now = _learned(stored.get("config", {})), _learned(plan["config"])
    differ = [f"{what} {stored.get(key)!r} then, {plan[key]!r} now" if key == "folds" else what
              for key, what in _PLAN_PARTS.items() if stored.get(key) != plan[key]]  # fmt: skip
    for key in sorted(set(then) | set(now)):
        if then.get(key) != now.get(key):  # the extra builds by their weights (their shards are compared above)
            differ.append("the extra --shards or their weights differ" if key == "shards" else
                          f"{key} {then.get(key)!r} then, {now.get(key)!r} now")  # fmt: skip
    return differ


def audit(
    build: Path,
    config: FitConfig,
    folds: int,
    out: Path,
    on_fold: Callable[[int, str], None] | None = None,
) -> dict[str, Any]:
    """Cross-fit `folds` models on the build (`config.shards` are extra training builds) and judge every pair
    out of fold; returns the report written to OUT/audit.json."""
    if folds < 2:
        raise InputError(f"--folds {folds}: need at least 2 (each model leaves one fold out)")
    say = on_fold or (lambda _k, _what: None)
    opened = BuildDir.open(build)
    pairs = build_pairs(opened)
    ids = pairs.column("pair_id").to_pylist()
    prompt_ids = pairs.column("prompt_id").to_pylist()
    prompts = len(set(prompt_ids))
    if folds > prompts:
        raise InputError(
            f"--folds {folds}: more folds than the build's {prompts} prompts (a prompt's pairs share a fold)"
        )
    fold_of_pair = [fold_of(prompt, config.seed, folds) for prompt in prompt_ids]
    in_shards = set(opened.pairs(["pair_id"]).column("pair_id").to_pylist())
    trained = {fold for pid, fold in zip(ids, fold_of_pair, strict=True) if pid in in_shards}
    if not config.shards and len(trained) == 1:  # that fold's model would have nothing to train on
        raise InputError(
            f"--folds {folds}: the prompts of the build's shards all fall in fold {trained.pop()} with seed "
            f"{config.seed}, so that fold's model has nothing to learn from; --set seed=N for another split, or "
            "give more data"
        )
    if (where := within_build(out)) is not None:
        raise InputError(f"--out {out} {where}; the audit's run folder goes elsewhere")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: a file, not a folder")
    for spec in config.shards:
        if Path(spec.partition("=")[0]).resolve() in (opened.path.resolve(), (opened.path / "shards").resolve()):
            raise InputError(f"--shards {spec}: the audited build itself (every fold model trains on it already)")
    # What the fold models learn from: the audited build's shards and any extra build's, by their sha256 (a build
    # rebuilt in place keeps its pair ids but may train the folds on other pairs).
    trained_on = [opened, *(BuildDir.open(spec.partition("=")[0]) for spec in config.shards)]
    shards = [[shard["sha256"] for shard in b.manifest["shards"]] for b in trained_on]
    plan = {
        "build": str(opened.path),
        "pairs_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
        "shards_sha256": hashlib.sha256(json.dumps(shards).encode()).hexdigest(),
        "folds": folds,
        "folds_by": SPLIT_BY,
        "config": {**config.as_dict(), "shards": list(config.shards)},
    }
    out.mkdir(parents=True, exist_ok=True)
    plan_path = out / "plan.json"
    if plan_path.is_file():
        stored = _read_plan(plan_path)
        if stored.get("folds_by", "pair_id") != SPLIT_BY:  # an earlier version's folds: no settings resume them
            raise InputError(f"{out}: holds an audit whose folds fell by {stored.get('folds_by', 'pair_id')} (they "
                             f"fall by {SPLIT_BY} now): it cannot be resumed; choose another --out")  # fmt: skip
        differ = _plan_differences(stored, plan)
        if differ:
            raise InputError(f"{out}: holds an audit planned otherwise ({'; '.join(differ)}); give its settings to "
                             "resume it, or choose another --out")  # fmt: skip
        plan = stored
    elif any(out.glob("fold-*")):  # folds of an audit whose plan is lost: nothing says what they judged
        raise InputError(f"{out}: holds fold folders but no plan.json; choose another --out")
    elif any(not entry.name.startswith(".") for entry in out.iterdir()):  # a fit run, say: not the audit's to write
        raise InputError(f"{out}: holds other files, not an audit; choose a new or empty folder")
    else:
        _write_json(plan, plan_path)
    # A fold's scores carry the digest of the plan they were judged under (a resumed audit's own, as it wrote it):
    # scores judged under another plan (settings, data) are judged again.
    fold_digest = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()
    images = opened.images()
    tables, reports = [], []
    for k in range(folds):
        folder = out / f"fold-{k}"
        expected = [pid for pid, f in zip(ids, fold_of_pair, strict=True) if f == k]
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{folder}: a file where fold {k}'s folder belongs; choose another --out")
        table = _judged(folder, k, expected, fold_digest)  # a judged fold is kept across interruptions
        if table is not None:
            say(k, "kept")
        else:
            rows = pairs.filter(pa.array([f == k for f in fold_of_pair])).to_pylist()  # one fold in memory
            model = _fold_model(folder, k, folds, opened.path, config, say) if rows else None
            say(k, "judge")
            needed = {h for row in rows for h in row["images"]}
            found = {h: data for h in needed if (data := images.get(h)) is not None}
            table = _judge_fold(model, rows, found, k, config)
            table = table.replace_schema_metadata({FOLD_PLAN: fold_digest})
            folder.mkdir(parents=True, exist_ok=True)
            _write(table, folder / "scores.parquet")
        report = fold_report(table, k, in_shards)
        _write_json({**report, "scores_sha256": sha256_file(folder / "scores.parquet")}, folder / "fold.json")
        tables.append(table)
        reports.append(report)
    joined = pa.concat_tables(tables).sort_by("pair_id").cast(AUDIT_SCHEMA)
    if joined.column("pair_id").to_pylist() != sorted(ids):
        raise AssertionError("the folds' scores do not cover the build's pairs once each")
    pooled = held_out(reports)
    # the verdict travels with the scores: rm_margin warns when a build acts on an audit no better than chance
    joined = joined.replace_schema_metadata({AUDIT_METADATA: json.dumps({"held_out": pooled}, sort_keys=True)})
    _write(joined, out / "scores.parquet")
    digest = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:12]
    signal = opened.path / "signals" / f"rm_scores-audit-{digest}.parquet"
    signal.parent.mkdir(exist_ok=True)
    copy_file(out / "scores.parquet", signal)
    scored = sum(r["scored"] for r in reports)
    report = {
        "build": str(opened.path),
        "folds": reports,
        "held_out": pooled,
        "pairs": len(ids),
        "scored": scored,
        "truncated": sum(r["truncated"] for r in reports),
        "not_scored": dict(sum((Counter(r["not_scored"]) for r in reports), Counter())),
        "signal": str(signal),
    }
    _write_json(report, out / "audit.json")
    return report


def _fold_model(
    folder: Path, k: int, folds: int, build: Path, config: FitConfig, say: Callable[[int, str], None]
) -> RewardModel:
    """Fold k's model: trained on the build without fold k (resumed from its checkpoints), or the one saved."""
    from safetensors import SafetensorError

    fold_config = dataclasses.replace(config, shards=[str(build), *config.shards], folds=folds, fold=k)
    try:
        if (folder / "model").is_dir():  # trained by an earlier run: this fold's, with these settings?
            stored = (
                yaml.safe_load((folder / "config.yaml").read_text()) if (folder / "config.yaml").is_file() else None
            )
            # the audit's plan matched by content: its builds may have moved since this fold trained
            if not isinstance(stored, dict) or _learned(stored) != _learned(fold_config.as_dict()):
                raise InputError(
                    f"{folder}: its model is not fold {k}'s of this audit (another fold, fold count or settings); "
                    f"remove {folder} to train it again"
                )
        else:
            say(k, "train")
            fit(fold_config, folder, resume=(folder / "checkpoints").is_dir())
    except (SafetensorError, json.JSONDecodeError, yaml.YAMLError, FileNotFoundError) as exc:  # damaged
        raise _damaged(folder, str(exc)) from None
    try:
        return RewardModel.load(folder / "model")
    except (InputError, FileNotFoundError) as exc:  # its reason, in the audit's words
        raise _damaged(folder, str(exc).removeprefix(f"{folder / 'model'}: ")) from None


def _damaged(folder: Path, reason: str) -> InputError:
    return InputError(f"{folder}: a damaged model or checkpoint ({reason}); remove {folder} to train it again")
