"""`trainer eval` counts every item and keeps every report; the trainer CLI's sharp edges (model names, --help).

An untrained tiny model on seven real VL-RewardBench rows (generated images, two of them missing): fast, and every
count is known.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import huggingface_hub.constants
import pytest
import typer
from typer.testing import CliRunner

from curation.errors import InputError
from tests.conftest import write_image, write_jsonl
from trainer.backbone import load_backbone
from trainer.cli import app
from trainer.config import FitConfig
from trainer.fit import build_model
from trainer.reports import EVALS, report_names, report_problem

ROWS = [0, 448, 766, 999, 1067, 1077]  # hallucination_pair, mathverse, RLAIF, RLHF, LRVInstruction, wildvision
MISSING = {448, 1077}  # images not there: a reasoning item and a general one


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder holding the untrained tiny model (scores are not the point here, counts are)."""
    folder = tmp_path_factory.mktemp("eval-reports") / "run"
    build_model(FitConfig(model="tiny")).save(folder / "model")
    (folder / "metrics.jsonl").write_text("")
    return folder


@pytest.fixture(scope="module")
def bench(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data.jsonl, images root): six real rows and one whose id has no listed source, two images missing."""
    folder = tmp_path_factory.mktemp("vl-slice")
    lines = (shared_data / "vl-rewardbench" / "data.jsonl").read_text().splitlines()
    rows = [json.loads(lines[k]) for k in ROWS]
    rows.append({**rows[3], "id": "somethingelse-1", "image": "vl_reward/img/extra.jpg"})
    for n, row in enumerate(rows):
        if n >= len(ROWS) or ROWS[n] not in MISSING:
            write_image(folder / "images" / row["image"], seed=n, size=(8, 8))
    return write_jsonl(folder / "data.jsonl", rows), folder / "images"


def _eval(run: Path, data: Path, images: Path) -> tuple[int, str]:
    args = [
        "eval",
        "--model",
        str(run),
        "--bench",
        f"vl_rewardbench={data}",
        "--images-root",
        f"vl_rewardbench={images}",
    ]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "80"})
    return result.exit_code, result.output


def test_missing_images_are_counted_and_every_score_given_twice(run: Path, bench: tuple[Path, Path]) -> None:
    code, output = _eval(run, *bench)
    assert code == 0, output
    first = report_names(run)
    code, output = _eval(run, *bench)
    assert code == 0, output
    reports = report_names(run)  # oldest first
    assert len(reports) == 2 and reports[0] == first[0]  # the first report is still there
    assert re.fullmatch(rf"{EVALS}/\d{{8}}T\d{{6}}Z-vl_rewardbench(-2)?\.json", reports[-1])
    assert f"report: {run / reports[-1]}" in output

    report = json.loads((run / reports[-1]).read_text())
    assert report_problem(report) is None  # what every reader checks a report against: as `trainer eval` writes it
    entry = report["benchmarks"]["vl_rewardbench"]
    assert (entry["rows_read"], entry["items_total"], entry["items_scored"]) == (7, 7, 5)
    assert entry["not_scored"] == {"image not found": 2}
    items = entry["items"]
    assert [i["not_scored"] for i in items].count("image not found") == 2
    # The id of no listed source counts in general, as the official cal.py does; no fourth group.
    assert items[-1]["group"] == "general"
    assert entry["groups"] == {
        "general": {"items_total": 3, "items_scored": 2},
        "hallucination": {"items_total": 3, "items_scored": 3},
        "reasoning": {"items_total": 1, "items_scored": 0},
    }
    right = sum(i["correct"] for i in items)
    assert entry["scores_over_scored"]["overall"] == round(100 * right / 5, 2)
    assert entry["scores_over_all"]["overall"] == round(100 * right / 7, 2)
    assert "reasoning" not in entry["scores_over_scored"] and entry["scores_over_all"]["reasoning"] == 0.0
    judged = [i["length_judge_correct"] for i in items]
    scored = [j for j, i in zip(judged, items, strict=True) if i["not_scored"] is None]
    assert entry["length_judge"]["scores_over_scored"]["overall"] == round(100 * sum(scored) / 5, 2)
    # over all, the judge is held to the model's terms: the items the model did not score are wrong for it too
    assert entry["length_judge"]["scores_over_all"]["overall"] == round(100 * sum(scored) / 7, 2)

    # The table, whole at 80 columns when piped: each score with the items it is over, beside published ones.
    assert "vl_rewardbench: 5 of 7 items scored; 2 of 7 not scored (image not found: 2)" in output
    rows = [line for line in output.splitlines() if line.startswith("│")]
    assert any(re.match(r"│ this model +│ over the scored items +│ 5 of 7 +│", line) for line in rows)
    assert any(
        re.match(r"│ length-only judge \(longer wins\) +│ over all items \(not scored = wrong\) +│ 7 ", r) for r in rows
    )
    assert any(re.match(r"│ BaseReward \(Qwen2\.5-VL-7B\) +│ published +│ 1250 +│ 82\.16 ", line) for line in rows)

    # The model card of the exported run shows the newest evaluation with its counts; every report travels.
    hub = run.parent / "hub"
    result = CliRunner().invoke(app, ["export", str(run), "--repo", "me/rm", "--local-dir", str(hub), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"From `{reports[-1]}`: 5 of 7 items scored" in (hub / "README.md").read_text()
    assert report_names(hub) == reports

    # A report changed by hand is named, with what of it is wrong, in one line: not a traceback half-way through.
    entry["groups"]["general"]["items_scored"] = "two"
    (run / reports[-1]).write_text(json.dumps(report))
    args = ["export", str(run), "--repo", "me/rm", "--local-dir", str(hub.with_name("hub-2")), "--dry-run"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and result.output == (
        f"error: {run / reports[-1]}: its entry for 'vl_rewardbench' is not as `trainer eval` writes it (`groups` is "
        "not a mapping of group to its items_total and items_scored)\n"
    ), result.output


def test_a_benchmark_without_a_scorable_item_is_an_error_and_writes_nothing(
    run: Path, bench: tuple[Path, Path], tmp_path: Path
) -> None:
    before = report_names(run)
    (tmp_path / "no-images").mkdir()
    code, output = _eval(run, bench[0], tmp_path / "no-images")
    assert code == 1
    assert output == (
        "error: vl_rewardbench: no item can be scored (7 rows read, 7 not scorable; image not found: 7); "
        f"is --images-root vl_rewardbench={tmp_path / 'no-images'} right?; no report written\n"
    )
    assert report_names(run) == before
    # without --images-root, the hint says to give one
    result = CliRunner().invoke(app, ["eval", "--model", str(run), "--bench", f"vl_rewardbench={bench[0]}"])
    assert result.output.endswith("give --images-root vl_rewardbench=DIR, the folder its images are in; no report "
                                  "written\n"), result.output  # fmt: skip
    assert report_names(run) == before


def test_eval_of_a_model_folder_that_does_not_exist_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "--model", str(tmp_path / "runs" / "tiy"), "--bench", "vl_rewardbench"])
    assert (result.exit_code, result.output) == (1, f"error: --model {tmp_path / 'runs' / 'tiy'}: no such folder\n")
    # a folder of something else (a build, say) is named for what it is not, before --out is asked for
    (tmp_path / "build").mkdir()
    result = CliRunner().invoke(app, ["eval", "--model", str(tmp_path / "build"), "--bench", "vl_rewardbench"])
    assert (result.exit_code, result.output) == (1, f"error: --model {tmp_path / 'build'}: neither a run folder nor a "
                                                    "saved reward model (no reward_model.json)\n")  # fmt: skip
    # a run that has no model yet is named for what it is
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "metrics.jsonl").write_text("")
    result = CliRunner().invoke(app, ["eval", "--model", str(tmp_path / "unfinished"), "--bench", "vl_rewardbench"])
    assert result.output == (f"error: --model {tmp_path / 'unfinished'}: a run without its model yet (an unfinished "
                             "run: `trainer fit --resume` finishes it)\n")  # fmt: skip
    # and `trainer score` of a folder that does not exist says so
    result = CliRunner().invoke(app, ["score", "--model", str(tmp_path / "runs" / "tiy"), "--build", str(tmp_path)])
    assert (result.exit_code, result.output) == (1, f"error: {tmp_path / 'runs' / 'tiy'}: no such folder\n")


def test_an_unknown_model_name_fails_at_once_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*_: object, **__: object) -> None:
        raise AssertionError("training started: the name was not checked first")

    monkeypatch.setattr("trainer.fit.fit", never)
    args = ["fit", "--shards", str(tmp_path), "--out", str(tmp_path / "run"), "--model", "tiyn"]
    result = CliRunner().invoke(app, args)
    assert (result.exit_code, result.output) == (
        1,
        "error: unknown model 'tiyn': use `tiny`, a local folder or a Hub id\n",
    )


def test_a_hub_id_that_cannot_load_offline_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(InputError, match=r"^model 'owner/name': cannot load it \(We couldn't connect[^\n]*\)$"):
        load_backbone("owner/name")


@pytest.mark.parametrize("command", sorted(typer.main.get_command(app).commands))  # type: ignore[attr-defined]
def test_every_flag_has_help_and_shows_its_default(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "400"})  # one line per flag
    assert result.exit_code == 0, result.output
    flags = [line for line in result.output.splitlines() if re.match(r"│ [* ]*(--[a-z]|[a-z]+ )", line)]
    assert flags, result.output
    for line in flags:
        # `--flag  <type>  help text [default: ...]`, or [required]; --help alone has no default to show
        if "--help" not in line:
            assert re.search(r"> +\S.*\[(default: .+|required)\]", line), f"{command}: {line.strip()}"


def test_a_group_scored_only_over_all_items_keeps_its_column() -> None:
    from trainer.published import table_columns

    rows = [{"model": "m", "result": "over scored", "overall": 100.0, "hallucination": 100.0},
            {"model": "m", "result": "over all", "overall": 60.0, "hallucination": 75.0, "general": 0.0,
             "general_plus": 0.0}]  # fmt: skip
    assert table_columns(rows) == ["model", "result", "overall", "hallucination", "general"]


def test_rows_rejected_at_ingest_are_said_to_be_in_no_group() -> None:
    """The group columns count the items read; a row rejected at ingest is in the overall score alone, and the
    legend says so rather than let the groups' items seem to add up to the benchmark's."""
    from trainer.reports import groups_text

    groups = {"general": {"items_total": 3, "items_scored": 2}, "hallucination": {"items_total": 3, "items_scored": 3}}
    entry = {"items_total": 7, "groups": groups, "scores_over_all": {"overall": 50.0, "general": 0.0,
             "hallucination": 100.0}}  # fmt: skip
    assert groups_text(entry) == (
        "by group: general 2 of 3, hallucination 3 (1 row rejected at ingest, in no group: in the whole-benchmark "
        "score alone)"
    )
    assert groups_text({**entry, "items_total": 6}) == "by group: general 2 of 3, hallucination 3"


def test_an_images_root_for_no_benchmark_is_refused(run: Path, bench: tuple[Path, Path]) -> None:
    before = report_names(run)
    args = ["eval", "--model", str(run), "--bench", f"vl_rewardbench={bench[0]}", "--images-root",
            f"vl_rewardbench={bench[1]}", "--images-root", f"mm_rlhf_rewardbench={bench[1]}"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert (result.exit_code, result.output) == (
        1, "error: --images-root mm_rlhf_rewardbench=...: no --bench mm_rlhf_rewardbench=FILE given\n")  # fmt: skip
    assert report_names(run) == before


def test_a_missing_benchmark_file_or_the_same_model_twice_is_refused_first(
    run: Path, bench: tuple[Path, Path], tmp_path: Path
) -> None:
    """Found before any model is loaded (or, in `trainer ablate`, before any variant trains)."""
    before = report_names(run)
    missing = tmp_path / "nowhere.jsonl"
    for args, said in (
        (["--bench", f"vl_rewardbench={missing}"], f"error: --bench 'vl_rewardbench={missing}': {missing}: no such "
                                                   "file or folder\n"),
        (["--bench", f"vl_rewardbench={bench[0]}", "--images-root", f"vl_rewardbench={tmp_path / 'none'}"],
         f"error: --images-root vl_rewardbench={tmp_path / 'none'}: no such file or folder\n"),
        (["--bench", f"vl_rewardbench={bench[0]}", "--model", str(run / "model"), "--out", str(tmp_path / "e")],
         f"error: --model {run / 'model'}: the same model as --model {run}; an ensemble takes different models\n"),
    ):  # fmt: skip
        result = CliRunner().invoke(app, ["eval", "--model", str(run), *args])
        assert (result.exit_code, result.output) == (1, said)
    assert report_names(run) == before


def test_a_file_of_another_format_names_the_field_it_lacks(run: Path, tmp_path: Path) -> None:
    """A benchmark file in another layout (a judge's outputs, say): the error names the first row's missing field
    and the fields it has, not only a count."""
    from tests.conftest import write_jsonl

    rows = [{"id": k, "judge_output": "A is better", "question": f"q{k}"} for k in range(2)]
    path = write_jsonl(tmp_path / "judged.jsonl", rows)
    result = CliRunner().invoke(app, ["eval", "--model", str(run), "--bench", f"rewardbench={path}"])
    assert result.exit_code == 1
    assert result.output.startswith("error: rewardbench: no item can be scored (2 rows read, 2 rejected at ingest; ")
    assert "; the first rejected: missing field: judged.jsonl:0: " in result.output
    assert "(fields with a value: 'id', 'judge_output', 'question')); no report written\n" in result.output


def test_the_legend_says_how_many_prompts_acc_plus_is_over() -> None:
    """MM-RLHF-RewardBench's acc_plus is over prompt ids, its other scores over pairs: the legend counts both."""
    from trainer.reports import counts_text

    def item(key: str, not_scored: str | None = None) -> dict[str, object]:
        return {"key": key, "not_scored": not_scored}

    items = [item("a"), item("a"), item("b"), item("c", "longer than max_length")]
    entry = {"items_total": 4, "items_scored": 3, "not_scored": {"longer than max_length": 1}, "groups": {},
             "items": items, "scores_over_scored": {}, "scores_over_all": {"acc": 50.0, "acc_plus": 33.33}}  # fmt: skip
    assert counts_text("mm_rlhf_rewardbench", entry) == (
        "3 of 4 items scored; 1 of 4 not scored (longer than max_length: 1); acc_plus over 2 of 3 prompts (those "
        "with a scored pair; over all items, all 3, an unscored pair counted wrong; a prompt right when all its "
        "pairs are)"
    )
    whole = {**entry, "items_total": 5, "items_scored": 3, "items": items[:3], "not_scored": {"bad row": 2}}
    assert counts_text("mm_rlhf_rewardbench", whole).endswith(
        "acc_plus over 2 prompts (a prompt right when all its pairs are); the 2 rows rejected at ingest have no "
        "known prompt (in acc alone)"
    )
    assert "prompts" not in counts_text("vl_rewardbench", {**entry, "scores_over_all": {"overall": 50.0}})


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda e: e.update(items_scored=9), "`items_scored` is more than `items_total`"),
        (lambda e: e.update(items_total=True), "`items_total` is not a count"),
        (lambda e: e.update(not_scored={"image not found": -1}), "`not_scored` is not a mapping of reason to items"),
        (
            lambda e: e["scores_over_all"].update(overall="51"),
            "`scores_over_all` is not a mapping of metric to percent",
        ),
        (lambda e: e.pop("length_judge"), "`length_judge.scores_over_scored` is not a mapping of metric to percent"),
        (
            lambda e: e.update(items=[{"key": "a"}]),
            "`items` is not a list of items, each with its `key` and `not_scored` (a text or null)",
        ),
        (
            lambda e: e.update(items=[{"key": ["p", 1], "not_scored": None}]),
            "`items` is not a list of items, each with its `key` and `not_scored` (a text or null)",
        ),
    ],
)
def test_an_entry_is_checked_against_what_trainer_eval_writes(change: Callable[[dict], object], problem: str) -> None:
    from trainer.reports import entry_problem

    entry = {"items_total": 4, "items_scored": 3, "not_scored": {"image not found": 1},
             "scores_over_scored": {"overall": 66.67}, "scores_over_all": {"overall": 50.0, "macro": None},
             "length_judge": {"scores_over_scored": {"overall": 33.33}, "scores_over_all": {"overall": 25.0}},
             "groups": {"general": {"items_total": 4, "items_scored": 3}},
             "items": [{"key": "a", "not_scored": None}]}  # fmt: skip
    assert entry_problem(entry) is None
    change(entry)
    assert entry_problem(entry) == problem
    assert (
        report_problem({"benchmarks": {"b": entry}})
        == f"its entry for 'b' is not as `trainer eval` writes it ({problem})"
    )
    assert entry_problem({"overall": 51.0, "macro": 50.5}) is None  # a legacy eval.json's entry: its scores alone


def test_an_item_repeated_exactly_is_counted_and_said(run: Path, bench: tuple[Path, Path], tmp_path: Path) -> None:
    """A row given twice (the same prompt, image and answers): both counted, as the benchmark's rows are, and the
    count says so rather than passing it over."""
    lines = bench[0].read_text().splitlines()
    repeated = tmp_path / "repeated.jsonl"
    repeated.write_text("\n".join([*lines, lines[0]]) + "\n")
    before = set(report_names(run))
    code, output = _eval(run, repeated, bench[1])
    assert code == 0, output
    said = " ".join(output.split())
    assert "1 item the same as an earlier one (prompt, images and answers), each counted as the benchmark's rows are" \
        in said, said  # fmt: skip
    [written] = set(report_names(run)) - before
    assert json.loads((run / written).read_text())["benchmarks"]["vl_rewardbench"]["items_repeated"] == 1


def test_a_file_of_the_other_benchmark_with_the_same_columns_is_refused(
    run: Path, shared_data: Path, tmp_path: Path
) -> None:
    """VL-RewardBench's and MM-RLHF-RewardBench's jsonl files have the same columns: each read as the other and
    was scored as it (all general, or all of no category). Neither item's identity is there: refused, no report."""
    vl = [json.loads(line) for line in (shared_data / "vl-rewardbench" / "data.jsonl").read_text().splitlines()[:3]]
    mm = (shared_data / "mm-rlhf-rewardbench" / "mm_reward_bench.jsonl").read_text().splitlines()
    mm_rows = [json.loads(line) for line in mm if '"image"' in line][:3]
    files = {"vl_rewardbench": write_jsonl(tmp_path / "mm.jsonl", mm_rows),
             "mm_rlhf_rewardbench": write_jsonl(tmp_path / "vl.jsonl", vl)}  # fmt: skip
    for row in vl + mm_rows:
        write_image(tmp_path / "images" / row["image"], seed=0, size=(8, 8))
    said = {"vl_rewardbench": "has an id of VL-RewardBench's sources (hallucination_pair, RLAIF, RLHF, mmmu, "
                              "mathverse, wildvision, jailbreak, LRVInstruction, politics, svit; the first here: '",
            "mm_rlhf_rewardbench": "has an image or video path in a category of MM-RLHF-RewardBench (mcq, long, "
                                   "short, safety, video; the first here: 'vl_reward/img/image_0.jpg')"}  # fmt: skip
    before = report_names(run)
    for name, path in files.items():
        args = ["eval", "--model", str(run), "--bench", f"{name}={path}", "--images-root", f"{name}={tmp_path}/images"]
        result = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
        assert result.exit_code == 1, result.output
        assert result.output.startswith(f"error: {name}: {path} reads as another benchmark's file: none of its 3 ")
        assert said[name] in result.output and result.output.endswith("; no report written\n")
    assert report_names(run) == before  # the bench fixture's own odd id among real ones is scored as general
