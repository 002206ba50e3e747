"""`trainer`: the reward-model trainer's command line: `fit`, `predict`, `eval`, `score`, `ablate`, `export`, `env`.

Under `torchrun`, every process runs `python -m trainer fit ...`; rank 0 writes the run folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import math
import os
import platform
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperCommand

from curation.build_dir import within_build
from curation.errors import InputError
from curation.failure import click_exception, run_cli
from curation.interrupt import stop_interrupted, was_interrupted
from curation.io import held, only_writer
from curation.progress import ProgressLines
from curation.words import quantity
from trainer.config import FitConfig

NoSuchOption = click_exception("NoSuchOption")  # of the click Typer runs on

if TYPE_CHECKING:
    from rich.console import Console

app = typer.Typer(help="Train and evaluate BaseReward reward models.", no_args_is_help=True)
SETTINGS = {f.name for f in dataclasses.fields(FitConfig)}


class _Command(TyperCommand):
    """A trainer command that answers an unknown option spelled as another trainer command takes a setting (`fit`'s
    `--set max_length=N`, `eval`'s `--max-length N`) with this command's spelling."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        given = list(args)  # the parser consumes `args`
        try:
            return super().parse_args(ctx, args)
        except NoSuchOption as exc:
            hint = own_spelling(self, ctx.info_name or "", exc.option_name, given)
            if hint:
                exc.message = f"No such option: {exc.option_name}; {hint}"
                exc.possibilities = None  # click's near names (--max-steps for --max-length) would mislead
            raise


def own_spelling(command: TyperCommand, name: str, option: str, args: list[str]) -> str | None:
    """How `trainer NAME` takes the setting `option` (with its value in `args`) names, or None."""
    options = [o for param in command.params for o in param.opts if o.startswith("--")]
    value = _value_of(option, args)
    if option == "--set":  # eval, score: their settings are options of their own
        key, _, given = (value or "").partition("=")
        flag = "--" + key.strip().replace("_", "-")
        if key and flag in options:
            return f"trainer {name} takes {flag} {given or 'VALUE'}, not --set"
        own = [o for o in options if o[2:].replace("-", "_") in SETTINGS - {"model"}]  # their --model: a run
        if not own:  # a command without settings (env): click's own message
            return None
        return f"trainer {name} takes no --set; its settings are options of its own ({', '.join(own)})"
    setting = option[2:].replace("-", "_")
    if "--set" in options and setting in SETTINGS:  # fit, audit, ablate: settings without a flag of their own
        return f"trainer {name} takes it as --set {setting}={value or 'VALUE'}"
    return None


def _value_of(option: str, args: list[str]) -> str | None:
    """The value given to `option` in `args` (`--opt VALUE` or `--opt=VALUE`), or None."""
    for index, arg in enumerate(args):
        if arg.startswith(option + "="):
            return arg.partition("=")[2]
        if arg == option and index + 1 < len(args) and not args[index + 1].startswith("-"):
            return args[index + 1]
    return None


MODEL_HELP = "`tiny`, a local folder or a Hub id (owner/name)."
NO_SETTINGS = "none: FitConfig's defaults"


def _fit_default(name: str, otherwise: str | None = None) -> str:
    """What an unset fit option becomes: the --settings file's value, else FitConfig's default."""
    value = getattr(FitConfig, name)
    return f"--settings, else {value if value is not None else f'none: {otherwise} decide'}"


@app.callback()
def _root() -> None:
    """Train and evaluate BaseReward reward models."""


@app.command(cls=_Command)
def env() -> None:
    """Report what the trainer can use here: Python, torch, transformers and the accelerators."""
    typer.echo(f"python {platform.python_version()} on {platform.machine()}")
    for package in ("torch", "transformers", "accelerate"):
        try:
            typer.echo(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            typer.echo(f"{package} not installed")
    try:
        import torch
    except ImportError:
        return
    typer.echo(f"cuda available: {torch.cuda.is_available()}")
    for i in range(torch.cuda.device_count()):
        typer.echo(f"  cuda:{i} {torch.cuda.get_device_name(i)}")


@app.command(cls=_Command)
def fit(
    shards: Annotated[
        list[str], typer.Option(help="A `curate build` folder (or its shards/), optionally DIR=WEIGHT; repeatable.")
    ],
    out: Annotated[Path, typer.Option(help="The run folder (metrics, checkpoints, final model).")],
    model: Annotated[str | None, typer.Option(help=MODEL_HELP, show_default=_fit_default("model"))] = None,
    settings_file: Annotated[
        Path | None,
        typer.Option("--settings", help="A YAML file of training settings (FitConfig).", show_default=NO_SETTINGS),
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.", show_default=_fit_default("lr"))] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Passes over the training pairs.", show_default=_fit_default("epochs"))
    ] = None,
    max_steps: Annotated[
        int | None,
        typer.Option(help="Stop after this many optimizer steps.", show_default=_fit_default("max_steps", "epochs")),
    ] = None,
    global_batch: Annotated[
        int | None,
        typer.Option(help="Pairs per optimizer step (all processes).", show_default=_fit_default("global_batch")),
    ] = None,
    micro_batch: Annotated[
        int | None,
        typer.Option(help="Pairs per forward pass of one process.", show_default=_fit_default("micro_batch")),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Seed of the held-out split, data order and head.", show_default=_fit_default("seed")),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Any other FitConfig setting as KEY=VALUE; repeatable.", show_default="none"),
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run's latest checkpoint.")] = False,
) -> None:
    """Train a BaseReward model on built shards (Bradley-Terry loss)."""
    from trainer.backbone import check_model_source
    from trainer.config import load_config
    from trainer.fit import TrainingError
    from trainer.fit import fit as run_fit

    overrides: dict[str, Any] = {"shards": list(shards), "model": model, "lr": lr, "epochs": epochs,
                                 "max_steps": max_steps, "global_batch": global_batch, "micro_batch": micro_batch,
                                 "seed": seed}  # fmt: skip
    main = os.environ.get("RANK", "0") == "0"  # under torchrun the ranks share the folder; one holds it
    save_every = 0  # a checkpoint every this many steps (0: at the end), for the interrupted line
    steps = 0  # the run's steps, once known
    created = not out.exists()  # a failed run in a folder it created leaves no folder
    try:
        for item in set_ or []:
            key, value = _key_value(item, "--set")
            overrides[key.strip()] = value
        settings = load_config(settings_file, overrides)
        save_every = settings.save_every
        check_model_source(settings.model)  # before the data is opened: a typo fails at once
        check_run_folder(out, resume)
        busy = f"--out {out}: another trainer is writing this run now"
        with (
            only_writer(out / ".lock", busy) if main else contextlib.nullcontext(),
            _progress(main) as progress,
            ProgressLines(every=None if main else 0) as lines,
        ):
            task = progress.add_task("training", total=None)

            def show(done: int, total: int, record: dict[str, Any] | None) -> None:
                nonlocal steps
                steps = total
                if record is None and 0 < done < total:  # the run's start: where a resumed run picks up
                    typer.echo(f"resuming {out} at step {done} of {total}", err=True)
                elif record is None and done == 0 and resume:
                    typer.echo(f"note: --resume: {out} holds no checkpoint; training from step 0 of {total}", err=True)
                loss = "" if record is None or record.get("loss") is None else f", loss {record['loss']:.4f}"
                progress.update(task, completed=done, total=total, description=f"step {done}/{total}{loss}")
                lines.set(f"step {done}/{total}{loss}")

            last = run_fit(settings, out, resume=resume, on_step=show)
    except (InputError, TrainingError, FileNotFoundError) as exc:
        _remove_if_unused(out, created and main)
        _fail(str(exc), exc)
    except (Exception, KeyboardInterrupt) as exc:
        if not was_interrupted(exc):  # a DataLoader worker stopped by the same Ctrl-C, say, is the interruption
            raise
        kept = _kept_by_run(out, save_every, steps)
        _remove_if_unused(out, created and main)
        stop_interrupted(kept if main else None)  # under torchrun, one line
    if main:  # under torchrun, one summary
        from trainer.run_summary import Reach, read_data_report

        report = read_data_report(out)
        summary = fit_summary(last, _held_out_note(report, settings.eval_fraction), _skipped_held_out(report)) if (
            last) else f"nothing left to train (already at its last step: {_last_step(out)})"  # fmt: skip
        reach = Reach.of(report) if last else None  # nothing trained now: nothing to count
        skipped = f"; {reach.text()}" if reach and reach.skipped else ""
        typer.echo(f"done: {out}: {summary}{skipped}")
        if reach and (warning := reach.warning(settings.max_length)):
            typer.echo(f"warning: {warning}", err=True)
        for name, counts in (report.get("builds") or {}).items() if last else ():
            if counts.get("ties"):  # a Bradley-Terry loss has no term for a tie: it learns the order as given
                typer.echo(f"note: {name}: {counts['ties']} of its {counts['pairs']} pairs are ties (tie = true), "
                           "trained as chosen over rejected as the source gives them; the recipe's filters "
                           "(drop_ties: true) leave them out", err=True)  # fmt: skip


@app.command(cls=_Command)
def predict(
    model: Annotated[Path, typer.Option(help="A run folder or a saved model folder.")],
    prompt: Annotated[str, typer.Option(help="The user prompt.")],
    answer: Annotated[list[str], typer.Option(help="An answer to score; repeatable.")],
    image: Annotated[
        list[Path] | None, typer.Option(help="An image file for the prompt; repeatable.", show_default="none")
    ] = None,
) -> None:
    """Print the reward of each answer to the prompt."""
    from trainer.predict import load_reward_model, read_images, rewards

    try:
        reward_model = load_reward_model(model)
        scores = rewards(reward_model, prompt, list(answer), read_images(list(image or [])))
    except (OSError, ValueError) as exc:  # missing files, unreadable images, images on a text backbone
        _fail(str(exc), exc)
    typer.echo("reward\tanswer (its first 60 characters)")
    for text, score in zip(answer, scores, strict=True):
        flat = " ".join(text.split())  # one line per answer: a tab or a newline in it would break the columns
        preview = flat if len(flat) <= 60 else flat[:57] + "..."
        # a NaN or infinite reward (a diverged model) is no score, as `trainer eval` and `trainer score` count it
        typer.echo(f"{score:+.4f}\t{preview}" if math.isfinite(score) else f"not finite ({score})\t{preview}")
    if not all(math.isfinite(s) for s in scores):
        typer.echo("warning: the model gives a non-finite reward: it is no score (a diverged run?)", err=True)


@app.command("eval", cls=_Command)
def eval_(
    model: Annotated[list[Path], typer.Option(help="A run or model folder; repeat it to average an ensemble.")],
    bench: Annotated[
        list[str],
        typer.Option(
            help="NAME or NAME=PATH (vl_rewardbench, mm_rlhf_rewardbench, "
            "multimodal_rewardbench, rewardbench); repeatable."
        ),
    ],
    images_root: Annotated[
        list[str] | None, typer.Option(help="NAME=DIR where a benchmark's images are.", show_default="none")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="The folder the report is written into, as <UTC time>-<benchmarks>.json (never overwritten).",
            show_default="RUN/evals for one run folder",
        ),
    ] = None,
    vl_grouping: Annotated[str, typer.Option(help="VL-RewardBench groups: official or r1_reward.")] = "official",
    xstest_weights: Annotated[str, typer.Option(help="RewardBench xstest weights: official or true_sizes.")] = (
        "official"
    ),
    max_length: Annotated[
        int, typer.Option(help="Tokens per answer with its prompt; longer items are not scored (and counted).")
    ] = 4096,
    micro_batch: Annotated[int, typer.Option(help="Pairs per forward pass.")] = 4,
) -> None:
    """Score benchmarks with a model (or the average of several), beside a length-only judge and published rows;
    each evaluation is its own report, RUN/evals/<UTC time>-<benchmarks>.json."""
    _at_least_1(micro_batch=micro_batch, max_length=max_length)
    from rich.progress import Progress
    from rich.table import Table
    from rich.text import Text

    from trainer.evaluate import BenchSpec, evaluate
    from trainer.predict import load_reward_model, resolve_model
    from trainer.published import comparison_rows, table_columns
    from trainer.reports import EVALS, cell, counts_text, not_scored_text, write_report

    console = _console()
    for flag, value, allowed in (("--vl-grouping", vl_grouping, ("official", "r1_reward")),
                                 ("--xstest-weights", xstest_weights, ("official", "true_sizes"))):  # fmt: skip
        if value not in allowed:
            _fail(f"{flag} {value!r}: expected {' or '.join(allowed)}")
    for folder in model:
        if not folder.exists():
            _fail(f"--model {folder}: no such folder")
        if (folder / "metrics.jsonl").is_file() and not (folder / "model").is_dir():
            _fail(f"--model {folder}: a run without its model yet (an unfinished run: `trainer fit --resume` "
                  "finishes it)")  # fmt: skip
        if not (resolve_model(folder) / "reward_model.json").is_file():
            _fail(f"--model {folder}: neither a run folder nor a saved reward model (no reward_model.json)")
    seen: dict[Path, Path] = {}
    for folder in model:  # an ensemble of one model twice is that model, reported as two
        if (real := resolve_model(folder).resolve()) in seen:
            _fail(f"--model {folder}: the same model as --model {seen[real]}; an ensemble takes different models")
        seen[real] = folder
    if out is None:
        if len(model) != 1 or not (model[0] / "metrics.jsonl").is_file():
            _fail("--out is required unless --model is one run folder (its reports go to RUN/evals)")
        out = model[0] / EVALS
    elif out.suffix == ".json" or out.is_file():
        _fail(f"--out {out}: the folder reports are written into (each named by its time and benchmarks), not a file")
    try:
        specs = _bench_specs(bench, images_root)
        specs = [BenchSpec(s.name, s.location, s.images_root, {"grouping": vl_grouping}) if s.name == "vl_rewardbench"
                 else s for s in specs]  # fmt: skip
        models = [load_reward_model(m) for m in model]
        # A progress bar on a terminal only: piped, it would leave lines (a blank one before an error).
        with (
            ProgressLines() as lines,
            Progress(console=console, transient=True, disable=not console.is_terminal) as progress,
        ):
            tasks: dict[str, Any] = {}

            def show(name: str, done: int, total: int) -> None:
                if name not in tasks:
                    tasks[name] = progress.add_task(name, total=total)
                progress.update(tasks[name], completed=done)
                lines.set(f"{name}: {done} of {total} items")

            report = evaluate(models, specs, max_length=max_length, micro_batch=micro_batch,
                              xstest=xstest_weights, on_progress=show)  # type: ignore[arg-type]  # fmt: skip
        report["models"] = [str(resolve_model(m)) for m in model]
        path = write_report(out, report)
    except (InputError, OSError, ValueError) as exc:
        _fail(str(exc), exc)
    label = "this model" if len(model) == 1 else f"ensemble of {len(model)}"
    for name, entry in report["benchmarks"].items():
        rows = comparison_rows(report, name, label)
        table = Table(title=Text(f"{name}: {counts_text(name, entry)}"))
        columns = table_columns(rows)
        for column in columns:  # every other column is a percentage of the items
            header = column if column in ("model", "result", "items") else f"{column} %"
            table.add_column(header, no_wrap=column in ("model", "result"))
        for row in rows:
            table.add_row(*[cell(row.get(c)) for c in columns])
        console.print(table)
        if not_scored_text(entry):
            console.print(f"  {not_scored_text(entry)}", markup=False, highlight=False)
    typer.echo(f"report: {path}")


@app.command(cls=_Command)
def score(
    model: Annotated[Path, typer.Option(help="A run or model folder.")],
    build: Annotated[Path, typer.Option(help="A `curate build` output folder.")],
    part_pairs: Annotated[
        int, typer.Option(help="Pairs per resumable part (a resume needs the same; another size starts over).")
    ] = 2048,
    micro_batch: Annotated[
        int, typer.Option(help="Pairs per forward pass (another size can change rewards at float rounding).")
    ] = 8,
    max_length: Annotated[
        int, typer.Option(help="Tokens per answer with its prompt; longer pairs get no score.")
    ] = 4096,
) -> None:
    """Write BUILD/signals/rm_scores-<model>.parquet (rewards and margin per pair) for the rm_margin op."""
    _at_least_1(part_pairs=part_pairs, micro_batch=micro_batch, max_length=max_length)
    from collections import Counter

    import pyarrow.parquet as pq

    from trainer.predict import load_reward_model, resolve_model
    from trainer.score import kept_scores, score_build

    parts: tuple[Path, int, int] | None = None  # the parts folder, the pairs an interrupted run scored, all pairs

    def planned(folder: Path, reused: int, pairs: int) -> None:
        nonlocal parts
        parts = (folder, reused, pairs)

    try:
        folder = resolve_model(model)
        reward_model = load_reward_model(model)
        with _progress() as progress, ProgressLines() as lines:
            task = progress.add_task("scoring", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total, description=f"scoring: {done} of {total} pairs")
                lines.set(f"scoring: {done} of {total} pairs")

            out = score_build(reward_model, folder, build, part_pairs=part_pairs, micro_batch=micro_batch,
                              max_length=max_length, on_progress=advance, on_parts=planned)  # fmt: skip
    except (OSError, ValueError) as exc:
        _fail(str(exc), exc)
    except (Exception, KeyboardInterrupt) as exc:
        if not was_interrupted(exc):
            raise
        stop_interrupted(kept_scores(parts[0], parts[2]) if parts else "stopped before scoring began")
    if parts and parts[0] == out:
        typer.echo(f"already scored: {out} holds this model's scores of these {parts[2]} pairs, scored the same way "
                   "(not scored again; remove it to score again)")  # fmt: skip
    elif parts and parts[1]:
        typer.echo(f"resumed: {parts[1]} of {parts[2]} pairs' scores taken from the parts an interrupted run "
                   "finished (not scored again)")  # fmt: skip
    reasons = Counter(pq.read_table(out, columns=["not_scored"]).column("not_scored").to_pylist())
    total = sum(reasons.values())
    scored = reasons.pop(None, 0)  # a pair with scores has no reason
    why = _reasons(dict(sorted(reasons.items())))
    typer.echo(f"{scored} of {total} pairs scored (the shards' and the removed ones); not scored: {why}")
    typer.echo(f"scores: {out}\nuse them in a recipe: ops: {{rm_margin: {{scores: {out}}}}}")


@app.command(cls=_Command)
def audit(
    build: Annotated[Path, typer.Option(help="The `curate build` folder whose pairs are judged.")],
    out: Annotated[Path, typer.Option(help="The audit's run folder (a run per fold, scores, audit.json).")],
    folds: Annotated[int, typer.Option(help="Folds: each model trains without one and judges it.")] = 5,
    model: Annotated[str | None, typer.Option(help=MODEL_HELP, show_default=_fit_default("model"))] = None,
    settings_file: Annotated[
        Path | None,
        typer.Option("--settings", help="A YAML file of training settings (FitConfig).", show_default=NO_SETTINGS),
    ] = None,
    shards: Annotated[
        list[str] | None,
        typer.Option(
            help="Other builds every fold model also trains on (DIR or DIR=WEIGHT); repeatable (default: the "
            "settings file's `shards`).",
            show_default="none",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Any other FitConfig setting as KEY=VALUE; repeatable.", show_default="none"),
    ] = None,
) -> None:
    """Judge every pair of a build with a reward model that did not train on it (cross-fitted over folds)."""

    from trainer.audit import audit as run_audit
    from trainer.backbone import check_model_source
    from trainer.config import load_config
    from trainer.fit import TrainingError

    overrides: dict[str, Any] = {"shards": list(shards) if shards else None, "model": model}
    created = not out.exists()  # an audit that fails before its first fold leaves no folder
    try:
        for item in set_ or []:
            key, value = _key_value(item, "--set")
            overrides[key.strip()] = value
        settings = load_config(settings_file, overrides)
        check_model_source(settings.model)
        with _progress() as progress, ProgressLines() as lines:
            bars: dict[int, Any] = {}  # a bar per fold: trained, then judged
            kept: list[int] = []  # folds judged by an earlier run of this audit

            def on_fold(fold: int, what: str) -> None:
                if what == "kept":
                    kept.append(fold)
                    return
                for earlier in bars:
                    progress.update(bars[earlier], completed=2)
                if fold not in bars:
                    bars[fold] = progress.add_task(f"fold {fold}", total=2)
                progress.update(bars[fold], completed=int(what == "judge"), description=f"fold {fold}: {what}")
                lines.set(f"fold {fold} (folds 0 to {folds - 1}): {what}")

            with only_writer(out / ".lock", f"--out {out}: another audit is writing it now"):
                report = run_audit(build, settings, folds, out, on_fold=on_fold)
            for bar in bars.values():
                progress.update(bar, completed=2)
        if kept:
            typer.echo(f"resumed: {len(kept)} of {folds} folds judged by an earlier run of this audit in {out} are "
                       f"kept, not trained or judged again (fold {', '.join(map(str, kept))})")  # fmt: skip
    except (InputError, TrainingError, FileNotFoundError) as exc:
        _remove_if_unused(out, created, work=_fold_work)  # its plan alone is not worth keeping
        _fail(str(exc), exc)
    except (Exception, KeyboardInterrupt) as exc:
        if not was_interrupted(exc):
            raise
        _remove_if_unused(out, created, work=_fold_work)
        if not out.is_dir():
            stop_interrupted("stopped before any fold's work was kept")
        judged = sorted(p.parent.name for p in out.glob("fold-*/fold.json"))
        stop_interrupted(f"{len(judged)} of {folds} folds judged are kept in {out} ({', '.join(judged) or 'none'}); "
                         "the same command continues from them")  # fmt: skip
    for fold in report["folds"]:
        accuracy = fold["held_out_accuracy"]
        shown = "-" if accuracy is None else f"{accuracy:.3f}"
        judged = (f"judged {fold['scored']} of its {fold['pairs']} pairs, the removed ones too ({fold['truncated']} "
                  "with answers cut to fit)")  # fmt: skip
        typer.echo(f"fold {fold['fold']}: held-out accuracy {shown} over its {fold['held_out_pairs']} scored pairs "
                   f"of the shards; {judged}")  # fmt: skip
    pooled = report["held_out"]
    if pooled["pairs"]:
        low, high = pooled["interval_95"]
        typer.echo(
            f"held-out accuracy {pooled['accuracy']:.3f}: the fold models prefer the chosen answer in "
            f"{pooled['agreeing']} of {pooled['pairs']} scored pairs of the shards (95% interval {low:.3f}-{high:.3f})"
        )
    unscored = _reasons(report["not_scored"])
    typer.echo(
        f"{report['scored']} of {report['pairs']} pairs judged out of fold (the shards' and the removed ones); "
        f"not judged: {unscored}"
    )
    if not pooled["beats_chance"]:
        typer.echo(
            "warning: the fold models do not agree with the labels more often than chance on held-out pairs: the "
            "pairs they reverse are no evidence of wrong labels; train them longer or on more data before acting "
            "on this audit",
            err=True,
        )
    typer.echo(f"scores: {report['signal']}\nuse them in a recipe: ops: {{rm_margin: {{scores: {report['signal']}}}}}")


@app.command(cls=_Command)
def ablate(
    out: Annotated[Path, typer.Option(help="Folder for variants, builds, runs and the ablation table.")],
    mix: Annotated[
        list[Path] | None,
        typer.Option(
            "--mix", help="A recipe (as `curate build --mix` takes); repeat to compare several.", show_default="none"
        ),
    ] = None,
    per_source: Annotated[bool, typer.Option(help="The one --mix recipe plus one variant per source.")] = False,
    model: Annotated[str | None, typer.Option(help=MODEL_HELP, show_default=_fit_default("model"))] = None,
    settings_file: Annotated[
        Path | None,
        typer.Option(
            "--settings", help="Training settings (FitConfig YAML) shared by every variant.", show_default=NO_SETTINGS
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Any FitConfig setting as KEY=VALUE; repeatable.", show_default="none"),
    ] = None,
    bench: Annotated[
        list[str] | None,
        typer.Option(help="Benchmarks to evaluate every variant on (as for eval).", show_default="none: no evaluation"),
    ] = None,
    images_root: Annotated[
        list[str] | None, typer.Option(help="NAME=DIR where a benchmark's images are.", show_default="none")
    ] = None,
    audit_: Annotated[
        bool,
        typer.Option(
            "--audit",
            help="Also each variant without the pairs a cross-fitted audit flags (`trainer audit`; rm_margin "
            "select: noise_rate), trained and evaluated alike.",
            show_default="no",
        ),
    ] = False,
    audit_folds: Annotated[int, typer.Option(help="Folds of the --audit.")] = 5,
) -> None:
    """Train one model per mixture variant with the same config and tabulate their benchmark scores."""
    from rich.table import Table

    from trainer.ablate import ablate as run_ablation
    from trainer.ablate import mixture_variants, notes, per_source_variants, units
    from trainer.backbone import check_model_source
    from trainer.config import load_config
    from trainer.reports import cell

    recipes = mix or []
    if audit_ and audit_folds < 2:  # said now, not after every variant has trained
        _fail(f"--audit-folds {audit_folds}: the audit needs at least 2 folds")
    if per_source and len(recipes) != 1:
        _fail("--per-source takes exactly one --mix recipe")
    if not recipes:
        _fail("give --mix RECIPE --per-source, or --mix A.yaml --mix B.yaml ...")
    console = _console()
    try:
        variants = per_source_variants(recipes[0]) if per_source else mixture_variants(recipes)
        overrides: dict[str, Any] = {"model": model}
        for item in set_ or []:
            key, value = _key_value(item, "--set")
            overrides[key.strip()] = value
        settings = load_config(settings_file, overrides)
        check_model_source(settings.model)
        specs = _bench_specs(bench or [], images_root)
        with ProgressLines() as lines:

            def say(text: str) -> None:
                console.print(f"[dim]{text}[/dim]")
                lines.set(text)

            rows = run_ablation(variants, settings, specs, out, on_step=say, audit_folds=audit_folds if audit_ else 0)
    except (InputError, OSError, ValueError) as exc:
        _fail(str(exc), exc)
    except (Exception, KeyboardInterrupt) as exc:
        if not was_interrupted(exc):
            raise
        finished = sorted(p.parent.parent.name for p in (out / "runs").glob("*/model/reward_model.json"))
        stop_interrupted(f"the trained variants are kept in {out} ({', '.join(finished) or 'none yet'}); the same "
                         "command reuses them")  # fmt: skip
    table = Table(title=f"ablation ({len(rows)} variants)")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    for column in columns:  # the JSON and markdown tables keep the whole error text
        table.add_column(column, no_wrap=True, max_width=48 if column == "error" else None)
    for row in rows:
        table.add_row(*[cell(row.get(c)) for c in columns])
    console.print(table)
    typer.echo(f"{units(rows)}.")
    for note in notes(rows, settings.eval_fraction):
        typer.echo(f"note: {note}")
    typer.echo(f"table: {out / 'ablation.md'}")
    failed = [row["variant"] for row in rows if "error" in row]
    if failed:  # the table is written; a script still learns that the comparison is incomplete
        _fail(f"{len(failed)} of {len(rows)} variants failed ({', '.join(failed)}); their errors are in the table")


@app.command(cls=_Command)
def export(
    run: Annotated[Path, typer.Argument(help="A run folder (from `trainer fit`).")],
    repo: Annotated[str, typer.Option(help="The Hub model repo, USER/NAME.")],
    local_dir: Annotated[
        Path | None, typer.Option(help="Where the repo is written.", show_default="RUN-hub beside the run")
    ] = None,
    dataset_repo: Annotated[
        str | None, typer.Option(help="The exported training data's Hub repo, to link.", show_default="none")
    ] = None,
    private: Annotated[bool, typer.Option(help="Create the repo private.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Write locally and list what would be sent; send nothing.")] = False,
    replace: Annotated[
        bool, typer.Option(help="Replace an earlier export in --local-dir once the new one is complete.")
    ] = False,
) -> None:
    """Write a run's model with its card in the Hub layout, then upload it in one commit."""
    from curation.export import upload
    from trainer.export import export_run

    folder = run.absolute()  # `.` has no name to put -hub after
    local = local_dir or folder.with_name(folder.name + "-hub")
    try:
        files = export_run(run, repo, local, dataset_repo, replace=replace, need_token=not dry_run)
        typer.echo(f"wrote {len(files)} files to {local}")
        for line in upload(local, repo, repo_type="model", private=private, dry_run=dry_run):
            typer.echo(line)
    except InputError as exc:
        _fail(str(exc), exc)


def _key_value(text: str, option: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise InputError(f"{option} {text!r}: expected NAME=VALUE")
    return key, value


def check_run_folder(out: Path, resume: bool) -> None:
    """A run folder belongs to one run: a new run needs a new or empty folder (hidden files aside, or the settings
    alone of a run killed before its first step), and --resume a folder that is empty or holds a run (its settings
    beside its metrics, or its checkpoints); never inside a build."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: a file, not a folder")
    if (where := within_build(out)) is not None:
        raise InputError(f"--out {out} {where}; a run folder goes elsewhere")
    held = {entry.name for entry in out.iterdir() if not entry.name.startswith(".")} if out.is_dir() else set()
    if held == {"config.yaml"} and _settings_of_a_run(out / "config.yaml"):  # a run killed before its first step
        return
    is_run = {"config.yaml", "metrics.jsonl"} <= held or any((out / "checkpoints").glob("step-*"))
    if is_run and not resume:  # its reports, events and checkpoints would sit beside the new run's
        raise InputError(f"--out {out}: holds a run already; --resume continues it, or choose another --out")
    if held and not is_run:
        raise InputError(f"--out {out}: holds other files, not a run; choose a new or empty folder")


def _settings_of_a_run(path: Path) -> bool:
    """Whether `path` holds the settings `trainer fit` writes (every FitConfig field), not a file of the user's."""
    import dataclasses

    import yaml

    from trainer.config import FitConfig

    try:
        settings = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return isinstance(settings, dict) and {f.name for f in dataclasses.fields(FitConfig)} <= set(settings)


def _bench_specs(bench: list[str], images_root: list[str] | None) -> list[Any]:
    """The --bench specs with their --images-root; a root for a benchmark not given is a mistake, said so."""
    from trainer.evaluate import BenchSpec

    roots = dict(_key_value(item, "--images-root") for item in images_root or [])
    specs = [BenchSpec.parse(b, roots) for b in bench]
    stray = sorted(set(roots) - {spec.name for spec in specs})
    if stray:
        raise InputError(f"--images-root {', '.join(stray)}=...: no --bench {', '.join(stray)}=FILE given")
    return specs


def _at_least_1(**values: int) -> None:
    """One error line for the first option below 1."""
    for name, value in values.items():
        if value < 1:
            _fail(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def _reasons(counts: dict[str, int]) -> str:
    """`reason: n, ...` in the order given, or "none"."""
    return ", ".join(f"{reason}: {n}" for reason, n in counts.items()) or "none"


def _held_out_note(report: dict[str, Any], eval_fraction: float) -> str:
    """Why a run has no held-out metrics, from its data report ("" where it has held-out pairs)."""
    if not report or report.get("eval_pairs"):
        return ""
    if not eval_fraction:
        return "no held-out pairs (eval_fraction 0)"
    # the split falls by prompt: the fraction is of the distinct prompts of all builds
    return (f"no held-out pairs: eval_fraction {eval_fraction:g} of {report.get('distinct_prompts')} distinct "
            "prompts held none out")  # fmt: skip


def _last_step(out: Path) -> str:
    from trainer.fit import latest_checkpoint

    checkpoint = latest_checkpoint(out)
    return f"checkpoints/{checkpoint.name}" if checkpoint is not None else "its model saved"


def _skipped_held_out(report: dict[str, Any]) -> dict[str, int]:
    """The held-out pairs the last evaluation could not score, by reason, from the run's data report."""
    skipped = report.get("skipped_eval", {})
    return {str(k): int(v) for k, v in skipped.items()} if isinstance(skipped, dict) else {}


def fit_summary(last: dict[str, Any], held_out_note: str = "", skipped: dict[str, int] | None = None) -> str:
    """The last step's metrics, each with the pairs it is over (and why there are no held-out ones, or why some were
    not scored: `skipped` by reason, and `eval_max_pairs`)."""
    steps = quantity(last["step"], "step")
    if last.get("loss") is None:
        text = f"{steps}; last step: no pair (every draw skipped)"
    else:
        text = (f"{steps}; last step loss {last['loss']:.4f}, accuracy {last['accuracy']:.3f} over "
                f"{quantity(int(last['pairs']), 'pair')}")  # fmt: skip
    if "eval/pairs" in last:
        text += (
            f"; held out: loss {last['eval/loss']:.4f}, accuracy {last['eval/accuracy']:.3f} over "
            f"{quantity(int(last['eval/pairs']), 'pair')}"
        )
        if "eval/held_out" in last:  # eval_max_pairs, or pairs skipped (too long), leave some out
            text += f" of {int(last['eval/held_out'])} held out"
            why = ", ".join(f"{n} {reason}" for reason, n in (skipped or {}).items())
            unread = int(last["eval/held_out"]) - int(last["eval/pairs"]) - sum((skipped or {}).values())
            why += (", " if why and unread > 0 else "") + (f"{unread} beyond eval_max_pairs" if unread > 0 else "")
            text += f" (not scored: {why})" if why else ""
    elif held_out_note:
        text += f"; {held_out_note}"
    return text


def _remove_if_unused(out: Path, created: bool, work: Callable[[Path], bool] = lambda _: True) -> None:
    """Remove the folder a command `created` when none of its entries is `work` worth keeping (a hidden entry, its
    lock, never is)."""
    if not created or not out.is_dir() or out.is_symlink() or held(out / ".lock"):
        return  # not this command's folder, or another one writes it now (it may have written nothing yet)
    if not any(work(entry) for entry in out.iterdir() if not entry.name.startswith(".")):
        shutil.rmtree(out, ignore_errors=True)


def _fold_work(entry: Path) -> bool:
    """An audit's entry worth keeping: a fold's folder that holds something (its run, its scores)."""
    fold = entry.name.startswith("fold-") and entry.is_dir()
    return fold and any(not e.name.startswith(".") for e in entry.iterdir())


def _kept_by_run(out: Path, save_every: int, steps: int) -> str:
    """What an interrupted `fit` of `steps` steps (0: not known yet) leaves in its run folder."""
    from trainer.fit import latest_checkpoint

    checkpoint = latest_checkpoint(out)
    if checkpoint is None:
        when = (
            f"the first comes at step {save_every}"
            if save_every and (not steps or save_every < steps)
            else "`--set save_every=N` writes one every N steps"
        )
        return f"no checkpoint was written in {out} yet ({when}); running it again starts from step 0"
    return f"{out} keeps its checkpoints up to {checkpoint.name}: --resume continues from there"


def _fail(message: str, cause: BaseException | None = None) -> NoReturn:
    """The one `error:` line of an anticipated failure, then exit 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1) from cause


def _progress(shown: bool = True) -> Any:
    """A progress bar on stderr, shown on a terminal only (piped, it would leave lines before an error), and where
    `shown` (under torchrun, by the main process alone)."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    return Progress(console=console, transient=True, disable=not (shown and console.is_terminal))


def _console() -> Console:
    """stdout's console; piped or captured, never narrower than a table (a cut column would lose data)."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 100_000)


def main() -> None:
    run_cli(app)


if __name__ == "__main__":  # `python -m trainer.cli`: as the `trainer` console script, Ctrl-C handled the same way
    from curation.entry import trainer

    trainer()
