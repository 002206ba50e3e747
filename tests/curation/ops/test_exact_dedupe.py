"""exact_dedupe on inline rows, through the op's context."""

from pathlib import Path

from tests.curation.ops.conftest import run_op_on_rows


def test_one_survivor_per_pair_and_evidence_naming_it(tmp_path: Path) -> None:
    rows = [
        {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5", "source": "a"},
        {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5", "source": "b"},  # the same pair again
        {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "22", "source": "b"},  # same prompt, other pair
    ]
    run = run_op_on_rows(tmp_path, "exact_dedupe", rows)
    assert run.removed() == {1: ("exact duplicate", "same pair as a a.jsonl:0")}
    [dup] = run.evidence("dups/exact_dedupe.parquet")
    assert (dup["source"], dup["survivor_source"], dup["survivor_row"], dup["method"]) == (
        "b",
        "a",
        "a.jsonl:0",
        "exact",
    )
    assert [s["copy"] for s in run.signals] == [1, 2, 1]


def test_the_prompt_cap_keeps_the_first_pairs_in_seeded_hash_order(tmp_path: Path) -> None:
    rows = [{"prompt": "Name a colour.", "chosen": f"colour {i}", "rejected": "none"} for i in range(6)]
    rows.append({"prompt": "Name a colour.", "chosen": "colour 0", "rejected": "none"})  # a duplicate of row 0
    kept_by_seed = []
    for seed in (0, 1):
        run = run_op_on_rows(tmp_path / str(seed), "exact_dedupe", rows, {"max_pairs_per_prompt": 2}, seed=seed)
        removed = run.removed()
        assert removed[6][0] == "exact duplicate"  # removed before the cap counts the prompt's pairs
        capped = {k for k, (reason, _) in removed.items() if reason == "prompt cap"}
        assert len(capped) == 4
        assert removed[min(capped)][1].startswith("more than 2 pairs for prompt ")
        kept_by_seed.append(set(range(6)) - capped)
    assert kept_by_seed[0] != kept_by_seed[1]  # the seed decides which pairs a cap keeps
