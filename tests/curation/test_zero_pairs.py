"""A source that gives no pair is said loudly, with its top reject reasons: a warning (recorded in a build's
manifest and card), or with `--strict` one `error:` line and nothing written."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from typer.testing import CliRunner, Result

from curation.cli import app
from curation.ingest import IngestSummary
from curation.sources import REGISTRY, closest_adapter
from tests.conftest import write_jsonl

runner = CliRunner()
GOOD = [{"prompt": f"Name a colour, {n}.", "chosen": f"Blue {n}.", "rejected": f"Seven {n}."} for n in range(3)]
BAD = [{"question": f"q{n}", "answer": f"a{n}"} for n in range(4)]  # fields the adapter does not read
# The first reject names its row and field, and the fields the row has: what a wrong adapter shows first.
FIRST = "the first: missing field: bad.jsonl:0: 'chosen' (fields with a value: 'answer', 'question')"
WARNING = f"source 'bad' gave 0 pairs: 4 of 4 rows rejected (missing field: 4); {FIRST}"


def _one_line(result: Result, prefix: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(prefix), result.output
    return lines[0]


def _ingest(tmp_path: Path, *flags: str) -> Result:
    path = write_jsonl(tmp_path / "bad.jsonl", BAD)
    args = ["ingest", "--source", "ultrafeedback_binarized", "--path", str(path), "--out", str(tmp_path / "out")]
    return runner.invoke(app, [*args, *flags])


def test_ingest_warns_with_the_top_reasons(tmp_path: Path) -> None:
    result = _ingest(tmp_path, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["pairs"] == 0  # the warning is on stderr
    assert _one_line(result, "warning: ") == (
        f"warning: source 'ultrafeedback_binarized' gave 0 pairs: 4 of 4 rows rejected (missing field: 4); {FIRST}"
    )
    assert (tmp_path / "out" / "pairs.parquet").is_file()


def test_ingest_strict_fails_and_writes_nothing(tmp_path: Path) -> None:
    result = _ingest(tmp_path, "--strict")
    line = _one_line(result, "error: ")
    assert (
        result.exit_code == 1 and f"gave 0 pairs: 4 of 4 rows rejected (missing field: 4); {FIRST} (--strict)" in line
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]  # no out, no out.partial


def _recipe(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "good.jsonl", GOOD)
    write_jsonl(tmp_path / "bad.jsonl", BAD)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "name: zero\nsources:\n"
        "  good: {adapter: ultrafeedback_binarized, path: good.jsonl}\n"
        "  bad: {adapter: ultrafeedback_binarized, path: bad.jsonl}\n"
    )
    return recipe


def test_build_records_the_warning_and_prints_it_after(tmp_path: Path) -> None:
    result = runner.invoke(app, ["build", "--mix", str(_recipe(tmp_path)), "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert _one_line(result, "warning: ") == f"warning: {WARNING}"
    assert "3 rows in 1 shard(s): 3 distinct pairs" in result.stdout
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["warnings"] == [WARNING]
    assert f"> **Warning:** {WARNING}" in (tmp_path / "b" / "README.md").read_text()


def test_build_strict_fails_before_publishing(tmp_path: Path) -> None:
    result = runner.invoke(app, ["build", "--mix", str(_recipe(tmp_path)), "--out", str(tmp_path / "b"), "--strict"])
    assert result.exit_code == 1 and f"error: {WARNING} (--strict)" in _one_line(result, "error: ")
    assert not (tmp_path / "b").exists()


def test_a_build_left_with_no_pair_says_so_and_strict_fails_it(tmp_path: Path) -> None:
    """Every pair of one source removed as a duplicate of a source the mix takes none of: each is said (the
    survivor is in no shard either), the empty build too; `--strict` publishes nothing."""
    write_jsonl(tmp_path / "g.jsonl", GOOD)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: none\nsources:\n"
                      "  old: {adapter: ultrafeedback_binarized, path: g.jsonl, weight: 0}\n"
                      "  new: {adapter: ultrafeedback_binarized, path: g.jsonl}\n")  # fmt: skip
    result = runner.invoke(app, ["build", "--mix", str(recipe), "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    warnings = json.loads((tmp_path / "b" / "manifest.json").read_text())["warnings"]
    assert warnings == [
        "source 'new': 3 pairs removed as duplicates of pairs of 'old', which the mix takes none of (its weight or "
        "count is 0): neither copy is in the shards; list 'new' before 'old' in the recipe to keep them",
        "the build has no pair in its shards: the mix takes none of the kept pairs (weights or counts 0)",
    ]
    assert [line.removeprefix("warning: ") for line in result.stderr.splitlines() if line.strip()] == warnings
    args = ["build", "--mix", str(recipe), "--out", str(tmp_path / "c"), "--strict"]
    strict = runner.invoke(app, args)
    assert strict.exit_code == 1 and _one_line(strict, "error: ").startswith("error: the build has no pair in its ")
    assert not (tmp_path / "c").exists()
    write_jsonl(tmp_path / "bad.jsonl", BAD)  # every row rejected: said as such
    (tmp_path / "bad.yaml").write_text(
        "name: bad\nsources:\n  bad: {adapter: ultrafeedback_binarized, path: bad.jsonl}\n"
    )
    result = runner.invoke(app, ["build", "--mix", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "e")])
    assert json.loads((tmp_path / "e" / "manifest.json").read_text())["warnings"] == [
        WARNING,
        "the build has no pair in its shards: every input row was rejected or removed (`curate stats` shows where)",
    ]
    recipe.write_text(recipe.read_text().replace("weight: 0", "weight: 1"))  # both taken: 'new' gives none
    kept = runner.invoke(app, ["build", "--mix", str(recipe), "--out", str(tmp_path / "d")])
    assert kept.exit_code == 0 and _one_line(kept, "warning: ") == (
        "warning: source 'new': the ops removed all 3 of its pairs: none is in the shards (`curate stats` shows "
        "where they went)"
    )


def test_a_source_with_pairs_is_not_warned_about(tmp_path: Path) -> None:
    (tmp_path / "recipe.yaml").write_text(
        "name: ok\nsources:\n  good: {adapter: ultrafeedback_binarized, path: g.jsonl}\n"
    )
    write_jsonl(tmp_path / "g.jsonl", GOOD)
    args = ["build", "--mix", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "b"), "--strict"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and not result.stderr.strip(), result.output
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["warnings"] == []


def test_the_warning_names_the_three_most_frequent_reasons() -> None:
    summary = IngestSummary("x", rows_read=10, rows_rejected=10)
    summary.rejects_by_reason = Counter({"wrong type": 1, "missing field": 4, "tie": 2, "empty": 2, "bad image": 1})
    assert summary.no_pairs("s") == (
        "source 's' gave 0 pairs: 10 of 10 rows rejected (missing field: 4, empty: 2, tie: 2, and 2 other reasons)"
    )
    assert IngestSummary("x").no_pairs("s") == "source 's' gave 0 pairs: no rows read"
    assert IngestSummary("x", rows_read=1, rows_paired=1, pairs=1).no_pairs("s") is None


def test_ingest_says_when_the_missing_images_need_an_images_root(tmp_path: Path) -> None:
    rows = [{"id": "1", "image": "a/1.png", "prompt": "What?", "chosen": "A cat.", "rejected": "A dog."}]
    path = write_jsonl(tmp_path / "dpo_pairs.jsonl", rows)
    result = runner.invoke(app, ["ingest", "--source", "mm_rlhf", "--path", str(path), "--out", str(tmp_path / "o")])
    assert _one_line(result, "warning: ") == (
        "warning: source 'mm_rlhf' gave 0 pairs: 1 of 1 rows rejected (image not found: 1); the first: image not "
        "found: dpo_pairs.jsonl:0: field 'image': a/1.png (no images root given: --images-root, or images_root in a "
        "recipe); the rows name image files: give their folder or zip with --images-root"
    )


def test_rows_of_another_adapters_format_name_that_adapter(tmp_path: Path) -> None:
    """HH-RLHF's rows (`chosen` and `rejected` transcripts) read as UltraFeedback-binarized: the first reject names
    the adapter whose native fields the row's are closest to; a row of the right adapter with a field missing, or
    fields that are like no adapter's, names none."""
    rows = [{"chosen": f"\n\nHuman: Hi {n}\n\nAssistant: Hello.", "rejected": f"\n\nHuman: Hi {n}\n\nAssistant: Go."}
            for n in range(2)]  # fmt: skip
    path = write_jsonl(tmp_path / "hh.jsonl", rows)
    args = ["ingest", "--source", "ultrafeedback_binarized", "--path", str(path), "--out", str(tmp_path / "out")]
    warning = _one_line(runner.invoke(app, args), "warning: ")
    assert warning.endswith(
        "(fields with a value: 'chosen', 'rejected'; closest by field names: adapter 'hh_rlhf', which reads "
        "'chosen', 'rejected')"
    ), warning
    assert "closest" not in _one_line(_ingest(tmp_path / "x"), "warning: ")  # 'answer', 'question': like none
    full = {**GOOD[0], "prompt_id": "p0", "messages": [], "score_chosen": 7.0, "score_rejected": 2.0}
    path = write_jsonl(tmp_path / "uf.jsonl", [{k: v for k, v in full.items() if k != "prompt"}])
    args = ["ingest", "--source", "ultrafeedback_binarized", "--path", str(path), "--out", str(tmp_path / "uf")]
    assert "closest" not in _one_line(runner.invoke(app, args), "warning: ")


def test_a_source_the_ops_empty_is_said_and_its_count_unmet(tmp_path: Path) -> None:
    """Every pair of a source removed by the ops (identical answers here): a warning per source, naming the count it
    asked for, beside the other source's pairs in the shards."""
    write_jsonl(tmp_path / "good.jsonl", GOOD)
    write_jsonl(tmp_path / "same.jsonl", [{**row, "rejected": row["chosen"]} for row in GOOD])
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: emptied\nsources:\n"
                      "  good: {adapter: ultrafeedback_binarized, path: good.jsonl}\n"
                      "  same: {adapter: ultrafeedback_binarized, path: same.jsonl, count: 7}\n")  # fmt: skip
    result = runner.invoke(app, ["build", "--mix", str(recipe), "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert _one_line(result, "warning: ") == (
        "warning: source 'same': count 7 asks for 7 pairs, but the ops removed all 3 of its pairs: none is in the "
        "shards (`curate stats` shows where they went)"
    )


def test_the_closest_adapter_is_named_only_where_the_rows_fields_are_not_their_adapters() -> None:
    assert closest_adapter({"chosen", "rejected"}, "ultrafeedback_binarized") == "hh_rlhf"
    assert closest_adapter({"conv_A", "conv_B", "conv_A_rating", "conv_B_rating"}, "hh_rlhf") == "unified_feedback"
    # a row of the right adapter with a field missing: its own adapter's fields are the row's, most of them
    assert closest_adapter({"prompt", "chosen", "rejected"}, "mm_rlhf") is None  # not the benchmark of that layout
    assert closest_adapter({"chosen", "prompt", "rejected", "image"}, "rlaif_v") is None
    assert closest_adapter({"chosen", "rejected"}, "skywork_preference") is None
    # like no adapter's, or like two alike (Tulu 3's and OLMo 2's preference mixes share their fields)
    assert closest_adapter({"question", "answer"}, "ultrafeedback_binarized") is None
    shared = set(REGISTRY["tulu3_preference"].mapped_fields)
    assert shared == set(REGISTRY["olmo2_preference"].mapped_fields)
    assert closest_adapter(shared, "hh_rlhf") is None
