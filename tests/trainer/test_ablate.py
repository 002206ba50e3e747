"""A two-variant mixture ablation on the demo data with the tiny model, end to end through the CLI."""

import gzip
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from curation.recipe import load_recipe
from curation.reviews import REVIEW_SCHEMA
from trainer.ablate import per_source_variants
from trainer.cli import app
from trainer.reports import report_names


def test_per_source_variants_keep_ops_and_benchmarks_and_resolve_paths(demo_recipe: Path, tmp_path: Path) -> None:
    variants = per_source_variants(demo_recipe)
    assert list(variants) == ["demo", "demo-only-rlaif_v", "demo-only-mm_rlhf", "demo-only-ultrafeedback",
                              "demo-only-hh_rlhf"]  # fmt: skip
    original = load_recipe(demo_recipe)
    for name, text in variants.items():
        path = tmp_path / f"{name}.yaml"  # elsewhere than the recipe: paths must not be relative any more
        path.write_text(text)
        variant = load_recipe(path)
        assert variant.ops == original.ops and variant.seed == original.seed
        assert [b.path for b in variant.benchmarks] == [b.path for b in original.benchmarks]
    assert [s.name for s in load_recipe(tmp_path / "demo-only-hh_rlhf.yaml").sources] == ["hh_rlhf"]


def test_variants_keep_an_ops_file_path_resolved(demo_recipe: Path, tmp_path: Path) -> None:
    # a reviews file named relative to the recipe's folder (as the shipped demo-reviewed.yaml does); variants
    # live elsewhere
    reviews = tmp_path / "builds" / "reviews" / "demo.parquet"
    reviews.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([], schema=REVIEW_SCHEMA), reviews)
    data = yaml.safe_load(demo_recipe.read_text())
    data["sources"] = {k: {**v, "path": str((demo_recipe.parent / v["path"]).resolve())} | (
        {"images_root": str((demo_recipe.parent / v["images_root"]).resolve())} if "images_root" in v else {}
    ) for k, v in data["sources"].items()}  # fmt: skip
    data.pop("benchmarks")
    data["ops"]["human_review"] = {"reviews": "../builds/reviews/demo.parquet"}
    recipe = tmp_path / "mixes" / "demo-reviewed.yaml"
    recipe.parent.mkdir()
    recipe.write_text(yaml.safe_dump(data))
    for name, text in per_source_variants(recipe).items():
        elsewhere = tmp_path / "ablation" / "variants" / f"{name}.yaml"
        elsewhere.parent.mkdir(parents=True, exist_ok=True)
        elsewhere.write_text(text)
        assert load_recipe(elsewhere).ops["human_review"].reviews == (str(reviews),)


def test_two_variant_ablation_on_the_demo_data(demo_recipe: Path, tmp_path: Path) -> None:
    data = yaml.safe_load(demo_recipe.read_text())
    text_only = {**data, "name": "demo-text", "sources": {k: v for k, v in data["sources"].items()
                                                          if k in ("ultrafeedback", "hh_rlhf")}}  # fmt: skip
    second = demo_recipe.parent / "demo_text.yaml"
    second.write_text(yaml.safe_dump(text_only))
    bench = demo_recipe.parent.parent / "demo_data" / "native" / "vl_rewardbench"
    out = tmp_path / "ablation"
    args = ["ablate", "--mix", str(demo_recipe), "--mix", str(second), "--out", str(out), "--model", "tiny",
            "--set", "global_batch=4", "--set", "micro_batch=2", "--set", "lr=2e-3", "--set", "eval_fraction=0.2",
            "--bench", f"vl_rewardbench={bench / 'data.jsonl'}",
            "--images-root", f"vl_rewardbench={bench / 'images'}"]  # fmt: skip
    result = CliRunner().invoke(app, args, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if line.startswith("┃ variant"))
    assert "┃ pairs ┃" in header and "┃ vl_rewardbench/items ┃" in header  # piped, no column is cut at 80
    rows = json.loads((out / "ablation.json").read_text())
    assert [r["variant"] for r in rows] == ["demo", "demo-text"]
    for row in rows:
        assert "error" not in row, row
        # the demo slice's items are all of one group: no macro (it averages all three)
        assert {"pairs", "vl_rewardbench/overall"} <= set(row) and "vl_rewardbench/macro" not in row
        assert row["eval/pairs"] > 0  # what eval/accuracy is over
        low, high = row["eval/interval_95"]  # and how far it could be off, over so few pairs
        assert low <= row["eval/accuracy"] <= high and high - low > 0.2
        assert row["vl_rewardbench/items"] == "4 of 4 scored"
        run = out / "runs" / row["variant"]
        (name,) = report_names(run)
        report = json.loads((run / name).read_text())
        assert report["benchmarks"]["vl_rewardbench"]["scores_over_all"]["overall"] == row["vl_rewardbench/overall"]
    assert rows[0]["pairs"] > rows[1]["pairs"]
    assert rows[0]["rows"] > rows[0]["pairs"]  # the demo mix upsamples mm_rlhf: copies are rows, not pairs
    assert "eval/accuracy: the fraction" in result.output.replace("\n", " ")  # units beside the table
    assert "eval/accuracy: the fraction" in (out / "ablation.md").read_text()
    assert "note: the variants' held-out intervals all overlap" in result.output  # a few held-out pairs each
    assert "| variant |" in (out / "ablation.md").read_text()


def test_ablation_with_the_audit_as_a_variant(demo_recipe: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"  # its input is changed below
    shutil.copytree(demo_recipe.parent.parent, root)
    out = tmp_path / "ablation"
    args = ["ablate", "--mix", str(root / "mixes" / "demo.yaml"), "--out", str(out), "--model", "tiny", "--audit",
            "--audit-folds", "2", "--set", "global_batch=8", "--set", "micro_batch=4", "--set", "max_steps=1",
            "--set", "lr=2e-3", "--set", "max_length=96"]  # fmt: skip
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "ablation.json").read_text())
    assert [r["variant"] for r in rows] == ["demo", "demo+audit"]
    base, audited = rows
    assert "error" not in audited, audited
    report = json.loads((out / "audits" / "demo" / "audit.json").read_text())
    assert audited["audit/judged"] == f"{report['scored']} of {report['pairs']}"
    pooled = report["held_out"]
    assert audited["audit/held_out_accuracy"].startswith(f"{pooled['accuracy']:.3f} of {pooled['pairs']}")
    assert audited["audit/held_out_accuracy"].endswith("(not above chance)") != pooled["beats_chance"]
    manifest = json.loads((out / "builds" / "demo+audit" / "manifest.json").read_text())
    assert "select: noise_rate" in manifest["recipe"]["text"] and "rm_scores-audit-" in manifest["recipe"]["text"]
    assert (out / "builds" / "demo+audit" / "flags" / "rm_margin_estimate.parquet").is_file()
    # the audit's verdict reaches the audited build: a build acting on a chance-level audit says so
    assert any("does not beat chance" in w for w in manifest["warnings"]) != pooled["beats_chance"]
    assert audited["pairs"] <= base["pairs"]
    # An input changed: the build is made again, and its audit, planned for the old shards, is made again too
    hh = root / "demo_data" / "native" / "hh_rlhf" / "demo.jsonl.gz"
    lines = gzip.decompress(hh.read_bytes()).splitlines(keepends=True)
    hh.write_bytes(gzip.compress(b"".join(lines[1:])))
    again = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert again.exit_code == 0, again.output
    said = set(again.output.splitlines())
    assert {
        "demo: build again (hh_rlhf changed since it was built)",
        "demo+audit: build again (its audit changed)",
    } <= said
    assert not [r for r in json.loads((out / "ablation.json").read_text()) if "error" in r]


def test_an_ablation_with_a_failed_variant_writes_its_table_and_exits_1(demo_recipe: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(demo_recipe.parent.parent, root)
    hh = root / "demo_data" / "native" / "hh_rlhf" / "demo.jsonl.gz"
    original = hh.read_bytes()
    hh.write_bytes(gzip.compress(b'{"question": "q", "answer": "a"}\n'))  # a source that gives no pair
    out = tmp_path / "ablation"
    args = ["ablate", "--mix", str(root / "mixes" / "demo.yaml"), "--per-source", "--out", str(out), "--model",
            "tiny", "--set", "global_batch=16", "--set", "max_steps=1"]  # fmt: skip
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    rows = json.loads((out / "ablation.json").read_text())
    failed = [r["variant"] for r in rows if "error" in r]
    assert failed == ["demo-only-hh_rlhf"]  # nothing to train on; the other variants train
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        f"error: {len(failed)} of {len(rows)} variants failed ({', '.join(failed)}); their errors are in the table"
    )
    # a rerun keeps the finished run of the same settings and tries the failed ones again
    model = out / "runs" / "demo" / "model" / "model.safetensors"
    trained = model.stat().st_mtime_ns
    again = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    said = again.output.splitlines()
    assert again.exit_code == 1 and {"demo: build reused", "demo: fit reused", f"{failed[0]}: fit"} <= set(said)
    assert "demo: fit" not in said and "demo: build" not in said
    assert model.stat().st_mtime_ns == trained
    assert json.loads((out / "ablation.json").read_text()) == rows
    # The source mended: the builds that read it are built again and their models trained again (a build was
    # reused by its recipe text alone, and the run trained on the old build with it); the others are reused.
    hh.write_bytes(original)
    mended = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    said = mended.output.splitlines()
    assert mended.exit_code == 0, mended.output
    again = "build again (hh_rlhf changed since it was built)"
    assert {f"demo: {again}", "demo: fit", f"{failed[0]}: {again}", f"{failed[0]}: fit"} <= set(said)
    assert {"demo-only-ultrafeedback: build reused", "demo-only-ultrafeedback: fit reused"} <= set(said)
    assert model.stat().st_mtime_ns != trained
    rows = json.loads((out / "ablation.json").read_text())
    assert not [r for r in rows if "error" in r] and rows[0]["pairs"] > 0


def test_a_mixture_name_that_would_leave_its_folder_is_refused(demo_recipe: Path, tmp_path: Path) -> None:
    data = yaml.safe_load(demo_recipe.read_text())
    bad = demo_recipe.parent / "escaping.yaml"
    bad.write_text(yaml.safe_dump({**data, "name": "../escaping"}))
    result = CliRunner().invoke(app, ["ablate", "--mix", str(bad), "--out", str(tmp_path / "a"), "--model", "tiny"])
    assert result.exit_code == 1 and "mixture name '../escaping': use letters" in result.output
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").rglob("*.arrow"))


def test_a_run_folder_the_ablation_did_not_write_is_never_removed(demo_recipe: Path, tmp_path: Path) -> None:
    """A run of other settings (or any other files) at OUT/runs/<variant> stays: the variant fails naming it, and
    a second ablation of the same OUT is refused while the first runs."""
    from curation.errors import InputError
    from curation.io import only_writer
    from trainer.ablate import ablate
    from trainer.config import FitConfig

    out = tmp_path / "ablation"
    run = out / "runs" / "demo"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": "another"}))
    (run / "NOTES.txt").write_text("mine\n")
    variants = {"demo": demo_recipe.read_text().replace("../demo_data", str(demo_recipe.parent.parent / "demo_data"))}
    config = FitConfig(model="tiny", global_batch=8, micro_batch=4, max_steps=1)
    (row,) = ablate(variants, config, [], out)
    assert "holds another run (other settings, or files that are not a run)" in row["error"]
    assert (run / "NOTES.txt").read_text() == "mine\n"
    with only_writer(out / ".lock", "busy"), pytest.raises(InputError, match="another ablation is writing it now"):
        ablate(variants, config, [], out)


def test_intervals_tell_variants_apart_only_with_enough_pairs() -> None:
    from trainer.ablate import accuracy_interval, indistinct
    from trainer.reports import cell

    few = [{"eval/interval_95": accuracy_interval(a, 9)} for a in (0.56, 0.89)]
    many = [{"eval/interval_95": accuracy_interval(a, 2000)} for a in (0.56, 0.89)]
    assert indistinct(few) and not indistinct(many)
    assert not indistinct(few[:1]) and not indistinct([{"variant": "failed"}, *few[:1]])
    assert accuracy_interval(0.5, 2000) == pytest.approx((0.478, 0.522), abs=1e-3)
    assert cell(accuracy_interval(0.5, 2000)) == "0.48-0.52"


def test_the_legend_explains_the_columns_the_table_has() -> None:
    from trainer.ablate import markdown_table, notes, units

    none_held = [{"variant": "a", "rows": 9, "eval/accuracy": None, "eval/pairs": 0},
                 {"variant": "b", "rows": 9, "eval/accuracy": None, "eval/pairs": 0}]  # fmt: skip
    legend = units(none_held)
    assert "eval/accuracy: the fraction of eval/pairs held-out pairs" in legend
    assert "interval" not in legend and "benchmark" not in legend
    said = notes(none_held, 0.02)
    assert said == ["no variant held out a pair (eval_fraction 0.02 of their builds' prompts), so none has a held-out "
                    "accuracy; --set eval_fraction=0.2 holds a fifth out"]  # fmt: skip
    assert markdown_table(none_held, 0.02).endswith(f"{legend}.\n\nnote: {said[0]}\n")  # the file says it too
    held = [{**none_held[0], "eval/accuracy": 0.5, "eval/pairs": 4, "eval/interval_95": (0.2, 0.8)}, none_held[1]]
    assert notes(held, 0.02) == ["b: no held-out pair (each prompt is held out by its hash with eval_fraction 0.02, "
                                 "and none of the build's was), so no held-out accuracy; only a benchmark compares it "
                                 "with the others"]  # fmt: skip
    assert "eval/interval_95: its 95% Wilson interval" in units(held)
    benched = [{**none_held[0], "vl_rewardbench/items": "4 of 4 scored"}]
    assert "a benchmark's columns: percent over its items" in units(benched)
    assert not notes([{"variant": "failed", "error": "InputError: no pairs"}], 0.02)
    audited = [{"variant": "a", "rows": 9}, {"variant": "a+audit", "rows": 4, "audit/judged": "9 of 9",
                                             "audit/held_out_accuracy": "0.444 of 9 (not above chance)"}]  # fmt: skip
    assert "audit/judged: the variant's pairs its audit judged out of fold" in units(audited)
    assert notes(audited, 0.02) == ["the audits behind a+audit do not beat chance on held-out pairs: the pairs they "
                                    "dropped were dropped at random, so those rows measure a smaller build, not a "
                                    "cleaner one"]  # fmt: skip


def test_ctrl_c_says_which_variants_are_kept(
    demo_recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainer.ablate

    calls = iter(range(10))
    real_fit = trainer.ablate.fit

    def interrupted_at_the_second_fit(*args: object, **kwargs: object) -> object:
        if next(calls) == 1:
            raise KeyboardInterrupt
        return real_fit(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(trainer.ablate, "fit", interrupted_at_the_second_fit)
    second = demo_recipe.parent / "demo_again.yaml"
    second.write_text(demo_recipe.read_text().replace("name: demo", "name: demo_again"))
    out = tmp_path / "ablation"
    args = ["ablate", "--mix", str(demo_recipe), "--mix", str(second), "--out", str(out), "--model", "tiny",
            "--set", "global_batch=8", "--set", "micro_batch=4", "--set", "max_steps=1"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 130, result.output
    assert result.stderr.endswith(f"interrupted: the trained variants are kept in {out} (demo); the same command "
                                  "reuses them\n")  # fmt: skip


def test_a_run_of_an_earlier_version_is_judged_by_what_it_learned(tmp_path: Path) -> None:
    """A rerun reuses a variant's finished run whose settings differ only in how it ran (or by a setting added
    since, at its default), never one whose held-out split fell by pair rather than by prompt."""
    import json

    import yaml

    from trainer.ablate import _finished_run, _same_settings
    from trainer.config import FitConfig

    config = FitConfig(model="tiny", shards=["b"])
    older = {k: v for k, v in config.as_dict().items() if k != "keep_checkpoints"} | {"save_every": 0}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(older))
    assert _same_settings(tmp_path, config)
    assert not _same_settings(tmp_path, FitConfig(model="tiny", shards=["b"], lr=0.5))
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "eval/accuracy": 0.5}\n')
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "reward_model.json").write_text("{}")
    data = [[["0a1b"], 1.0]]  # the build's shards by sha256, and its weight
    (tmp_path / "data.json").write_text(json.dumps({"eval_pairs": 4, "data": data}))  # split by pair_id
    assert _finished_run(tmp_path, config, data) is None
    (tmp_path / "data.json").write_text(json.dumps({"eval_pairs": 4, "split_by": "prompt_id", "data": data}))
    assert _finished_run(tmp_path, config, data) == {"step": 1, "eval/accuracy": 0.5}
    # held out otherwise: its metrics are not these settings' (trained again, in the same folder)
    other_eval = FitConfig(model="tiny", shards=["b"], eval_max_pairs=1)
    assert _finished_run(tmp_path, other_eval, data) is None and _same_settings(tmp_path, other_eval)
    # trained on other shards (the build made again since), or not saying what it trained on: trained again
    assert _finished_run(tmp_path, config, [[["2c3d"], 1.0]]) is None
    (tmp_path / "data.json").write_text(json.dumps({"eval_pairs": 4, "split_by": "prompt_id"}))
    assert _finished_run(tmp_path, config, data) is None


def test_an_error_with_a_bar_or_line_break_stays_in_its_cell() -> None:
    from trainer.ablate import markdown_table

    rows = [{"variant": "a", "error": "InputError: x.yaml:3: a | b\n  second line"}]
    table = markdown_table(rows, 0.1).splitlines()
    assert table[2] == "| a | InputError: x.yaml:3: a \\| b second line |"
