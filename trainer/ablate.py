"""`trainer ablate`: build each mixture variant, train one model per variant with one config, evaluate all alike.

Variants come from `--mixtures A.yaml B.yaml ...` and/or `--per-source RECIPE` (the full recipe plus one
variant per source, keeping the recipe's ops, benchmarks and seed: the paper's per-dataset table); with `--audit`,
each variant is also audited and rebuilt without the pairs the audit flags (`<name>+audit`). Layout:
`OUT/variants/<name>.yaml`, `OUT/builds/<name>/`, `OUT/runs/<name>/` (metrics, model, evals/<report>.json),
`OUT/audits/<name>/` (with `--audit`), and `OUT/ablation.json` + `OUT/ablation.md`: rows = variants, columns = the
headline benchmark scores over all items (the unscored counted as wrong) and `<benchmark>/items`, how many of them
were scored. A variant that cannot train (e.g. fewer pairs than one global batch) or be evaluated gets its error in
the table; the others still run.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from curation.build import build, inputs_changed
from curation.build_dir import BuildDir, within_build
from curation.errors import InputError
from curation.io import only_writer, write_text
from curation.ops.base import file_fields, model_fields
from curation.recipe import Recipe, load_recipe
from trainer.audit import audit
from trainer.config import FitConfig
from trainer.data import SPLIT_BY, build_identity
from trainer.evaluate import BenchSpec, evaluate
from trainer.fit import HOW_IT_RUNS, TrainingError, fit
from trainer.model import RewardModel
from trainer.reports import EVALS, cell, write_report

HEADLINE = {
    "vl_rewardbench": ("overall", "macro"),
    "mm_rlhf_rewardbench": ("acc", "acc_plus"),
    "multimodal_rewardbench": ("overall",),
    "rewardbench": ("overall",),
}


def _absolute(recipe: Recipe, section: str) -> dict[str, Any]:
    """A recipe section with every local path resolved, so the variant file can live anywhere."""
    data = yaml.safe_load(recipe.text).get(section) or {}
    specs = {s.name: s for s in (recipe.sources if section == "sources" else recipe.benchmarks)}
    for name, entry in data.items():
        entry["path"] = specs[name].path
        if specs[name].images_root:
            entry["images_root"] = specs[name].images_root
    return data


def _portable(recipe: Recipe) -> dict[str, Any]:
    """The recipe's data with every local path resolved (sources, benchmarks, the ops' files and model folders), so
    the variant file can live anywhere."""
    data = yaml.safe_load(recipe.text)
    data["sources"] = _absolute(recipe, "sources")
    if recipe.benchmarks:
        data["benchmarks"] = _absolute(recipe, "benchmarks")
    for name, params in (data.get("ops") or {}).items():
        for key in file_fields(recipe.ops[name]) + model_fields(recipe.ops[name]):
            if isinstance(params, dict) and key in params:
                value = getattr(recipe.ops[name], key)
                params[key] = list(value) if isinstance(value, tuple) else value
    return data


def per_source_variants(path: Path) -> dict[str, str]:
    """The full recipe and one single-source variant per source, as YAML texts by variant name."""
    recipe = load_recipe(path)
    base = _portable(recipe)
    variants = {recipe.name: yaml.safe_dump(base, sort_keys=False)}
    for name, entry in base["sources"].items():
        only = {**base, "name": f"{recipe.name}-only-{name}", "sources": {name: entry}}
        variants[only["name"]] = yaml.safe_dump(only, sort_keys=False)
    return variants


def mixture_variants(paths: list[Path]) -> dict[str, str]:
    out = {}
    for path in paths:
        recipe = load_recipe(path)
        data = _portable(recipe)
        if recipe.name in out:
            raise InputError(f"{path}: two mixtures are named {recipe.name!r}; names label the table's rows")
        out[recipe.name] = yaml.safe_dump(data, sort_keys=False)
    return out


def ablate(
    variants: dict[str, str],
    config: FitConfig,
    benches: list[BenchSpec],
    out: Path,
    on_step: Callable[[str], None] | None = None,
    audit_folds: int = 0,
) -> list[dict[str, Any]]:
    """One row per variant; with `audit_folds`, also a row `<variant>+audit` per variant: its build audited
    (`trainer audit`, that many folds) and built again with the pairs the audit flags dropped (`rm_margin`,
    `select: noise_rate`), trained and evaluated the same way."""
    say = on_step or (lambda _: None)
    for name in variants:  # a name makes folders under OUT
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*", name):
            raise InputError(f"mixture name {name!r}: use letters, digits, '_', '.', '+' and '-' (it names folders)")
    if (where := within_build(out)) is not None:
        raise InputError(f"--out {out} {where}; the ablation's folder goes elsewhere")
    with only_writer(out / ".lock", f"{out}: another ablation is writing it now; wait for it or choose another --out"):
        return _ablate(variants, config, benches, out, say, audit_folds)


def _ablate(
    variants: dict[str, str],
    config: FitConfig,
    benches: list[BenchSpec],
    out: Path,
    say: Callable[[str], None],
    audit_folds: int,
) -> list[dict[str, Any]]:
    rows = []
    for name, text in variants.items():
        row = _variant(name, text, config, benches, out, say)
        rows.append(row)
        if audit_folds and "error" not in row:
            try:
                say(f"{name}: audit")
                report = audit(out / "builds" / name, config, audit_folds, out / "audits" / name)
                recipe = yaml.safe_load(text)
                # no guard: the ablation measures acting on the audit, however much it drops
                rm_margin = {
                    "scores": report["signal"],
                    "select": "noise_rate",
                    "action": "drop",
                    "max_removal_rate": 1.0,
                }
                recipe["ops"] = {**(recipe.get("ops") or {}), "rm_margin": rm_margin}
                recipe["name"] = f"{recipe['name']}+audit"
                text = yaml.safe_dump(recipe, sort_keys=False)
                audited = _variant(f"{name}+audit", text, config, benches, out, say, derived=True)
                audited["audit/judged"] = f"{report['scored']} of {report['pairs']}"
                pooled = report["held_out"]
                # whether the audit's models beat chance: one that does not removed pairs at random
                audited["audit/held_out_accuracy"] = (
                    f"{pooled['accuracy']:.3f} of {pooled['pairs']}"
                    + ("" if pooled["beats_chance"] else " (not above chance)")
                    if pooled["pairs"]
                    else "-"
                )
            except (InputError, TrainingError, OSError, ValueError) as exc:
                audited = {"variant": f"{name}+audit", "error": f"{type(exc).__name__}: {exc}"}
            rows.append(audited)
    write_text(out / "ablation.json", json.dumps(rows, indent=1) + "\n")  # each whole or not at all
    write_text(out / "ablation.md", markdown_table(rows, config.eval_fraction))
    return rows


def _variant(
    name: str,
    text: str,
    config: FitConfig,
    benches: list[BenchSpec],
    out: Path,
    say: Callable[[str], None],
    derived: bool = False,
) -> dict[str, Any]:
    """Build, train and evaluate one variant; its row (with the error, if a step failed). `derived`: its recipe
    is the ablation's own (an audited variant's), not one given."""
    recipe_path = out / "variants" / f"{name}.yaml"
    recipe_path.parent.mkdir(parents=True, exist_ok=True)
    write_text(recipe_path, text)
    build_dir, run = out / "builds" / name, out / "runs" / name
    row: dict[str, Any] = {"variant": name}
    try:
        told = lambda reused: say(f"{name}: {reused}")  # noqa: E731
        manifest = _load_or_build(recipe_path, build_dir, told, out / "audits" / name, derived)
        row["rows"] = manifest["rows_in_shards"]  # what the run draws from: the mix's upsampled copies counted
        row["pairs"] = manifest.get("pairs_in_shards", manifest["rows_in_shards"])  # distinct
        settings = dataclasses.replace(config, shards=[str(build_dir)])
        shards = [build_identity([shard["sha256"] for shard in manifest["shards"]], 1.0)]  # as the run records it
        last = _finished_run(run, settings, shards)  # a rerun (after a failed variant, say) keeps the finished runs
        if last is not None:
            say(f"{name}: fit reused")
        else:
            if run.exists() and any(run.iterdir()) and not _same_settings(run, settings):
                raise InputError(f"{run}: holds another run (other settings, or files that are not a run); remove it "
                                 "or choose another --out")  # fmt: skip
            say(f"{name}: fit")
            shutil.rmtree(run, ignore_errors=True)  # this ablation's interrupted run of these settings: again
            last = fit(settings, run)
        row["eval/accuracy"] = last.get("eval/accuracy")
        row["eval/pairs"] = int(last.get("eval/pairs", 0))  # what the held-out accuracy is over
        if row["eval/pairs"] and row["eval/accuracy"] is not None:
            row["eval/interval_95"] = accuracy_interval(row["eval/accuracy"], row["eval/pairs"])
        if benches:
            say(f"{name}: eval")
            report = evaluate([RewardModel.load(run / "model")], benches)
            report["models"] = [str(run / "model")]
            write_report(run / EVALS, report)
            for bench, entry in report["benchmarks"].items():
                scores = entry["scores_over_all"]
                row |= {f"{bench}/{k}": scores[k] for k in HEADLINE[bench] if k in scores}
                row[f"{bench}/items"] = f"{entry['items_scored']} of {entry['items_total']} scored"
    except (InputError, TrainingError, OSError, ValueError) as exc:  # one variant's failure, the others go on
        row["error"] = f"{type(exc).__name__}: {exc}"
    return row


def accuracy_interval(accuracy: float, pairs: int) -> tuple[float, float]:
    """The 95% Wilson interval of an accuracy over `pairs` pairs: how far apart two variants must be to differ."""
    from scipy.stats import binomtest

    low, high = binomtest(round(accuracy * pairs), pairs).proportion_ci(0.95, method="wilson")
    return round(float(low), 4), round(float(high), 4)


def indistinct(rows: list[dict[str, Any]]) -> bool:
    """Whether two or more variants were evaluated and their held-out intervals all overlap (no variant's accuracy is
    told apart from another's by the held-out pairs)."""
    intervals = [row["eval/interval_95"] for row in rows if "eval/interval_95" in row]
    return len(intervals) > 1 and max(low for low, _ in intervals) <= min(high for _, high in intervals)


# A finished run's metrics are reused whatever these were (its held-out metrics depend on the others)
REUSED_WHATEVER = HOW_IT_RUNS - {"eval_max_pairs", "eval_every"}


def _same_settings(run: Path, config: FitConfig, ignored: frozenset[str] = HOW_IT_RUNS) -> bool:
    """Whether `run` holds a run (finished or not) of these settings: of what it learns, as `trainer fit --resume`
    compares them (how it runs, `ignored`, may differ; a setting added since compares at its default)."""
    try:
        stored = yaml.safe_load((run / "config.yaml").read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return False
    if not isinstance(stored, dict):
        return False
    plain = lambda settings: yaml.safe_load(yaml.safe_dump(settings, sort_keys=True))  # noqa: E731
    then, now = {**plain(FitConfig().as_dict()), **stored}, plain(config.as_dict())
    return {k: v for k, v in then.items() if k not in ignored} == {k: v for k, v in now.items() if k not in ignored}


def _finished_run(run: Path, config: FitConfig, data: list[list[Any]]) -> dict[str, Any] | None:
    """The last metrics of a finished run of these settings on this `data` in `run` (its model saved, its
    held-out split of this version's kind, its builds' shards those of `data`: a variant built again since trains
    again; a run from before runs recorded their data does too), or None."""
    try:
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        report = json.loads((run / "data.json").read_text())
        split_by, trained_on = report.get("split_by", "pair_id"), report.get("data")
    except (OSError, ValueError, AttributeError):
        return None
    finished = records and (run / "model" / "reward_model.json").is_file() and split_by == SPLIT_BY
    return records[-1] if finished and trained_on == data and _same_settings(run, config, REUSED_WHATEVER) else None


def _load_or_build(
    recipe_path: Path, build_dir: Path, say: Callable[[str], None], audit: Path, derived: bool = False
) -> dict[str, Any]:
    """A finished build of the same recipe text whose inputs are as it read them is reused (a rerun of the ablation
    does not rebuild); one whose inputs changed since is built again in its place, and its audit folder (`audit`,
    the ablation's own, planned for the old shards) removed, as is the build of a `derived` recipe that changed
    (an audited variant's, whose audit was made again); `say` tells which ("build", "build reused" or "build again
    (...)")."""
    recipe = load_recipe(recipe_path)
    if not build_dir.exists():
        say("build")
        return build(recipe, build_dir)
    manifest = BuildDir.open(build_dir).manifest
    if manifest["recipe"]["sha256"] != recipe.sha256:
        if not derived:
            raise InputError(f"{build_dir}: holds a build of another recipe; choose another --out")
        say("build again (its audit changed)")
        return build(recipe, build_dir, replace=True)
    changed = inputs_changed(recipe, manifest)
    if not changed:
        say("build reused")
        return manifest
    say(f"build again ({', '.join(changed)} changed since it was built)")
    shutil.rmtree(audit, ignore_errors=True)
    return build(recipe, build_dir, replace=True)


def units(rows: list[dict[str, Any]]) -> str:
    """What the table's columns count, for the columns it has."""
    parts = ["rows: the shards' rows (the mix's upsampled copies counted), pairs: distinct pairs"]
    if any("eval/pairs" in row for row in rows):
        parts.append("eval/accuracy: the fraction of eval/pairs held-out pairs ranked right (0-1)")
    if any("eval/interval_95" in row for row in rows):
        parts.append("eval/interval_95: its 95% Wilson interval")
    if any(column.endswith("/items") for row in rows for column in row):
        parts.append("a benchmark's columns: percent over its items, every item counted (unscored ones as wrong)")
    if any("audit/judged" in row for row in rows):
        parts.append("audit/judged: the variant's pairs its audit judged out of fold, of all; "
                     "audit/held_out_accuracy: its fold models' accuracy on their held-out pairs, of how many (an "
                     "audit not above chance drops pairs at random)")  # fmt: skip
    return "; ".join(parts)


def notes(rows: list[dict[str, Any]], eval_fraction: float) -> list[str]:
    """What the table cannot tell: no variant held a pair out, or the held-out pairs do not tell them apart."""
    said = []
    trained = [row for row in rows if "eval/pairs" in row]
    none = [str(row["variant"]) for row in trained if not row["eval/pairs"]]
    if trained and len(none) == len(trained):
        said.append(f"no variant held out a pair (eval_fraction {eval_fraction:g} of their builds' prompts), so none "
                    "has a held-out accuracy; --set eval_fraction=0.2 holds a fifth out")  # fmt: skip
    elif none:  # a prompt is held out by its hash: a small build's prompts may all fall outside the fraction
        said.append(f"{', '.join(none)}: no held-out pair (each prompt is held out by its hash with eval_fraction "
                    f"{eval_fraction:g}, and none of the build's was), so no held-out accuracy; only a benchmark "
                    "compares it with the others")  # fmt: skip
    chance = [str(row["variant"]) for row in rows if "(not above chance)" in str(row.get("audit/held_out_accuracy"))]
    if chance:
        said.append(f"the audits behind {', '.join(chance)} do not beat chance on held-out pairs: the pairs they "
                    "dropped were dropped at random, so those rows measure a smaller build, not a cleaner "
                    "one")  # fmt: skip
    if indistinct(rows):
        said.append("the variants' held-out intervals all overlap: their held-out pairs do not tell them apart (more "
                    "pairs, or benchmarks, can)")  # fmt: skip
    return said


def markdown_table(rows: list[dict[str, Any]], eval_fraction: float) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:  # an error's `|` or line break would end its cell or row: escaped, joined
        cells = [" ".join(cell(row.get(c)).split()).replace("|", "\\|") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    said = "".join(f"\nnote: {note}\n" for note in notes(rows, eval_fraction))
    return "\n".join(lines) + f"\n\n{units(rows)}.\n{said}"
