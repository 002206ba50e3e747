"""Clean failure: anticipated faults end with one `error:` line, leave nothing under a final name, and a resume
never trusts a damaged state file. Recipe guards: duplicate keys, upsampling, benchmarks without items."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from curation import cli
from curation.build import build
from curation.errors import InputError
from curation.failure import REPORT
from curation.io import BatchWriter
from curation.recipe import RecipeError, load_recipe
from tests.conftest import write_jsonl

UF_ROWS = [{"prompt": f"Question number {i} about {w}?", "chosen": f"Answer {i}.", "rejected": f"No {i}."}
           for i, w in enumerate(["cats", "dogs", "birds", "fish", "trees", "rivers"])]  # fmt: skip


def run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """`curate ARGS` as the installed command runs it (through `main`): (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["curate", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    return int(exit_info.value.code or 0), capsys.readouterr().err


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_a_command_line_that_cannot_be_parsed_is_one_error_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing or unknown option, a value of the wrong type, an unknown command: one `error:` line saying where
    the usage is (exit 2, as click exits), never the library's boxed panel; `--help` still exits 0."""
    from trainer import cli as trainer_cli

    # the program's name is click's guess (`curate` when installed, `python -m ...` under pytest)
    for args, message in (
        (["build"], r"error: Missing option '--mix'\. \(see `.*curate build --help`\)$"),
        (["nosuch"], r"error: No such command 'nosuch'\. \(see `.*curate --help`\)$"),
        (["build", "--mix", "r.yaml", "--out", "o", "--workers", "two"], r"error: Invalid value for '--workers'"),
        (["build", "--mix"], r"error: Option '--mix' requires an argument\. \(see `curate build --help`\)$"),
        (["--bogus"], r"error: No such option: --bogus \(see `.*curate --help`\)$"),
    ):
        code, err = run_main(monkeypatch, capsys, *args)
        assert code == 2 and re.match(message, _one_error_line(err)), (args, err)
    monkeypatch.setattr(sys, "argv", ["trainer", "fit", "--shards", "b"])
    with pytest.raises(SystemExit) as exit_info:
        trainer_cli.main()
    assert exit_info.value.code == 2
    assert re.match(r"error: Missing option '--out'\. \(see `.*trainer fit --help`\)$",
                    _one_error_line(capsys.readouterr().err))  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["curate", "build", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 0 and "--mix" in capsys.readouterr().out


def _ingest_args(tmp_path: Path, out: Path, *extra: str) -> list[str]:
    path = write_jsonl(tmp_path / "uf.jsonl", UF_ROWS)
    return ["ingest", "--source", "ultrafeedback_binarized", "--path", str(path), "--out", str(out), *extra]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--limit", "-1"], "--limit must be at least 1, got -1"),
        (["--limit", "0"], "--limit must be at least 1, got 0"),
        (["--max-pixels", "-5"], "--max-pixels must be at least 1, got -5"),
        (["--workers", "-3"], "--workers must be 1 to 1024, got -3"),
    ],
)
def test_bad_flag_values_are_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    code, err = run_main(monkeypatch, capsys, *_ingest_args(tmp_path, tmp_path / "out", *flags))
    assert code == 1 and message in _one_error_line(err)
    assert not (tmp_path / "out").exists()


def test_disk_full_during_ingest_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def full(self: BatchWriter, table: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(BatchWriter, "_write_group", full)
    code, err = run_main(monkeypatch, capsys, *_ingest_args(tmp_path, tmp_path / "out"))
    assert code == 1 and "no space left on device" in _one_error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["uf.jsonl"]  # no out, no out.partial


def test_pyarrow_spelling_of_a_full_disk_is_recognised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def full(self: BatchWriter, table: Any) -> None:  # how pyarrow reports it: no errno attribute
        raise OSError("[Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(BatchWriter, "_write_group", full)
    code, err = run_main(monkeypatch, capsys, *_ingest_args(tmp_path, tmp_path / "out"))
    assert code == 1 and f"{tmp_path / 'out'}: no space left on device: free some space" in _one_error_line(err)


def test_read_only_output_and_an_output_that_is_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("x")
    code, err = run_main(monkeypatch, capsys, *_ingest_args(tmp_path, tmp_path / "file"))
    assert code == 1 and "exists and is not a folder" in _one_error_line(err)
    real_mkdir = Path.mkdir

    def read_only(self: Path, *args: Any, **kwargs: Any) -> None:
        if self.name.startswith("out"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    code, err = run_main(monkeypatch, capsys, *_ingest_args(tmp_path, tmp_path / "out"))
    assert code == 1 and "read-only file system" in _one_error_line(err)


def test_an_existing_out_is_refused_unless_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "rejects.parquet").write_text("an earlier run's file")
    code, err = run_main(monkeypatch, capsys, *_ingest_args(tmp_path, out))
    assert code == 1 and "already exists" in _one_error_line(err)
    code, _ = run_main(monkeypatch, capsys, *_ingest_args(tmp_path, out, "--replace"))
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["images.parquet", "pairs.parquet", "rejects.parquet"]
    assert pq.read_table(out / "rejects.parquet").num_rows == 0  # the earlier file is gone, not left beside
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "uf.jsonl"]


def test_a_bug_prints_its_traceback_and_asks_for_a_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("an unexpected state")

    monkeypatch.setattr("curation.ingest.write_outcomes", broken)
    code, err = run_main(monkeypatch, capsys, *_ingest_args(tmp_path, tmp_path / "out"))
    assert code == 1 and "Traceback" in err and "RuntimeError: an unexpected state" in err
    assert err.strip().splitlines()[-1] == f"error: {REPORT}"
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


# -- recipes and builds ------------------------------------------------------------------------------------------
def _recipe(tmp_path: Path, text: str) -> Path:
    write_jsonl(tmp_path / "uf.jsonl", UF_ROWS)
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


SIMPLE = """name: small
sources:
  uf:
    adapter: ultrafeedback_binarized
    path: uf.jsonl
{extra}"""


@pytest.mark.parametrize(
    ("text", "line", "first"),
    [
        (SIMPLE.format(extra="  uf:\n    adapter: hh_rlhf\n    path: uf.jsonl\n"), 6, 3),
        (SIMPLE.format(extra="ops:\n  validate: {min_answer_chars: 1, min_answer_chars: 2}\n"), 7, 7),
        (SIMPLE.format(extra="name: again\n"), 6, 1),
    ],
)
def test_duplicate_recipe_keys_name_both_lines(tmp_path: Path, text: str, line: int, first: int) -> None:
    with pytest.raises(RecipeError, match=rf"recipe.yaml:{line}: duplicate key .* \(first at line {first}\)"):
        load_recipe(_recipe(tmp_path, text))


def test_upsampling_is_guarded(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="weight 20 upsamples more than max_upsample 10"):
        load_recipe(_recipe(tmp_path, SIMPLE.format(extra="    weight: 20\n")))
    recipe = load_recipe(_recipe(tmp_path, SIMPLE.format(extra="    count: 1000000000\n")))
    with pytest.raises(InputError, match=r"count 1000000000 asks for 1000000000 pairs, .* above its max_upsample"):
        build(recipe, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    allowed = load_recipe(_recipe(tmp_path, SIMPLE.format(extra="    count: 60\n    max_upsample: 10\n")))
    manifest = build(allowed, tmp_path / "allowed")
    assert manifest["rows_in_shards"] == 60 and manifest["output_estimate_bytes"]["shards"] > 0


def test_a_benchmark_without_items_stops_the_build_and_rejects_are_counted(tmp_path: Path) -> None:
    bench = tmp_path / "bench.jsonl"
    bench.write_text('{"prompt": 1}\nnot json\n')
    text = SIMPLE.format(extra="benchmarks:\n  rb:\n    adapter: rewardbench\n    path: bench.jsonl\n")
    with pytest.raises(InputError, match=r"benchmark 'rb' .* gave no items: 2 rows read, 2 rejected") as raised:
        build(load_recipe(_recipe(tmp_path, text)), tmp_path / "out")
    assert "; the first: wrong type: bench.jsonl:0: " in str(raised.value)  # its row and field named
    write_jsonl(bench, [{"prompt": "Name a colour.", "chosen": "Red.", "rejected": "Seven."}, {"prompt": 1}])
    manifest = build(load_recipe(_recipe(tmp_path, text)), tmp_path / "out2")
    assert manifest["benchmarks"]["rb"] == {
        "adapter": "rewardbench", "rows_read": 2, "rows_rejected_at_ingest": 1,
        "rejects_at_ingest": {"wrong type": 1}, "items": 1, "balanced": True,
    }  # fmt: skip


def test_a_build_that_would_not_fit_stops_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = load_recipe(_recipe(tmp_path, SIMPLE.format(extra="")))
    monkeypatch.setattr("curation.build.shutil.disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9, 100))
    with pytest.raises(InputError, match=r"the build would write about .* but only 0.0 MiB is free"):
        build(recipe, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list((tmp_path / "out.partial").glob("shards/*.arrow"))


def test_bad_build_outputs_and_memory_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = _recipe(tmp_path, SIMPLE.format(extra=""))
    (tmp_path / "file").write_text("x")
    (tmp_path / "b.partial").write_text("x")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "c.partial").symlink_to(tmp_path / "elsewhere")
    for out, message in [
        ("x[1]", "DuckDB reads file names as patterns; choose an --out without *, ? or ["),
        ("file", "file: already exists"),
        ("b", "b.partial: exists and is not the folder of an unfinished build"),
        ("c", "c.partial: exists and is not the folder of an unfinished build"),
    ]:
        code, err = run_main(monkeypatch, capsys, "build", "--mix", str(recipe), "--out", str(tmp_path / out))
        assert code == 1 and message in _one_error_line(err)
    code, err = run_main(monkeypatch, capsys, "build", "--mix", str(recipe), "--out", str(tmp_path / "d"),
                         "--memory-limit", "lots")  # fmt: skip
    assert code == 1 and "--memory-limit 'lots'" in _one_error_line(err)
    code, err = run_main(monkeypatch, capsys, "build", "--mix", str(recipe), "--out", str(tmp_path / "d"),
                         "--memory-limit", "-5GB")  # fmt: skip
    assert code == 1 and "--memory-limit '-5GB': a size, e.g. 1500MB or 4GB, not a negative one" in _one_error_line(err)
    code, err = run_main(monkeypatch, capsys, "build", "--mix", str(recipe), "--out", str(tmp_path / "d"),
                         "--cache", str(tmp_path / "file"))  # fmt: skip
    assert code == 1 and _one_error_line(err).endswith(
        "file: exists and is not a folder; name a folder for the build cache"
    )
    assert not (tmp_path / "d").exists() and not (tmp_path / "d.partial").exists()
    code, err = run_main(monkeypatch, capsys, "build", "--mix", str(recipe), "--out", str(tmp_path / "e"),
                         "--workers", "0")  # fmt: skip
    assert code == 1 and "--workers must be 1 to 1024, got 0" in _one_error_line(err)


def _stop_at(stage: str):  # type: ignore[no-untyped-def]
    def on_stage(name: str) -> None:
        if name == stage:
            raise KeyboardInterrupt

    return on_stage


def _damage(path: Path, how: str) -> None:
    path.write_bytes(b"" if how == "empty" else path.read_bytes()[: len(path.read_bytes()) // 2])


@pytest.mark.parametrize("how", ["empty", "truncated"])
def test_a_damaged_state_file_means_not_done(demo_recipe: Path, tmp_path: Path, how: str, demo_build: Path) -> None:
    recipe = load_recipe(demo_recipe)
    reference = json.loads((demo_build / "manifest.json").read_text())  # an uninterrupted build of the recipe
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        build(recipe, out, on_stage=_stop_at("mix"))
    work = tmp_path / "out.partial" / "work"
    _damage(work / "ingest" / "mm_rlhf" / "done.json", how)
    signals = sorted((tmp_path / "out.partial" / "signals").glob("near_dedupe-*.parquet"))
    _damage(signals[0], how)
    resumed = build(recipe, out, resume=True)
    assert [s["sha256"] for s in resumed["shards"]] == [s["sha256"] for s in reference["shards"]]
    assert pq.read_metadata(out / "signals" / signals[0].name).num_rows > 0  # scored again
    with pytest.raises(KeyboardInterrupt):
        build(recipe, tmp_path / "again", on_stage=_stop_at("mix"))
    _damage(tmp_path / "again.partial" / "work" / "state.json", how)
    resumed = build(recipe, tmp_path / "again", resume=True)  # starts over
    assert [s["sha256"] for s in resumed["shards"]] == [s["sha256"] for s in reference["shards"]]
    assert (
        json.loads((tmp_path / "again" / "manifest.json").read_text())["rows_in_shards"] == reference["rows_in_shards"]
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("    weight: .nan\n", "weight must be a finite number >= 0"),
        ("    weight: .inf\n", "weight must be a finite number >= 0"),
        # YAML 1.1 reads these as text; the message says how to write the number meant
        (
            "    weight: 1e3\n",
            r"got '1e3' \(YAML reads 1e3 as text: write a dot and the exponent's sign, as in 1.0e\+3\)",
        ),
        ("    weight:\n", ":6: weight is empty; give a number, or leave the key out"),
        ("    count: null\n", ":6: count is empty; give a number, or leave the key out"),
        ("    max_upsample: .inf\n", "max_upsample must be a finite number >= 1"),
        ("    max_upsample: 0.5\n", "max_upsample must be a finite number >= 1"),
        ("ops:\n  near_dedupe: {threshold: .nan}\n", "threshold must be a finite number"),
    ],
)
def test_numbers_a_recipe_cannot_mean(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        load_recipe(_recipe(tmp_path, SIMPLE.format(extra=extra)))


def test_the_card_and_the_summary_count_benchmark_rejects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_jsonl(tmp_path / "bench.jsonl", [{"prompt": "Name a colour.", "chosen": "Red.", "rejected": "7."}, {"x": 1}])
    text = SIMPLE.format(extra="benchmarks:\n  rb:\n    adapter: rewardbench\n    path: bench.jsonl\n")
    code, _ = run_main(
        monkeypatch, capsys, "build", "--mix", str(_recipe(tmp_path, text)), "--out", str(tmp_path / "o")
    )
    assert code == 0
    monkeypatch.setattr(sys, "argv", ["curate", "stats", str(tmp_path / "o")])
    with pytest.raises(SystemExit):
        cli.main()
    assert "benchmark rb: 1 items decontaminated against, from 2 rows read; 1 rejected (missing field: 1)" in (
        " ".join(capsys.readouterr().out.split())
    )
    card = (tmp_path / "o" / "README.md").read_text()
    assert "| rb | 2 | 1 | 1 | missing field: 1 |" in card
    # each rejected row named, with its file, row and field: the items decontamination could not check against
    assert "`rejects/benchmark_rejects.parquet`" in card
    listed = pq.read_table(tmp_path / "o" / "rejects" / "benchmark_rejects.parquet").to_pylist()
    assert [(r["benchmark"], r["source_row"], r["reason"]) for r in listed] == [
        ("rb", "bench.jsonl:1", "missing field")
    ]
    assert listed[0]["detail"].startswith("bench.jsonl:1: ")


def test_a_damaged_manifest_is_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "b").mkdir()
    cut = "manifest.json cannot be read: Unterminated string starting at: line 1 column 21 (char 20)"
    for damaged, said in (('{"sources": {"uf": {"rows_re', cut), ('{"sources": {}}', "no readable manifest.json")):
        (tmp_path / "b" / "manifest.json").write_text(damaged)
        for command in (["stats", str(tmp_path / "b")], ["show", str(tmp_path / "b"), "0" * 32]):
            code, err = run_main(monkeypatch, capsys, *command)
            assert code == 1 and f"not a finished build ({said})" in _one_error_line(err)


@pytest.mark.parametrize(
    ("sources", "line", "first"),
    [
        ("  1: {adapter: ultrafeedback_binarized, path: uf.jsonl}\n  0x1: {adapter: hh_rlhf, path: uf.jsonl}\n", 4, 3),
        ("  yes: {adapter: ultrafeedback_binarized, path: uf.jsonl}\n  on: {adapter: hh_rlhf, path: uf.jsonl}\n", 4, 3),
    ],
)
def test_duplicate_keys_are_compared_as_yaml_resolves_them(tmp_path: Path, sources: str, line: int, first: int) -> None:
    with pytest.raises(RecipeError, match=rf"recipe.yaml:{line}: duplicate key .* \(first at line {first}\)"):
        load_recipe(_recipe(tmp_path, f"name: keys\nsources:\n{sources}"))


def test_merge_keys_may_override_and_aliases_are_checked_once(tmp_path: Path) -> None:
    merged = (
        "name: m\nbase: &b {adapter: ultrafeedback_binarized, path: uf.jsonl}\nsources:\n  uf: {<<: *b, weight: 1}\n"
    )
    with pytest.raises(RecipeError, match="unknown key 'base'"):  # the merge itself is accepted
        load_recipe(_recipe(tmp_path, merged))
    levels = ["a0: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"]
    levels += [f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * 10)}]" for k in range(1, 9)]  # 10^9 leaves if expanded
    bomb = _recipe(tmp_path, "name: bomb\n" + "\n".join(levels) + "\n")
    code = f"from pathlib import Path\nfrom curation.recipe import load_recipe\nload_recipe(Path({str(bomb)!r}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert "unknown key 'a0'" in result.stderr  # refused quickly, without walking every alias again


def test_ngram_bounds_are_checked_with_the_recipe(tmp_path: Path) -> None:
    for op in ("near_dedupe", "decontaminate"):
        for n in (0, 9):
            with pytest.raises(RecipeError, match="ngram"):
                load_recipe(_recipe(tmp_path, SIMPLE.format(extra=f"ops:\n  {op}: {{ngram: {n}}}\n")))


def test_a_recipe_path_that_is_a_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(RecipeError, match="loop: cannot be resolved"):
        load_recipe(_recipe(tmp_path, "name: l\nsources:\n  hh_rlhf: {path: loop}\n"))


def test_replace_touches_only_an_ingest_output_and_its_own_partial_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep me")
    code, err = run_main(monkeypatch, capsys, *_ingest_args(tmp_path, tmp_path / "notes", "--replace"))
    assert code == 1 and "not an ingest's output (it holds mine.txt); not replaced" in _one_error_line(err)
    code, err = run_main(monkeypatch, capsys, *_ingest_args(tmp_path, Path("."), "--replace"))
    assert code == 1 and "not an ingest's output" in _one_error_line(err)
    (tmp_path / "out.partial").mkdir()
    (tmp_path / "out.partial" / "draft.txt").write_text("mine too")
    code, err = run_main(monkeypatch, capsys, *_ingest_args(tmp_path, tmp_path / "out"))
    assert code == 1 and "out.partial: exists and is not the folder of an unfinished ingest" in _one_error_line(err)
    assert (tmp_path / "notes" / "mine.txt").exists() and (tmp_path / "out.partial" / "draft.txt").exists()
    (tmp_path / "out.old").mkdir()  # a name an earlier version used for the replaced folder: now left alone
    assert run_main(monkeypatch, capsys, *_ingest_args(tmp_path, tmp_path / "kept"))[0] == 0
    assert run_main(monkeypatch, capsys, *_ingest_args(tmp_path, tmp_path / "kept", "--replace"))[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "notes", "out.old", "out.partial", "uf.jsonl"]
    (tmp_path / "out.partial" / ".unfinished-ingest").touch()  # the mark ingests used before exports shared one
    assert run_main(monkeypatch, capsys, *_ingest_args(tmp_path, tmp_path / "out"))[0] == 0
    assert not (tmp_path / "out.partial").exists() and (tmp_path / "out" / "pairs.parquet").is_file()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--limit", "99999999999999999999999"], "--limit is too large"),
        (["--workers", "99999999999"], "--workers must be 1 to 1024"),
    ],
)
def test_out_of_range_flag_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    code, err = run_main(monkeypatch, capsys, *_ingest_args(tmp_path, tmp_path / "out", *flags))
    assert code == 1 and message in _one_error_line(err)


def test_a_damaged_zip_images_root_is_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import zipfile

    with zipfile.ZipFile(tmp_path / "media.zip", "w") as archive:
        archive.writestr("a.png", b"x" * 100)
    data = bytearray((tmp_path / "media.zip").read_bytes())
    central = data.rindex(b"PK\x01\x02")
    data[central + 4 : central + 30] = b"\xff" * 26  # the central directory entry, not its end record
    (tmp_path / "media.zip").write_bytes(bytes(data))
    args = [*_ingest_args(tmp_path, tmp_path / "out"), "--images-root", str(tmp_path / "media.zip")]
    code, err = run_main(monkeypatch, capsys, *args)
    assert code == 1 and "images root is a damaged zip archive" in _one_error_line(err)


def test_a_bad_memory_limit_writes_nothing(tmp_path: Path) -> None:
    recipe = load_recipe(_recipe(tmp_path, SIMPLE.format(extra="")))
    with pytest.raises(InputError, match="--memory-limit 'lots'"):
        build(recipe, tmp_path / "out", memory_limit="lots")
    assert not (tmp_path / "out.partial").exists()


def test_workers_ignore_ctrl_c_so_the_main_process_can_stop_them() -> None:
    import signal

    from curation.processes import worker_pool

    with worker_pool(2) as pool:
        assert pool.submit(signal.getsignal, signal.SIGINT).result() == signal.SIG_IGN
        assert signal.SIGINT not in pool.submit(signal.pthread_sigmask, signal.SIG_BLOCK, []).result()
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # this thread's mask as it was


def test_a_ctrl_c_raised_as_workers_are_started_leaves_the_threads_mask_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Blocking SIGINT raises a Ctrl-C already pending; the thread's mask is restored all the same (a main thread
    left with SIGINT blocked would miss the next Ctrl-C)."""
    import signal

    import curation.processes
    from curation.processes import worker_pool

    real = signal.pthread_sigmask

    def pending_ctrl_c(how: int, mask: Any) -> Any:
        before = real(how, mask)
        if how == signal.SIG_BLOCK and signal.SIGINT in set(mask):
            raise KeyboardInterrupt  # as Python raises a pending signal once the mask is set
        return before

    with worker_pool(1) as pool:
        monkeypatch.setattr(curation.processes.signal, "pthread_sigmask", pending_ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            pool.submit(int)
        monkeypatch.undo()
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])


CTRL_C_AS_WORKERS_START = """
import os, signal, sys, threading
from curation.processes import worker_pool

def started():  # from a thread, as a build starts an ingest's workers
    with worker_pool(2) as pool:
        future = pool.submit(os.getpid)
        os.killpg(0, signal.SIGINT)  # the terminal's Ctrl-C, to the whole group, while the workers start Python
        future.result()

thread = threading.Thread(target=started)
try:
    thread.start()
    thread.join()
except KeyboardInterrupt:
    thread.join()
    print("interrupted", file=sys.stderr)
"""


def test_ctrl_c_while_workers_start_prints_no_traceback_of_theirs() -> None:
    """A worker is born with Ctrl-C blocked, so one pressed while it still starts Python is dropped, not printed
    as a `KeyboardInterrupt` traceback beside the command's one line."""
    for _ in range(3):
        result = subprocess.run([sys.executable, "-c", CTRL_C_AS_WORKERS_START], capture_output=True, text=True,
                                start_new_session=True, timeout=120, check=False)  # fmt: skip
        # (Python 3.11's resource tracker may add a warning about a semaphore as the interpreter exits: not theirs)
        assert result.stderr.startswith("interrupted\n"), result.stderr
        assert "Traceback" not in result.stderr and "KeyboardInterrupt" not in result.stderr, result.stderr


def test_model_folders_in_ops_resolve_against_the_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe_dir, elsewhere = tmp_path / "recipes", tmp_path / "elsewhere"
    (recipe_dir / "models" / "enc").mkdir(parents=True)
    (elsewhere / "cwd-models" / "tok").mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    ops = (
        "ops:\n  semantic_dedupe: {{model: {m}}}\n  filters: {{tokenizer: {t}}}\n"
        "  decontaminate: {{embedding_model: {e}}}\n"
    )
    names = {"t": "gpt2", "e": "sentence-transformers/all-MiniLM-L6-v2"}
    recipe = load_recipe(_recipe(recipe_dir, SIMPLE.format(extra=ops.format(m="models/enc", **names))))
    assert recipe.op("semantic_dedupe").model == str(recipe_dir / "models" / "enc")
    assert recipe.op("filters").tokenizer == "gpt2"  # names stay names, for the library to find
    assert recipe.op("decontaminate").embedding_model == "sentence-transformers/all-MiniLM-L6-v2"
    only_in_cwd = r"recipe.yaml:\d+: .*cwd-models/tok: no such folder beside the recipe, only in the working dir"
    with pytest.raises(RecipeError, match=only_in_cwd):
        load_recipe(_recipe(recipe_dir, SIMPLE.format(extra=ops.format(m="models/enc", t="cwd-models/tok", e="x/y"))))
    with pytest.raises(RecipeError, match=rf"\./models/gone: no such folder \(resolved against {recipe_dir}\)"):
        load_recipe(_recipe(recipe_dir, SIMPLE.format(extra=ops.format(m="./models/gone", t="gpt2", e="x/y"))))
    monkeypatch.setenv("HOME", str(elsewhere))  # a folder under the home folder, written with ~
    home = load_recipe(_recipe(recipe_dir, SIMPLE.format(extra=ops.format(m="~/cwd-models/tok", t="gpt2", e="x/y"))))
    assert home.op("semantic_dedupe").model == str(elsewhere / "cwd-models" / "tok")


def test_a_build_is_replaced_only_when_asked_and_only_a_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`curate build --replace` swaps a finished build for the new one once that is complete; a folder that is not a
    build is never replaced, and without the flag an existing --out is refused."""
    recipe = _recipe(tmp_path, SIMPLE.format(extra=""))
    out = tmp_path / "b"
    build(load_recipe(recipe), out)
    first = json.loads((out / "manifest.json").read_text())
    code, err = run_main(monkeypatch, capsys, "build", "--mix", str(recipe), "--out", str(out))
    assert code == 1 and "already exists; choose another --out, remove it, or --replace it" in _one_error_line(err)
    code, err = run_main(monkeypatch, capsys, "build", "--mix", str(recipe), "--out", str(out), "--resume")
    assert code == 1 and _one_error_line(err).endswith(
        "b: a finished build (--resume continues an unfinished one, b.partial: there is none); "
        "choose another --out, remove it, or --replace it"
    )
    write_jsonl(tmp_path / "uf.jsonl", UF_ROWS[:3])  # the source changed: the new build holds 3 pairs
    (out / ".DS_Store").write_bytes(b"")  # a hidden file a system left in a build goes with it
    code, err = run_main(monkeypatch, capsys, "build", "--mix", str(recipe), "--out", str(out), "--replace")
    assert code == 0, err
    assert not (out / ".DS_Store").exists()
    assert (first["rows_in_shards"], json.loads((out / "manifest.json").read_text())["rows_in_shards"]) == (6, 3)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".b", "b"))) == [".b.lock", "b"]
    other = tmp_path / "notes"
    other.mkdir()
    code, err = run_main(monkeypatch, capsys, "build", "--mix", str(recipe), "--out", str(other), "--replace")
    assert code == 1 and "not a build folder (no manifest.json); --replace replaces a build" in _one_error_line(err)
    assert list(other.iterdir()) == []
    # a project folder with a manifest.json of its own is not a build either: nothing in it is touched
    (other / "manifest.json").write_text('{"name": "webapp"}')
    (other / "src").mkdir()
    (other / "src" / "important.py").write_text("x = 1\n")
    code, err = run_main(monkeypatch, capsys, "build", "--mix", str(recipe), "--out", str(other), "--replace")
    assert code == 1 and _one_error_line(err).endswith(
        "notes: not a build folder (it holds src, which a build does not write); --replace replaces a build only"
    )
    assert (other / "src" / "important.py").read_text() == "x = 1\n"
    assert not (tmp_path / "notes.partial").exists()


def test_a_write_that_fails_leaves_neither_the_file_nor_a_temporary_one(tmp_path: Path) -> None:
    """`atomic_file`: a write that fails half-way (a block that raises, an export CSV cannot hold), a text that cannot
    be encoded (a lone surrogate), a copy whose source is gone: the old file, if any, stays as it was, and nothing
    else is left beside it; a file written has a new file's mode (the umask's), and a link planted where the
    temporary file goes is never written through."""
    import pyarrow as pa

    from curation.io import atomic_file, write_text
    from curation.ops.runner import copy_file
    from curation.reviews import export_reviews

    state = tmp_path / "state.json"
    write_text(state, "old\n")
    with pytest.raises(RuntimeError), atomic_file(state) as file:
        file.write(b"half")
        raise RuntimeError("stopped half-way")
    with pytest.raises(UnicodeEncodeError):
        write_text(state, "\ud800")
    with pytest.raises(FileNotFoundError):
        copy_file(tmp_path / "gone.parquet", tmp_path / "copy.parquet")
    with pytest.raises(pa.ArrowInvalid):  # a nested column: CSV cannot hold it
        export_reviews(pa.table({"nested": [[1, 2]]}), tmp_path / "reviews.csv")
    umask = os.umask(0)
    os.umask(umask)
    assert state.read_text() == "old\n" and (state.stat().st_mode & 0o777) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    export_reviews(pa.table({"pair_id": ["a"]}), tmp_path / "reviews.jsonl")  # written whole through the handle
    assert (tmp_path / "reviews.jsonl").read_text() == '{"pair_id": "a"}\n'


def test_a_file_no_row_reads_never_stops_a_build(tmp_path: Path) -> None:
    """A link loop or a link to nowhere in an images root, which no row names: the build goes on (the resume stamp
    records such a file as it finds it)."""
    images = tmp_path / "imgs"
    images.mkdir()
    (images / "self.png").symlink_to("self.png")
    (images / "gone.png").symlink_to("nowhere.png")
    recipe = _recipe(tmp_path, SIMPLE.format(extra="") + "    images_root: imgs\n")
    manifest = build(load_recipe(recipe), tmp_path / "b")
    assert manifest["rows_in_shards"] == 6


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'name: x\nsources:\n  uf: {adapter: ultrafeedback_binarized, path: ""}\n',
            r"recipe.yaml:3: path must be a file or folder name, or a Hub dataset id; got ''",
        ),  # not every file here
        (
            'name: x\nsources:\n  uf: {adapter: ultrafeedback_binarized, path: "uf\\0.jsonl"}\n',
            r"recipe.yaml:3: path must be .*; got 'uf\\x00.jsonl'",
        ),
        (
            "name: x\nsources:\n  uf: {adapter: ultrafeedback_binarized, path: [uf.jsonl]}\n",
            r"recipe.yaml:3: path must be .*; got \['uf.jsonl'\]",
        ),
        (
            'name: x\nsources:\n  uf: {adapter: ultrafeedback_binarized, path: uf.jsonl, images_root: "a\\0b"}\n',
            r"recipe.yaml:3: images_root must be a folder or zip name; got 'a\\x00b'",
        ),
        (
            'name: "two\\nlines"\nsources:\n  uf: {adapter: ultrafeedback_binarized, path: uf.jsonl}\n',
            r"recipe.yaml:1: name must be text on one line, without control characters; got 'two\\nlines'",
        ),
        (
            "name: x\nsources:\n\tuf: {}\n",
            r"recipe.yaml:3:1: not valid YAML: found character '\\t' that cannot start any token$",
        ),
        ("name: x\nsources: [a\n", r"recipe.yaml:3:1: not valid YAML: .*line 2\)$"),
    ],
)
def test_what_a_recipe_path_or_name_cannot_be_is_one_line_at_its_line(
    tmp_path: Path, text: str, message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = _recipe(tmp_path, text)
    code, err = run_main(monkeypatch, capsys, "build", "--mix", str(recipe), "--out", str(tmp_path / "b"))
    assert code == 1 and re.search(message, _one_error_line(err)), err
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.partial").exists()


def test_a_number_or_a_date_names_a_folder_as_text_does(tmp_path: Path) -> None:
    """YAML reads `2024` as a number and `2024-01-01` as a date: as a recipe's name, a path or an images root they
    are the names they look like."""
    for folder in ("2024", "2024-01-01"):
        write_jsonl(tmp_path / folder / "uf.jsonl", UF_ROWS)
    (tmp_path / "7").mkdir()
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: 2024\nsources:\n  a: {adapter: ultrafeedback_binarized, path: 2024, images_root: 7}\n"
                      "  b: {adapter: ultrafeedback_binarized, path: 2024-01-01}\n")  # fmt: skip
    loaded = load_recipe(recipe)
    assert loaded.name == "2024" and [Path(s.path).name for s in loaded.sources] == ["2024", "2024-01-01"]
    assert Path(str(loaded.sources[0].images_root)).name == "7"


def test_a_recipe_that_is_not_utf8_or_is_a_folder_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(b"name: \xff\xfe\nsources: {}\n")
    code, err = run_main(monkeypatch, capsys, "build", "--mix", str(recipe), "--out", str(tmp_path / "b"))
    assert code == 1 and _one_error_line(err).endswith(
        "recipe.yaml: not UTF-8 text (byte 6: invalid start byte); save the recipe as UTF-8"
    )
    code, err = run_main(monkeypatch, capsys, "build", "--mix", str(tmp_path), "--out", str(tmp_path / "b"))
    assert code == 1 and "a folder, not a recipe file" in _one_error_line(err)


def test_a_build_inside_its_input_folder_is_refused_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A build folder inside a source's folder would be read as rows by the next build: refused before anything is
    written there (no `.partial`, no promise of a --resume); an --out under a file keeps nothing either."""
    source = tmp_path / "src"
    write_jsonl(source / "uf.jsonl", UF_ROWS)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: x\nsources:\n  uf: {adapter: ultrafeedback_binarized, path: src}\n")
    code, err = run_main(monkeypatch, capsys, "build", "--mix", str(recipe), "--out", str(source / "b"))
    assert code == 1 and _one_error_line(err).endswith(
        f"b: the build folder is inside 'uf''s input folder {source}, whose files a later build would take for "
        "rows; write it outside"
    )
    assert sorted(p.name for p in source.iterdir()) == ["uf.jsonl"]
    (tmp_path / "afile").write_text("")
    code, err = run_main(monkeypatch, capsys, "build", "--mix", str(recipe), "--out", str(tmp_path / "afile" / "b"))
    assert code == 1 and _one_error_line(err) == (
        f"error: {tmp_path / 'afile' / 'b'}: cannot be made, {tmp_path / 'afile'} is not a folder; choose another --out"
    )


def test_rejects_are_in_the_order_their_files_give_the_rows(tmp_path: Path) -> None:
    """By row number, not as text: `uf.jsonl:2` before `uf.jsonl:10` (string order put 10 first), for a source's
    rejects and a benchmark's."""
    good = {"prompt": "Name a colour.", "chosen": "Red.", "rejected": "7."}
    rows = [{**good, "prompt": f"Question {i}?"} if i not in (2, 10) else {"x": i} for i in range(11)]
    write_jsonl(tmp_path / "uf.jsonl", rows)
    write_jsonl(tmp_path / "bench.jsonl", rows)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(SIMPLE.format(extra="benchmarks:\n  rb:\n    adapter: rewardbench\n    path: bench.jsonl\n"))
    build(load_recipe(recipe), tmp_path / "o")
    rejects = pq.read_table(tmp_path / "o" / "rejects" / "rejects.parquet").to_pylist()
    assert [r["source_row"] for r in rejects if r["reason"] == "missing field"] == ["uf.jsonl:2", "uf.jsonl:10"]
    bench = pq.read_table(tmp_path / "o" / "rejects" / "benchmark_rejects.parquet").column("source_row").to_pylist()
    assert bench == ["bench.jsonl:2", "bench.jsonl:10"]


def test_a_build_refused_for_another_writing_its_folder_claims_no_work(
    demo_recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The `.partial` folder is the running build's: the refused one said its work was kept there for --resume."""
    from curation.build import BUSY, build_lock
    from curation.io import only_writer

    out = tmp_path / "b"
    (tmp_path / "b.partial" / "work").mkdir(parents=True)
    with only_writer(build_lock(out), f"{out}: {BUSY}"):
        code, err = run_main(monkeypatch, capsys, "build", "--mix", str(demo_recipe), "--out", str(out))
    assert code == 1 and _one_error_line(err) == f"error: {out}: {BUSY}"
