"""`trainer export`: a trained run as a Hub model repo (weights, config, tokenizer, processor, model card).

The folder is the run's final model (`model.safetensors`, `reward_model.json`, `backbone/config.json`,
tokenizer and image processor files) plus `fit_config.yaml`, the run's evaluation reports (`evals/`, and a legacy
`eval.json`) when it was evaluated, and a `README.md` card: backbone and head, the training mixture (each build's
recipe and sources, unless rebuilt since the run), the training run (the epochs and draws its steps reached, the
draws skipped, and how the steps ran: device, precision, compiled layers), the settings (bf16 and compile marked
where they did not apply), per benchmark the newest evaluation with its item counts beside the length-only judge
and published results, and a snippet that loads the model and scores a pair.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from curation.build_dir import BuildDir, BuildError
from curation.errors import InputError
from curation.export import check_export_folder, check_repo_id, export_partial, hub_token, publish_export
from curation.readers import json_object
from trainer.model import changed_files, check_saved, hidden
from trainer.published import comparison_rows, table_columns
from trainer.reports import cell, counts_text, latest_by_benchmark, read_reports
from trainer.run_summary import Reach, applied, ran_text, read_data_report, steps_text


def _mixture_lines(config: dict[str, Any], data: list[Any] | None) -> list[str]:
    """Each build the run trained on, read where it lies now: its recipe and sources, unless it was rebuilt since
    (`data`: the builds' shard digests as the run recorded them; None for a run from before they were)."""
    lines = ["| build | weight | recipe | sources (rows in shards: distinct pairs) |", "|---|---|---|---|"]
    for k, spec in enumerate(config.get("shards", [])):
        path_text, _, weight = spec.partition("=")
        try:
            build = BuildDir.open(path_text)
        except BuildError:  # the model card still names the build it was trained on
            lines.append(f"| {Path(path_text).name} | {weight or 1} | (not a readable build here) | |")
            continue
        manifest = build.manifest
        recorded = data[k][0] if data is not None and k < len(data) else None  # the run's settings may be edited
        if data is not None and recorded != [shard["sha256"] for shard in manifest["shards"]]:
            lines.append(f"| {Path(path_text).name} | {weight or 1} | (rebuilt since this run: not its data) | |")
            continue
        sources = ", ".join(f"{name} ({_rows_text(s)})" for name, s in manifest["sources"].items())
        recipe = manifest["recipe"]
        lines.append(
            f"| {Path(path_text).name} | {weight or 1} | {recipe['name']} (`{recipe['sha256'][:12]}`) | {sources} |"
        )
    return lines


def _rows_text(source: dict[str, Any]) -> str:
    """A source's rows in the shards and the distinct pairs they are (upsampled copies are rows of one pair)."""
    rows, pairs = source["in_shards"], source.get("mix", {}).get("selected", source["in_shards"])
    return f"{rows}" if rows == pairs else f"{rows} rows: {pairs} pairs"


def _eval_lines(reports: list[tuple[str, dict[str, Any]]]) -> list[str]:
    lines: list[str] = []
    for bench, (name, report) in latest_by_benchmark(reports).items():
        rows = comparison_rows(report, bench, "this model")
        columns = table_columns(rows)
        entry = report["benchmarks"][bench]
        lines += [f"### {bench}", "", f"From `{name}`: {counts_text(bench, entry)}.", ""]
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for row in rows:
            lines.append("| " + " | ".join(cell(row.get(c)) for c in columns) + " |")
        lines.append("")
    return lines


def _run_lines(run: Path, spec: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """How far the training went through its draws, the draws it skipped, and how its steps ran (device, precision,
    compiled layers), as the run recorded them."""
    report = read_data_report(run)
    reach = Reach.of(report, config.get("global_batch"))
    if reach is None:
        why = "`data.json` does not record them" if report else "no readable `data.json`"
        lines = [f"The draws the steps reached were not recorded ({why})."]
    else:
        lines = [f"{steps_text(report)}{reach.text()}."]
    trained = spec.get("trained")
    lines += ["", "How the steps ran:", ""]
    lines += [f"- {ran_text(s)}" for s in trained] if trained else [
        "- not recorded (a run from before it was)"]  # fmt: skip
    return lines


def _settings_lines(config: dict[str, Any], trained: list[dict[str, Any]]) -> list[str]:
    """The run's settings as YAML, a setting that applies on CUDA alone (bf16, compile) marked where it did not
    apply (the steps ran on CPU, say)."""
    lines = []
    for line in yaml.safe_dump(config, sort_keys=True).rstrip().splitlines():
        key = line.partition(":")[0]
        note = applied(key, config.get(key), trained) if key in config else None
        lines.append(f"{line}  # {note}: it applies on CUDA only (see Training run)" if note else line)
    return lines


def card_text(run: Path, repo: str, spec: dict[str, Any], config: dict[str, Any], dataset_repo: str | None) -> str:
    source = spec.get("backbone_source", "")
    meta: dict[str, Any] = {"license": "other", "tags": ["reward-model", "bradley-terry", "basereward", "rm-workbench"]}
    if "/" in source and not Path(source).exists():
        meta["base_model"] = source
    if dataset_repo:
        meta["datasets"] = [dataset_repo]
    head = spec["head"]
    reports = read_reports(run)
    lines = [
        "---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", "",
        f"# {repo.split('/')[-1]}", "",
        f"A BaseReward-style reward model trained with rm-workbench: backbone `{source}` ({spec['backbone_kind']}) "
        f"without its LM head, reward head of {head['layers']} linear layer(s) ({head['activation']}), "
        "Bradley-Terry loss. The license is that of the backbone and of the training data (see the mixture).", "",
        "## Training mixture", "", *_mixture_lines(config, spec.get("data")), "",
        *([f"Dataset on the Hub: [{dataset_repo}](https://huggingface.co/datasets/{dataset_repo})", ""]
          if dataset_repo else []),
        "## Training run", "", *_run_lines(run, spec, config), "",
        "## Settings", "", "```yaml", *_settings_lines(config, spec.get("trained") or []), "```", "",
        "## Evaluation", "", *(_eval_lines(reports) or ["Not evaluated (`trainer eval --model RUN`).", ""]),
        "## Usage", "", "```python",
        "from pathlib import Path",
        "from huggingface_hub import snapshot_download",
        "from trainer.predict import load_reward_model, rewards  # pip install rm-workbench[train]", "",
        f'model = load_reward_model(Path(snapshot_download("{repo}")))',
        'image = Path("photo.jpg").read_bytes()',
        'print(rewards(model, "What is in the image?", ["A cat on a sofa.", "A dog."], images=[image]))',
        "```", "",
    ]  # fmt: skip
    return "\n".join(lines)


# What a model folder may publish: weights as safetensors, configuration, tokenizer and processor files. Anything
# else (a pickle such as `pytorch_model.bin`, Python code) is refused, never published.
EXPORTED_SUFFIXES = (".safetensors", ".json", ".jinja", ".txt", ".model")


def _model_files(run: Path, model: Path) -> list[str]:
    """The model folder's files to publish (names relative to it; hidden ones never), or `InputError` naming one
    that may not be: a link or file whose real path leaves the run, a kind of file not in `EXPORTED_SUFFIXES`,
    weights that are not safetensors, or a config that asks for custom code (`auto_map`)."""
    from safetensors import safe_open

    real_run = run.resolve()
    names = []
    for path in sorted(model.rglob("*")):
        name = path.relative_to(model).as_posix()
        if hidden(name):
            continue  # never the model's, never published
        if not path.resolve().is_relative_to(real_run):
            raise InputError(f"{path}: leads out of the run (a link); only the run's own files are exported")
        if path.is_dir():
            continue
        if not path.is_file() or not path.name.endswith(EXPORTED_SUFFIXES):
            raise InputError(f"{path}: not a file an export publishes (weights as .safetensors, .json, tokenizer "
                             "files); remove it from the model folder")  # fmt: skip
        if path.name.endswith(".safetensors"):
            try:
                with safe_open(str(path), "pt"):
                    pass
            except Exception as exc:  # the reader raises its own types: the file is not whole safetensors
                raise InputError(f"{path}: not a readable safetensors file ({exc})") from None
        if path.name.endswith(".json") and "auto_map" in json_object(path):
            raise InputError(f"{path}: asks for custom code (auto_map); an export never publishes a model that runs "
                             "code when it is loaded")  # fmt: skip
        names.append(name)
    return names


def export_run(
    run: Path,
    repo: str,
    local_dir: Path,
    dataset_repo: str | None = None,
    replace: bool = False,
    need_token: bool = False,
) -> list[str]:
    """Write the run's model, card, settings and reports in the Hub's layout in `local_dir`, checked first; with
    `need_token` (an upload follows), the Hub token is asked for before anything is written."""
    model = run / "model"
    if not (model / "reward_model.json").is_file():
        raise InputError(f"{run}: no trained model (expected {model}/reward_model.json from `trainer fit`)")
    check_repo_id(repo)
    check_export_folder(local_dir, replace, run)
    files = _model_files(run, model)  # checked before anything is written
    spec = check_saved(model)  # the files as trained, and weights the configuration loads
    reports = [name for name, _ in read_reports(run)]
    for name in reports:
        if not (run / name).resolve().is_relative_to(run.resolve()):
            raise InputError(f"{run / name}: leads out of the run (a link); only the run's own files are exported")
    if need_token:
        hub_token()
    tmp = export_partial(local_dir)
    for name in files:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model / name, tmp / name)
    if copied := changed_files(tmp, spec.get("sha256") or {}):  # the bytes published are those checked
        shutil.rmtree(tmp)
        raise InputError(f"{model}: changed while it was exported ({copied[0]}); export again")
    config = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
    (tmp / "fit_config.yaml").write_text(yaml.safe_dump(config, sort_keys=True))
    for name in reports:
        (tmp / name).parent.mkdir(exist_ok=True)
        shutil.copyfile(run / name, tmp / name)
    (tmp / "README.md").write_text(card_text(run, repo, spec, config, dataset_repo))
    publish_export(tmp, local_dir, may_hold=("eval.json", "evals"))
    return sorted(p.relative_to(local_dir).as_posix() for p in local_dir.rglob("*") if p.is_file())
