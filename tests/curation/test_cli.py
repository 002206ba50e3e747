import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from curation.cli import app
from curation.sources import REGISTRY
from tests.conftest import write_jsonl

runner = CliRunner()


def test_sources_lists_every_adapter() -> None:
    result = runner.invoke(app, ["sources"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    for key in REGISTRY:
        assert key in result.output


def test_ingest_prints_counts_that_add_up(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "hh.jsonl",
        [{"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"}, {"chosen": 1}],
    )
    args = ["ingest", "--source", "hh_rlhf", "--path", str(path), "--out", str(tmp_path / "out"), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output)
    assert counts["rows_read"] == 2 and counts["pairs"] == 1 and counts["rejects_by_reason"] == {"wrong type": 1}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "images.parquet",
        "pairs.parquet",
        "rejects.parquet",
    ]


def test_clear_errors_for_bad_invocations(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    result = runner.invoke(app, ["ingest", "--source", "nope", "--path", "x", "--out", out])
    assert result.exit_code == 1 and "unknown source 'nope'" in result.output
    result = runner.invoke(app, ["ingest", "--source", "hh-rlhf", "--path", "x", "--out", out])
    assert result.exit_code == 1 and "unknown source 'hh-rlhf'; did you mean 'hh_rlhf'?" in result.output
    result = runner.invoke(
        app, ["ingest", "--source", "hh_rlhf", "--path", str(tmp_path / "absent.jsonl"), "--out", out]
    )
    assert result.exit_code == 1 and "absent.jsonl: no such file or folder" in result.output
    (tmp_path / "loop.jsonl").symlink_to("loop.jsonl")
    (tmp_path / "gone.jsonl").symlink_to("nowhere.jsonl")
    for name, said in (
        ("loop.jsonl", "loop.jsonl: cannot be resolved ("),
        ("gone.jsonl", "gone.jsonl: a link to nothing"),
    ):
        result = runner.invoke(app, ["ingest", "--source", "hh_rlhf", "--path", str(tmp_path / name), "--out", out])
        assert result.exit_code == 1 and said in result.output, result.output
    result = runner.invoke(app, ["ingest", "--source", "hh_rlhf", "--path", "x", "--out", out, "-o", "policy=1"])
    assert result.exit_code == 1 and "unknown option(s) policy" in result.output
    twice = ["-o", "min_margin=1", "-o", "min_margin=2"]  # the last one was taken, without a word
    result = runner.invoke(app, ["ingest", "--source", "vlfeedback", "--path", "x", "--out", out, *twice])
    assert result.exit_code == 1 and "option 'min_margin' given twice (min_margin=1 and min_margin=2)" in result.output
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    result = runner.invoke(app, ["ingest", "--source", "hh_rlhf", "--path", str(empty), "--out", out])
    assert result.exit_code == 1 and "file is empty" in result.output
    assert not (tmp_path / "out" / "pairs.parquet").exists()


def test_sources_piped_or_as_json_never_cut_a_key() -> None:
    # As a script runs it: stdout is a pipe, not a terminal, so nothing may be cut to 80 columns.
    piped = subprocess.run([sys.executable, "-m", "curation.cli", "sources"], capture_output=True, text=True,
                           check=True, env={**os.environ, "COLUMNS": "80"})  # fmt: skip
    keys_seen = {line.split("│")[1].strip() for line in piped.stdout.splitlines() if line.startswith("│")}
    assert keys_seen == set(REGISTRY)
    listed = json.loads(runner.invoke(app, ["sources", "--json"]).output)
    assert sorted(row["key"] for row in listed) == sorted(REGISTRY)
    assert {row["hub_id"] for row in listed if row["key"] == "vlfeedback"} == {"MMInstruction/VLFeedback"}


def test_stats_as_json_adds_up(demo_build: Path) -> None:
    manifest = json.loads((demo_build / "manifest.json").read_text())
    result = runner.invoke(app, ["stats", str(demo_build), "--json"])
    stats = json.loads(result.output)
    assert stats["rows_in_shards"] == manifest["rows_in_shards"]
    in_shards = sum(r["count"] for r in stats["funnel"] if r["step"] == "in shards")
    assert in_shards == manifest["rows_in_shards"] and set(stats["benchmarks"]) == {"vl_rewardbench"}
    # sources in the recipe's order, stages in the order they run (the manifest file sorts its keys)
    assert list(dict.fromkeys(r["source"] for r in stats["funnel"])) == [
        "rlaif_v",
        "mm_rlhf",
        "ultrafeedback",
        "hh_rlhf",
    ]
    steps = [r["step"].split(":")[0] for r in stats["funnel"] if r["source"] == "rlaif_v"]
    assert (
        steps.index("exact_dedupe") < steps.index("image_dedupe") < steps.index("decontaminate") < steps.index("kept")
    )


def test_ingest_says_which_files_of_a_split_folder_it_read(tmp_path: Path) -> None:
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}]
    folder = tmp_path / "repo"
    write_jsonl(folder / "train.jsonl", rows)
    write_jsonl(folder / "test.jsonl", rows * 2)
    result = runner.invoke(app, ["ingest", "--source", "ultrafeedback_binarized", "--path", str(folder),
                                 "--split", "test", "--out", str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2 read = 2 paired" in result.output
    assert "read 1 of its 2 data files, those of the split 'test'" in " ".join(result.output.split())


def test_stats_refuses_a_build_missing_a_shard(demo_build: Path, tmp_path: Path) -> None:
    """The funnel comes from the manifest, but a build without one of its shards is not the build it describes:
    an error naming the shard, as every other reader of the build says."""
    import shutil

    build = tmp_path / "b"
    shutil.copytree(demo_build, build)
    assert json.loads(runner.invoke(app, ["stats", str(build), "--json"]).output)["shard_files"] == 3
    # a build in a folder not named as its recipe is titled by its folder, its recipe beside it
    said = " ".join(runner.invoke(app, ["stats", str(build)]).output.split())
    assert "build b (recipe demo): every row accounted for" in said and str(build) in said
    (build / "shards" / "train-00001-of-00003.arrow").unlink()
    for args in (["stats", str(build)], ["stats", str(build), "--json"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and "shards/train-00001-of-00003.arrow" in str(result.exception), result.output


def test_stats_prints_names_and_reasons_as_text(demo_build: Path, tmp_path: Path) -> None:
    """A reason or benchmark name that reads as Rich markup (`[/]`) is printed as it is, never parsed."""
    import shutil

    build = tmp_path / "b"
    shutil.copytree(demo_build, build)
    manifest = json.loads((build / "manifest.json").read_text())
    source = next(s for s in manifest["sources"].values() if s["rejects_at_ingest"])
    source["rejects_at_ingest"] = {"[/]": sum(source["rejects_at_ingest"].values())}
    bench = next(iter(manifest["benchmarks"].values()))
    bench["rejects_at_ingest"] = {"[bold]x[/bold]": bench["rows_rejected_at_ingest"]}
    (build / "manifest.json").write_text(json.dumps(manifest))
    result = runner.invoke(app, ["stats", str(build)])
    assert result.exit_code == 0, result.output
    assert "[/]" in result.output and "[bold]x[/bold]" in result.output
