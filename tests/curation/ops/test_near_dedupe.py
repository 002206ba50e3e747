from pathlib import Path

import numpy as np

from curation.shingles import Shingles, jaccard, lsh_params, minhash, shingle_words, word_hashes
from tests.curation.ops.conftest import BuildRows, run_op_on_rows, uf

WORDS = [f"word{i}" for i in range(500)]


def shingle(texts: list[str], n: int, chunk: int = 100_000) -> Shingles:
    return shingle_words(word_hashes(texts, chunk), n, chunk)


def _prompt(seed: int, n: int = 40) -> str:
    return " ".join(np.random.default_rng(seed).choice(WORDS, n))


def _edit(text: str, positions: list[int]) -> str:
    tokens = text.split()
    for p in positions:
        tokens[p] = "edited"
    return " ".join(tokens)


def test_minhash_estimates_jaccard_and_lsh_is_tuned_below_the_threshold() -> None:
    a, b = _prompt(1), _edit(_prompt(1), [10])
    s = shingle([a, b, _prompt(2)], 3)
    exact = jaccard(s.of(0), s.of(1))
    assert 0.8 < exact < 0.9
    sig = minhash(s, 256)
    assert abs(np.mean(sig[0] == sig[1]) - exact) < 0.08
    assert np.mean(sig[0] == sig[2]) < 0.05
    bands, rows = lsh_params(0.6, 128)
    assert bands * rows <= 128 and (1 - (1 - 0.8**rows) ** bands) > 0.98  # recall at a true Jaccard of 0.8


def test_near_duplicates_removed_with_one_survivor(build_rows: BuildRows) -> None:
    base = _prompt(1)
    rows = [uf(base, "a1"), uf(_prompt(2), "b"), uf(_edit(base, [5]), "a2"), uf(_edit(base, [30]), "a3")]
    rows.append(uf(_edit(base, list(range(0, 40, 2))), "far"))  # half the words changed: not a near duplicate
    built = build_rows({"uf": ("ultrafeedback_binarized", rows)}, ops={"near_dedupe": {"threshold": 0.8}})
    removed = built.removed("near_dedupe")
    assert sorted(r["source_row"] for r in removed) == ["uf.jsonl:2", "uf.jsonl:3"]
    assert all("prompt like uf uf.jsonl:0 (jaccard 0.8" in r["detail"] for r in removed)
    dups = built.table("dups/near_dedupe.parquet")
    assert {d["survivor_row"] for d in dups} == {"uf.jsonl:0"} and len(dups) == 2
    assert built.manifest["sources"]["uf"]["kept"] == 3 and built.manifest["sources"]["uf"]["balanced"]


def test_prompts_without_a_word_are_no_ones_near_duplicates(build_rows: BuildRows) -> None:
    """Their shingle sets are empty: a Jaccard of 1 made every such prompt a duplicate of the first."""
    rows = [uf(text, f"a{i}") for i, text in enumerate(["\U0001f600\U0001f600", "\U0001f64f", "???", "!!!", "+-*/"])]
    built = build_rows({"uf": ("ultrafeedback_binarized", rows)}, ops={"near_dedupe": {}})
    assert not built.removed("near_dedupe")
    assert jaccard(np.zeros(0, np.uint64), np.zeros(0, np.uint64)) == 0.0


def test_threshold_change_redecides_from_the_same_signals(build_rows: BuildRows) -> None:
    base = _prompt(1)
    rows = [uf(base, "a1"), uf(_edit(base, [5, 20]), "a2")]  # jaccard about 0.71
    strict = build_rows({"uf": ("ultrafeedback_binarized", rows)}, ops={"near_dedupe": {"threshold": 0.8}})
    loose = build_rows({"uf": ("ultrafeedback_binarized", rows)}, ops={"near_dedupe": {"threshold": 0.65}})
    assert not strict.removed("near_dedupe") and len(loose.removed("near_dedupe")) == 1
    strict_signal = sorted((strict.root / "signals").glob("near_dedupe-*.parquet"))
    loose_signal = sorted((loose.root / "signals").glob("near_dedupe-*.parquet"))
    assert [p.name for p in strict_signal] == [p.name for p in loose_signal]
    assert strict_signal[0].read_bytes() == loose_signal[0].read_bytes()


def test_chains_do_not_grow_runaway_clusters(build_rows: BuildRows) -> None:
    # p0 ~ p1 ~ p2 ~ p3 ~ p4, each two edits from the previous: p2 is no longer similar to p0.
    chain = [_prompt(1)]
    for k in range(1, 5):
        chain.append(_edit(chain[-1], [k * 7, k * 7 + 3]))
    s = shingle(chain, 3)
    assert jaccard(s.of(0), s.of(1)) >= 0.7 > jaccard(s.of(0), s.of(2))
    rows = [uf(p, f"answer {i}") for i, p in enumerate(chain)]
    built = build_rows({"uf": ("ultrafeedback_binarized", rows)}, ops={"near_dedupe": {"threshold": 0.7}})
    # Star clusters: p0 takes p1; p2 (not similar to p0) survives and takes p3; p4 is similar to p3 only.
    dups = {d["source_row"]: d["survivor_row"] for d in built.table("dups/near_dedupe.parquet")}
    assert dups == {"uf.jsonl:1": "uf.jsonl:0", "uf.jsonl:3": "uf.jsonl:2"}
    assert built.manifest["sources"]["uf"]["kept"] == 3


def test_one_big_bucket_forms_one_cluster() -> None:
    from curation.ops.near_dedupe import candidate_pairs

    keys = np.array([[7]] * 100 + [[8]], dtype=np.uint64)  # 100 prompts share one bucket
    pairs = {tuple(p) for p in candidate_pairs(keys).tolist()}
    assert all((0, j) in pairs for j in range(1, 100))  # each is compared with the first
    assert not any(100 in p for p in pairs)


def test_shingles_do_not_depend_on_chunking() -> None:
    texts = [_prompt(i, n=5 + i % 30) for i in range(50)] + ["", "one", "two words"]
    whole, chunked = shingle(texts, 3), shingle(texts, 3, chunk=7)
    assert np.array_equal(whole.offsets, chunked.offsets) and np.array_equal(whole.hashes, chunked.hashes)
    assert [len(whole.of(i)) for i in (50, 51, 52)] == [0, 1, 1]


def test_word_hashes_taken_in_another_order_and_sequence_keys() -> None:
    from curation.shingles import sequence_keys

    texts = [_prompt(i, n=i % 7) for i in range(30)] + [
        "Same words, other: PUNCTUATION",
        "same words other punctuation",
    ]
    words = word_hashes(texts, chunk=4)
    threaded = word_hashes(texts, chunk=4, threads=3)
    assert np.array_equal(threaded.hashes, words.hashes) and np.array_equal(threaded.offsets, words.offsets)
    order = np.array([31, 3, 0, 3, 12, 30])
    taken = words.take(order)
    assert all(np.array_equal(taken.of(k), words.of(int(i))) for k, i in enumerate(order))
    assert np.array_equal(shingle_words(taken, 3).hashes, shingle_words(words, 3).take(order).hashes)
    keys = sequence_keys(words)
    assert keys[30] == keys[31] and len(set(keys[:30].tolist())) == len({tuple(words.of(i)) for i in range(30)})
    assert keys[1] != sequence_keys(word_hashes(["word word"]))[0]


def test_a_later_stage_takes_the_words_an_earlier_one_computed(tmp_path: Path) -> None:
    """`ctx.prompt_words` reuses earlier words for any subset of the units in any order, and tokenizes anew
    otherwise."""
    import polars as pl

    from curation.ops.context import context_for_rows

    texts = [_prompt(i, n=3 + i % 9) for i in range(40)]
    units = pl.DataFrame({"prompt_id": [f"p{i}" for i in range(40)], "text": texts})
    ctx = context_for_rows(tmp_path, [])
    ctx.prompt_words(units)
    assert ctx.words is not None
    first = ctx.words[1]
    later = units[[7, 3, 39, 0]]
    taken = ctx.prompt_words(later)
    fresh = word_hashes(later["text"].to_list())
    assert np.array_equal(taken.hashes, fresh.hashes) and np.array_equal(taken.offsets, fresh.offsets)
    assert ctx.words[1] is first  # served from the earlier words
    unknown = pl.DataFrame({"prompt_id": ["p1", "new"], "text": [texts[1], "a new prompt"]})
    words = ctx.prompt_words(unknown)
    assert np.array_equal(words.hashes, word_hashes(unknown["text"].to_list()).hashes)
    assert ctx.words[1] is words


def test_signals_cover_every_prompt_and_the_decision_only_live_ones(tmp_path: Path) -> None:
    """Through the op's context: the edge to an edited copy is scored even when an earlier stage removed the
    copy's survivor, and then the copy stays (its survivor is gone, so nothing is its duplicate)."""
    base = _prompt(1)
    rows = [{"prompt": text, "chosen": "yes", "rejected": "no"} for text in (base, _prompt(2), _edit(base, [5]))]
    run = run_op_on_rows(tmp_path / "all", "near_dedupe", rows)
    assert [(s["jaccard"] > 0.8) for s in run.signals] == [True]
    assert list(run.removed()) == [2]
    assert run.removed()[2][0] == "near-duplicate prompt"
    assert run.removed()[2][1].startswith("prompt like s s.jsonl:0 (jaccard 0.")
    [dup] = run.evidence("dups/near_dedupe.parquet")
    assert dup["survivor_row"] == "s.jsonl:0" and dup["method"] == "minhash-jaccard"
    later = run_op_on_rows(tmp_path / "live", "near_dedupe", rows, removed_before=(0,))
    assert later.signals == run.signals  # scored over all ingested prompts
    assert later.removed() == {0: ("earlier", "")} and later.evidence("dups/near_dedupe.parquet") == []


def test_the_same_words_over_another_image_are_another_prompt(tmp_path: Path) -> None:
    from curation.demo import photo_png

    question = "<image>" + _prompt(3)
    rows = [
        {"prompt": question, "chosen": "a", "rejected": "b", "images": [photo_png("chelsea")]},
        {"prompt": question + " edited", "chosen": "a", "rejected": "b", "images": [photo_png("coffee")]},
    ]
    run = run_op_on_rows(tmp_path, "near_dedupe", rows)
    assert run.signals == [] and run.removed() == {}
