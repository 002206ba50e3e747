"""`curate show` (a pair by id prefix or source row, kept or removed) and `curate find` (pairs by text), on a tiny
build whose texts include Rich markup and terminal escapes that must print literally."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from curation.build import build
from curation.cli import app
from curation.lookup import MIN_PREFIX
from curation.recipe import load_recipe
from curation.schema import compute_ids
from tests.conftest import write_jsonl

runner = CliRunner()
HOSTILE = "[bold red]x[/]"
ESCAPE = "\x1b[31m"  # a terminal colour code: printed spelled out, never sent to the terminal
OVERRIDE = "\u202e"  # right-to-left override: it would reorder what the terminal shows after it; spelled out


def _row(prompt: str, chosen: str, rejected: str) -> dict[str, str]:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def _pair_id(row: dict[str, str]) -> str:
    return compute_ids([{"role": "user", "content": row["prompt"]}], [], row["chosen"], row["rejected"])[0]


def _colliding_rows() -> list[dict[str, str]]:
    """Two rows whose pair ids share their first `MIN_PREFIX` hex characters (about 5,000 rows are tried)."""
    seen: dict[str, dict[str, str]] = {}
    for n in range(200_000):
        row = _row(f"Count to {n}, please.", f"Here: {n}.", f"I cannot count to {n}.")
        prefix = _pair_id(row)[:MIN_PREFIX]
        if prefix in seen:
            return [seen[prefix], row]
        seen[prefix] = row
    raise AssertionError("no two pair ids share a prefix")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("show_find")
    chosen = f"It prints {HOSTILE} and {ESCAPE}red literally."
    hostile = _row(f"Why is {HOSTILE} shown?", chosen, f"It hides {OVERRIDE}it.")
    zebras = _row("Tell me about zebras.", "Zebras are striped horses of Africa.", "Zebras are purple.")
    identical = _row("Describe a zebra herd.", "They graze together.", "They graze together.")  # removed: filters
    colliding = _colliding_rows()
    # Both sources' files are named uf.jsonl: their rows share source rows (`uf.jsonl:0`).
    write_jsonl(root / "a" / "uf.jsonl", [hostile, zebras, zebras, identical, *colliding])
    write_jsonl(root / "b" / "uf.jsonl", [_row("Do zebras sleep standing up?", "Yes, mostly, as in a caf\u00e9.",
                                               "Never.")])  # fmt: skip
    recipe = root / "recipe.yaml"
    recipe.write_text(
        "name: show_find\nsources:\n"
        "  a: {adapter: ultrafeedback_binarized, path: a/uf.jsonl}\n"
        "  b: {adapter: ultrafeedback_binarized, path: b/uf.jsonl}\n"
    )
    build(load_recipe(recipe), root / "build")
    return {
        "dir": str(root / "build"),
        "hostile": _pair_id(hostile),
        "zebras": _pair_id(zebras),
        "identical": _pair_id(identical),
        "colliding": [_pair_id(row) for row in colliding],
    }


def _curate(*args: str) -> Result:
    return runner.invoke(app, list(args))


def _one_error_line(result: Result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_show_takes_a_unique_prefix_and_prints_markup_literally(built: dict) -> None:
    result = _curate("show", built["dir"], built["hostile"][:8])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"pair {built['hostile']}" in out and "a uf.jsonl:0: in shards (1 copy)" in out
    assert f"[user] Why is {HOSTILE} shown?" in out  # the prompt turn, markup and all
    assert f"It prints {HOSTILE} and \\x1b[31mred literally." in out and "\x1b" not in out
    assert "It hides \\u202eit." in out and OVERRIDE not in out
    assert "license" in out and "binarization" in out  # the metadata block
    assert "signals/validate" in out and "chosen_chars" in out and "signals/filters" in out


def test_show_as_json_has_the_same_content(built: dict) -> None:
    result = _curate("show", built["dir"], built["hostile"], "--json")
    shown = json.loads(result.stdout)
    assert shown["pair"]["chosen"] == f"It prints {HOSTILE} and {ESCAPE}red literally."
    assert shown["occurrences"] == [
        {"source": "a", "source_row": "uf.jsonl:0", "copies": 1, "stage": None, "reason": None, "detail": None,
         "swapped_from": None, "kept": True}
    ]  # fmt: skip
    assert isinstance(shown["pair"]["meta"], dict) and any(n.startswith("validate") for n in shown["signals"])


def test_an_ambiguous_prefix_lists_the_candidates(built: dict) -> None:
    first, second = built["colliding"]
    line = _one_error_line(_curate("show", built["dir"], first[:MIN_PREFIX]))
    assert f"pair id {first[:MIN_PREFIX]} is ambiguous, 2 pairs match (give more characters)" in line
    assert f"{first} (a uf.jsonl:4)" in line and f"{second} (a uf.jsonl:5)" in line
    assert _curate("show", built["dir"], second[: MIN_PREFIX + 8].upper()).exit_code == 0  # any case, once unique


def test_an_ambiguous_source_row_lists_the_pairs_of_each_source(built: dict) -> None:
    line = _one_error_line(_curate("show", built["dir"], "uf.jsonl:0"))
    assert "source row 'uf.jsonl:0' is ambiguous, 2 pairs match" in line and " (b uf.jsonl:0)" in line
    result = _curate("show", built["dir"], "uf.jsonl:3")
    assert result.exit_code == 0 and f"pair {built['identical']}" in result.stdout


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("0" * 32, "no pair with pair id 00000000000000000000000000000000 in "),
        ("uf.jsonl:99", "no pair with source row 'uf.jsonl:99' in "),
        ("abc", "'abc' is neither a pair id (or a prefix of at least 6 hex characters) nor a source row"),
        ("zebras", "'zebras' is neither a pair id"),
    ],
)
def test_unknown_or_malformed_ids_are_one_error_line(built: dict, key: str, message: str) -> None:
    assert message in _one_error_line(_curate("show", built["dir"], key))


def test_a_removed_pair_shows_its_texts_and_why(built: dict) -> None:
    result = _curate("show", built["dir"], built["identical"][:10])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "a uf.jsonl:3: removed at filters: chosen == rejected" in out
    assert "[user] Describe a zebra herd." in out and out.count("They graze together.") == 2
    assert "signals/filters" in out and "in shards" not in out


def test_a_pair_kept_once_and_removed_once_shows_both_fates(built: dict) -> None:
    out = _curate("show", built["dir"], built["zebras"]).stdout
    assert "a uf.jsonl:1: in shards (1 copy)" in out
    assert "a uf.jsonl:2: removed at exact_dedupe: exact duplicate (same pair as a uf.jsonl:1)" in out


def test_find_looks_in_kept_and_removed_pairs_ignoring_case(built: dict) -> None:
    result = _curate("find", built["dir"], "ZEBRA")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[-1] == "4 of 4 matches shown (3 distinct pairs from 4 source rows)"
    rows = {(line.split("│")[2].strip(), line.split("│")[3].strip()): line for line in lines if line.startswith("│ ")}
    assert set(rows) == {("a", "uf.jsonl:1"), ("a", "uf.jsonl:2"), ("a", "uf.jsonl:3"), ("b", "uf.jsonl:0")}
    assert built["zebras"][:12] in rows[("a", "uf.jsonl:1")] and "in shards (1 copy)" in rows[("a", "uf.jsonl:1")]
    assert "removed at exact_dedupe: exact duplicate" in rows[("a", "uf.jsonl:2")]
    assert "removed at filters: chosen == rejected" in rows[("a", "uf.jsonl:3")]
    assert "Describe a zebra herd." in rows[("a", "uf.jsonl:3")]  # the snippet, from the prompt


def test_find_searches_in_the_form_texts_are_stored_in(built: dict) -> None:
    """A query typed decomposed (`cafe` + a combining accent) found nothing: the build stores texts in NFC."""
    result = _curate("find", built["dir"], "CAFE\u0301")
    assert result.exit_code == 0 and result.stdout.splitlines()[-1].startswith("1 of 1 matches shown"), result.output


def test_find_limit_source_and_json(built: dict) -> None:
    assert _curate("find", built["dir"], "zebra", "--limit", "1").stdout.splitlines()[-1] == (
        "1 of 4 matches shown (3 distinct pairs from 4 source rows) (raise --limit to see more)"
    )
    found = json.loads(_curate("find", built["dir"], "zebra", "--source", "b", "--json").stdout)
    assert found["matches"] == found["source_rows"] == found["pairs"] == 1 and [
        (r["source"], r["source_row"], r["kept"]) for r in found["rows"]
    ] == [("b", "uf.jsonl:0", True)]
    row = found["rows"][0]
    assert row["field"] == "prompt" and row["snippet"][slice(*row["match"])] == "zebra"
    assert _curate("find", built["dir"], "no such text anywhere").stdout.strip() == "no pair holds the text"
    assert "no source 'c' in" in _one_error_line(_curate("find", built["dir"], "zebra", "--source", "c"))
    assert "--limit must be at least 1" in _one_error_line(_curate("find", built["dir"], "zebra", "--limit", "0"))


def test_find_prints_hostile_text_literally(built: dict) -> None:
    result = _curate("find", built["dir"], "[bold red]")
    assert result.exit_code == 0 and result.stdout.splitlines()[-1] == (
        "1 of 1 matches shown (1 distinct pair from 1 source row)"
    )
    assert f"Why is {HOSTILE} shown?" in result.stdout
    found = json.loads(_curate("find", built["dir"], "red]x", "--json").stdout)
    assert found["matches"] == 1 and HOSTILE in found["rows"][0]["snippet"]


def test_every_flag_has_help_and_shows_its_default() -> None:
    import typer

    for name in typer.main.get_command(app).commands:  # type: ignore[attr-defined]
        result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "400"})
        for line in result.stdout.splitlines():
            if "│" in line and " --" in line and "--help" not in line:
                described = line.split(">", 1)[-1].strip(" │")  # after the option's <type>
                assert described and ("[default:" in line or "[required]" in line), f"curate {name}: {line.strip()}"


def test_show_and_find_say_a_review_swapped_the_pair(tmp_path: Path) -> None:
    """A pair a review swapped has a new id; asked for by its old one, `show` and `find` say what happened."""
    from curation.reviews import Review, append_review

    row = _row("Tell me about zebras.", "Zebras are striped horses of Africa.", "Zebras are purple.")
    write_jsonl(tmp_path / "uf.jsonl", [row])
    before = _pair_id(row)
    append_review(tmp_path / "reviews.parquet", Review(before, "a", "uf.jsonl:0", "swap", "reversed", "me", "r"))
    (tmp_path / "recipe.yaml").write_text(
        "name: r\nsources:\n  a: {adapter: ultrafeedback_binarized, path: uf.jsonl}\n"
        "ops:\n  human_review: {reviews: reviews.parquet}\n"
    )
    build(load_recipe(tmp_path / "recipe.yaml"), tmp_path / "build")
    swapped = f"in shards (1 copy), chosen and rejected swapped in this build (pair id before: {before})"
    shown = _curate("show", str(tmp_path / "build"), before[:12])
    assert shown.exit_code == 0 and f"a uf.jsonl:0: {swapped}" in shown.stdout, shown.output
    found = _curate("find", str(tmp_path / "build"), "zebras", "--json")
    assert [r["swapped_from"] for r in json.loads(found.stdout)["rows"]] == [before]


def test_a_perceptual_hash_is_shown_as_its_hex_digits(demo_build: Path) -> None:
    from curation.io import read_shards

    pairs = read_shards(sorted((demo_build / "shards").glob("*.arrow"))).to_pylist()
    with_image = next(p for p in pairs if p["images"])
    shown = json.loads(_curate("show", str(demo_build), with_image["pair_id"], "--json").stdout)
    [hashes] = [rows for name, rows in shown["signals"].items() if name.startswith("image_dedupe")]
    assert all(len(r["phash"]) == 16 and int(r["phash"], 16) >= 0 for r in hashes)


def test_find_counts_a_ranked_rows_pairs_as_pairs_of_one_source_row(demo_recipe: Path, tmp_path: Path) -> None:
    """UltraFeedback's `all_pairs` policy makes several pairs of one row: matches and pairs differ from rows."""
    data = demo_recipe.parent.parent / "demo_data" / "native" / "ultrafeedback"
    recipe = tmp_path / "uf.yaml"
    recipe.write_text(
        f"name: uf\nsources:\n  uf: {{adapter: ultrafeedback, path: {data}, options: {{policy: all_pairs}}}}\n"
    )
    build(load_recipe(recipe), tmp_path / "uf")
    found = json.loads(_curate("find", str(tmp_path / "uf"), "What is 48 + 19", "--json").stdout)
    assert found["source_rows"] == 1 and found["matches"] == found["pairs"] > 1
    assert {r["source_row"] for r in found["rows"]} == {found["rows"][0]["source_row"]}


def test_a_removed_row_whose_rejects_table_is_damaged_says_so(built: dict, tmp_path: Path) -> None:
    """Not `removed at None: None`: the row is removed, where and why are not known."""
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(built["dir"], copy)
    rejects = copy / "rejects" / "rejects.parquet"
    rejects.write_bytes(rejects.read_bytes()[:20])
    result = _curate("find", str(copy), "ZEBRA")
    assert result.exit_code == 0, result.output
    assert "removed (where and why not recorded" in result.stdout and "None" not in result.stdout
