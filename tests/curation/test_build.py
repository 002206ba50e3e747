import hashlib
import json
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasets import Dataset

from curation.build import build
from curation.errors import InputError
from curation.recipe import RecipeError, load_recipe
from tests.conftest import write_jsonl
from tests.curation.conftest import MIXES


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_demo_build_accounts_for_every_row_and_is_deterministic(demo_recipe: Path, tmp_path: Path) -> None:
    recipe = load_recipe(demo_recipe)
    first = build(recipe, tmp_path / "a")
    # threads and processes change speed, not bytes; `key=value` folders in the path are not columns
    second = build(recipe, tmp_path / "source=x" / "margin=1" / "b", workers=1, cache=tmp_path / ".curate-cache")
    for name, entry in first["sources"].items():
        assert entry["balanced"], name
        removed = sum(sum(r.values()) for r in entry["removed"].values())
        assert entry["pairs_ingested"] == entry["kept"] + removed
    # Every planted problem is found by its stage.
    assert first["sources"]["rlaif_v"]["removed"] == {
        "exact_dedupe": {"exact duplicate": 1},
        "image_dedupe": {"near-duplicate image": 1},
        "decontaminate": {"contaminated: vl_rewardbench": 4},
    }
    assert first["sources"]["ultrafeedback"]["removed"]["near_dedupe"] == {"near-duplicate prompt": 1}
    assert first["sources"]["ultrafeedback"]["removed"]["filters"] == {"tie": 1}
    assert first["sources"]["mm_rlhf"]["mix"] == {
        "available": 7, "target": 14, "selected": 7, "upsampled_copies": 7, "factor": 2.0
    }  # fmt: skip
    assert first["rows_in_shards"] == sum(e["in_shards"] for e in first["sources"].values()) == 43
    # Byte-identical shards and manifest (timings and which signals came from the cache aside).
    assert [s["sha256"] for s in first["shards"]] == [s["sha256"] for s in second["shards"]]
    assert first["signals_reused"] == [] and second["signals_reused"] == [
        "near_dedupe",
        "image_dedupe",
        "decontaminate",
    ]
    for manifest in (first, second):
        manifest.pop("timings"), manifest.pop("signals_reused")
    assert first == second
    assert _digest(tmp_path / "a" / "rejects" / "rejects.parquet") == _digest(
        tmp_path / "source=x" / "margin=1" / "b" / "rejects" / "rejects.parquet"
    )
    # Every removal and ingest reject is in rejects/, with a reason.
    rejects = pq.read_table(tmp_path / "a" / "rejects" / "rejects.parquet").to_pylist()
    # 3 ingest rejects; removed: an exact, an image and a prompt duplicate, 4 contaminated, a tie, 3 not mixed
    assert len(rejects) == 3 + 3 + 4 + 1 + 3
    contamination = pq.read_table(tmp_path / "a" / "contamination" / "contamination.parquet").to_pylist()
    removed = [c for c in contamination if c["action"] == "removed"]
    assert sorted(c["benchmark_row"] for c in removed) == [f"data.jsonl:{i}" for i in range(4)]
    # The other "Describe this image in detail." pairs (other photos) are recorded only: text-only matches.
    recorded = [(c["source"], c["rule"], c["action"]) for c in contamination if c["action"] != "removed"]
    assert recorded == [("rlaif_v", "text only", "kept")] * 6
    dups = pq.read_table(tmp_path / "a" / "dups" / "exact_dedupe.parquet").to_pylist()
    assert len(dups) == 1 and dups[0]["survivor_source"] == "rlaif_v"
    # Shards open in `datasets` as they are; images referenced by the shards are in the image table.
    shard = Dataset.from_file(str(tmp_path / "a" / first["shards"][0]["file"]))
    assert {"pair_id", "prompt", "chosen", "rejected", "images"} <= set(shard.column_names)
    images = {r["sha256"] for r in pq.read_table(tmp_path / "a" / "images" / "images.parquet").to_pylist()}
    assert all(sha in images for s in first["shards"] for sha in _shard_images(tmp_path / "a" / s["file"]))
    card = (tmp_path / "a" / "README.md").read_text()
    assert "| rlaif_v | exact_dedupe: exact duplicate | 1 |" in card
    assert _card_length_rows(card) == _shard_length_rows([tmp_path / "a" / s["file"] for s in first["shards"]])
    assert not (tmp_path / "a.partial").exists()


def _card_length_rows(card: str) -> list[list[str]]:
    table = card.split("## Sources, licenses and length statistics (in shards)")[1].split("##")[0]
    return [line.strip("| ").split(" | ") for line in table.splitlines() if line.startswith("| ")][1:]


def _shard_length_rows(paths: list[Path]) -> list[list[str]]:
    """The card's table computed from the shards themselves (upsampled copies are rows there too)."""
    rows = [r for p in paths for r in Dataset.from_file(str(p)).to_list()]
    table = []
    for source in sorted({r["source"] for r in rows}):
        mine = [r for r in rows if r["source"] == source]
        chosen, rejected = [len(r["chosen"]) for r in mine], [len(r["rejected"]) for r in mine]
        longer = sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(mine)
        licenses = ", ".join(sorted({r["license"] for r in mine if r["license"] is not None}))
        # to one decimal, halves away from zero as DuckDB rounds
        tenth = Decimal("0.1")
        means = [float((Decimal(sum(x)) / len(mine)).quantize(tenth, ROUND_HALF_UP)) for x in (chosen, rejected)]
        table.append([source, licenses, str(len(mine)), *map(str, means), str(round(100 * longer, 1))])
    return table


def _shard_images(path: Path) -> list[str]:
    return [sha for row in Dataset.from_file(str(path))["images"] for sha in row]


def test_ties_removed_only_when_the_recipe_says_so(tmp_path: Path) -> None:
    rows = [
        {"prompt": f"q{i}", "chosen": f"a{i}", "rejected": f"b{i}", "score_chosen": 5, "score_rejected": s}
        for i, s in enumerate([5, 3])
    ]
    write_jsonl(tmp_path / "uf.jsonl", rows)
    for drop, expected in ((True, 1), (False, 2)):
        recipe = tmp_path / f"r{drop}.yaml"
        recipe.write_text(
            "name: t\nsources:\n  ultrafeedback_binarized: {path: uf.jsonl}\n"
            f"ops:\n  filters: {{drop_ties: {str(drop).lower()}}}\n"
        )
        manifest = build(load_recipe(recipe), tmp_path / f"out{drop}")
        assert manifest["rows_in_shards"] == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "name: x\nsources:\n  hh_rlhf: {path: d.jsonl}\nopz: {}\n",
            r"r.yaml:4: unknown key 'opz' \(did you mean 'ops'\?\)",
        ),
        ("sources:\n  hh_rlhf: {path: d.jsonl}\nops:\n  filterz: {}\n", r"r.yaml:4: unknown op 'filterz'"),
        (
            "sources:\n  hh_rlhf: {path: d.jsonl}\nops:\n  filters:\n    max_chars: lots\n",
            r"r.yaml:5: max_chars must be int",
        ),
        ("sources:\n  hh_rlhf:\n    path: nope.jsonl\n", r"r.yaml:3: nope.jsonl: no such file or folder"),
        (
            "sources:\n  hh_rlhf_typo: {path: d.jsonl}\n",
            r"r.yaml:2: unknown adapter 'hh_rlhf_typo' \(did you mean 'hh_rlhf'\?\)",
        ),
        ("sources:\n  hh_rlhf: {path: d.jsonl, options: {policy: x}}\n", r"unknown option\(s\) policy"),
        ("sources:\n  hh_rlhf: {path: d.jsonl}\nops:\n  filters: {regex: ['(?=x)']}\n", r"not a valid RE2 pattern"),
        ("sources:\n  hh_rlhf: {path: d.jsonl}\nshards: {rows_per_shard: 0}\n", r"r.yaml:3: rows_per_shard must be"),
        ("sources:\n  hh_rlhf: {path: d.jsonl}\nops:\n  image_dedupe: {hash_size: 16}\n", r"hash_size must be"),
        ("sources:\n  hh_rlhf: {path: d.jsonl}\nops:\n  near_dedupe: {threshold: 0.5}\n", r"candidate_threshold <="),
        ("sources:\n  hh_rlhf: {path: d.jsonl}\nops:\n  decontaminate: {min_cosine: 0.5}\n", r"min_cosine must be"),
        ("sources:\n  hh_rlhf: {path: d.jsonl}\nops:\n  decontaminate: {text_only: drop}\n", r"one of keep, remove"),
        ('sources:\n  "bob\'s": {adapter: hh_rlhf, path: d.jsonl}\n', r"r.yaml:2: source name \"bob's\" may hold only"),
        # bounds no pair meets removed every pair, or turned an op off, without a word
        (
            "sources:\n  hh_rlhf: {path: d.jsonl}\nops:\n  exact_dedupe: {max_pairs_per_prompt: 0}\n",
            r"r.yaml:4: max_pairs_per_prompt must be at least 1",
        ),
        ("sources:\n  hh_rlhf: {path: d.jsonl}\nops:\n  filters: {max_chars: -1}\n", r"max_chars must be at least 1"),
        (
            "sources:\n  hh_rlhf: {path: d.jsonl}\nops:\n  filters: {min_length_ratio: 2, max_length_ratio: 1}\n",
            r"min_length_ratio 2 is above max_length_ratio 1",
        ),
        ("sources:\n  hh_rlhf: {path: d.jsonl}\nops:\n  filters: {regex: ['']}\n", r"an empty pattern matches every"),
        ("sources:\n  hh_rlhf: {path: d.jsonl}\nops:\n  semantic_dedupe: {max_cluster: 1}\n", r"max_cluster >= 2"),
        ("sources:\n  hh_rlhf: {path: d.jsonl}\nops:\n  semantic_dedupe: {batch_size: 0}\n", r"batch_size >= 1"),
        ("sources:\n  hh_rlhf: {path: d.jsonl}\nops:\n  validate: {max_pixels: 0}\n", r"need max_pixels >= 1"),
    ],
)
def test_recipe_mistakes_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "d.jsonl").write_text("{}\n")
    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises(RecipeError, match=message):
        load_recipe(tmp_path / "r.yaml")


def test_a_source_path_that_is_not_beside_the_recipe_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paths resolve against the recipe's folder (`~` expanded): one that exists only in the working directory,
    or an `owner/name` whose owner is a folder beside the recipe, is a mistyped local path, said at its line; an
    `owner/name` read as a Hub id that cannot be opened says it was read as one, and which local path was not."""
    (tmp_path / "recipes" / "data").mkdir(parents=True)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "d.jsonl").write_text("{}\n")
    recipe = tmp_path / "recipes" / "r.yaml"
    monkeypatch.chdir(tmp_path)
    recipe.write_text("sources:\n  hh_rlhf: {path: data/e.jsonl}\n")
    with pytest.raises(RecipeError, match=r"r.yaml:2: data/e.jsonl: no such file or folder \(resolved against "
                       r".*recipes, where data/ exists; a Hub dataset id's owner would not be a folder\)"):  # fmt: skip
        load_recipe(recipe)
    recipe.write_text("sources:\n  hh_rlhf: {path: data/d.jsonl}\n")
    with pytest.raises(RecipeError, match=r"r.yaml:2: data/d.jsonl: no such file or folder \(resolved against "
                       r".*recipes; it exists in the working directory, but paths in a recipe resolve against its "
                       r"folder\)"):  # fmt: skip
        load_recipe(recipe)
    monkeypatch.setenv("HOME", str(tmp_path))
    recipe.write_text("sources:\n  hh_rlhf: {path: ~/data/d.jsonl}\n")
    assert load_recipe(recipe).sources[0].path == str(tmp_path / "data" / "d.jsonl")
    recipe.write_text("sources:\n  hh_rlhf: {path: ~/data/none.jsonl}\n")
    with pytest.raises(RecipeError, match=rf"r.yaml:2: ~/data/none.jsonl: no such file or folder \(expanded to "
                       rf"{tmp_path / 'data' / 'none.jsonl'}\)"):  # fmt: skip
        load_recipe(recipe)
    # an op's files too (`human_review`'s reviews, `rm_margin`'s scores)
    from curation.reviews import Review, append_review

    append_review(tmp_path / "reviews.parquet", Review("p", "s", "s.jsonl:0", "keep", "", "ana", "b"))
    recipe.write_text(
        "sources:\n  hh_rlhf: {path: ~/data/d.jsonl}\nops:\n  human_review: {reviews: ~/reviews.parquet}\n"
    )
    assert load_recipe(recipe).ops["human_review"].reviews == (str(tmp_path / "reviews.parquet"),)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe.write_text("sources:\n  hh_rlhf: {path: hh-rlhf/harmless-base}\n")
    with pytest.raises(InputError) as raised:
        build(load_recipe(recipe), tmp_path / "out")
    assert str(raised.value).startswith(
        f"{recipe}: source 'hh_rlhf': hh-rlhf/harmless-base is read as a Hub dataset id (there is no "
        f"{tmp_path / 'recipes' / 'hh-rlhf' / 'harmless-base'} beside the recipe): hh-rlhf/harmless-base: "
    )


def test_shipped_recipes_parse(demo_recipe: Path) -> None:
    assert [s.name for s in load_recipe(demo_recipe).sources] == ["rlaif_v", "mm_rlhf", "ultrafeedback", "hh_rlhf"]
    basereward = load_recipe(MIXES / "basereward.yaml")
    assert len(basereward.sources) == 7 and all("/" in s.path for s in basereward.sources)
    assert json.dumps(basereward.as_dict())


def test_stats_and_show_commands(demo_recipe: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from curation.cli import app

    manifest = build(load_recipe(demo_recipe), tmp_path / "b")
    runner = CliRunner()
    result = runner.invoke(app, ["stats", str(tmp_path / "b")], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "rlaif_v: accounting OK: 22 pairs = 16 kept + 6 removed" in result.output
    pair_id = Dataset.from_file(str(tmp_path / "b" / manifest["shards"][0]["file"]))["pair_id"][0]
    result = runner.invoke(app, ["show", str(tmp_path / "b"), pair_id], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "in shards" in result.output and "signals/filters" in result.output
    tie = next(
        r for r in pq.read_table(tmp_path / "b" / "rejects" / "rejects.parquet").to_pylist() if r["reason"] == "tie"
    )
    result = runner.invoke(app, ["show", str(tmp_path / "b"), tie["pair_id"]], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "at filters: tie" in result.output
    near = next(r for r in pq.read_table(tmp_path / "b" / "rejects" / "rejects.parquet").to_pylist()
                if r["stage"] == "near_dedupe")  # fmt: skip
    result = runner.invoke(app, ["show", str(tmp_path / "b"), near["pair_id"]], env={"COLUMNS": "300"})
    assert "signals/near_dedupe" in result.output  # found through the removed pair's prompt
    image_pair = next(r for r in Dataset.from_file(str(tmp_path / "b" / manifest["shards"][0]["file"])) if r["images"])
    result = runner.invoke(app, ["show", str(tmp_path / "b"), image_pair["pair_id"]], env={"COLUMNS": "300"})
    assert "signals/image_dedupe" in result.output  # keyed by its image
    assert image_pair["images"][0] in result.output


def test_a_failed_job_stops_the_others_and_its_error_is_the_one_raised() -> None:
    import duckdb

    from curation.build import _run_jobs

    stopped = []

    def fail() -> None:
        raise ValueError("job failed")

    def stop() -> None:
        stopped.append(True)
        raise duckdb.ConnectionException("Connection already closed!")  # its job closed it already

    assert _run_jobs([lambda: 1, lambda: 2, lambda: 3], threads=2) == [1, 2, 3]  # results in job order
    with pytest.raises(ValueError, match="job failed"):
        _run_jobs([lambda: 1, fail], threads=2, on_failure=stop)
    assert stopped


def test_a_pair_the_mix_leaves_out_says_where_it_ranked_and_how_many_were_taken(demo_build: Path) -> None:
    rejects = pq.read_table(demo_build / "rejects" / "rejects.parquet").to_pylist()
    details = sorted(r["detail"] for r in rejects if r["reason"] == "not selected by mix")
    # ultrafeedback: 8 kept pairs, `count: 5` takes the first 5 in hash order; ranks count from 1
    assert details == [f"hash rank {k} of 8 pairs available to the mix; it takes the first 5" for k in (6, 7, 8)]


def test_a_folder_split_leaving_files_unread_is_a_warning(tmp_path: Path) -> None:
    row = {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5", "metadata": {}}
    write_jsonl(tmp_path / "repo" / "train.jsonl", [row])
    write_jsonl(tmp_path / "repo" / "test.jsonl", [{**row, "prompt": "What is 3 + 3?"}])
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: split\nsources:\n  uf: {adapter: ultrafeedback_binarized, path: repo, split: test}\n")
    manifest = build(load_recipe(recipe), tmp_path / "b")
    assert manifest["sources"]["uf"]["rows_read"] == 1
    assert any("read 1 of its 2 data files, those of the split 'test'" in w for w in manifest["warnings"])


def test_decontamination_without_benchmarks_is_a_warning(tmp_path: Path) -> None:
    """The op ran and matched nothing, without a word: the recipe had no benchmarks to match against."""
    write_jsonl(tmp_path / "uf.jsonl", [{"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5", "metadata": {}}])
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: d\nsources:\n  uf: {adapter: ultrafeedback_binarized, path: uf.jsonl}\n"
                      "ops:\n  decontaminate: {}\n")  # fmt: skip
    manifest = build(load_recipe(recipe), tmp_path / "b")
    assert "decontaminate: the recipe lists no benchmarks, so no pair was matched against any (add them under " \
        "`benchmarks:`)" in manifest["warnings"]  # fmt: skip
    plain = tmp_path / "plain.yaml"  # without the op: no such warning
    plain.write_text(recipe.read_text().split("ops:")[0])
    assert not any("decontaminate" in w for w in build(load_recipe(plain), tmp_path / "c")["warnings"])
